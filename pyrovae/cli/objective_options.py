"""The options of ``pyrovae fit`` that say what is estimated and how a step runs (``--elbo`` and its
options, ``--engine``, ``--particles``), as one click decorator; each default is the run spec's."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from ..spec.names import ENGINE_NAMES, IWAE_GRADS, KERNELS, OBJECTIVES
from .group import DEFAULTS, elbo_option, fit_option
from .plugins import registered

__all__ = ["objective_options"]

F = TypeVar("F", bound=Callable[..., object])


def objective_options(command: F) -> F:
    """Add ``--elbo``, ``--engine``, ``--particles`` and the objectives' own options to ``command``."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


_OPTIONS = [
    click.option(
        "--elbo",
        default=DEFAULTS["elbo"],
        show_default=True,
        callback=elbo_option,
        metavar="|".join(OBJECTIVES),
        help="What is estimated: meanfield = TraceMeanField_ELBO (analytic KL where the prior has one), "
        "trace = Trace_ELBO (Monte Carlo KL); iwae = the importance-weighted bound with --particles K "
        "(--iwae-grad); infovae = InfoVAE with an MMD term (--infovae-alpha, --infovae-lambda, --mmd-kernel). "
        "meanfield and trace take --beta, --kl-warmup and --free-bits. The test ELBO is always the ELBO (eq. 11).",
    ),
    fit_option(
        "--engine",
        None,
        "How a step runs (same numbers on the same draws): eager = Pyro programs every step; compiled = "
        "recorded and compiled by torch.compile once per batch shape (seconds first, faster steps); jit = "
        "TorchScript traces (drops an epoch's last, smaller batch); cudagraph = the compiled step recorded in a "
        "CUDA graph and replayed (one GPU, one process, one batch shape); auto = compiled where the run repays "
        "compiling (on a CPU: steps x (0.7 ms + 1.6 us per batch row) >= 4 s; elsewhere 10,000 steps), else eager.",
        callback=registered("engine"),
        metavar=f"[{'|'.join(ENGINE_NAMES)}]",
    ),
    fit_option(
        "--particles",
        click.IntRange(min=1),
        "Samples of z per data point per step (K of --elbo iwae).",
    ),
    fit_option(
        "--beta",
        click.FloatRange(min=0),
        "meanfield/trace: the weight of the KL term (eq. 26); 1 is the ELBO.",
    ),
    fit_option(
        "--kl-warmup",
        click.IntRange(min=0),
        "meanfield/trace: raise the KL weight linearly from 0 to --beta over this many steps (0: no warm-up).",
        metavar="STEPS",
    ),
    fit_option(
        "--free-bits",
        click.FloatRange(min=0),
        "meanfield/trace: the batch-average KL of each latent coordinate is not penalised below this "
        "(eq. 27; 0: off; needs the normal or gaussian prior).",
        metavar="NATS",
    ),
    fit_option(
        "--iwae-grad",
        click.Choice(IWAE_GRADS),
        "iwae: the encoder's gradient estimator, standard (eq. 24) or dreg (doubly reparameterised, eq. 25: "
        "same expectation, lower variance; runs the model twice per step).",
    ),
    fit_option(
        "--infovae-alpha",
        click.FloatRange(max=1),
        "infovae: alpha of eq. 28 (the KL's weight is 1 - alpha).",
    ),
    fit_option(
        "--infovae-lambda",
        float,
        "infovae: lambda of eq. 28 (the MMD's weight is alpha + lambda - 1, which must not be negative).",
    ),
    fit_option(
        "--mmd-kernel",
        click.Choice(KERNELS),
        "infovae: the MMD's kernel, imq (inverse multiquadratic) or rbf, each summed over 7 bandwidths (eq. 30).",
    ),
]
