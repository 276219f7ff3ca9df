"""CIFAR-10 from its standard binary files: layout, checks, and a run with the 8-bit likelihood."""

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pyrovae.cli import main
from pyrovae.commands import read_run_config
from pyrovae.data import CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES, load_dataset, write_cifar10_file
from pyrovae.errors import DataError


def write_cifar10(folder, per_file=3, test=2, seed=0):
    """Six small files of the CIFAR-10 binary format; returns the images and labels written."""
    rng = np.random.RandomState(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE):
        n = test if name == CIFAR10_TEST_FILE else per_file
        images, labels = rng.randint(0, 256, (n, 3, 32, 32)), rng.randint(0, 10, n)
        write_cifar10_file(folder / name, images, labels)
        written[name] = (images, labels)
    return written


def test_the_files_are_read_as_the_format_says(tmp_path):
    written = write_cifar10(tmp_path)
    data = load_dataset("cifar10", data_dir=tmp_path)
    assert data.train.shape == (15, 3072) and data.test.shape == (2, 3072) and data.image_shape == (3, 32, 32)
    images, labels = written["data_batch_2.bin"]
    # the second file's first image is training row 3; red, green, blue planes, each row by row
    row = data.train[3].reshape(3, 32, 32)
    assert row[1, 2, 3].item() == pytest.approx(images[0, 1, 2, 3] / 255)
    torch.testing.assert_close(row, torch.as_tensor(images[0] / 255, dtype=torch.float32))
    assert data.train_labels[3].item() == labels[0] and data.test_labels.tolist() == list(written[CIFAR10_TEST_FILE][1])
    # 8-bit levels k/255: the discretized logistic accepts them as they are
    assert bool(((data.train * 255 - (data.train * 255).round()).abs() < 1e-4).all())


def test_the_unpacked_archive_folder_is_found(tmp_path):
    write_cifar10(tmp_path / "cifar-10-batches-bin")
    assert load_dataset("cifar10", data_dir=tmp_path).train.shape == (15, 3072)


def test_missing_truncated_and_foreign_files_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="cifar10 has no default folder to look in: pass --data-dir; download"):
        load_dataset("cifar10")
    with pytest.raises(DataError, match="cifar10: no folder"):
        load_dataset("cifar10", data_dir=tmp_path / "nowhere")
    write_cifar10(tmp_path)
    (tmp_path / "data_batch_4.bin").unlink()
    (tmp_path / CIFAR10_TEST_FILE).unlink()
    with pytest.raises(DataError, match=r"lacks data_batch_4.bin, test_batch.bin \(expected data_batch_1.bin"):
        load_dataset("cifar10", data_dir=tmp_path)
    write_cifar10(tmp_path)
    path = tmp_path / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"data_batch_3.bin has 9119 bytes, not a whole number of 3073-byte records"):
        load_dataset("cifar10", data_dir=tmp_path)
    write_cifar10(tmp_path)
    raw = bytearray((tmp_path / CIFAR10_TEST_FILE).read_bytes())
    raw[3073] = 57  # the second record's label
    (tmp_path / CIFAR10_TEST_FILE).write_bytes(bytes(raw))
    with pytest.raises(DataError, match="record 1 has the label 57; CIFAR-10 labels are 0 to 9"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_fit_and_evaluate_cifar10_in_bits_per_dimension(tmp_path):
    write_cifar10(tmp_path / "cifar", per_file=8, test=4)
    out = tmp_path / "run"
    args = ["fit", "--dataset", "cifar10", "--data-dir", str(tmp_path / "cifar"), "--likelihood",
            "discretized-logistic", "--arch", "conv", "--channels", "4,8", "--hidden", "16", "--z-dim", "3",
            "--epochs", "1", "--batch-size", "20", "--device", "cpu", "--no-progress", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    config = read_run_config(out)
    assert config["resolved"]["image_shape"] == [3, 32, 32] and config["resolved"]["binarization"] == "none"
    result = CliRunner().invoke(main, ["evaluate", str(out), "--k", "25", "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "evaluation.json").read_text())["summary"]
    assert summary["bits_per_dim"] == pytest.approx(-summary["log_px"] / (3072 * math.log(2)))
    # uniformly random bytes cannot be coded in fewer than 8 bits each (the IWAE bound only adds bits)
    assert 7.5 < summary["bits_per_dim"] < 30
    assert "bits per dim" in result.output
