"""The model's parts: closed-form KLs (eq. 16-18), networks (MLP, conv), likelihoods (eq. 13/14/23),
priors, the model protocol (:class:`LatentVariableModel`), the VAE and the two-level VAE (eq. 34),
and the registry of model kinds (:data:`MODELS`, with models of your own by class path).

Equation numbers refer to docs/theory.md.
"""

from .base import ActivationSizes, ImportanceWeights, LatentVariableModel
from .conv import ConvBody, ConvDecoder, ConvEncoder, check_channels, image_chw
from .hierarchical import LATENTS, HierarchicalVAE, TwoLevelEncoder, check_latents, make_vae
from .kl import KL_MODES, kl_diag_gaussian_std_normal, kl_diag_gaussians, kl_gaussians, kl_mode
from .likelihoods import (
    LIKELIHOODS,
    BernoulliLikelihood,
    DiscretizedLogistic,
    DiscretizedLogisticLikelihood,
    GaussianLikelihood,
    Likelihood,
    bernoulli_log_likelihood,
    discretized_logistic_log_likelihood,
    gaussian_log_likelihood,
    make_likelihood,
)
from .linear_gaussian import ENCODERS, LinearEncoder, LinearGaussianVAE
from .model_spec import MODELS, build_model, import_model_class, recorded_model_class, register_model
from .networks import ACTIVATIONS, Decoder, Encoder, check_hidden_dims, mlp, mlp_body
from .prior_spec import register_prior
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
from .vae import ARCHS, VAE, ElboTerms, check_vae_options

__all__ = [
    "LatentVariableModel",
    "ImportanceWeights",
    "ActivationSizes",
    "MODELS",
    "build_model",
    "import_model_class",
    "recorded_model_class",
    "register_model",
    "register_prior",
    "kl_diag_gaussians",
    "kl_diag_gaussian_std_normal",
    "kl_gaussians",
    "kl_mode",
    "KL_MODES",
    "mlp",
    "mlp_body",
    "Encoder",
    "Decoder",
    "ACTIVATIONS",
    "check_hidden_dims",
    "ConvBody",
    "ConvEncoder",
    "ConvDecoder",
    "check_channels",
    "image_chw",
    "ARCHS",
    "bernoulli_log_likelihood",
    "gaussian_log_likelihood",
    "discretized_logistic_log_likelihood",
    "Likelihood",
    "BernoulliLikelihood",
    "GaussianLikelihood",
    "DiscretizedLogisticLikelihood",
    "DiscretizedLogistic",
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
    "HierarchicalVAE",
    "TwoLevelEncoder",
    "make_vae",
    "check_latents",
    "LATENTS",
    "LinearGaussianVAE",
    "LinearEncoder",
    "ENCODERS",
]
