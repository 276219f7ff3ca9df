"""``pyrovae fit --resume RUN --logger NAME``: a logger added to a run that had none (or another) logs
from the resumed step on, no step twice, read back with the libraries' own readers; config.json
records it, and later resumes keep it."""

import csv
import json

import pytest
from click.testing import CliRunner

from pyrovae.cli import main
from pyrovae.commands import read_metrics

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

TINY = ["--dataset", "digits", "--hidden", "16", "--z-dim", "2", "--batch-size", "256", "--device", "cpu",
        "--no-progress"]  # fmt: skip
STEPS_PER_EPOCH = 6  # 1438 training rows in batches of 256


@pytest.fixture(autouse=True)
def _local_mlflow_store(monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def cli(*args):
    return CliRunner().invoke(main, [*map(str, args)])


def new_run(run, *args):
    result = cli("fit", *TINY, "--epochs", 1, "--out", run, *args)
    assert result.exit_code == 0, result.output


def resume(run, epochs, *args):
    result = cli("fit", "--resume", run, "--epochs", epochs, "--no-progress", *args)
    assert result.exit_code == 0, result.output
    return result


def csv_rows(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def tensorboard(run):
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def config_of(run):
    return json.loads((run / "config.json").read_text())


def test_loggers_added_on_resume_log_from_the_resumed_step_and_agree_with_metrics_jsonl(tmp_path):
    run = tmp_path / "run"
    new_run(run)
    assert not (run / "tensorboard").exists()
    resume(run, 2, "--logger", "tensorboard,csv", "--logger", "mlflow", "--log-every", 2)
    records = read_metrics(run)
    steps = list(range(STEPS_PER_EPOCH + 2, 2 * STEPS_PER_EPOCH + 1, 2))  # 8, 10, 12: after the checkpoint only
    scalars = tensorboard(run)
    assert [s for s, _ in scalars["loss"]] == steps
    assert scalars["test_elbo"] == [(12, pytest.approx(records[1]["test_elbo"], rel=1e-6))]
    assert scalars["train_kl"] == [(12, pytest.approx(records[1]["train_kl"], rel=1e-6))]
    assert [int(r["step"]) for r in csv_rows(run / "steps.csv")] == steps
    assert [(int(r["epoch"]), float(r["test_elbo"])) for r in csv_rows(run / "metrics.csv")] == [
        (2, records[1]["test_elbo"])
    ]
    client = MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    run_id = json.loads((run / "mlflow_run.json").read_text())["run_id"]
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == steps
    assert [m.value for m in client.get_metric_history(run_id, "test_elbo")] == [pytest.approx(records[1]["test_elbo"])]
    config = config_of(run)
    assert config["logging"]["loggers"] == ["tensorboard", "csv", "mlflow"] and config["logging"]["log_every"] == 2
    assert config["resolved"]["loggers_since_step"] == {"tensorboard": 6, "csv": 6, "mlflow": 6}


def test_a_logger_added_to_a_logged_run_joins_it_and_later_resumes_keep_both(tmp_path):
    run = tmp_path / "run"
    new_run(run, "--logger", "csv", "--log-every", 3)
    resume(run, 2, "--logger", "tensorboard")
    resume(run, 3)  # no --logger: the run keeps both
    assert [int(r["step"]) for r in csv_rows(run / "steps.csv")] == list(range(3, 19, 3))  # every step once
    assert [int(r["epoch"]) for r in csv_rows(run / "metrics.csv")] == [1, 2, 3]
    scalars = tensorboard(run)
    assert [s for s, _ in scalars["loss"]] == [9, 12, 15, 18]
    assert [s for s, _ in scalars["test_elbo"]] == [12, 18]
    config = config_of(run)
    assert config["logging"]["loggers"] == ["csv", "tensorboard"]
    assert config["resolved"]["loggers_since_step"] == {"tensorboard": 6}


def test_config_json_with_loggers_its_checkpoint_lacks_still_resumes(tmp_path):
    # a resume that added a logger and was stopped before its first checkpoint leaves config.json newer
    run = tmp_path / "run"
    new_run(run)
    config = config_of(run)
    config["logging"]["loggers"] = ["csv"]
    (run / "config.json").write_text(json.dumps(config))
    resume(run, 2)
    assert [int(r["epoch"]) for r in csv_rows(run / "metrics.csv")] == [2]


def test_a_bad_logger_on_resume_is_refused_and_other_options_still_clash(tmp_path):
    run = tmp_path / "run"
    new_run(run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    bad = cli("fit", "--resume", run, "--logger", "wandb")
    assert bad.exit_code == 2 and "--logger" in bad.output and "wandb" in bad.output
    clash = cli("fit", "--resume", run, "--logger", "csv", "--lr", "0.1")
    assert clash.exit_code == 2
    assert "--lr cannot be combined with --resume" in clash.output and "--logger" not in clash.output.split("Error")[-1]
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_a_start_that_died_before_its_checkpoint_restarts_with_the_added_logger(tmp_path):
    run = tmp_path / "run"
    new_run(run)
    for name in ("checkpoint.pt", "samples.png", "reconstructions.png"):  # what a start killed early leaves
        (run / name).unlink()
    (run / "metrics.jsonl").write_text("")
    result = resume(run, 1, "--logger", "csv")
    assert "starting it again from the beginning" in result.output
    assert [int(r["epoch"]) for r in csv_rows(run / "metrics.csv")] == [1]
    assert config_of(run)["logging"]["loggers"] == ["csv"]
