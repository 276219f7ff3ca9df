"""A run directory: train from a :class:`~pyrovae.config.FitConfig` and write what the run made;
read it back to evaluate, sample and plot.

``train_run(config)`` is what ``pyrovae fit`` does. It checks the whole configuration, loads the
data and validates them against the likelihood, and estimates the memory the settings need,
*before* creating the output directory, so a bad option or bad data leaves nothing behind; a
start that fails or is stopped before the first checkpoint removes what it wrote. Then it
writes::

    config.json          the configuration, plus the resolved device, dtype, binarization, versions
    metrics.jsonl        one JSON object per epoch (see pyrovae.train.History)
    checkpoint.pt        model + optimizer state, config and history (atomic, every epoch)
    samples.png          decoded prior samples
    reconstructions.png  test images and their reconstructions

and, later, ``evaluate_run`` (``pyrovae evaluate``) adds ``evaluation.json``, ``sample_run``
(``pyrovae sample``) ``prior_samples.png``, ``plot_run`` (``pyrovae plots``) ``latent.png`` and
``training_curves.png`` (and redraws ``reconstructions.png``).

Every command that writes into a run directory holds its lock while it runs, every file is
written atomically, and every run file read back is checked (:mod:`pyrovae.rundir`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyro
import torch

from .config import FitConfig, resolve_device
from .data import BINARIZE, Dataset
from .errors import ConfigError, RunDirectoryError, RunFileError, positive_int
from .evaluation import Evaluation, evaluate
from .evaluation.arviz_compat import arviz_versions
from .memory import PICTURE_BYTES, allocation_failures, check_fits
from .models.base import LatentVariableModel
from .plan import SIZES, RunPlan, fit_allocations, load_run_data, plan_run, processes, versions
from .rundir import (
    LOCK_NAME,
    os_errors,
    read_json_object,
    read_metrics_file,
    run_lock,
    write_file,
    write_text,
)
from .rundir import check_fields as _check_fields
from .train import FitState, History, fit
from .train.checkpoint import (
    CHECKPOINT_NAME,
    check_resume_state,
    load_checkpoint,
    load_vae,
    save_checkpoint,
    vae_from_checkpoint,
)
from .train.distributed import launch, process_rank

__all__ = [
    "train_run",
    "resume_run",
    "RunResult",
    "RUN_FILES",
    "read_run_config",
    "read_metrics",
    "load_run",
    "evaluate_run",
    "sample_run",
    "plot_run",
]

RUN_FILES = ("config.json", "metrics.jsonl", CHECKPOINT_NAME, "samples.png", "reconstructions.png")


@dataclass
class RunResult:
    vae: LatentVariableModel
    history: History
    out: Path


def _finished_epochs(out: Path) -> int:
    """How many finished epochs ``metrics.jsonl`` in ``out`` records (0 when it is absent or holds
    nothing; a file that cannot be read counts as holding one, so it is never overwritten)."""
    path = out / "metrics.jsonl"
    with os_errors(path, "read"):
        if not path.exists():
            return 0
        if not path.is_file():
            return 1
        return sum(1 for line in path.read_text(errors="replace").splitlines() if line.strip())


def _dead_start(out: Path, option: str) -> bool:
    """Whether ``out`` holds a start that stopped before its first checkpoint: ``config.json`` at
    most, and a ``metrics.jsonl`` without a finished epoch; nothing else of :data:`RUN_FILES`.
    A directory that holds a finished epoch, or a ``checkpoint.pt`` that is not a file, is never
    taken for one: it is refused in one line that says what is missing and how to recover, and
    nothing in it is touched. ``False`` for an empty ``out``."""
    with os_errors(out, "use"):
        present = [name for name in RUN_FILES if (out / name).exists() or (out / name).is_symlink()]
        checkpoint = out / CHECKPOINT_NAME
        odd = checkpoint.exists() and not checkpoint.is_file()
    if odd:
        raise RunDirectoryError(
            f"{option} {out}: {checkpoint} is not a file (a {'directory' if checkpoint.is_dir() else 'special file'}):"
            f" move it away and put the run's checkpoint there, or choose another --out; nothing was changed"
        )
    if not present:
        return False
    done = _finished_epochs(out)
    if set(present) <= {"config.json", "metrics.jsonl"} and done == 0:
        return True
    if CHECKPOINT_NAME in present:
        raise RunDirectoryError(
            f"{option} {out} already holds a run ({', '.join(present)}): choose another directory, or continue it "
            f"with: pyrovae fit --resume {out}"
        )
    epochs = f"{done} finished epoch{'s' * (done != 1)} in metrics.jsonl" if done else ", ".join(present)
    raise RunDirectoryError(
        f"{option} {out} holds a run ({epochs}) but its {CHECKPOINT_NAME} is missing, so it can be neither resumed "
        f"nor restarted without losing them: put the checkpoint back to continue it, or choose another --out; "
        f"nothing was changed"
    )


def _check_out(out: Path) -> bool:
    """Whether ``out`` may take a new run: ``False`` when it has none, ``True`` when it holds a start
    that stopped before its first checkpoint (:func:`_dead_start`: nothing that could be resumed, so
    it is reused). Anything else is refused."""
    with os_errors(out, "use"):
        if out.exists() and not out.is_dir():
            raise RunDirectoryError(f"--out {out} exists and is not a directory: choose a directory")
    return _dead_start(out, "--out")


def _is_dir(path: Path) -> bool:
    with os_errors(path, "use"):
        return path.is_dir()


_OTHER_OUT = ", or choose another --out"


def train_run(
    config: FitConfig, log: Callable[[str], None] | None = print, progress: bool = True, **fit_options: Any
) -> RunResult:
    """Train the VAE that ``config`` describes and write the run directory ``config.out``.

    Options, data and the memory they need are checked before the directory is created, so a bad
    setting leaves nothing behind; the directory is locked while the run writes to it (a second
    writer is refused); a start that fails or is stopped before the first checkpoint removes what
    it wrote, and one killed there leaves a directory that a new ``fit`` reuses.
    ``fit_options`` (``checkpoint_every``, ``handle_signals``, ``detect_anomaly``) are how this
    call of :func:`pyrovae.fit` runs (:class:`~pyrovae.train.TrainOptions`).

    Started by ``torchrun``, every process trains its part (:mod:`pyrovae.train.distributed`) and
    rank 0 alone checks and writes the run directory, logs and shows progress.
    """
    with launch(config.device, config.batch_size) as world:
        out = Path(config.out)

        def check_out() -> None:
            with run_lock(out, _OTHER_OUT) if _is_dir(out) else nullcontext():  # (held briefly: a writer is named)
                _check_out(out)

        plan = plan_run(config, world, "checking the run", check_out, **fit_options)
        if world is not None and not world.is_main:
            return _follow(plan)
        created = not out.exists()
        with os_errors(out, "create the run directory"):
            out.mkdir(parents=True, exist_ok=True)
        with ExitStack() as held:
            try:
                held.enter_context(run_lock(out, _OTHER_OUT))
            except RunDirectoryError:
                if created:  # (a lock refused by a full disk leaves neither its file nor the folder)
                    _remove_start(out, created)
                raise
            if _check_out(out) and log is not None:
                log(f"reusing {out}: a start there stopped before its first checkpoint")
            return _start(plan, out, created, log, progress)


def _initialize_prior(vae: LatentVariableModel, data: Dataset) -> None:
    vae.initialize_from_data(data.train)  # e.g. the VampPrior starts at training images


def _follow(plan: RunPlan, resume: Any = None) -> RunResult:
    """A rank other than 0: train alongside rank 0 (the same draws, in the same order) and write nothing."""
    if resume is None:
        _initialize_prior(plan.model, plan.data)
    with fit_allocations():
        history = _fit(plan, None, None, False, resume=resume)
    return RunResult(plan.model, history, Path(plan.config.out))


def _start(plan: RunPlan, out: Path, created: bool, log: Callable[[str], None] | None, progress: bool) -> RunResult:
    """Write ``config.json`` (the options and the plan's facts) and an empty ``metrics.jsonl``, then
    train; if anything stops it before the first checkpoint, remove them again (and ``out`` itself
    if this run created it)."""
    try:
        _initialize_prior(plan.model, plan.data)
        plan.config.save(out / "config.json", resolved=plan.facts())
        write_text(out / "metrics.jsonl", "")
        return _train(plan, out, log, progress)
    except BaseException:
        if not (out / CHECKPOINT_NAME).exists():
            _remove_start(out, created)
        raise


def _remove_start(out: Path, created: bool) -> None:
    """Remove what a start wrote before its first checkpoint (best effort: never hides the error
    that stopped it). The lock file and ``out`` go too where this run created ``out``."""
    names = ["config.json", "metrics.jsonl", *([LOCK_NAME] if created else [])]
    for name in names:
        try:
            (out / name).unlink(missing_ok=True)
        except OSError:
            return
    if created:
        try:
            out.rmdir()
        except OSError:
            pass


def resume_run(
    run_dir: str | Path,
    epochs: int | None = None,
    log: Callable[[str], None] | None = print,
    progress: bool = True,
    prior: str | None = None,
    trust_prior: bool = False,
    model: str | None = None,
    trust_model: bool = False,
    **fit_options: Any,
) -> RunResult:
    """Continue the run in ``run_dir`` from its checkpoint, exactly where it stopped.

    Model, optimizer, loop position and RNG state are restored, so on the same device the run
    ends with the same parameters and metrics (all but the timing fields) as one that never
    stopped. ``epochs`` may raise the run's number of epochs. A run that stopped before its first
    checkpoint starts again from the beginning with the options of its ``config.json``. The
    checkpoint, ``config.json`` and the data are all checked before anything is written. A run with
    a prior class of yours needs ``prior`` (its class path, named again) or ``trust_prior``, and one
    with a model class of yours ``model`` or ``trust_model`` (see :func:`pyrovae.load_vae`).
    """
    out = Path(run_dir)
    if not out.is_dir():
        raise RunDirectoryError(f"--resume {out} is not a directory: expected a run directory of `pyrovae fit`")
    checkpoint = out / CHECKPOINT_NAME
    if not checkpoint.is_file() and not (out / "config.json").is_file():
        raise RunFileError(f"--resume {out} is not a pyrovae run directory: expected config.json and {CHECKPOINT_NAME}")
    with run_lock(out) if process_rank() == 0 else nullcontext():  # (under torchrun: rank 0 writes)
        if not checkpoint.is_file() and _dead_start(out, "--resume"):  # (or refused: a missing checkpoint)
            return _restart(out, epochs, log, progress, **fit_options)
        payload = load_checkpoint(checkpoint)
        resume = check_resume_state(checkpoint, payload.get("resume"))
        config = _config_from(payload["config"], f"{checkpoint} (field 'config')")
        saved = read_run_config(out)
        recorded, used = _config_from(saved, str(out / "config.json")).to_dict(), config.to_dict()
        for name in FitConfig.__dataclass_fields__:
            if name not in ("epochs", "out") and recorded[name] != used[name]:
                raise RunFileError(
                    f"{out / 'config.json'}: field {name!r} is {recorded[name]!r} but the checkpoint's run used "
                    f"{used[name]!r}: the files are from different runs, or one was edited"
                )
        done = resume.epoch - 1
        if epochs is not None:
            if epochs < done:
                raise ConfigError(f"--epochs {epochs} is below the {done} epochs already done")
            config.epochs = epochs
        with launch(config.device, config.batch_size) as world:

            def restore(device: torch.device) -> LatentVariableModel:
                return vae_from_checkpoint(
                    payload, prior=prior, trust_prior=trust_prior, source=str(out), model=model, trust_model=trust_model
                ).to(device)

            plan = plan_run(config, world, "resuming the run", restore=restore, **fit_options)
            if world is not None and not world.is_main:
                return _follow(plan, resume=resume)
            written = [name for name in RUN_FILES if name != "config.json"]
            resolved = saved.get("resolved", {})
            moved = world is not None or resolved.get("world_size", 1) != 1  # (the processes are recorded anew)
            if config.epochs != saved["epochs"] or moved:
                update = {**saved, "epochs": config.epochs, "resolved": {**resolved, **processes(world)}}
                write_text(out / "config.json", json.dumps(update, indent=2) + "\n")
                written.insert(0, "config.json")
            _write_metrics(out, resume.epochs)
            return _train(plan, out, log, progress, resume=resume, written=written)


def _restart(
    out: Path, epochs: int | None, log: Callable[[str], None] | None, progress: bool, **fit_options: Any
) -> RunResult:
    """``--resume`` of a start that stopped before its first checkpoint: run it from the beginning."""
    config = FitConfig.from_dict(read_run_config(out))
    config.out = str(out)
    if epochs is not None:
        config.epochs = epochs
    with launch(config.device, config.batch_size) as world:
        plan = plan_run(config, world, "restarting the run", **fit_options)
        if world is not None and not world.is_main:
            return _follow(plan)
        if log is not None:
            log(f"{out} stopped before its first checkpoint: starting it again from the beginning (seed {config.seed})")
        return _start(plan, out, False, log, progress)


def _write_metrics(out: Path, records: list[dict[str, Any]]) -> None:
    write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in records))


def _train(
    plan: RunPlan,
    out: Path,
    log: Callable[[str], None] | None,
    progress: bool,
    resume: Any = None,
    written: tuple[str, ...] | list[str] = RUN_FILES,
) -> RunResult:
    config, vae, data = plan.config, plan.model, plan.data

    def write(state: FitState) -> None:  # checkpoint first: metrics.jsonl never runs ahead of it
        save_checkpoint(
            out / CHECKPOINT_NAME, state.vae, config=config.to_dict(), history=state.history.epochs,
            resume=state.resume_state(),
        )  # fmt: skip
        if state.event == "epoch":
            _write_metrics(out, state.history.epochs)
        if state.event == "interrupt" and log is not None:
            log(f"checkpoint written to {out / CHECKPOINT_NAME} (epoch {state.epoch}, step {state.step})")

    try:
        with fit_allocations():
            history = _fit(plan, write, log, progress, resume)
    except RunDirectoryError as error:  # a write failed mid-run: say what is safe on disk
        raise RunDirectoryError(f"{error}. {checkpoint_note(out)}") from None
    from .plots import save_reconstructions, save_samples

    with allocation_failures("while drawing the pictures", SIZES):
        save_samples(vae, out / "samples.png")
        save_reconstructions(vae, data.test.to(device=vae.device, dtype=vae.dtype), out / "reconstructions.png")
    if log is not None:
        log(f"wrote {', '.join(written)} to {out}")
    return RunResult(vae, history, out)


def checkpoint_note(out: str | Path) -> str:
    """Where the last good checkpoint of a stopped run is, said from what is on disk."""
    path = Path(out) / CHECKPOINT_NAME
    if not path.is_file():
        return f"No checkpoint had been written yet to {path.parent}, so the start was not kept"
    try:
        state = check_resume_state(path, load_checkpoint(path).get("resume"))
    except ValueError as error:
        return f"The checkpoint {path} cannot be read back ({error})"
    return (
        f"The last good checkpoint (epoch {state.epoch}, step {state.step}) is {path}; "
        f"continue with: pyrovae fit --resume {out}"
    )


def _fit(
    plan: RunPlan,
    write: Callable[[FitState], None] | None,
    log: Callable[[str], None] | None,
    progress: bool,
    resume: Any = None,
) -> History:
    callbacks = [write] if write is not None else []
    return fit(plan.model, plan.data, plan.options, callbacks=callbacks, log=log, progress=progress, resume=resume,
               world=plan.world)  # fmt: skip


# -- reading a run directory back ---------------------------------------------------------------
_BINARIZATIONS = tuple(BINARIZE)


def _config_from(values: dict[str, Any], where: str) -> FitConfig:
    """A :class:`FitConfig` from saved values; a field of the wrong kind or value is one line naming ``where``."""
    defaults = FitConfig.defaults()
    for name in FitConfig.ADDED_SINCE_0_1:  # a run of pyrovae 0.1 has none of these: they take their defaults
        if isinstance(values, dict) and name not in values:
            del defaults[name]
    _check_fields(where, values, defaults)
    try:
        return FitConfig.from_dict(values)
    except ValueError as error:
        raise RunFileError(f"{where}: {error}") from None


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a run directory, as written by :func:`train_run`, checked: every
    option of :class:`FitConfig` with a value of the right kind, and a ``resolved`` object with the
    ``binarization`` used. Raises a one-line :class:`~pyrovae.errors.RunFileError` naming the field."""
    path = Path(run_dir) / "config.json"
    values = read_json_object(path, "the config.json that `pyrovae fit` writes")
    _config_from(values, str(path))
    resolved = values.get("resolved")
    if not isinstance(resolved, dict):
        raise RunFileError(f"{path}: field 'resolved' should be an object, found {resolved!r}")
    if resolved.get("binarization") not in _BINARIZATIONS:
        raise RunFileError(
            f"{path}: field 'resolved.binarization' should be one of {', '.join(_BINARIZATIONS)}, "
            f"found {resolved.get('binarization')!r}"
        )
    return values


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of ``metrics.jsonl``, checked line by line
    (:func:`pyrovae.rundir.read_metrics_file`)."""
    return read_metrics_file(Path(run_dir) / "metrics.jsonl")


def load_run(
    run_dir: str | Path,
    dataset: str | None = None,
    device: str = "cpu",
    prior: str | None = None,
    trust_prior: bool = False,
    model: str | None = None,
    trust_model: bool = False,
) -> tuple[LatentVariableModel, Dataset, dict]:
    """The trained model, its data set (with the run's binarization) and its configuration.

    The test set is binarized with a fixed seed (see :func:`pyrovae.data.load_dataset`), so it is
    the same test set the run reported its ELBO on. ``dataset`` overrides the run's data set
    (it must have the same dimension). ``prior``, ``trust_prior``, ``model``, ``trust_model``: as in
    :func:`pyrovae.load_vae`.
    """
    config = read_run_config(run_dir)
    fit_config = FitConfig.from_dict(config)
    if dataset is not None:
        fit_config.dataset = dataset
    vae = load_vae(
        run_dir, map_location="cpu", prior=prior, trust_prior=trust_prior, model=model, trust_model=trust_model
    ).to(resolve_device(device))
    data = load_run_data(fit_config, vae.likelihood.name)  # the same data, binarization and checks as the run's
    if data.x_dim != vae.x_dim:
        raise RunFileError(
            f"data set {fit_config.dataset!r} has {data.x_dim} dimensions, the run's model expects {vae.x_dim}"
        )
    return vae, data, config


def _writable_file(path: Path, option: str, suffix: str | None = None) -> Path:
    """Check, before any work, that ``path`` can be made: its folder exists and it is not a folder."""
    if suffix is not None and path.suffix.lower() != suffix:
        raise ConfigError(f"{option} {path} should end in {suffix}")
    if path.is_dir():
        raise RunDirectoryError(f"{option} {path} is a directory: give a file name")
    if not path.parent.is_dir():
        raise RunDirectoryError(f"{option} {path}: the folder {path.parent} does not exist: create it first")
    return path


def _lock_if_inside(run_dir: Path, path: Path) -> Any:
    """The run directory's lock when ``path`` is in it, else nothing to hold."""
    return run_lock(run_dir) if path.parent.resolve() == run_dir.resolve() else nullcontext()


def evaluate_run(
    run_dir: str | Path,
    dataset: str | None = None,
    k: int = 5000,
    n: int | None = None,
    batch_size: int = 100,
    chunk_size: int | None = None,
    seed: int = 0,
    device: str = "auto",
    inference_data: str | Path | None = None,
    inference_points: int = 10,
    log: Callable[[str], None] | None = print,
    progress: bool = True,
    prior: str | None = None,
    trust_prior: bool = False,
    model: str | None = None,
    trust_model: bool = False,
) -> Evaluation:
    """What ``pyrovae evaluate`` does: evaluate a run on its test set and write ``evaluation.json``.

    :param n: evaluate the first ``n`` test points only (default: all).
    :param inference_data: also save an ArviZ ``InferenceData`` (netCDF) with the draws and log
        weights of the first ``inference_points`` test points.
    ``prior``, ``trust_prior``, ``model``, ``trust_model``: as in :func:`pyrovae.load_vae`. Other
    arguments as in :func:`pyrovae.evaluate`.
    """
    if n is not None:
        positive_int("n", n)
    positive_int("k", k)
    run_dir = Path(run_dir)
    out = run_dir / "evaluation.json"
    netcdf = None if inference_data is None else _writable_file(Path(inference_data), "--inference-data")
    with run_lock(run_dir):
        vae, data, config = load_run(run_dir, dataset, device, prior, trust_prior, model, trust_model)
        x = data.test if n is None else data.test[:n]
        keep = min(inference_points, x.shape[0]) if netcdf is not None else 0
        # the kept draws: z and log w in the model's dtype and float64, twice while saving
        kept_bytes = 2 * k * keep * (vae.z_dim * vae.dtype.itemsize + 8)
        check_fits([(f"--inference-points {keep} x --k {k} kept draws", kept_bytes)], vae.device, "lower them")
        if log is not None:
            log(
                f"pyrovae evaluate: run={run_dir} dataset={data.name} "
                f"binarization={config['resolved']['binarization']} test points={x.shape[0]} of "
                f"{data.test.shape[0]} k={k} device={vae.device} dtype={str(vae.dtype).replace('torch.', '')} "
                f"seed={seed}"
            )
        with allocation_failures("while evaluating", "--k, --batch-size or --chunk-size"):
            result = evaluate(
                vae, x, k=k, batch_size=batch_size, chunk_size=chunk_size, seed=seed, keep_draws=keep,
                progress=progress,
            )  # fmt: skip
        record = {
            "run_dir": str(run_dir),
            "dataset": data.name,
            "binarization": config["resolved"]["binarization"],
            "split": "test",
            "test_size": data.test.shape[0],
            **result.to_dict(),
            "versions": {
                **{name: v for name, v in versions().items() if name != "python"},
                **arviz_versions(),  # the line (0.x or >= 1) that wrote --inference-data
            },
        }
        written = []
        if netcdf is not None:
            idata = result.to_inference_data()
            written.append(write_file(netcdf, lambda tmp: _to_netcdf(idata, tmp, netcdf)))
        written.insert(0, write_text(out, _json_with_flat_lists(record)))
    if log is not None:
        log(result.report())
        log(f"wrote {', '.join(str(p) for p in written)} ({result.seconds:.1f} s)")
    return result


def _to_netcdf(idata: Any, tmp: Path, path: Path) -> None:
    try:
        idata.to_netcdf(str(tmp))
    except OSError:
        raise
    except Exception as error:  # the netCDF libraries' own errors (a full disk is often an HDF error)
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise RunDirectoryError(f"cannot write {path}: {type(error).__name__}: {first}") from None


def _json_with_flat_lists(record: dict[str, Any]) -> str:
    """JSON with one key per line and each list on one line (per-point columns stay readable)."""
    lines = []
    for key, value in record.items():
        if isinstance(value, dict):
            inner = ",\n".join(f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items())
            lines.append(f"  {json.dumps(key)}: {{\n{inner}\n  }}")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def sample_run(
    run_dir: str | Path,
    n: int = 64,
    out: str | Path | None = None,
    seed: int = 0,
    prior: str | None = None,
    trust_prior: bool = False,
    model: str | None = None,
    trust_model: bool = False,
) -> Path:
    """What ``pyrovae sample`` does: decode ``n`` prior draws of a run's model into a PNG grid.

    Seeds torch's global RNG with ``seed``; ``out`` defaults to ``RUN_DIR/prior_samples.png``; a
    name without a suffix gets ``.png``. Returns the path written. ``prior``, ``trust_prior``: as in
    :func:`pyrovae.load_vae`.
    """
    from .plots import save_samples

    positive_int("n", n)
    run_dir = Path(run_dir)
    path = run_dir / "prior_samples.png" if out is None else Path(out)
    if path.suffix == "":
        path = path.with_name(path.name + ".png")
    _writable_file(path, "--out", ".png")
    vae = load_vae(run_dir, prior=prior, trust_prior=trust_prior, model=model, trust_model=trust_model)
    decoded = n * (vae.activation_sizes().per_draw + vae.x_dim) * vae.dtype.itemsize
    check_fits([(f"-n {n} decoded samples", decoded), (f"-n {n} pictures", n * PICTURE_BYTES)], vae.device, "lower -n")
    with _lock_if_inside(run_dir, path), allocation_failures(f"while drawing -n {n} samples", "-n"):
        pyro.set_rng_seed(seed)
        return save_samples(vae, path, n=n)


def plot_run(
    run_dir: str | Path,
    out: str | Path | None = None,
    dataset: str | None = None,
    prior: str | None = None,
    trust_prior: bool = False,
    model: str | None = None,
    trust_model: bool = False,
) -> list[Path]:
    """What ``pyrovae plots`` does: reconstructions, a latent scatter and training curves, as PNG.

    Writes ``reconstructions.png`` (first 8 test images), ``latent.png`` (posterior means of the
    test set, coloured by label) and ``training_curves.png`` (from ``metrics.jsonl``) to ``out``
    (default: the run directory). Everything is read and checked before the first file is written.
    ``prior``, ``trust_prior``, ``model``, ``trust_model``: as in :func:`pyrovae.load_vae`.
    """
    from .plots import save_latent_scatter, save_reconstructions, save_training_curves

    run_dir = Path(run_dir)
    out = run_dir if out is None else Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirectoryError(f"--out {out} exists and is not a directory")
    records = read_metrics(run_dir)
    if not records:
        raise RunFileError(
            f"{run_dir / 'metrics.jsonl'} holds no finished epoch, so there are no training curves to draw: "
            f"finish one with: pyrovae fit --resume {run_dir}"
        )
    vae, data, _ = load_run(run_dir, dataset, "cpu", prior, trust_prior, model, trust_model)
    with os_errors(out, "create the folder"):
        out.mkdir(parents=True, exist_ok=True)
    test = data.test.to(dtype=vae.dtype)
    with _lock_if_inside(run_dir, out / "latent.png"), allocation_failures("while drawing", "nothing: the test set"):
        return [
            save_reconstructions(vae, test, out / "reconstructions.png"),
            save_latent_scatter(vae, test, out / "latent.png", labels=data.test_labels),
            save_training_curves(records, out / "training_curves.png"),
        ]
