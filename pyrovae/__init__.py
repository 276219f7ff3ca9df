"""pyrovae: variational autoencoders on Pyro, checked against the closed-form ELBO.

Equation numbers ("eq. 11") throughout the package refer to docs/theory.md in the repository.
"""

from .config import FitConfig
from .data import Dataset, load_dataset
from .evaluation import ActiveUnits, Evaluation, active_units, evaluate, iwae_log_likelihood, psis_khat
from .infer import ELBOS, closed_form_elbo, estimate_elbo, make_elbo
from .models import (
    VAE,
    BernoulliLikelihood,
    ElboTerms,
    GaussianLikelihood,
    Likelihood,
    LinearGaussianVAE,
    Prior,
    StandardNormalPrior,
    bernoulli_log_likelihood,
    gaussian_log_likelihood,
    kl_diag_gaussian_std_normal,
    kl_diag_gaussians,
    kl_gaussians,
)
from .runs import train_run
from .train import History, NonFiniteLossError, fit, load_checkpoint, load_vae, save_checkpoint

__version__ = "0.1.0"

__all__ = [
    "VAE",
    "fit",
    "History",
    "NonFiniteLossError",
    "closed_form_elbo",
    "estimate_elbo",
    "make_elbo",
    "ELBOS",
    "ElboTerms",
    "evaluate",
    "Evaluation",
    "iwae_log_likelihood",
    "active_units",
    "ActiveUnits",
    "psis_khat",
    "LinearGaussianVAE",
    "kl_diag_gaussians",
    "kl_diag_gaussian_std_normal",
    "kl_gaussians",
    "bernoulli_log_likelihood",
    "gaussian_log_likelihood",
    "Likelihood",
    "BernoulliLikelihood",
    "GaussianLikelihood",
    "Prior",
    "StandardNormalPrior",
    "Dataset",
    "load_dataset",
    "FitConfig",
    "train_run",
    "save_checkpoint",
    "load_checkpoint",
    "load_vae",
]
