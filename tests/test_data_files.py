"""Data files: MNIST-style IDX folders, user .npy/.npz arrays, and the errors bad data give."""

import json
import re
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pyrovae.cli import main
from pyrovae.commands import fit_run, read_run_config
from pyrovae.config import FitConfig
from pyrovae.data import DATASETS, DEFAULT_DATA_DIRS, load_array_dataset, load_dataset, load_idx_dataset
from pyrovae.data.idx import IDX_FILES, write_idx
from pyrovae.train import FitOptions

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

# ---------------------------------------------------------------------------------------------
# IDX folders (a miniature MNIST: 3x4 images, so nothing can assume 28x28 or 784)


def _images(n: int, offset: int, shape: tuple[int, ...] = (3, 4)) -> np.ndarray:
    return ((np.arange(n * int(np.prod(shape))).reshape(n, *shape) * 37 + offset) % 256).astype(np.uint8)


def write_idx_folder(folder: Path, compress: bool = False, n_train: int = 5, n_test: int = 2) -> dict[str, np.ndarray]:
    """Write the four standard files of a miniature MNIST into ``folder``; return the arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": _images(n_train, 0),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": _images(n_test, 11),
        "test_labels": (np.arange(n_test) * 3 % 10).astype(np.uint8),
    }
    for key, array in arrays.items():
        name = IDX_FILES[key] + (".gz" if compress else "")
        write_idx(folder / name, array, gzip=compress)
    return arrays


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_dataset_read_back_exactly(tmp_path, name, compress):
    arrays = write_idx_folder(tmp_path, compress)
    data = load_dataset(name, data_dir=tmp_path)
    assert data.name == name and data.image_shape == (3, 4) and data.x_dim == 12
    assert data.train.dtype == torch.float32 and data.train.shape == (5, 12) and data.test.shape == (2, 12)
    expected = torch.as_tensor(arrays["train_images"].reshape(5, 12) / 255.0, dtype=torch.float32)
    assert torch.equal(data.train, expected)
    assert data.train[0, 0] == 0 and data.train[1, 0] == pytest.approx(188 / 255)  # 12 * 37 % 256 = 188
    assert data.test[0, 0] == pytest.approx(11 / 255)
    assert data.train_labels.tolist() == [0, 1, 2, 3, 4] and data.test_labels.tolist() == [0, 3]
    assert data.train_labels.dtype == torch.long


def test_idx_dataset_mixed_raw_and_gz_and_static_binarization(tmp_path):
    arrays = write_idx_folder(tmp_path, compress=False)
    (tmp_path / IDX_FILES["test_images"]).unlink()
    write_idx(tmp_path / (IDX_FILES["test_images"] + ".gz"), arrays["test_images"], gzip=True)
    data = load_idx_dataset("mnist", tmp_path)
    assert torch.equal(data.test, torch.as_tensor(arrays["test_images"].reshape(2, 12) / 255.0, dtype=torch.float32))
    binary = load_dataset("mnist", "static", data_dir=tmp_path)
    assert ((binary.train == 0) | (binary.train == 1)).all() and binary.image_shape == (3, 4)


def test_idx_missing_folder_says_where_and_how(tmp_path):
    with pytest.raises(ValueError, match=r"fashion-mnist: no folder .*nowhere.*apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"mnist: no folder .*nowhere.*yann.lecun.com.*--data-dir"):
        load_dataset("mnist", data_dir=tmp_path / "nowhere")
    with pytest.raises(
        ValueError, match=r"mnist has no default folder to look in; download .* as data_dir / --data-dir"
    ):
        load_dataset("mnist")


def test_idx_missing_file_says_which_and_how(tmp_path):
    write_idx_folder(tmp_path, compress=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(
        ValueError, match=rf"fashion-mnist: {tmp_path} lacks t10k-labels-idx1-ubyte\[\.gz\] .*apt-get install"
    ):
        load_idx_dataset("fashion-mnist", tmp_path)


def test_fashion_mnist_is_looked_for_in_its_default_folder(tmp_path, monkeypatch):
    assert DEFAULT_DATA_DIRS["fashion-mnist"] == str(FASHION_MNIST_DIR)
    monkeypatch.setitem(DEFAULT_DATA_DIRS, "fashion-mnist", str(tmp_path / "absent"))
    with pytest.raises(ValueError, match=r"no folder .*absent \(looked for its IDX files there\).*apt-get install"):
        load_dataset("fashion-mnist")
    write_idx_folder(tmp_path / "absent", compress=True)
    assert load_dataset("fashion-mnist").image_shape == (3, 4)


def test_idx_truncated_and_corrupted_files(tmp_path):
    write_idx_folder(tmp_path)
    images = tmp_path / IDX_FILES["train_images"]
    images.write_bytes(images.read_bytes()[:-7])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte is truncated: .*60 data bytes, but 53 follow"):
        load_dataset("mnist", data_dir=tmp_path)
    write_idx_folder(tmp_path)
    labels = tmp_path / IDX_FILES["test_labels"]
    labels.write_bytes(b"\x08\x03" + labels.read_bytes()[2:])
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte has magic number 0x08030801"):
        load_dataset("mnist", data_dir=tmp_path)


def test_idx_labels_whose_length_does_not_match(tmp_path):
    write_idx_folder(tmp_path)
    write_idx(tmp_path / IDX_FILES["train_labels"], np.zeros(4, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte has 4 entries but the data have 5 rows"):
        load_dataset("mnist", data_dir=tmp_path)


def test_idx_files_of_the_wrong_kind_or_shape(tmp_path):
    arrays = write_idx_folder(tmp_path)
    write_idx(tmp_path / IDX_FILES["train_images"], arrays["train_labels"])  # labels under an images name
    with pytest.raises(ValueError, match=r"shape \(5,\) and dtype uint8; expected unsigned-byte images"):
        load_dataset("mnist", data_dir=tmp_path)
    write_idx_folder(tmp_path)
    write_idx(tmp_path / IDX_FILES["test_images"], _images(2, 0, (4, 3)))
    with pytest.raises(ValueError, match=r"train images are \(3, 4\) but test images are \(4, 3\)"):
        load_dataset("mnist", data_dir=tmp_path)
    write_idx_folder(tmp_path)
    write_idx(tmp_path / IDX_FILES["train_images"], _images(0, 0))
    with pytest.raises(ValueError, match="is empty: expected at least one row"):
        load_dataset("mnist", data_dir=tmp_path)


# ---------------------------------------------------------------------------------------------
# user arrays


def _rows(n: int, shape: tuple[int, ...] = (2, 3)) -> np.ndarray:
    """Row i holds the values i, i + 0.01, i + 0.02, ...: every row says which it is."""
    return (np.arange(n)[:, None] + 0.01 * np.arange(int(np.prod(shape)))).reshape(n, *shape)


def test_npy_is_flattened_and_split(tmp_path):
    x = _rows(10).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    data = load_dataset(tmp_path / "x.npy", test_fraction=0.3)
    assert data.image_shape == (2, 3) and data.x_dim == 6 and data.train.dtype == torch.float32
    assert data.train.shape == (7, 6) and data.test.shape == (3, 6)
    assert data.train_labels is None and data.test_labels is None
    rows = torch.cat([data.train, data.test])
    assert sorted(rows[:, 0].tolist()) == list(range(10))
    assert torch.equal(rows[rows[:, 0].argsort()], torch.as_tensor(x.reshape(10, 6)))
    again = load_array_dataset(tmp_path / "x.npy", test_fraction=0.3)
    assert torch.equal(again.test, data.test)
    other = load_array_dataset(tmp_path / "x.npy", test_fraction=0.3, split_seed=1)
    assert not torch.equal(other.test, data.test)


def test_npy_keeps_float64_and_reads_integers_as_they_are(tmp_path):
    np.save(tmp_path / "f64.npy", _rows(4, (5,)))
    data = load_array_dataset(tmp_path / "f64.npy", test_fraction=0.25)
    assert data.train.dtype == torch.float64 and data.image_shape == (5,)
    np.save(tmp_path / "u8.npy", np.full((4, 2), 255, dtype=np.uint8))
    data = load_array_dataset(tmp_path / "u8.npy")
    assert data.train.dtype == torch.float32 and (data.train == 255).all()  # no silent rescaling


def test_npz_x_and_y_stay_paired(tmp_path):
    x = _rows(20)
    np.savez(tmp_path / "xy.npz", x=x, y=np.arange(20) % 7)
    data = load_dataset(str(tmp_path / "xy.npz"))
    assert data.train.shape == (16, 6) and data.test.shape == (4, 6)
    for rows, labels in ((data.train, data.train_labels), (data.test, data.test_labels)):
        assert labels.dtype == torch.long
        assert labels.tolist() == [int(i) % 7 for i in rows[:, 0].round().tolist()]


def test_npz_with_a_given_split(tmp_path):
    train, test = _rows(6, (4,)), _rows(3, (4,)) + 100
    np.savez(
        tmp_path / "split.npz",
        train=train,
        test=test,
        train_labels=np.array([0, 1, 0, 1, 0, 1]),
        test_labels=np.array([1.0, 0.0, 1.0]),  # whole numbers stored as floats are accepted, and said
    )
    with pytest.warns(UserWarning, match="'test_labels' in .* holds whole numbers as float64 floats"):
        data = load_dataset(tmp_path / "split.npz", test_fraction=0.5)  # test_fraction is not used
    assert torch.equal(data.train, torch.as_tensor(train)) and torch.equal(data.test, torch.as_tensor(test))
    assert data.train_labels.tolist() == [0, 1, 0, 1, 0, 1] and data.test_labels.tolist() == [1, 0, 1]
    assert data.image_shape == (4,)


def test_npz_train_alone_is_split_and_extra_keys_warn(tmp_path):
    np.savez(tmp_path / "t.npz", train=_rows(5, (3,)), train_labels=np.arange(5), notes=np.zeros(1))
    with pytest.warns(UserWarning, match=r"ignoring arrays \['notes'\]"):
        data = load_array_dataset(tmp_path / "t.npz")
    assert data.train.shape == (4, 3) and data.test.shape == (1, 3)
    assert data.test_labels.tolist() == [int(data.test[0, 0])]


def test_binarization_of_user_grey_levels(tmp_path):
    np.save(tmp_path / "grey.npy", np.full((8, 3), 0.5, dtype=np.float32))
    data = load_dataset(tmp_path / "grey.npy", "dynamic")
    assert data.dynamic_binarization and (data.train == 0.5).all()
    assert ((data.test == 0) | (data.test == 1)).all()


def _save(path: Path, **arrays: np.ndarray) -> Path:
    if path.suffix == ".npy":
        np.save(path, arrays["x"])
    else:
        np.savez(path, **arrays)
    return path


nan_rows = _rows(5)
nan_rows[3, 1, 2] = np.nan
inf_rows = _rows(5)
inf_rows[0, 0, 0] = -np.inf

BAD_ARRAYS = {
    "nan": ("x.npy", {"x": nan_rows}, r"has 1 NaN or infinite values \(the first at row 3, column 5\)"),
    "inf": ("x.npy", {"x": inf_rows}, r"NaN or infinite values \(the first at row 0, column 0\).*replace"),
    "rank-1": ("x.npy", {"x": np.zeros(5)}, r"shape \(N, \.\.\.\) .*got shape \(5,\): for N scalars use x\[:, None\]"),
    "empty": ("x.npy", {"x": np.zeros((0, 2, 3))}, "is empty: expected at least one row"),
    "no-columns": ("x.npy", {"x": np.zeros((4, 0))}, r"rows of 0 values \(shape \(4, 0\)\)"),
    "strings": ("x.npy", {"x": np.array([["a", "b"]])}, r"must hold real numbers, got dtype <U1"),
    "one-row": ("x.npy", {"x": np.zeros((1, 3))}, "has 1 row.*at least 2: add data, or give a separate test set"),
    "y-short": ("xy.npz", {"x": _rows(5), "y": np.arange(4)}, "'y' in .* has 4 entries but the data have 5 rows"),
    "train-labels-long": (
        "s.npz",
        {"train": _rows(3), "test": _rows(2), "train_labels": np.arange(4)},
        "'train_labels' in .* has 4 entries but the data have 3 rows",
    ),
    "test-labels-short": (
        "s.npz",
        {"train": _rows(3), "test": _rows(2), "test_labels": np.arange(1)},
        "'test_labels' in .* has 1 entries but the data have 2 rows",
    ),
    "labels-2d": ("xy.npz", {"x": _rows(3), "y": np.eye(3)}, r"shape \(3,\); got shape \(3, 3\).*argmax"),
    "labels-fractional": (
        "xy.npz",
        {"x": _rows(3), "y": np.array([0.5, 1, 2])},
        r"integer class ids, but holds 1 float\(s\) that are not whole numbers \(the first, 0.5, at row 0\)",
    ),
    "no-keys": ("n.npz", {"images": _rows(3)}, r"either 'x' .* or 'train' and 'test'.*found keys: images"),
    "both-keys": ("n.npz", {"x": _rows(3), "train": _rows(3)}, "found keys: train, x"),
    "test-without-train": ("n.npz", {"x": _rows(3), "test": _rows(2)}, "has 'test' but no 'train'"),
    "y-without-x": ("n.npz", {"train": _rows(3), "test": _rows(2), "y": np.arange(3)}, "has 'y' but no 'x'"),
    "split-shapes": (
        "s.npz",
        {"train": _rows(3, (2, 3)), "test": _rows(2, (3, 2))},
        r"'test' rows have shape \(3, 2\) but 'train' rows have shape \(2, 3\)",
    ),
    "test-nan": ("s.npz", {"train": _rows(3), "test": nan_rows}, "'test' in .* has 1 NaN"),
}


@pytest.mark.parametrize("case", list(BAD_ARRAYS))
def test_bad_arrays(tmp_path, case):
    name, arrays, message = BAD_ARRAYS[case]
    path = _save(tmp_path / name, **arrays)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the error alone: no warning about ignored keys before it
        with pytest.raises(ValueError, match=message) as error:
            load_dataset(path)
    assert "\n" not in str(error.value)


def test_unreadable_missing_or_misnamed_files(tmp_path):
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    with pytest.raises(ValueError, match=r"cannot read .*junk.npy as a .npy file .*np.save"):
        load_dataset(tmp_path / "junk.npy")
    np.save(tmp_path / "x.npy", _rows(30))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "x.npy").read_bytes()[:-20])
    with pytest.raises(ValueError, match=r"cannot read .*cut.npy"):
        load_dataset(tmp_path / "cut.npy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"cannot read .*objects.npy .*allow_pickle=False"):
        load_dataset(tmp_path / "objects.npy")
    with pytest.raises(ValueError, match=r"no file .*absent.npz: check the path"):
        load_dataset(tmp_path / "absent.npz")
    with pytest.raises(ValueError, match="user data must be a .npy or .npz file, got"):
        load_array_dataset(tmp_path / "x.csv")
    with pytest.raises(ValueError, match="dataset must be one of digits, mnist, fashion-mnist, cifar10, celeba"):
        load_dataset("cifar100")
    with pytest.raises(ValueError, match=r"test_fraction must be a number in \(0, 1\)"):
        load_dataset(tmp_path / "x.npy", test_fraction=1.0)


def test_values_outside_the_likelihoods_support(tmp_path):
    np.save(tmp_path / "bytes.npy", np.full((6, 4), 255.0))
    with pytest.raises(ValueError, match=r"grey levels in \[0, 1\]; the train set has values in \[255, 255\]"):
        load_dataset(tmp_path / "bytes.npy", "dynamic")
    config = FitConfig(
        dataset=str(tmp_path / "bytes.npy"), binarize="none", out=str(tmp_path / "run"), epochs=1, device="cpu"
    )
    with pytest.raises(ValueError, match=r"the train set of .*bytes.npy has values in \[255, 255\].*not all 0 or 1"):
        fit_run(config, log=None, progress=False)
    assert not (tmp_path / "run").exists()


def test_fit_config_data_options(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 2)))
    for name in DATASETS:
        assert FitConfig(dataset=name).dataset == name
    config = FitConfig(dataset=tmp_path / "x.npy", data_dir=tmp_path, test_fraction=0.5)
    assert config.dataset == str(tmp_path / "x.npy") and config.data_dir == str(tmp_path)
    assert FitConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="dataset must be one of digits, mnist, fashion-mnist, cifar10, celeba"):
        FitConfig(dataset="cifar100")
    with pytest.raises(ValueError, match="looks like a .npy/.npz path, but there is no such file"):
        FitConfig(dataset=str(tmp_path / "y.npz"))
    for bad in (0, 1, 1.5, True, "0.2"):
        with pytest.raises(ValueError, match=r"test_fraction must be a number in \(0, 1\)"):
            FitConfig(test_fraction=bad)


# ---------------------------------------------------------------------------------------------
# the command line


def _fit(args: list[str]):
    return CliRunner().invoke(main, ["fit", "--no-progress", "--device", "cpu", *args])


def test_cli_trains_on_a_user_npy(tmp_path):
    x = (np.arange(20 * 6).reshape(20, 2, 3) % 3 == 0).astype(np.float32)
    np.save(tmp_path / "tiny.npy", x)
    out = tmp_path / "run"
    args = ["--dataset", str(tmp_path / "tiny.npy"), "--test-fraction", "0.25", "--epochs", "1"]
    result = _fit([*args, "--hidden", "8", "--z-dim", "2", "--batch-size", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = read_run_config(out)
    assert saved["dataset"] == str(tmp_path / "tiny.npy") and saved["test_fraction"] == 0.25
    resolved = saved["resolved"]
    assert resolved["image_shape"] == [2, 3] and resolved["x_dim"] == 6
    assert resolved["train_size"] == 15 and resolved["test_size"] == 5
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


BAD_CLI = {
    "nan": ("bad.npy", {"x": nan_rows}, [], "NaN or infinite values"),
    "support": ("grey.npy", {"x": np.full((5, 3), 0.5)}, ["--binarize", "none"], "not all 0 or 1"),
    "rank": ("bad.npy", {"x": np.zeros(5)}, [], r"shape \(N, \.\.\.\)"),
    "empty": ("bad.npy", {"x": np.zeros((0, 4))}, [], "is empty"),
    "labels": ("bad.npz", {"x": _rows(4), "y": np.arange(3)}, ["--likelihood", "gaussian"], "has 3 entries"),
    "idx-missing": (None, {}, ["--dataset", "fashion-mnist"], r"no folder .*apt-get install dataset-fashion-mnist"),
    "idx-truncated": ("idx", {}, ["--dataset", "mnist"], "is truncated"),
}


@pytest.mark.parametrize("case", list(BAD_CLI))
def test_cli_bad_data_is_one_line_and_writes_nothing(tmp_path, case):
    name, arrays, extra, message = BAD_CLI[case]
    args = []
    if name == "idx":
        write_idx_folder(tmp_path / "idx")
        labels = tmp_path / "idx" / IDX_FILES["train_labels"]
        labels.write_bytes(labels.read_bytes()[:-1])
        args = ["--data-dir", str(tmp_path / "idx")]
    elif name is None:
        args = ["--data-dir", str(tmp_path / "nowhere")]
    else:
        args = ["--dataset", str(_save(tmp_path / name, **arrays))]
    out = tmp_path / "out" / "run"
    result = _fit([*args, *extra, "--epochs", "1", "--out", str(out)])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "out").exists()


def test_cli_unknown_dataset_is_a_usage_error(tmp_path):
    result = _fit(["--dataset", "cifar100", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert (
        "Invalid value for '--dataset': expected one of digits, mnist, fashion-mnist, cifar10, celeba, folder:PATH or a"
        in result.output
    )
    result = _fit(["--dataset", str(tmp_path / "absent.npy"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and "there is no such file" in result.output
    result = _fit(["--test-fraction", "1", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "--test-fraction" in result.output
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# the real Fashion-MNIST (Debian package dataset-fashion-mnist)


@pytest.mark.skipif(
    not FASHION_MNIST_DIR.is_dir(),
    reason=f"{FASHION_MNIST_DIR} is absent (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist_trains():
    from pyrovae import VAE, fit
    from pyrovae.infer.elbo import estimate_elbo

    data = load_dataset("fashion-mnist", "dynamic")
    assert data.train.shape == (60000, 784) and data.test.shape == (10000, 784) and data.image_shape == (28, 28)
    assert data.train.min() == 0 and data.train.max() == 1 and ((data.test == 0) | (data.test == 1)).all()
    assert data.train_labels.bincount().tolist() == [6000] * 10
    assert data.test_labels.bincount().tolist() == [1000] * 10

    # 300 steps of batch 128 on the first 12800 training images; the test ELBO on 2000 test images
    subset = replace(data, train=data.train[:12800], test=data.test[:2000], train_labels=None, test_labels=None)
    vae = VAE(subset.x_dim, z_dim=8, hidden_dims=(64,), image_shape=subset.image_shape)
    before = estimate_elbo(vae, subset.test)
    start = time.perf_counter()
    history = fit(vae, subset, FitOptions(epochs=3, batch_size=128, seed=0))
    assert len(history.step_elbos) == 300
    after = history.last["test_elbo"]
    # an untrained decoder says p = 1/2 per pixel: 784 log 2 = 543 nats, plus the KL
    assert before < -540
    print(f"fashion-mnist test ELBO {before:.1f} -> {after:.1f} in {time.perf_counter() - start:.1f} s")
    assert after > before + 150 and after > -340, (before, after)
