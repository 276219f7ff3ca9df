"""Image folders (``--dataset folder:PATH``) and CelebA: decoded once into a memory-mapped cache,
trained on, evaluated, sampled and plotted; every bad input refused in one line naming the file."""

import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import tomllib
import torch
from click.testing import CliRunner

from pyrovae.cli import main
from pyrovae.commands import read_run_config
from pyrovae.data import load_dataset
from pyrovae.data.image_cache import CACHE_FOLDER, decoded_images

Image = pytest.importorskip("PIL.Image")

TINY = ["--epochs", "1", "--batch-size", "8", "--hidden", "16", "--z-dim", "2", "--device", "cpu"]


def write_images(folder: Path, n: int = 24, size=(16, 16), mode: str = "RGB", seed: int = 0, suffix=".png"):
    """``n`` random images in ``folder`` (names 000.png ...); returns their pixels in name order."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = []
    for i in range(n):
        array = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
        image = Image.fromarray(array).convert(mode)
        image.save(folder / f"{i:03d}{suffix}")
        pixels.append(np.asarray(image))
    return np.stack(pixels)


def _fit(args, out):
    return CliRunner().invoke(main, ["fit", "--out", str(out), *TINY, *args])


@pytest.mark.parametrize("mode,shape", [("L", (16, 16)), ("RGB", (3, 16, 16))], ids=["grey", "rgb"])
def test_a_folder_trains_and_its_run_evaluates_samples_and_plots(tmp_path, mode, shape):
    pixels = write_images(tmp_path / "images", mode=mode)
    run = tmp_path / "run"
    result = _fit(["--dataset", f"folder:{tmp_path / 'images'}", "--likelihood", "discretized-logistic"], run)
    assert result.exit_code == 0, result.output
    assert "decoded 24 images in" in result.output and "data=resident" in result.output
    config = read_run_config(run)
    assert config["resolved"]["image_shape"] == list(shape) and config["resolved"]["train_size"] == 19
    # the cache holds the pixels of the files, in name order
    cache = np.load(tmp_path / "images" / CACHE_FOLDER / "images-native.npy")
    expected = pixels if mode == "L" else pixels.transpose(0, 3, 1, 2)
    assert np.array_equal(cache, expected)
    for command in (["evaluate", str(run), "--k", "3", "--device", "cpu"], ["sample", str(run)], ["plots", str(run)]):
        done = CliRunner().invoke(main, command)
        assert done.exit_code == 0, (command, done.output)
    assert json.loads((run / "evaluation.json").read_text())["summary"]["bits_per_dim"] > 0
    assert (run / "samples.png").is_file() and (run / "latent.png").is_file()


def test_the_cache_is_reused_and_rebuilt_when_the_folder_changes(tmp_path):
    write_images(tmp_path, n=6)
    first = load_dataset(f"folder:{tmp_path}", data_loader="stream")
    assert any(note.startswith("decoded 6 images") for note in first.notes)
    again = load_dataset(f"folder:{tmp_path}", data_loader="stream")
    assert not any(note.startswith("decoded") for note in again.notes)  # read from the cache
    assert torch.equal(first.test, again.test)
    write_images(tmp_path, n=8, seed=1)  # two more files, and the first six changed
    changed = load_dataset(f"folder:{tmp_path}", data_loader="resident")
    assert any(note.startswith("decoded 8 images") for note in changed.notes)
    assert changed.train.shape[0] + changed.test.shape[0] == 8


def test_images_are_center_cropped_and_resized_to_image_size(tmp_path):
    write_images(tmp_path, n=3, size=(20, 12))  # wide images: the middle 12x12 is kept, then resized
    data = load_dataset(f"folder:{tmp_path}", image_size=6, test_fraction=0.34, cache_dir=str(tmp_path / "c"))
    assert data.image_shape == (3, 6, 6)
    with Image.open(tmp_path / "000.png") as image:
        expected = np.asarray(image.crop((4, 0, 16, 12)).resize((6, 6), Image.Resampling.BILINEAR, reducing_gap=3.0))
    cache = np.load(tmp_path / "c" / "images-6.npy")
    assert np.array_equal(cache[0], expected.transpose(2, 0, 1))
    assert float(data.train.max()) <= 1.0 and data.train.dtype == torch.float32


def _bad(tmp_path: Path, case: str) -> Path:
    folder = tmp_path / case
    write_images(folder, n=4, size=(8, 8))
    if case == "corrupt":
        (folder / "002.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    elif case == "truncated":
        data = (folder / "002.png").read_bytes()
        (folder / "002.png").write_bytes(data[: len(data) // 2])
    elif case == "not-an-image":
        (folder / "002.png").write_text("a text file under an image name")
    elif case == "mixed-modes":
        Image.new("L", (8, 8)).save(folder / "002.png")
    elif case == "mixed-sizes":
        Image.new("RGB", (9, 8)).save(folder / "002.png")
    elif case == "unreadable":
        os.chmod(folder / "002.png", 0)
    return folder


BAD = {
    "corrupt": r"002.png is (not an image Pillow can read|damaged).*remove or replace it, or pass --skip-bad-images",
    "truncated": r"002.png is (truncated|damaged|not an image).*--skip-bad-images",
    "not-an-image": r"002.png is not an image Pillow can read: remove or replace it",
    "mixed-modes": r"holds grey and RGB images \(000.png is RGB, 002.png is grey\): convert them to one mode",
    "mixed-sizes": r"002.png is 9x8 but 000.png is 8x8: .* pass --image-size N",
    "unreadable": r"002.png (cannot be read \(Permission denied\)|is).*--skip-bad-images",
}


@pytest.mark.parametrize("case", list(BAD))
def test_every_bad_folder_is_one_line_naming_the_file(tmp_path, case):
    folder = _bad(tmp_path, case)
    if case == "unreadable" and os.access(folder / "002.png", os.R_OK):
        pytest.skip("this user reads files whatever their permissions (root)")
    result = _fit(["--dataset", f"folder:{folder}", "--likelihood", "gaussian"], tmp_path / "run")
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert __import__("re").search(BAD[case], lines[0]), lines[0]
    assert not (tmp_path / "run").exists()  # refused before a run directory was made


@pytest.mark.parametrize("case", ["corrupt", "truncated", "not-an-image"])
def test_bad_images_are_skipped_and_counted_on_the_start_line(tmp_path, case):
    folder = _bad(tmp_path, case)
    result = _fit(["--dataset", f"folder:{folder}", "--likelihood", "gaussian", "--skip-bad-images"], tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert "skipped 1 bad images (such as 002.png: it is" in result.output.splitlines()[0]
    config = read_run_config(tmp_path / "r")
    assert config["resolved"]["train_size"] + config["resolved"]["test_size"] == 3
    assert config["skip_bad_images"] is True


def test_an_empty_folder_a_missing_one_and_other_files(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    result = _fit(["--dataset", f"folder:{tmp_path / 'empty'}"], tmp_path / "run")
    assert result.exit_code == 1 and "holds no images (it has 1 other files, such as notes.txt)" in result.output
    result = _fit(["--dataset", f"folder:{tmp_path / 'absent'}"], tmp_path / "run")
    assert result.exit_code == 1 and "no folder" in result.output and "absent" in result.output
    write_images(tmp_path / "some", n=5, size=(8, 8))
    (tmp_path / "some" / "readme.md").write_text("x")
    data = load_dataset(f"folder:{tmp_path / 'some'}")
    assert any("ignored 1 files that are not images (such as readme.md)" in note for note in data.notes)


def test_a_cache_cut_short_or_of_another_version(tmp_path):
    write_images(tmp_path, n=5, size=(8, 8))
    load_dataset(f"folder:{tmp_path}")
    cache = tmp_path / CACHE_FOLDER / "images-native.npy"
    cache.write_bytes(cache.read_bytes()[:-50])
    result = _fit(["--dataset", f"folder:{tmp_path}", "--likelihood", "gaussian"], tmp_path / "run")
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert f"the image cache {cache} is cut short or damaged" in result.output and "delete it" in result.output
    manifest = cache.with_suffix(".json")
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "format": 0}))
    data = load_dataset(f"folder:{tmp_path}")  # another version's cache: decoded again, and said
    assert any("written by another version of pyrovae: decoded again" in note for note in data.notes)
    assert np.load(cache).shape == (5, 3, 8, 8)


def _build(folder: str, out: str) -> None:
    images = decoded_images(folder, None)
    Path(out).write_text(json.dumps({"shape": list(images.array.shape), "notes": images.notes}))


def test_two_processes_building_the_cache_at_once_take_turns(tmp_path):
    write_images(tmp_path / "images", n=40, size=(16, 16))
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_build, args=(str(tmp_path / "images"), str(tmp_path / f"{i}.json"))) for i in range(2)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    reports = [json.loads((tmp_path / f"{i}.json").read_text()) for i in range(2)]
    assert all(report["shape"] == [40, 3, 16, 16] for report in reports)
    decoded = [any(note.startswith("decoded") for note in report["notes"]) for report in reports]
    assert sorted(decoded) == [False, True]  # one decoded, the other waited and read its cache
    assert not [p.name for p in (tmp_path / "images" / CACHE_FOLDER).iterdir() if ".tmp" in p.name]


def _celeba(root: Path, partition: bool = True) -> None:
    write_images(root / "img_align_celeba", n=12, size=(18, 22), suffix=".jpg")
    for i, path in enumerate(sorted((root / "img_align_celeba").iterdir())):
        path.rename(path.with_name(f"{i + 1:06d}.jpg"))
    if partition:
        lines = [f"{i + 1:06d}.jpg {0 if i < 8 else 1 if i < 10 else 2}" for i in range(12)]
        (root / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")


def test_celeba_trains_with_its_defaults_and_reports_bits_per_dim(tmp_path):
    _celeba(tmp_path / "celeba")
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["fit", "--dataset", "celeba", "--data-dir", str(tmp_path / "celeba"),
                                       "--image-size", "8", "--epochs", "1", "--batch-size", "4", "--z-dim", "2",
                                       "--channels", "4,8", "--device", "cpu", "--out", str(run)])  # fmt: skip
    assert result.exit_code == 0, result.output
    config = read_run_config(run)
    assert (config["arch"], config["likelihood"], config["image_size"]) == ("conv", "discretized-logistic", 8)
    assert (config["resolved"]["train_size"], config["resolved"]["test_size"]) == (8, 2)  # partitions 0 and 2
    assert config["resolved"]["image_shape"] == [3, 8, 8]
    done = CliRunner().invoke(main, ["evaluate", str(run), "--k", "3", "--device", "cpu"])
    assert done.exit_code == 0, done.output
    assert "bits per dim" in done.output


def test_celeba_defaults_apply_from_a_run_file_where_nothing_sets_them(tmp_path):
    _celeba(tmp_path / "celeba")
    run_file = tmp_path / "run.toml"

    def printed(body, *args):
        run_file.write_text(f'[data]\ndataset = "celeba"\ndata_dir = "{tmp_path / "celeba"}"\n{body}')
        result = CliRunner().invoke(main, ["fit", "--config", str(run_file), *args, "--print-config"])
        assert result.exit_code == 0, result.output
        spec = tomllib.loads(result.output)
        return spec["model"]["arch"], spec["model"]["likelihood"], spec["data"]["image_size"]

    assert printed("") == ("conv", "discretized-logistic", 64)  # the data set's defaults
    assert printed('[model]\narch = "mlp"\n') == ("mlp", "discretized-logistic", 64)  # the file's own value
    assert printed("", "--likelihood", "gaussian") == ("conv", "gaussian", 64)  # the command line's
    run_file.write_text('[data]\ndataset = "digits"\n')  # celeba named on the command line only
    result = CliRunner().invoke(main, ["fit", "--config", str(run_file), "--dataset", "celeba", "--data-dir",
                                       str(tmp_path / "celeba"), "--print-config"])  # fmt: skip
    assert tomllib.loads(result.output)["model"]["arch"] == "conv"


def test_celeba_without_a_partition_file_or_a_folder(tmp_path):
    _celeba(tmp_path, partition=False)
    data = load_dataset("celeba", data_dir=tmp_path, image_size=4, test_fraction=0.25)
    assert (data.train.shape[0], data.test.shape[0], data.image_shape) == (9, 3, (3, 4, 4))
    (tmp_path / "list_eval_partition.txt").write_text("000001.jpg 0\nnonsense\n")
    with pytest.raises(ValueError, match=r"list_eval_partition.txt, line 2: expected 'FILE.jpg 0\|1\|2'"):
        load_dataset("celeba", data_dir=tmp_path, image_size=4)
    with pytest.raises(ValueError, match=r"celeba: no folder .*img_align_celeba; put the aligned-and-cropped"):
        load_dataset("celeba", data_dir=tmp_path / "nowhere")
    result = CliRunner().invoke(main, ["fit", "--dataset", "celeba", "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and "celeba has no default folder to look in" in result.output


# a pyrovae entry point whose decoding of each image takes a few milliseconds more, so that a signal
# sent once the first image is decoded surely arrives while the cache is being built
_SLOW_DECODE = """
import time

import pyrovae.data.image_cache as image_cache
from pyrovae.__main__ import main

decode = image_cache._decode


def slow(*args, **kwargs):
    time.sleep(0.01)
    return decode(*args, **kwargs)


image_cache._decode = slow
main()
"""


def test_sigterm_to_torchrun_during_the_cache_build_leaves_nothing_a_later_run_trusts(tmp_path):
    import signal
    import socket
    import subprocess
    import sys
    import time

    folder, cache = tmp_path / "images", tmp_path / "images" / CACHE_FOLDER
    write_images(folder, n=300, size=(24, 24))
    (tmp_path / "slow_pyrovae.py").write_text(_SLOW_DECODE)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["fit", "--dataset", f"folder:{folder}", "--likelihood", "gaussian", "--no-progress", *TINY]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
                str(tmp_path / "slow_pyrovae.py"), *args, "--out", str(tmp_path / "run")]  # fmt: skip
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(torchrun, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (cache.is_dir() and any(p.name.endswith(".tmp") for p in cache.iterdir())):  # the build began
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode != 0
    # pyrovae's ranks say one line between them (torchrun adds its own report of the signal it got)
    ours = [line for line in (out + err).splitlines() if "stopped by SIGTERM" in line]
    assert ours == [f"stopped by SIGTERM. No checkpoint had been written yet to {tmp_path / 'run'}, so the start "
                    "was not kept"], out + err  # fmt: skip
    assert not any("pyrovae" in line for line in err.splitlines() if line.startswith("  File ")), err
    assert not (tmp_path / "run").exists()
    # nothing half-built that a later run could trust: no temporary file, no manifest without its array
    assert not [p.name for p in cache.iterdir() if ".tmp" in p.name]
    assert not (cache / "images-native.json").exists()
    # and no lock that blocks the next run: it decodes the folder again and trains
    result = _fit(["--dataset", f"folder:{folder}", "--likelihood", "gaussian"], tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "decoded 300 images" in result.output
    assert np.load(cache / "images-native.npy").shape == (300, 3, 24, 24)


def test_what_a_killed_builder_left_is_removed_and_never_trusted(tmp_path, monkeypatch):
    import pyrovae.data.image_cache as image_cache

    write_images(tmp_path, n=6, size=(8, 8))
    load_dataset(f"folder:{tmp_path}")  # a whole cache of the folder as it is
    cache = tmp_path / CACHE_FOLDER
    stale = [cache / "images-native.npy.424242.tmp", cache / "images-native.json.424242.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    (tmp_path / "005.png").rename(tmp_path / "moved.png")  # the folder changes: the cache is built again...
    original = image_cache.os.replace

    def killed_before_the_manifest(source, target):
        original(source, target)
        if str(target).endswith(".npy"):  # ...and the builder dies as soon as the new array is in place
            raise KeyboardInterrupt

    monkeypatch.setattr(image_cache.os, "replace", killed_before_the_manifest)
    with pytest.raises(KeyboardInterrupt):
        load_dataset(f"folder:{tmp_path}")
    monkeypatch.setattr(image_cache.os, "replace", original)
    assert not [p for p in stale if p.exists()]  # the next builder removed what a killed one left
    assert not [p.name for p in cache.iterdir() if ".tmp" in p.name]
    (tmp_path / "moved.png").rename(tmp_path / "005.png")  # back as it was: the old manifest is gone with it
    data = load_dataset(f"folder:{tmp_path}")
    assert any(note.startswith("decoded 6 images") for note in data.notes)
    assert data.train.shape[0] + data.test.shape[0] == 6
