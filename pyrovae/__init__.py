"""pyrovae: variational autoencoders on Pyro, checked against the closed-form ELBO."""

from .checkpoint import load_checkpoint, load_vae, save_checkpoint
from .config import FitConfig
from .data import Dataset, load_dataset
from .elbo import ELBOS, ElboTerms, closed_form_elbo, estimate_elbo, make_elbo
from .evaluate import ActiveUnits, Evaluation, active_units, evaluate, iwae_log_likelihood, psis_khat
from .kl import kl_diag_gaussian_std_normal, kl_diag_gaussians, kl_gaussians
from .likelihoods import (
    BernoulliLikelihood,
    GaussianLikelihood,
    Likelihood,
    bernoulli_log_likelihood,
    gaussian_log_likelihood,
)
from .linear_gaussian import LinearGaussianVAE
from .model import VAE
from .priors import Prior, StandardNormalPrior
from .runs import train_run
from .train import History, NonFiniteLossError, fit

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
