"""The run spec: what one ``pyrovae fit`` run is, as nested typed sections, written once.

A :class:`RunSpec` has a section per concern, each a dataclass whose defaults are the run's
defaults::

    RunSpec
      data        DataSpec        which data set, where, how it is split and binarized
      model       ModelSpec       networks, likelihood (eq. 13/14) and ModelSpec.prior (PriorSpec)
      objective   ObjectiveSpec   what is estimated (--elbo), its particles, and its own options,
                                  one class per objective (OBJECTIVE_OPTIONS)
      engine      EngineSpec      how a step runs
      training    TrainingSpec    epochs, batches, optimizer, selection, device, seed
      output      OutputSpec      the run directory

Its top-level ``plugins`` are modules of yours imported before anything else is read
(:mod:`pyrovae.spec.plugins`): they register priors, objectives, models and engines by name.
A spec is read from and printed as TOML (``pyrovae fit --config run.toml``, ``pyrovae fit
--print-config``); a key the spec does not know, a value of the wrong type or a section for
another objective is one :class:`~pyrovae.errors.ConfigError` naming the file and the key.
:meth:`RunSpec.to_flat` / :meth:`RunSpec.from_flat` translate to and from the flat option names
of the command line (``--z-dim`` is ``z_dim``, :data:`FLAT_KEYS`), which
:class:`pyrovae.config.FitConfig` also uses; the values themselves are checked when a
``FitConfig`` is built from the flat form.

This module imports nothing but the standard library (and ``tomli-w`` to print TOML), so
reading a spec or printing one costs no torch import.
"""

from __future__ import annotations

from .files import read_spec, spec_to_toml
from .plugins import check_run_plugins, import_plugins
from .run import FLAT_KEYS, RunSpec, objective_options
from .sections import (
    OBJECTIVE_OPTIONS,
    DataSpec,
    EngineSpec,
    InfoVAEOptions,
    IWAEOptions,
    KLOptions,
    LoggingSpec,
    ModelSpec,
    ObjectiveSpec,
    OutputSpec,
    PriorSpec,
    TrainingSpec,
    register_objective_options,
)

__all__ = [
    "RunSpec",
    "DataSpec",
    "ModelSpec",
    "PriorSpec",
    "ObjectiveSpec",
    "KLOptions",
    "IWAEOptions",
    "InfoVAEOptions",
    "OBJECTIVE_OPTIONS",
    "register_objective_options",
    "EngineSpec",
    "TrainingSpec",
    "OutputSpec",
    "LoggingSpec",
    "FLAT_KEYS",
    "read_spec",
    "import_plugins",
    "check_run_plugins",
    "objective_options",
    "spec_to_toml",
]
