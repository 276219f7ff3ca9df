r"""The VAE as a Pyro program: model :math:`p_\theta(x, z) = p_\theta(x|z)p(z)` (eq. 3) and
guide :math:`q_\phi(z|x)` (eq. 4).

``vae.model(x)`` and ``vae.guide(x)`` plug straight into :class:`pyro.infer.SVI`. The latent
sample site is ``"z"`` and the observation site is ``"x"``; both live in the plate ``"data"``.
Passing ``num_data=N`` scales a minibatch of ``B`` rows by ``N / B`` (one
:class:`~pyro.poutine.scale_messenger.ScaleMessenger` in model and guide alike), so the
ELBO Pyro reports is an unbiased estimate of the full data set's ELBO (eq. 12 times
``N``) and ``-loss / N`` is the ELBO per data point.

Parameters live in the :class:`torch.nn.Module` (``vae.parameters()``, ``vae.state_dict()``).
They are registered with Pyro's parameter store on every call of model and guide (so
``pyro.infer.SVI`` finds them as ``param`` sites), and the module is always the source of truth:
a stale store entry left by another model under the same name is replaced, never silently used.
Inside ``with vae.without_param_sites():`` the calls skip it, and the parameters are plain module
parameters: that is how :class:`pyrovae.infer.Objective` (the training step of :func:`pyrovae.fit`)
runs them, and what torch's own machinery (``functional_call``, DDP, compiled graphs) needs.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from .._compat import param_with_module_name
from ..errors import ConfigError, positive_int
from ..spec.names import ARCHS
from .base import ActivationSizes, ImportanceWeights, LatentVariableModel
from .conv import ConvDecoder, ConvEncoder, check_channels, conv_map_sizes, image_chw
from .kl import kl_mode
from .likelihoods import LIKELIHOODS, Likelihood, make_likelihood
from .networks import Decoder, Encoder, check_activation, check_hidden_dims
from .prior_spec import check_prior_name, check_prior_options, describe_prior, rebuild_prior
from .priors import Prior, make_prior

__all__ = ["VAE", "ElboTerms", "check_vae_options", "register_module", "ARCHS"]

#: encoder/decoder architectures (``--arch``): ``mlp`` (:mod:`~pyrovae.models.networks`), ``conv``
#: (:mod:`~pyrovae.models.conv`, for image data)


class ElboTerms(NamedTuple):
    """Per-data-point ELBO (eq. 11) and its two terms, in nats, each of shape ``(B,)``."""

    elbo: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor


def register_module(name: str, module: nn.Module) -> None:
    """``pyro.module(name, module)``, with the module's own tensors winning over the store's."""
    store = pyro.get_param_store()
    for param_name, param in module.named_parameters():
        full_name = param_with_module_name(name, param_name)
        if full_name in store and store[full_name] is not param:
            del store[full_name]
    pyro.module(name, module)


def check_vae_options(
    z_dim: int,
    hidden_dims: Sequence[int],
    likelihood: str | Likelihood,
    prior: str | nn.Module,
    sigma: float,
    learn_sigma: bool,
    activation: str,
    prior_components: int,
    arch: str = "mlp",
    channels: Sequence[int] = (32, 64),
) -> None:
    """Check the options of a :class:`VAE` without building one (which :class:`VAE` itself and
    :class:`pyrovae.config.FitConfig` both call): :class:`~pyrovae.errors.ConfigError` names the
    first bad one. (Whether the data are images, which ``arch="conv"`` needs, is checked when the
    model is built for them.)"""
    positive_int("z_dim", z_dim)
    if arch not in ARCHS:
        raise ConfigError(f"arch (--arch) must be one of {', '.join(ARCHS)}, got {arch!r}")
    check_channels(channels)
    positive_int("prior_components", prior_components)
    check_hidden_dims(hidden_dims)
    check_activation(activation)
    if not isinstance(likelihood, Likelihood) and likelihood not in LIKELIHOODS:
        raise ConfigError(f"likelihood must be one of {', '.join(LIKELIHOODS)} or a Likelihood, got {likelihood!r}")
    if not isinstance(prior, nn.Module):
        check_prior_name(prior)
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not (math.isfinite(sigma) and sigma > 0):
        raise ConfigError(f"sigma (--sigma) must be a finite number > 0 such as 1.0, got {sigma!r}")
    if learn_sigma and not (isinstance(likelihood, Likelihood) or likelihood == "gaussian"):
        raise ConfigError(f"learn_sigma needs the gaussian likelihood, got likelihood={likelihood!r}")


class VAE(LatentVariableModel):
    r"""Variational autoencoder with an MLP or a convolutional encoder and decoder
    (a :class:`~pyrovae.models.base.LatentVariableModel` of kind ``"vae"``).

    :param int x_dim: data dimension (e.g. 64 for 8x8 digits, 784 for 28x28 images).
    :param int z_dim: latent dimension.
    :param hidden_dims: hidden layer widths of the encoder; the decoder mirrors them. With
        ``arch="conv"``, the dense layers after the convolutions (before them, in the decoder).
    :param likelihood: ``"bernoulli"`` (eq. 13), ``"gaussian"`` (eq. 14), ``"discretized-logistic"``
        (eq. 33, 8-bit images), or a :class:`~pyrovae.models.likelihoods.Likelihood` module.
    :param prior: a name from :data:`pyrovae.models.priors.PRIORS` (``normal`` (eq. 17), ``gaussian``,
        ``mog``, ``vamp``, ``flow``) or a prior module (any module whose call
        ``prior(batch_shape)`` returns a distribution over ``z``).
    :param float sigma: Gaussian likelihood :math:`\sigma` (fixed, or initial value if learned).
    :param bool learn_sigma: learn a per-coordinate :math:`\sigma` (Gaussian likelihood only).
    :param str activation: hidden activation (``relu``, ``softplus``, ``tanh``, ``elu``).
    :param image_shape: shape of one data point as an image, remembered for pictures.
    :param str name: prefix of the Pyro parameter names.
    :param int prior_components: number of components of the ``mog`` and ``vamp`` priors.
    :param prior_options: for a prior module of yours, the keyword arguments (JSON scalars) it was
        built with besides ``z_dim``; recorded in ``hparams`` (and so in checkpoints) with the
        prior's class path, so that :func:`pyrovae.load_vae` can rebuild it from its class.
    :param str arch: ``"mlp"`` or ``"conv"`` (:mod:`pyrovae.models.conv`; needs ``image_shape``
        ``(H, W)`` or ``(C, H, W)``). Checkpoints of models without this field are ``mlp``.
    :param channels: with ``arch="conv"``, the feature maps of each stride-2 stage of the encoder
        (the decoder mirrors them).
    """

    #: the latent sample sites of the Pyro program, in the order model and guide sample them
    latent_sites: tuple[str, ...] = ("z",)
    kind = "vae"

    def __init__(
        self,
        x_dim: int,
        z_dim: int = 50,
        hidden_dims: Sequence[int] = (400,),
        likelihood: str | Likelihood = "bernoulli",
        prior: str | Prior = "normal",
        sigma: float = 1.0,
        learn_sigma: bool = False,
        activation: str = "relu",
        image_shape: Sequence[int] | None = None,
        name: str = "vae",
        prior_components: int = 10,
        prior_options: dict[str, Any] | None = None,
        arch: str = "mlp",
        channels: Sequence[int] = (32, 64),
    ):
        super().__init__()
        positive_int("x_dim", x_dim)
        check_vae_options(
            z_dim, hidden_dims, likelihood, prior, sigma, learn_sigma, activation, prior_components, arch, channels
        )
        if image_shape is not None and int(torch.Size(image_shape).numel()) != x_dim:
            raise ConfigError(
                f"image_shape {tuple(image_shape)} has {torch.Size(image_shape).numel()} pixels, x_dim is {x_dim}"
            )
        self.x_dim = x_dim
        self.z_dim = z_dim
        self.hidden_dims = tuple(hidden_dims)
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        self.arch = arch
        self.channels = tuple(channels)
        if arch == "conv":
            image_chw(self.image_shape)  # the data must be images
        self.name = name
        self._register_on_call = True
        if not isinstance(likelihood, Likelihood):  # (builds nothing random: the networks' draws come first)
            likelihood = make_likelihood(likelihood, x_dim, sigma=sigma, learn_sigma=learn_sigma)
        self.encoder, self.decoder = self._networks(likelihood.params_per_dim, activation)
        self.likelihood = likelihood
        self.prior = make_prior(prior, z_dim, prior_components, encoder=self.encoder, x_dim=x_dim)
        self._hparams: dict[str, Any] = {
            "x_dim": x_dim,
            "z_dim": z_dim,
            "hidden_dims": list(self.hidden_dims),
            "likelihood": self.likelihood.name,
            "prior": describe_prior(prior),
            "prior_options": check_prior_options(describe_prior(prior), prior_options or {}),
            "sigma": float(sigma),
            "learn_sigma": bool(learn_sigma),
            "activation": activation,
            "image_shape": list(self.image_shape) if self.image_shape else None,
            "prior_components": prior_components,
            "arch": arch,
            "channels": list(self.channels),
        }

    # -- checkpoints ------------------------------------------------------------------------
    def hparams(self) -> dict[str, Any]:
        """The constructor's arguments as plain JSON values (the prior as its built-in name or class
        path, with ``prior_options``): what a checkpoint records."""
        return copy.deepcopy(self._hparams)

    @classmethod
    def from_hparams(
        cls,
        hparams: Mapping[str, Any],
        prior: str | type | nn.Module | None = None,
        trust_prior: bool = False,
        source: str = "the checkpoint",
    ) -> VAE:
        """The model :meth:`hparams` describes, its prior rebuilt under the rule of
        :mod:`~pyrovae.models.prior_spec` (:func:`~pyrovae.models.prior_spec.rebuild_prior`: a prior
        class of yours is imported only when ``prior`` names it or ``trust_prior`` is set). A record
        without ``arch`` is an MLP's (pyrovae before ``--arch``)."""
        options = dict(hparams)
        options["prior"] = rebuild_prior(
            options.get("prior", "normal"),
            options["z_dim"],
            options.get("prior_options") or {},
            named=prior,
            trust=trust_prior,
            source=source,
        )
        return cls(**options)

    def _networks(self, params_per_dim: int, activation: str) -> tuple[nn.Module, nn.Module]:
        """The encoder ``x -> (loc, scale)`` of ``z`` and the decoder ``z -> ``the likelihood's parameters."""
        return self._encoder(self.z_dim, activation), self._decoder(self.z_dim, params_per_dim, activation)

    def _encoder(self, z_dim: int, activation: str) -> nn.Module:
        if self.arch == "conv":
            return ConvEncoder(self.image_shape, z_dim, self.channels, self.hidden_dims, activation)
        return Encoder(self.x_dim, z_dim, self.hidden_dims, activation)

    def _decoder(self, z_dim: int, params_per_dim: int, activation: str) -> nn.Module:
        if self.arch == "conv":
            return ConvDecoder(z_dim, self.image_shape, params_per_dim, self.channels, self.hidden_dims, activation)
        return Decoder(z_dim, params_per_dim * self.x_dim, self.hidden_dims, activation)

    # -- Pyro program --------------------------------------------------------------------
    def _check_batch(self, x: torch.Tensor, num_data: int | None) -> float:
        if x.dim() != 2 or x.shape[1] != self.x_dim:
            raise ConfigError(f"x must have shape (batch, {self.x_dim}), got {tuple(x.shape)}")
        batch = x.shape[0]
        if num_data is None:
            return 1.0
        if num_data < batch:
            raise ConfigError(f"num_data must be >= the batch size {batch}, got {num_data}")
        return num_data / batch

    def register_model_params(self) -> None:
        """Register the model's parameters (decoder, likelihood, prior) with Pyro's parameter store."""
        register_module(f"{self.name}_decoder", self.decoder)
        if any(True for _ in self.likelihood.parameters()):
            register_module(f"{self.name}_likelihood", self.likelihood)
        if any(True for _ in self.prior.parameters()):
            register_module(f"{self.name}_prior", self.prior)

    def register_params(self) -> None:
        """Register every parameter with Pyro's (current) parameter store, as model and guide do."""
        self.register_model_params()
        register_module(f"{self.name}_encoder", self.encoder)

    @contextmanager
    def without_param_sites(self) -> Iterator[None]:
        """Let model and guide skip ``pyro.module`` (and so their ``param`` sites) until the block ends.

        Their parameters are then plain module parameters, as torch sees them: what a loop that
        steps an optimizer over ``vae.parameters()`` itself needs (:class:`pyrovae.infer.Objective`
        runs model and guide this way), and what ``torch.func.functional_call``, DDP and graph
        capture need. ``pyro.infer.SVI`` finds parameters through the ``param`` sites: do not run it
        inside the block.
        """
        previous, self._register_on_call = self._register_on_call, False
        try:
            yield
        finally:
            self._register_on_call = previous

    def model(self, x: torch.Tensor, num_data: int | None = None) -> torch.Tensor:
        r""":math:`z \sim p(z)`, :math:`x \sim p_\theta(x|z)`, observed at ``x``."""
        scale = self._check_batch(x, num_data)
        if self._register_on_call:
            self.register_model_params()
        with pyro.plate("data", x.shape[0], dim=-1), poutine.scale(scale=scale):
            z = pyro.sample("z", self.prior((x.shape[0],)))
            output = self.decoder(z)
            pyro.sample("x", self.likelihood.distribution(output), obs=x)
        return output

    def guide(self, x: torch.Tensor, num_data: int | None = None) -> torch.Tensor:
        r""":math:`z \sim q_\phi(z|x) = \mathcal N(\mu_\phi(x), \mathrm{diag}\,\sigma_\phi(x)^2)`."""
        scale = self._check_batch(x, num_data)
        if self._register_on_call:
            register_module(f"{self.name}_encoder", self.encoder)
        with pyro.plate("data", x.shape[0], dim=-1), poutine.scale(scale=scale):
            loc, z_scale = self.encoder(x)
            return pyro.sample("z", dist.Normal(loc, z_scale).to_event(1))

    # -- what evaluation, the ELBOs and the memory estimate ask --------------------------------
    def log_weights(self, x: torch.Tensor, k: int, generator: torch.Generator | None = None) -> ImportanceWeights:
        r""":math:`\log w = \log p_\theta(x|z) + \log p(z) - \log q_\phi(z|x)` for ``k`` draws
        :math:`z = \mu + \sigma \odot \varepsilon` per row (eq. 7), written out by hand: the likelihood's
        eq. 13 / 14 (``likelihood.log_prob``), the prior module's ``log_prob``, and
        :math:`\log q_\phi(z|x) = -\sum_j [\tfrac12 \varepsilon_j^2 + \log \sigma_j + \tfrac12 \log 2\pi]` from
        the noise that drew :math:`z` (``k`` draws of shape ``(B, z_dim)`` from ``generator``)."""
        loc, scale = self.encoder(x)
        log_q_const = -(torch.log(scale) + 0.5 * math.log(2 * math.pi)).sum(-1)
        eps = torch.randn((k, x.shape[0], self.z_dim), generator=generator, device=x.device, dtype=x.dtype)
        z = loc + scale * eps
        log_q = log_q_const - 0.5 * eps.pow(2).sum(-1)
        log_lik = self.likelihood.log_prob(x, self.decoder(z))
        return ImportanceWeights(log_lik + self.prior((x.shape[0],)).log_prob(z) - log_q, log_lik, z, {"z": loc})

    def analytic_kl(self, x: torch.Tensor) -> torch.Tensor | None:
        r"""The prior's closed-form KL from :math:`q_\phi(z|x)` (``prior.analytic_kl``: eq. 18 for
        :math:`\mathcal N(0, I)`, eq. 16 for the learned Gaussian) where its :meth:`Prior.kl_mode`
        says it has one, else ``None``."""
        mode = getattr(self.prior, "kl_mode", None)
        if mode is None or mode() != "analytic":
            return None
        loc, scale = self.encoder(x)
        return self.prior.analytic_kl(loc, scale)

    @torch.no_grad()
    def meanfield_kl_modes(self) -> dict[str, str]:
        """``{"z": mode}``: a pyrovae :class:`Prior` knows (and checks) its closed form
        (:meth:`Prior.kl_mode`); another prior module is looked up in torch's ``kl_divergence``
        registry against the guide's diagonal Gaussian, as Pyro's ``TraceMeanField_ELBO`` does."""
        if hasattr(self.prior, "kl_mode"):
            return {"z": self.prior.kl_mode()}
        probe = torch.zeros(1, self.x_dim, device=self.device, dtype=self.dtype)
        return {"z": kl_mode(self.posterior(probe), self.prior((1,)))}

    def activation_sizes(self) -> ActivationSizes:
        r"""With :math:`x` = ``x_dim``, :math:`z` the latent coordinates of every site, :math:`h` the
        hidden widths (plus, for ``conv``, twice the feature maps: encoder and decoder) and :math:`K`
        the prior's mixture components (:attr:`Prior.components`, e.g. ``mog``, ``vamp``): per data
        point :math:`x + 2h + 2z` (the encoder), per draw :math:`3z + 2h + 3x + 2Kz` (decoder,
        likelihood and prior terms); the widest activation is the largest layer or feature map."""
        x, z = self.x_dim, len(self.latent_sites) * self.z_dim
        widths = [self.x_dim * self.likelihood.params_per_dim, *self.hidden_dims, self.z_dim]
        h = sum(self.hidden_dims)
        if self.arch == "conv":  # the feature maps of encoder and decoder
            maps = conv_map_sizes(self.image_shape, self.channels)
            h += 2 * sum(maps)
            widths += maps
        k = self.prior.components if isinstance(self.prior, Prior) else 0
        return ActivationSizes(
            per_point=x + 2 * h + 2 * z, per_draw=3 * z + 2 * h + 3 * x + 2 * k * z, widest=max(widths), prior_points=k
        )

    def initialize_from_data(self, x: torch.Tensor) -> None:
        """The prior's data-dependent start (a VampPrior's pseudo-inputs are training rows), with
        ``x`` moved to the model's device and dtype; nothing for other priors."""
        initialize = getattr(self.prior, "initialize_from_data", None)
        if initialize is not None:
            initialize(x.to(device=self.device, dtype=self.dtype))

    # -- conveniences (no Pyro involved) ----------------------------------------------------
    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        """:math:`q_\\phi(z|x)` as a distribution with batch shape ``(B,)``."""
        loc, scale = self.encoder(x)
        return dist.Normal(loc, scale).to_event(1)

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> torch.Tensor:
        """Decode ``n`` draws from the prior: :math:`E[x|z]` if ``mean`` else a draw of ``x``."""
        z = self.prior((n,)).sample()
        output = self.decoder(z)
        return self.likelihood.mean(output) if mean else self.likelihood.distribution(output).sample()

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """:math:`E[x|z]` of the decoder at given ``z``, shape ``(n, x_dim)``."""
        return self.likelihood.mean(self.decoder(z.to(self.device, self.dtype)))

    @torch.no_grad()
    def posterior_mean(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's mean :math:`\\mu_\\phi(x)` (of the top level in a two-level model)."""
        return self.encoder(x)[0]

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`E[x|z]` at the posterior mean :math:`z = \\mu_\\phi(x)`."""
        loc, _ = self.encoder(x)
        return self.likelihood.mean(self.decoder(loc))
