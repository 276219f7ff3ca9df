"""``pyrovae fit --overwrite --logger mlflow`` with MLflow's local store: the replacing run logs to the
store of the folder it replaces (absolute paths that stay right after the folders swap), the replaced
run's MLflow run is kept and tagged; a replacing run that stops before its first checkpoint leaves
the old run and its store as they were (its own MLflow run deleted)."""

import json
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from click.testing import CliRunner

import pyrovae.commands.fit
from pyrovae.cli import main
from pyrovae.commands import read_metrics
from pyrovae.errors import RunDirectoryError

pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient  # noqa: E402

TINY = ["--dataset", "digits", "--hidden", "16", "--z-dim", "2", "--batch-size", "512", "--device", "cpu",
        "--no-progress", "--epochs", "1"]  # fmt: skip


@pytest.fixture(autouse=True)
def _local_mlflow_store(monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def fit(*args):
    return CliRunner().invoke(main, ["fit", *TINY, *map(str, args)])


def store(run):
    client = MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("pyrovae")
    return client, {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}


def run_id(run):
    return json.loads((run / "mlflow_run.json").read_text())["run_id"]


def artifact_files(client, mlflow_run_id):
    folder = Path(unquote(urlparse(client.get_run(mlflow_run_id).info.artifact_uri).path))
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("old_logged", [True, False], ids=["old-run-with-mlflow", "old-run-without"])
def test_a_replacing_run_logs_to_the_local_store_of_the_folder_it_replaces(tmp_path, old_logged):
    run = tmp_path / "run"
    assert fit("--out", run, *(["--logger", "mlflow"] if old_logged else [])).exit_code == 0
    old_id = run_id(run) if old_logged else None
    result = fit("--out", run, "--overwrite", "--logger", "mlflow", "--seed", 5)
    assert result.exit_code == 0, result.output
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no staging folder left
    new_id = run_id(run)
    client, runs = store(run)
    assert set(runs) == ({old_id, new_id} if old_logged else {new_id})
    record = read_metrics(run)[-1]
    logged = {m.step: m.value for m in client.get_metric_history(new_id, "test_elbo")}
    assert logged == {record["step"]: pytest.approx(record["test_elbo"], rel=1e-6)}
    # the store's absolute paths point into the folder as it is now: the pictures are there
    assert any(name.startswith("images/") for name in artifact_files(client, new_id))
    assert runs[new_id].data.tags["pyrovae.run_dir"] == str(run.resolve())
    assert runs[new_id].info.status == "FINISHED"
    if old_logged:
        assert runs[old_id].data.tags["pyrovae.replaced_by"] == new_id
        assert artifact_files(client, old_id)  # the replaced run's own pictures are kept


@pytest.mark.parametrize("old_exists", [True, False], ids=["old-run", "no-old-run"])
def test_a_replacing_run_that_stops_before_its_first_checkpoint_leaves_the_old_store_as_it_was(
    tmp_path, monkeypatch, old_exists
):
    run = tmp_path / "run"
    if old_exists:
        assert fit("--out", run, "--logger", "mlflow").exit_code == 0
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} if old_exists else None

    def full_disk(*args, **kwargs):
        raise RunDirectoryError("cannot write checkpoint.pt: [Errno 28] No space left on device")

    monkeypatch.setattr(pyrovae.commands.fit, "save_checkpoint", full_disk)
    result = fit("--out", run, "--overwrite", "--logger", "mlflow", "--seed", 5)
    assert result.exit_code == 1 and "No space left on device" in result.output
    if not old_exists:
        assert not run.exists() and list(tmp_path.iterdir()) == []
        return
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    client, runs = store(run)
    assert set(runs) == {run_id(run)}  # the replacing run's MLflow run is deleted; the old one stays active
    assert "pyrovae.replaced_by" not in runs[run_id(run)].data.tags
    kept = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert {k: v for k, v in kept.items() if k.parts[0] != "mlruns"} == {
        k: v for k, v in before.items() if k.parts[0] != "mlruns"
    }
    assert read_metrics(run) == json_lines(before[Path("metrics.jsonl")])


def json_lines(data):
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]
