"""The registry of data sets: a data set is a class and one registration, the built-in ones too;
``--dataset`` is checked against it (without torch), and the data options round-trip through run files."""

import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from pyrovae.cli import main
from pyrovae.config import FitConfig
from pyrovae.data import Dataset, DatasetSource, load_dataset, register_dataset
from pyrovae.data.registry import DataOptions, source_of
from pyrovae.data.sources import Cifar10, Digits, FashionMnist, NpyFile, NpzFile
from pyrovae.errors import DataError
from pyrovae.spec import datasets as registry


class Ramp(DatasetSource):
    """A data set of a user's: ``ramp`` or ``ramp:N`` rows of grey levels."""

    def rows(self):
        if self.argument is None or self.argument.endswith(".ramp"):
            return 20
        if not self.argument.isdigit():
            raise DataError(f"ramp:N needs a number of rows, got {self.argument!r}")
        return int(self.argument)

    def check(self):
        self.rows()

    def load(self):
        n = self.rows()
        x = torch.linspace(0, 1, n * 4).reshape(n, 4)
        return Dataset(f"ramp{n}", x[: n - 5], x[n - 5 :], (2, 2))


@pytest.fixture
def ramp(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    register_dataset("ramp", Ramp)
    register_dataset("ramp:", Ramp)
    register_dataset(".ramp", Ramp)


def test_the_built_in_data_sets_are_registered_classes():
    options = DataOptions()
    assert type(source_of("digits", options)) is Digits
    assert type(source_of("fashion-mnist", options)) is FashionMnist
    assert type(source_of("cifar10", options)) is Cifar10
    assert type(source_of("data/x.NPY", options)) is NpyFile and source_of("x.npz", options).argument == "x.npz"
    assert type(source_of("x.npz", options)) is NpzFile
    assert source_of("folder:/some/where", options).argument == "/some/where"
    assert set(registry.dataset_names()) >= {"digits", "mnist", "fashion-mnist", "cifar10", "celeba", "folder:"}


def test_a_registered_class_is_loaded_by_name_prefix_and_suffix(ramp, tmp_path):
    data = load_dataset("ramp", "dynamic")
    assert data.name == "ramp20" and data.dynamic_binarization and data.notes == ("data=resident",)
    assert load_dataset("ramp:30").train.shape == (25, 4)
    assert load_dataset(str(tmp_path / "a.ramp")).name == "ramp20"
    assert FitConfig(dataset="ramp:12").dataset == "ramp:12"
    with pytest.raises(DataError, match="ramp:N needs a number of rows, got 'x'"):
        FitConfig(dataset="ramp:x")  # the class's own check, before anything is loaded
    streamed = load_dataset("ramp", data_loader="stream", workers=0)
    assert streamed.streamed and torch.equal(streamed.train.materialize(), load_dataset("ramp").train)


def test_registrations_are_checked(ramp):
    with pytest.raises(DataError, match="'ramp' is already registered to .*Ramp: choose another name"):
        register_dataset("ramp", Digits)
    register_dataset("ramp", Ramp)  # the same class again: nothing to say
    for bad in ("", "two words", "a:b:", ".", "x:y"):
        with pytest.raises(DataError, match="data set (name|suffix|prefix)"):
            register_dataset(bad, Ramp)
    register_dataset("plain", dict)
    with pytest.raises(DataError, match="is registered to <class 'dict'>, which is not a pyrovae.data.DatasetSource"):
        load_dataset("plain")
    register_dataset("gone", "no_such_module:Thing")
    with pytest.raises(DataError, match="registered to no_such_module:Thing, which cannot be imported"):
        load_dataset("gone")
    with pytest.raises(DataError, match="dataset 'folder:' names no path: write folder:PATH"):
        load_dataset("folder:")


def test_the_command_line_checks_names_against_the_registry_without_torch():
    code = (
        "import sys\n"
        "from pyrovae.cli import main\n"
        "try:\n"
        "    main(['fit', '--dataset', 'imagenet'], prog_name='pyrovae')\n"
        "except SystemExit as stop:\n"
        "    print('torch' in sys.modules, stop.code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "False 2", done.stderr
    assert "Invalid value for '--dataset': expected one of digits, mnist, fashion-mnist, cifar10, celeba" in done.stderr
    assert "folder:PATH or a path to a .npy/.npz file; got 'imagenet'" in done.stderr


def test_the_data_options_round_trip_through_a_run_file(tmp_path):
    args = ["fit", "--data-loader", "stream", "--workers", "2", "--image-size", "32", "--skip-bad-images",
            "--cache-dir", str(tmp_path / "cache"), "--print-config"]  # fmt: skip
    printed = CliRunner().invoke(main, args)
    assert printed.exit_code == 0, printed.output
    assert (
        'loader = "stream"' in printed.output
        and "workers = 2" in printed.output
        and "image_size = 32" in printed.output
    )
    (tmp_path / "run.toml").write_text(printed.output)
    again = CliRunner().invoke(main, ["fit", "--config", str(tmp_path / "run.toml"), "--print-config"])
    assert again.output == printed.output
    bad = CliRunner().invoke(main, ["fit", "--data-loader", "disk"])
    assert bad.exit_code == 2 and "'disk' is not one of 'auto', 'resident', 'stream'" in bad.output


def test_celeba_sets_its_defaults_where_the_command_line_left_them(tmp_path):
    (tmp_path / "img_align_celeba").mkdir()
    printed = CliRunner().invoke(main, ["fit", "--dataset", "celeba", "--data-dir", str(tmp_path), "--print-config"])
    assert printed.exit_code == 0, printed.output
    assert 'arch = "conv"' in printed.output and 'likelihood = "discretized-logistic"' in printed.output
    assert "image_size = 64" in printed.output
    mine = CliRunner().invoke(main, ["fit", "--dataset", "celeba", "--data-dir", str(tmp_path), "--arch", "mlp",
                                     "--image-size", "16", "--print-config"])  # fmt: skip
    assert 'arch = "mlp"' in mine.output and "image_size = 16" in mine.output
    assert json.dumps(FitConfig().image_size) == "null"  # other data sets: the images' own size
