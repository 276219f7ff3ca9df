"""pyrovae: variational autoencoders on Pyro, checked against the closed-form ELBO.

Equation numbers ("eq. 11") throughout the package refer to docs/theory.md in the repository.

The public names below are imported on first use (PEP 562), so that ``import pyrovae`` and the
start of the ``pyrovae`` command are instant and a Ctrl-C while torch and Pyro load is handled
by the command (:mod:`pyrovae.__main__`) instead of ending in a traceback.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.2.0"

#: public name -> the submodule that defines it (``submodule:name`` where it has another name there)
_EXPORTS = {
    "VAE": "models",
    "LatentVariableModel": "models",
    "MODELS": "models",
    "fit": "train",
    "FitOptions": "train",
    "FitInterrupted": "train",
    "History": "train",
    "NonFiniteLossError": "train",
    "closed_form_elbo": "infer",
    "estimate_elbo": "infer",
    "make_elbo": "infer",
    "ELBOS": "infer",
    "ElboTerms": "models",
    "evaluate": "evaluation",
    "Evaluation": "evaluation",
    "iwae_log_likelihood": "evaluation",
    "active_units": "evaluation",
    "ActiveUnits": "evaluation",
    "psis_khat": "evaluation",
    "LinearGaussianVAE": "models",
    "kl_diag_gaussians": "models",
    "kl_diag_gaussian_std_normal": "models",
    "kl_gaussians": "models",
    "bernoulli_log_likelihood": "models",
    "gaussian_log_likelihood": "models",
    "Likelihood": "models",
    "BernoulliLikelihood": "models",
    "GaussianLikelihood": "models",
    "Prior": "models",
    "StandardNormalPrior": "models",
    "Dataset": "data",
    "load_dataset": "data",
    "FitConfig": "config",
    "fit_run": "commands",
    "save_checkpoint": "train",
    "load_checkpoint": "train",
    "load_vae": "train",
    "load_pretrained": "pretrained",
    "save_pretrained": "pretrained",
    "export": "commands:export_run",
    "register_prior": "models",
    "register_model": "models",
    "register_objective": "infer",
    "register_engine": "train",
}

#: names of earlier versions -> today's (still answered, with a :class:`FutureWarning`)
_RENAMED = {"TrainOptions": "FitOptions", "train_run": "fit_run"}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _RENAMED:
        import warnings

        warnings.warn(f"pyrovae.{name} is deprecated: it is now called {_RENAMED[name]}", FutureWarning, stacklevel=2)
        return __getattr__(_RENAMED[name])
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pyrovae' has no attribute {name!r}")
    module, _, attribute = _EXPORTS[name].partition(":")
    value = getattr(import_module(f".{module}", __name__), attribute or name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
