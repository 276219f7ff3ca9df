"""What the training loop says: its start line (device, threads, what is estimated and how, the
model, the data, the batches), and how long the epochs left take at the pace of the first."""

from __future__ import annotations

from typing import Any

import torch
from pyro.infer import ELBO

from ..infer.elbo import ELBOS
from ..infer.module_elbo import describe_objective

__all__ = ["duration", "estimator_name", "batch_said", "pace_said", "epoch_line", "start_line"]


def duration(seconds: float) -> str:
    """``42 s``, ``12 minutes``, ``3.5 hours`` or ``20 days``."""
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.0f} s"


def estimator_name(elbo: ELBO) -> str:
    """The pyrovae name of a Pyro ELBO instance (its class name when it is not one of ours)."""
    named = next((name for name, cls in ELBOS.items() if type(elbo) is cls), None)
    return named or getattr(elbo, "elbo_name", None) or type(elbo).__name__


def batch_said(asked: int, rows: int) -> str:
    """The batch size as the start line says it: what a step takes where it differs from the option."""
    if asked <= rows:
        return str(asked)
    return f"{rows} (--batch-size {asked} is more than the {rows} training rows: a step takes them all)"


def pace_said(left: int, seconds: float, eval_seconds: float, steps: int, first_step: float) -> str:
    """``; the N epochs left take about T at this pace`` (nothing when none are left), from an epoch of
    ``steps`` steps that took ``seconds`` (``first_step`` of them in its first step) and ``eval_seconds``
    to evaluate.

    The pace is that of the steps after the first: the first step of a run holds the one-time work of
    its engine (``compiled`` compiles the step there, tens of seconds), which the epochs left do not
    repeat."""
    if left <= 0:
        return ""
    if steps > 1 and 0 < first_step < seconds:
        seconds = (seconds - first_step) * steps / (steps - 1)
    return f"; the {left} epochs left take about {duration(left * (seconds + eval_seconds))} at this pace"


def epoch_line(epoch: int, epochs: int, record: dict[str, Any], pace: str) -> str:
    """``epoch   3/10 train_elbo=... test_elbo=... seconds=... images/s=...``: what an epoch's record says
    (with the objective and the validation ELBO where it has them), then ``pace``."""
    objective = f" train_objective={record['train_objective']:.3f}" if "train_objective" in record else ""
    test = f" test_elbo={record['test_elbo']:.3f}" if "test_elbo" in record else ""
    if "validation_elbo" in record:
        test = f" validation_elbo={record['validation_elbo']:.3f}{test}"
    return (
        f"epoch {epoch:>3}/{epochs}{objective} train_elbo={record['train_elbo']:.3f}{test} "
        f"seconds={record['seconds']:.2f} images/s={record['images_per_second']:.0f}{pace}"
    )


def start_line(
    vae: Any,
    options: Any,
    estimator: ELBO,
    engine: str,
    kl_mode: dict[str, str],
    rows: tuple[int, int],
    steps_per_epoch: int,
    notes: str,
) -> str:
    """``pyrovae fit: device=... threads=... ...; optimising ...``: what a run is about to do.

    :param rows: the training and test rows. :param notes: the optimizer, and where the run resumes or how
        many processes train it.
    """
    kl = ", ".join(f"{site}:{mode}" for site, mode in kl_mode.items())
    return (
        f"pyrovae fit: device={vae.device} threads={torch.get_num_threads()} "
        f"dtype={str(vae.dtype).replace('torch.', '')} seed={options.seed} "
        f"elbo={estimator_name(estimator)} ({type(estimator).__name__}, "
        f"particles={estimator.num_particles}) engine={engine} kl={kl} "
        f"prior={type(vae.prior).__name__} likelihood={vae.likelihood.name} "
        f"x_dim={vae.x_dim} z_dim={vae.z_dim} train={rows[0]} test={rows[1]} "
        f"batch_size={batch_said(options.batch_size, rows[0])} steps/epoch={steps_per_epoch} {notes}"
        + (f" lr_schedule={options.lr_schedule}" if options.lr_schedule != "constant" else "")
        + (f" clip_norm={options.clip_norm:g}" if options.clip_norm else "")
        + (f" validation={options.validation} patience={options.patience}" if options.validation else "")
        + f"; optimising {describe_objective(estimator)}"
    )
