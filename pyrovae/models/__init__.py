"""The model's parts: closed-form KLs (eq. 16-18), networks, likelihoods (eq. 13/14), priors, the VAE.

Equation numbers refer to docs/theory.md.
"""

from .kl import KL_MODES, kl_diag_gaussian_std_normal, kl_diag_gaussians, kl_gaussians, kl_mode
from .likelihoods import (
    LIKELIHOODS,
    BernoulliLikelihood,
    GaussianLikelihood,
    Likelihood,
    bernoulli_log_likelihood,
    gaussian_log_likelihood,
    make_likelihood,
)
from .linear_gaussian import ENCODERS, LinearEncoder, LinearGaussianVAE
from .networks import ACTIVATIONS, Decoder, Encoder, check_hidden_dims, mlp
from .priors import (
    PRIORS,
    FlowPrior,
    LearnedGaussianPrior,
    MixtureOfGaussiansPrior,
    Prior,
    StandardNormalPrior,
    VampPrior,
    make_prior,
)
from .vae import VAE, ElboTerms, check_vae_options

__all__ = [
    "kl_diag_gaussians",
    "kl_diag_gaussian_std_normal",
    "kl_gaussians",
    "kl_mode",
    "KL_MODES",
    "mlp",
    "Encoder",
    "Decoder",
    "ACTIVATIONS",
    "check_hidden_dims",
    "bernoulli_log_likelihood",
    "gaussian_log_likelihood",
    "Likelihood",
    "BernoulliLikelihood",
    "GaussianLikelihood",
    "make_likelihood",
    "LIKELIHOODS",
    "Prior",
    "StandardNormalPrior",
    "LearnedGaussianPrior",
    "MixtureOfGaussiansPrior",
    "VampPrior",
    "FlowPrior",
    "make_prior",
    "PRIORS",
    "VAE",
    "ElboTerms",
    "check_vae_options",
    "LinearGaussianVAE",
    "LinearEncoder",
    "ENCODERS",
]
