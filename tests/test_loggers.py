"""--logger csv|tensorboard|mlflow: what each writes, read back with the library's own reader and
compared with metrics.jsonl; a resumed run appends without logging a step twice; a writer that fails
stops alone, said once, and the run goes on."""

import csv
import json
import math

import pytest
import torch
from click.testing import CliRunner

from pyrovae.cli import main
from pyrovae.commands import read_metrics
from pyrovae.errors import DependencyError
from pyrovae.train.log_writers import CSVWriter
from pyrovae.train.loggers import TrainingLogger, epoch_values, image_grid

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

TINY = ["--dataset", "digits", "--hidden", "16", "--z-dim", "2", "--batch-size", "256", "--device", "cpu",
        "--no-progress"]  # fmt: skip
STEPS_PER_EPOCH = math.ceil(1438 / 256)  # 6


@pytest.fixture(autouse=True)
def _local_mlflow_store(monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def fit(*args):
    result = CliRunner().invoke(main, ["fit", *TINY, *map(str, args)])
    assert result.exit_code == 0, result.output
    return result


def read_steps(run):
    with (run / "steps.csv").open(newline="") as handle:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(handle)]


def tensorboard_scalars(run):
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events, {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def mlflow_run(run):
    client = MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    return client, json.loads((run / "mlflow_run.json").read_text())["run_id"]


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    run = tmp_path_factory.mktemp("logged") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        fit("--epochs", 2, "--validation", 100, "--out", run, "--logger", "csv,tensorboard", "--logger", "mlflow",
            "--log-every", 4)  # fmt: skip
    return run


def test_csv_holds_every_field_of_metrics_jsonl(logged):
    records = read_metrics(logged)
    with (logged / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(records) == 2
    for row, record in zip(rows, records, strict=True):
        for key, value in epoch_values(record).items():
            assert float(row[key]) == value, key
        assert row["kl_mode/z"] == "analytic" and "validation_kl_sites/z" in row
    history = torch.load(logged / "checkpoint.pt", weights_only=True)["resume"]["history"]["step_elbos"]
    expected = [(s, -history[s - 1]) for s in range(4, 2 * STEPS_PER_EPOCH + 1, 4)]
    assert read_steps(logged) == expected


def test_tensorboard_scalars_and_pictures_equal_metrics_jsonl(logged):
    events, scalars = tensorboard_scalars(logged)
    records = read_metrics(logged)
    for record in records:
        for key, value in epoch_values(record).items():
            found = dict(scalars[key])
            assert found[record["step"]] == pytest.approx(value, rel=1e-6), key  # (TensorBoard keeps float32)
    assert [s for s, _ in scalars["loss"]] == [4, 8, 12]
    assert set(events.Tags()["images"]) == {"samples", "reconstructions"}
    picture = events.Images("samples")[-1]
    assert picture.step == records[-1]["step"] and picture.width == 8 * 9 + 1  # 8 pictures of 8 px, 1 px apart


def test_mlflow_metrics_params_and_pictures_equal_metrics_jsonl(logged):
    client, run_id = mlflow_run(logged)
    run = client.get_run(run_id)
    assert run.data.params["dataset"] == "digits" and run.data.params["z_dim"] == "2"
    for record in read_metrics(logged):
        for key, value in epoch_values(record).items():
            history = {m.step: m.value for m in client.get_metric_history(run_id, key)}
            assert history[record["step"]] == value, key
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [4, 8, 12]
    artifacts = [a.path for a in client.list_artifacts(run_id)]
    assert "images" in artifacts and run.info.status == "FINISHED"


def test_a_resumed_run_appends_without_a_step_twice(tmp_path):
    run = tmp_path / "run"
    fit("--epochs", 1, "--out", run, "--logger", "csv,tensorboard,mlflow", "--log-every", 2)
    # a run stopped after its checkpoint may have logged steps past it: the resumed run holds each once
    with (run / "steps.csv").open("a") as handle:
        handle.write("8,123.0\n")
    result = CliRunner().invoke(main, ["fit", "--resume", str(run), "--epochs", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    steps = [s for s, _ in read_steps(run)]
    assert steps == list(range(2, 2 * STEPS_PER_EPOCH + 1, 2)) and 123.0 not in dict(read_steps(run)).values()
    with (run / "metrics.csv").open(newline="") as handle:
        assert [int(r["epoch"]) for r in csv.DictReader(handle)] == [1, 2]
    _, scalars = tensorboard_scalars(run)
    assert [s for s, _ in scalars["loss"]] == steps and [s for s, _ in scalars["test_elbo"]] == [6, 12]
    client, run_id = mlflow_run(run)
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == steps
    assert [m.step for m in client.get_metric_history(run_id, "epoch")] == [6, 12]
    assert dict(scalars["test_elbo"])[12] == pytest.approx(read_metrics(run)[-1]["test_elbo"], rel=1e-6)


def test_a_full_disk_mid_run_stops_that_logger_alone_said_once(tmp_path, monkeypatch):
    calls = []

    def full(self, values, step):
        calls.append(step)
        if step >= 4:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(CSVWriter, "scalars", full)
    run = tmp_path / "run"
    result = fit("--epochs", 2, "--out", run, "--logger", "csv,tensorboard", "--log-every", 2)
    said = [line for line in result.output.splitlines() if "stopped" in line]
    assert said == [f"Warning: logging to {run / 'metrics.csv'} stopped: [Errno 28] No space left on device"]
    assert calls == [2, 4]  # never called again
    assert len(read_metrics(run)) == 2 and (run / "checkpoint.pt").is_file()
    _, scalars = tensorboard_scalars(run)  # the other logger went on
    assert [s for s, _ in scalars["loss"]] == list(range(2, 13, 2))


def test_an_unwritable_logging_folder_is_said_once_and_the_run_goes_on(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "tensorboard").write_text("a file where the folder would go")
    result = fit("--epochs", 1, "--out", run, "--logger", "tensorboard")
    said = [line for line in result.output.splitlines() if "stopped" in line]
    assert len(said) == 1 and said[0].startswith(f"Warning: logging to {run / 'tensorboard'} stopped:")
    assert len(read_metrics(run)) == 1


def test_an_mlflow_server_that_cannot_be_reached_is_one_line_and_the_run_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    run = tmp_path / "run"
    result = fit("--epochs", 1, "--out", run, "--logger", "mlflow", "--mlflow-uri", "http://127.0.0.1:9")
    said = [line for line in result.output.splitlines() if "stopped" in line]
    assert len(said) == 1 and said[0].startswith("Warning: logging to http://127.0.0.1:9 stopped:")
    assert len(read_metrics(run)) == 1 and not (run / "mlruns").exists()


def test_a_missing_extra_is_refused_in_one_line_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "tensorboard", None)
    result = CliRunner().invoke(main, ["fit", *TINY, "--out", str(tmp_path / "run"), "--logger", "tensorboard"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: --logger tensorboard needs the tensorboard package, which is not installed: pip install "
        '"pyrovae[tensorboard]" (or leave --logger tensorboard out)'
    ]
    assert not (tmp_path / "run").exists()
    assert issubclass(DependencyError, Exception)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--logger", "wandb"], "--logger must name some of csv, tensorboard, mlflow"),
        (["--log-every", "0"], "--log-every"),
    ],
)
def test_bad_logging_options_are_one_line(args, message):
    result = CliRunner().invoke(main, ["fit", *TINY, *args])
    assert result.exit_code == 2 and message in result.output


def test_the_logging_options_round_trip_through_a_run_file(tmp_path):
    printed = CliRunner().invoke(main, ["fit", "--logger", "csv,mlflow", "--log-every", "7", "--print-config"])
    assert printed.exit_code == 0 and "[logging]" in printed.output
    path = tmp_path / "run.toml"
    path.write_text(printed.output)
    again = CliRunner().invoke(main, ["fit", "--config", str(path), "--print-config"])
    assert again.output == printed.output and 'loggers = [\n    "csv",\n    "mlflow",\n]' in again.output


def test_image_grid_lays_pictures_out_with_a_pixel_between():
    x = torch.zeros(3, 4)
    x[1] = 1.0
    grid = image_grid(x, (2, 2), ncols=2)
    assert grid.shape == (2 * 3 + 1, 2 * 3 + 1, 3) and grid.dtype.name == "uint8"
    assert (grid[1:3, 4:6] == 255).all() and (grid[1:3, 1:3] == 0).all() and grid[0, 0, 0] == 128


def test_a_logger_that_fails_to_open_is_dropped_and_said(tmp_path):
    said = []

    class Broken(CSVWriter):
        def open(self, resume_step, params):
            raise PermissionError(13, "Permission denied", str(self.epochs_path))

    logger = TrainingLogger([Broken(tmp_path)], say=said.append)
    assert logger.writers == [] and len(said) == 1 and "Permission denied" in said[0]


def test_a_start_stopped_before_its_first_checkpoint_leaves_no_logger_files(tmp_path, monkeypatch):
    from pyrovae.train import loop

    def fail(self, *args, **kwargs):
        raise RuntimeError("stopped in the first epoch")

    monkeypatch.setattr(loop._Trainer, "_record", fail)
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["fit", *TINY, "--out", str(run), "--logger", "csv,tensorboard,mlflow",
                                       "--log-every", "1"])  # fmt: skip
    assert isinstance(result.exception, RuntimeError)
    assert not run.exists()


def test_a_run_that_replaces_another_logs_into_the_folder_it_becomes(tmp_path):
    run = tmp_path / "run"
    fit("--epochs", 1, "--out", run)
    result = fit("--epochs", 2, "--out", run, "--overwrite", "--logger", "csv,tensorboard", "--log-every", 3)
    assert "stopped" not in result.output
    with (run / "metrics.csv").open(newline="") as handle:
        assert [int(r["epoch"]) for r in csv.DictReader(handle)] == [1, 2]
    assert [s for s, _ in read_steps(run)] == [3, 6, 9, 12]
    _, scalars = tensorboard_scalars(run)
    assert [s for s, _ in scalars["test_elbo"]] == [6, 12]
