"""``pyrovae fit``: train the run a :class:`~pyrovae.config.FitConfig` describes into its run
directory, or continue one (``--resume``).

``fit_run(config)`` resolves the whole run first (:func:`pyrovae.plan.plan_run`: options, data
checked against the likelihood, engine, memory, model), *before* creating the directory, so a bad
option or bad data leaves nothing behind; a start that fails or is stopped before the first
checkpoint removes what it wrote. Started by ``torchrun``, every process trains its part and rank 0
alone writes.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import FitConfig
from ..data.batches import training_rows
from ..errors import ConfigError, RunDirectoryError, RunFileError, renamed_names
from ..memory import allocation_failures
from ..models.base import LatentVariableModel
from ..plan import SIZES, RunPlan, fit_allocations, plan_run, processes
from ..reporting import info
from ..rundir import write_text
from ..train import FitState, History, fit
from ..train.checkpoint import check_resume_state, load_checkpoint, save_checkpoint, vae_from_checkpoint
from ..train.distributed import launch, process_rank
from .run_directory import RUN_FILES, RunDirectory, config_from, default_stem, new_version
from .run_loggers import LOGGING_FIELDS, carried_on_replace, check_logger_extras, resumed_logging, run_logger

__all__ = ["fit_run", "resume_run", "RunResult"]

Log = Callable[[str], None] | None

_OTHER_OUT = ", or choose another --out"
#: where runs without an --out go: DEFAULT_ROOT/DATASET-ELBO/version_N
DEFAULT_ROOT = "runs"


@dataclass
class RunResult:
    vae: LatentVariableModel
    history: History
    #: the run directory (``None`` on a rank other than 0 of a run that chose its folder itself)
    out: Path | None


def fit_run(
    config: FitConfig, log: Log = info, progress: bool = True, overwrite: bool = False, **fit_options: Any
) -> RunResult:
    """Train the model that ``config`` describes and write the run directory ``config.out``.

    Options, data and the memory they need are checked before the directory is created, so a bad
    setting leaves nothing behind; the directory is locked while the run writes to it (a second
    writer is refused); a start that fails or is stopped before the first checkpoint removes what
    it wrote, and one killed there leaves a directory that a new ``fit`` reuses.

    ``overwrite``: where ``config.out`` holds a run already (and nothing but a run), train in a new
    folder beside it, and put that folder in its place once it holds its first checkpoint; a new run
    that stops before that leaves the old one as it was.
    ``fit_options`` (``checkpoint_every``, ``handle_signals``, ``detect_anomaly``) are how this
    call of :func:`pyrovae.fit` runs (:class:`~pyrovae.train.FitOptions`).

    Started by ``torchrun``, every process trains its part (:mod:`pyrovae.train.distributed`) and
    rank 0 alone checks and writes the run directory, logs and shows progress.
    """
    check_logger_extras(config)
    with launch(config.device, config.batch_size) as world:
        run = None if config.out is None else RunDirectory(config.out)

        if overwrite and run is None:
            raise ConfigError("--overwrite replaces the run in --out: name it with --out")

        def check_out() -> None:
            if run is None:
                return
            if overwrite:
                run.check_replaceable()  # (before its lock: a folder of other files gets no lock file either)
            with run.lock(_OTHER_OUT) if run.is_dir() else nullcontext():  # (held briefly: a writer is named)
                if not overwrite:
                    run.check_new()

        plan = plan_run(config, world, "checking the run", check_out, **fit_options)
        if not world.is_main:
            return _follow(plan)
        made = run is None
        if run is None:  # a new folder for this run, made now that everything is checked
            run = new_version(DEFAULT_ROOT, default_stem(config))
            config.out = plan.config.out = str(run.path)
            if log is not None:
                log(f"run directory: {run} (a new one for each run without --out)")
        if overwrite:
            return _replace(plan, run, log, progress)
        with run.locked_new(_OTHER_OUT, created=made) as created:
            if run.check_new() and log is not None:
                log(f"reusing {run}: a start there stopped before its first checkpoint")
            return _start(plan, run, created, log, progress)


def _replace(plan: RunPlan, old: RunDirectory, log: Log, progress: bool) -> RunResult:
    """``--overwrite``: hold ``old``'s lock (no other writer may be in it), train in a staging folder
    beside it, which takes its place at its first checkpoint (:meth:`RunDirectory.take_place_of`)."""
    with ExitStack() as held:
        if old.is_dir():
            held.enter_context(old.lock(_OTHER_OUT))
        stage = old.staging()
        with stage.locked_new(_OTHER_OUT, created=True) as created:
            if log is not None:
                log(f"training in {stage}: it replaces {old} once it holds its first checkpoint")
            return _start(plan, stage, created, log, progress, replacing=old)


def _follow(plan: RunPlan, resume: Any = None) -> RunResult:
    """A rank other than 0: train alongside rank 0 (the same draws, in the same order) and write nothing."""
    if resume is None:
        plan.model.initialize_from_data(training_rows(plan.data, plan.config.seed))
    with fit_allocations():
        history = _fit(plan, None, None, False, resume=resume)
    return RunResult(plan.model, history, None if plan.config.out is None else Path(plan.config.out))


def _start(
    plan: RunPlan, run: RunDirectory, created: bool, log: Log, progress: bool, replacing: RunDirectory | None = None
) -> RunResult:
    """Write ``config.json`` (the options and the plan's facts) and an empty ``metrics.jsonl``, then
    train; if anything stops it before the first checkpoint, remove them again (and the folder
    itself if this run created it)."""
    try:
        # e.g. the VampPrior starts at training images
        plan.model.initialize_from_data(training_rows(plan.data, plan.config.seed))
        plan.config.save(run.path / "config.json", resolved=plan.facts())
        write_text(run.path / "metrics.jsonl", "")
        return _train(plan, run, log, progress, replacing=replacing)
    except BaseException:
        if not run.checkpoint.exists():
            run.remove_start(created)
        raise


def resume_run(
    run_dir: str | Path,
    epochs: int | None = None,
    log: Log = info,
    progress: bool = True,
    prior: str | None = None,
    trust_prior: bool = False,
    model: str | None = None,
    trust_model: bool = False,
    logging: dict[str, Any] | None = None,
    **fit_options: Any,
) -> RunResult:
    """Continue the run in ``run_dir`` from its checkpoint, exactly where it stopped.

    Model, optimizer, loop position and RNG state are restored, so on the same device the run
    ends with the same parameters and metrics (all but the timing fields) as one that never
    stopped. ``epochs`` may raise the run's number of epochs. A run that stopped before its first
    checkpoint starts again from the beginning with the options of its ``config.json``; one that
    holds a finished epoch but no checkpoint is refused. The checkpoint, ``config.json`` and the
    data are all checked before anything is written. A run with a prior class of yours needs
    ``prior`` (its class path, named again) or ``trust_prior``, and one with a model class of yours
    ``model`` or ``trust_model`` (see :func:`pyrovae.load_vae`). ``logging`` (``logger``, ``log_every``,
    ``mlflow_uri``) adds loggers to the continued run (:func:`~pyrovae.commands.run_loggers.resumed_logging`).
    """
    run = RunDirectory(run_dir)
    out, checkpoint = run.path, run.checkpoint
    if not out.is_dir():
        raise RunDirectoryError(f"--resume {out} is not a directory: expected a run directory of `pyrovae fit`")
    if not checkpoint.is_file() and not (out / "config.json").is_file():
        raise RunFileError(f"--resume {out} is not a pyrovae run directory: expected config.json and {checkpoint.name}")
    with run.lock() if process_rank() == 0 else nullcontext():  # (under torchrun: rank 0 writes)
        if not checkpoint.is_file() and run.dead_start("--resume"):  # (or refused: a missing checkpoint)
            return _restart(run, epochs, log, progress, logging, **fit_options)
        payload = load_checkpoint(checkpoint)
        resume = check_resume_state(checkpoint, payload.get("resume"))
        config = config_from(payload["config"], f"{checkpoint} (field 'config')")
        saved = run.read_config()
        newest = config_from(saved, str(out / "config.json"))
        recorded, used = newest.to_dict(), config.to_dict()
        for name in FitConfig.__dataclass_fields__:
            if name not in ("epochs", "out", *LOGGING_FIELDS) and recorded[name] != used[name]:
                raise RunFileError(
                    f"{out / 'config.json'}: field {name!r} is {recorded[name]!r} but the checkpoint's run used "
                    f"{used[name]!r}: the files are from different runs, or one was edited"
                )
        done = resume.epoch - 1
        added = resumed_logging(config, newest, logging, resume.step)
        check_logger_extras(config)
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
            if not world.is_main:
                return _follow(plan, resume=resume)
            written = [name for name in RUN_FILES if name != "config.json"]
            resolved = saved.get("resolved", {})
            moved = world.launched or resolved.get("world_size", 1) != 1  # (the processes are recorded anew)
            logged = {name: getattr(config, name) for name in LOGGING_FIELDS}
            relogged = any(logged[k] != getattr(newest, k) for k in LOGGING_FIELDS)
            if config.epochs != saved["epochs"] or moved or relogged:
                kept = FitConfig.from_dict({**saved, "epochs": config.epochs, **logged})  # (in 0.2.0's nested form)
                since = {**resolved.get("loggers_since_step", {}), **added}
                facts = {**resolved, **processes(world), **({"loggers_since_step": since} if since else {})}
                run.write_config(kept.record(resolved=facts))
                written.insert(0, "config.json")
            run.write_metrics(resume.epochs)
            return _train(plan, run, log, progress, resume=resume, written=written)


def _restart(
    run: RunDirectory, epochs: int | None, log: Log, progress: bool, logging: dict[str, Any] | None, **fit_options: Any
) -> RunResult:
    """``--resume`` of a start that stopped before its first checkpoint: run it from the beginning
    (with the loggers ``logging`` adds)."""
    config = FitConfig.from_dict(run.read_config())
    resumed_logging(config, FitConfig.from_dict(run.read_config()), logging, 0)
    config.out = str(run.path)
    if epochs is not None:
        config.epochs = epochs
    with launch(config.device, config.batch_size) as world:
        plan = plan_run(config, world, "restarting the run", **fit_options)
        if not world.is_main:
            return _follow(plan)
        if log is not None:
            log(f"{run} stopped before its first checkpoint: starting it again from the beginning (seed {config.seed})")
        return _start(plan, run, False, log, progress)


def _train(
    plan: RunPlan,
    run: RunDirectory,
    log: Log,
    progress: bool,
    resume: Any = None,
    written: tuple[str, ...] | list[str] = RUN_FILES,
    replacing: RunDirectory | None = None,
) -> RunResult:
    config, vae, data = plan.config, plan.model, plan.data
    pending = [replacing] if replacing is not None else []

    def write(state: FitState) -> None:  # checkpoint first: metrics.jsonl never runs ahead of it
        save_checkpoint(
            run.checkpoint, state.vae, config=config.to_dict(), history=state.history.epochs,
            resume=state.resume_state(),
        )  # fmt: skip
        if pending:  # the first checkpoint of a run that replaces another: it takes the old one's place
            run.take_place_of(pending.pop(), carry=carried_on_replace(config))
        if state.event == "epoch":
            run.write_metrics(state.history.epochs)
        if state.event == "interrupt" and log is not None:
            log(f"checkpoint written to {run.checkpoint} (epoch {state.epoch}, step {state.step})")

    home = None if replacing is None else replacing.path  # (run.path changes where it replaces another)
    logger = run_logger(plan, lambda: run.path, resume, home)
    try:
        with fit_allocations():
            history = _fit(plan, write, log, progress, resume, logger)
    except RunDirectoryError as error:  # a write failed mid-run: say what is safe on disk
        raise RunDirectoryError(f"{error}. {run.checkpoint_note()}") from None
    finally:
        if logger is not None:
            logger.close()
    from ..plots import save_reconstructions, save_samples

    with allocation_failures("while drawing the pictures", SIZES):
        save_samples(vae, run.path / "samples.png")
        test = data.test[:8].to(device=vae.device, dtype=vae.dtype)
        save_reconstructions(vae, test, run.path / "reconstructions.png", originals=data.test_originals)
    if log is not None:
        log(f"wrote {', '.join(written)} to {run}")
    return RunResult(vae, history, run.path)


def _fit(
    plan: RunPlan,
    write: Callable[[FitState], None] | None,
    log: Log,
    progress: bool,
    resume: Any = None,
    logger: Callable[[FitState], None] | None = None,
) -> History:
    callbacks = [c for c in (write, logger) if c is not None]
    return fit(plan.model, plan.data, plan.options, callbacks=callbacks, log=log, progress=progress, resume=resume,
               world=plan.world)  # fmt: skip


# pyrovae 0.2.0.dev0's name
__getattr__ = renamed_names(__name__, {"train_run": "fit_run"}, globals())
