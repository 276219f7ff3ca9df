"""pyrovae reports through Python's logging (logger "pyrovae"); the command line configures it, with
--quiet / --verbose on the group or on a command; a log= callable of the API still gets every line."""

import logging

import pytest
from click.testing import CliRunner

from pyrovae.cli import main
from pyrovae.commands import fit_run
from pyrovae.config import FitConfig
from pyrovae.reporting import LOGGER

TINY = ["--hidden", "8", "--z-dim", "2", "--batch-size", "512", "--epochs", "1", "--device", "cpu", "--no-progress"]


def fit(tmp_path, *args):
    result = CliRunner().invoke(main, [*args[:1], "fit", *TINY, "--out", str(tmp_path / "run"), *args[1:]])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_the_command_says_its_lines_by_default(tmp_path):
    lines = fit(tmp_path, "--verbose")  # (the group's flag; then the default for the next invocation)
    assert lines[0].startswith("pyrovae fit:") and any(line.startswith("epoch   1/1") for line in lines)
    lines = CliRunner().invoke(main, ["fit", *TINY, "--out", str(tmp_path / "two")]).output.splitlines()
    assert lines[0].startswith("pyrovae fit:") and LOGGER.level == logging.INFO


@pytest.mark.parametrize("where", ["group", "command"])
def test_quiet_says_nothing_but_warnings(tmp_path, where):
    args = ["--quiet"] if where == "group" else [None, "--quiet"]
    result = CliRunner().invoke(
        main, [a for a in [*args[:1], "fit", *TINY, "--out", str(tmp_path / "run"), *args[1:]] if a is not None]
    )
    assert result.exit_code == 0, result.output
    assert result.output == ""
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == 1


def test_quiet_still_says_that_a_logger_stopped(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "tensorboard").write_text("not a folder")
    pytest.importorskip("tensorboard")
    result = CliRunner().invoke(main, ["--quiet", "fit", *TINY, "--out", str(tmp_path / "run"), "--logger",
                                       "tensorboard"])  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Warning: logging to ") and "stopped" in lines[0]


def test_the_library_reports_through_the_pyrovae_logger(tmp_path, caplog):
    config = FitConfig(hidden_dims=(8,), z_dim=2, batch_size=512, epochs=1, device="cpu", out=str(tmp_path / "run"))
    with caplog.at_level(logging.INFO, logger="pyrovae"):
        fit_run(config, progress=False)
    said = [r.getMessage() for r in caplog.records if r.name == "pyrovae"]
    assert said[0].startswith("pyrovae fit:") and any(line.startswith("epoch   1/1") for line in said)
    assert said[-1].startswith("wrote config.json")


def test_a_log_callable_still_gets_every_line(tmp_path, caplog):
    lines = []
    config = FitConfig(hidden_dims=(8,), z_dim=2, batch_size=512, epochs=1, device="cpu", out=str(tmp_path / "run"))
    with caplog.at_level(logging.INFO, logger="pyrovae"):
        fit_run(config, log=lines.append, progress=False)
    assert lines[0].startswith("pyrovae fit:") and lines[-1].startswith("wrote config.json")
    assert not [r for r in caplog.records if r.name == "pyrovae"]  # (said to the callable instead)


def test_every_command_takes_quiet_and_says_its_files_otherwise(tmp_path):
    fit(tmp_path)
    run = str(tmp_path / "run")
    said = CliRunner().invoke(main, ["sample", run, "--out", str(tmp_path / "s.png")])
    assert said.exit_code == 0 and said.output == f"wrote {tmp_path / 's.png'}\n"
    quiet = CliRunner().invoke(main, ["sample", run, "--out", str(tmp_path / "q.png"), "--quiet"])
    assert quiet.exit_code == 0 and quiet.output == "" and (tmp_path / "q.png").is_file()
    quiet = CliRunner().invoke(main, ["--quiet", "evaluate", run, "--k", "2", "--points", "5"])
    assert quiet.exit_code == 0, quiet.output
    assert quiet.output == "" and (tmp_path / "run" / "evaluation.json").is_file()
