r"""The linear-Gaussian VAE (probabilistic PCA), where every quantity of docs/theory.md is computable.

.. math::

    p(z) = \mathcal N(0, I_k), \qquad p_\theta(x|z) = \mathcal N(Wz + b, \sigma^2 I_d)

is a :class:`pyrovae.VAE` with the Gaussian likelihood (eq. 14) and a decoder that is one
:class:`torch.nn.Linear` layer, so :func:`pyrovae.closed_form_elbo`, :func:`pyrovae.fit` and
:func:`pyrovae.evaluate` work on it unchanged. Unlike a neural decoder it has

- the exact marginal likelihood :math:`\log p_\theta(x) = \log \mathcal N(x;\, b,\, WW^\top + \sigma^2 I)`;
- the exact posterior :math:`p_\theta(z|x) = \mathcal N(\mu_{post}, \Sigma_{post})` with
  :math:`\Sigma_{post} = (I + W^\top W / \sigma^2)^{-1}` and
  :math:`\mu_{post} = \Sigma_{post} W^\top (x - b) / \sigma^2`;
- the exact ELBO (eq. 11) of *any* Gaussian :math:`q(z|x) = \mathcal N(m, S)`, full covariance
  included, with no Monte Carlo:

  .. math::

      \mathbb E_q[\log p_\theta(x|z)] = \log \mathcal N(x;\, Wm + b,\, \sigma^2 I)
          - \frac{\mathrm{tr}(W S W^\top)}{2\sigma^2},

  the first term by eq. 14 at :math:`z = m` (because :math:`\mathbb E_q\lVert x - Wz - b\rVert^2
  = \lVert x - Wm - b\rVert^2 + \mathrm{tr}(WSW^\top)`), and :math:`\mathrm{KL}(q\,\|\,p(z))` by
  eq. 16 with :math:`p(z) = \mathcal N(0, I)`.

So the identities of docs/theory.md can be checked to float64 precision: eq. 11 (ELBO :math:`\le \log p(x)`)
and eq. 20 (:math:`\log p(x) - \mathcal L(x) = \mathrm{KL}(q(z|x)\,\|\,p(z|x))`, per data point).

The exact posterior has a full covariance, which a mean-field :math:`q` (the VAE's guide) cannot
hold unless :math:`W^\top W` is diagonal (orthogonal columns). The full-covariance checks use the
closed forms here (:meth:`LinearGaussianVAE.exact_elbo` takes any ``cov``); the checks that go
through the mean-field guide (Monte Carlo ELBO, IWAE, PSIS) use a :math:`W` with orthogonal
columns and :meth:`LinearGaussianVAE.set_encoder_to_posterior`.

References: Tipping and Bishop (1999), *Probabilistic principal component analysis*.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, ModelError
from .kl import kl_gaussians
from .likelihoods import gaussian_log_likelihood
from .vae import VAE, ElboTerms

__all__ = ["LinearGaussianVAE", "LinearEncoder", "ENCODERS"]

ENCODERS = ("linear", "mlp")


class LinearEncoder(nn.Module):
    r""":math:`q_\phi(z|x) = \mathcal N(Ax + c,\, \mathrm{diag}(e^{2s}))`: an affine mean and a
    scale that does not depend on :math:`x`, the family of the exact posterior of a
    linear-Gaussian model with diagonal :math:`\Sigma_{post}`.
    """

    def __init__(self, x_dim: int, z_dim: int):
        super().__init__()
        self.z_dim = z_dim
        self.loc = nn.Linear(x_dim, z_dim)
        self.log_scale = nn.Parameter(torch.zeros(z_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc = self.loc(x)
        return loc, self.log_scale.exp().expand(loc.shape)


class LinearGaussianVAE(VAE):
    r"""Probabilistic PCA as a :class:`pyrovae.VAE`: :math:`p(z) = \mathcal N(0, I)`,
    :math:`p_\theta(x|z) = \mathcal N(Wz + b, \sigma^2 I)` with a fixed scalar :math:`\sigma`.

    :param int x_dim: data dimension :math:`d`.
    :param int z_dim: latent dimension :math:`k`.
    :param float sigma: the observation noise :math:`\sigma` (fixed).
    :param str encoder: ``"linear"`` (:class:`LinearEncoder`, which can equal the exact posterior
        when it is diagonal) or ``"mlp"`` (the usual amortised MLP of :class:`pyrovae.VAE`).
    :param hidden_dims: hidden widths of the MLP encoder (unused by the linear encoder).
    :param str activation: activation of the MLP encoder.
    :param image_shape: shape of one data point as an image, for pictures.
    :param str name: prefix of the Pyro parameter names.
    """

    kind = "linear-gaussian"

    def __init__(
        self,
        x_dim: int,
        z_dim: int,
        sigma: float = 1.0,
        encoder: str = "linear",
        hidden_dims: Sequence[int] = (64,),
        activation: str = "relu",
        image_shape: Sequence[int] | None = None,
        name: str = "linear_gaussian",
    ):
        if encoder not in ENCODERS:
            raise ConfigError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        super().__init__(
            x_dim,
            z_dim,
            hidden_dims,
            likelihood="gaussian",
            prior="normal",
            sigma=sigma,
            learn_sigma=False,
            activation=activation,
            image_shape=image_shape,
            name=name,
        )
        self.decoder = nn.Linear(z_dim, x_dim)
        if encoder == "linear":
            self.encoder = LinearEncoder(x_dim, z_dim)
        self._hparams = {  # this __init__'s arguments (the checkpoint records the kind beside them)
            "x_dim": x_dim,
            "z_dim": z_dim,
            "sigma": float(sigma),
            "encoder": encoder,
            "hidden_dims": list(self.hidden_dims),
            "activation": activation,
            "image_shape": list(self.image_shape) if self.image_shape else None,
            "name": name,
        }

    @classmethod
    def from_hparams(
        cls, hparams: Mapping[str, Any], prior: Any = None, trust_prior: bool = False, source: str = "the checkpoint"
    ) -> LinearGaussianVAE:
        r"""``LinearGaussianVAE(**hparams)``: its prior is always :math:`\mathcal N(0, I)`, so ``prior``
        must be ``None`` or ``"normal"``."""
        if prior not in (None, "normal"):
            raise ModelError(f"the linear-Gaussian VAE's prior is always 'normal', got prior={prior!r}")
        return cls(**hparams)

    # -- parameters -----------------------------------------------------------------------
    @property
    def weight(self) -> torch.Tensor:
        """:math:`W`, shape ``(x_dim, z_dim)``."""
        return self.decoder.weight

    @property
    def bias(self) -> torch.Tensor:
        """:math:`b`, shape ``(x_dim,)``."""
        return self.decoder.bias

    @property
    def sigma(self) -> torch.Tensor:
        """:math:`\\sigma`, a scalar tensor."""
        return self.likelihood.sigma

    def _check_x(self, x: torch.Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.x_dim:
            raise ConfigError(f"x must have shape (batch, {self.x_dim}), got {tuple(x.shape)}")

    def _posterior_precision_cholesky(self) -> torch.Tensor:
        r"""Cholesky factor :math:`L` of :math:`\Sigma_{post}^{-1} = I + W^\top W / \sigma^2`."""
        w = self.weight
        precision = torch.eye(self.z_dim, dtype=w.dtype, device=w.device) + w.mT @ w / self.sigma**2
        return torch.linalg.cholesky(precision)

    # -- exact quantities -----------------------------------------------------------------
    def marginal_covariance(self) -> torch.Tensor:
        """:math:`WW^\\top + \\sigma^2 I`, the covariance of :math:`p_\\theta(x)`, shape ``(x_dim, x_dim)``."""
        w = self.weight
        return w @ w.mT + self.sigma**2 * torch.eye(self.x_dim, dtype=w.dtype, device=w.device)

    def exact_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""The exact posterior :math:`p_\theta(z|x) = \mathcal N(\mu_{post}, \Sigma_{post})`.

        .. math::

            \Sigma_{post} = (I + W^\top W/\sigma^2)^{-1}, \qquad
            \mu_{post} = \Sigma_{post} W^\top (x - b) / \sigma^2.

        :param torch.Tensor x: data, shape ``(B, x_dim)``.
        :returns: ``(mean, cov)`` of shapes ``(B, z_dim)`` and ``(z_dim, z_dim)`` (the covariance
            does not depend on :math:`x`).
        """
        self._check_x(x)
        chol = self._posterior_precision_cholesky()
        projected = (x - self.bias) @ self.weight / self.sigma**2  # rows W^T (x - b) / sigma^2
        mean = torch.cholesky_solve(projected.mT, chol).mT
        return mean, torch.cholesky_inverse(chol)

    def exact_log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        r"""The exact :math:`\log p_\theta(x) = \log \mathcal N(x;\, b,\, WW^\top + \sigma^2 I)`.

        With :math:`r = x - b`, the matrix determinant lemma and the Woodbury identity reduce
        the :math:`d \times d` algebra to the :math:`k \times k` posterior precision
        :math:`\Lambda = I + W^\top W/\sigma^2`:

        .. math::

            \log p_\theta(x) = -\tfrac12 \Big[ d \log(2\pi\sigma^2) + \log|\Lambda|
                + \lVert r\rVert^2/\sigma^2 - \mu_{post}^\top \Lambda\, \mu_{post} \Big].

        :param torch.Tensor x: data, shape ``(B, x_dim)``.
        :returns: shape ``(B,)``, nats.
        """
        self._check_x(x)
        chol = self._posterior_precision_cholesky()
        r = x - self.bias
        projected = r @ self.weight / self.sigma**2
        # mu^T Lambda mu = ||L^-1 W^T r / sigma^2||^2
        u = torch.linalg.solve_triangular(chol, projected.mT, upper=False)
        log_det_precision = 2 * torch.log(torch.diagonal(chol)).sum()
        quadratic = r.pow(2).sum(-1) / self.sigma**2 - u.pow(2).sum(0)
        return -0.5 * (self.x_dim * torch.log(2 * math.pi * self.sigma**2) + log_det_precision + quadratic)

    def _q(
        self, x: torch.Tensor, loc: torch.Tensor | None, cov: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if (loc is None) != (cov is None):
            raise ConfigError("give both loc and cov of q, or neither (then q is the encoder's)")
        if loc is None:
            loc, scale = self.encoder(x)
            return loc, torch.diag_embed(scale**2)
        if loc.shape != (x.shape[0], self.z_dim):
            raise ConfigError(f"loc must have shape ({x.shape[0]}, {self.z_dim}), got {tuple(loc.shape)}")
        if cov.shape not in ((self.z_dim, self.z_dim), (x.shape[0], self.z_dim, self.z_dim)):
            raise ConfigError(
                f"cov must have shape ({self.z_dim}, {self.z_dim}) or ({x.shape[0]}, {self.z_dim}, {self.z_dim}), "
                f"got {tuple(cov.shape)}"
            )
        return loc, cov

    def exact_elbo(
        self, x: torch.Tensor, loc: torch.Tensor | None = None, cov: torch.Tensor | None = None
    ) -> ElboTerms:
        r"""The exact ELBO (eq. 11) of a Gaussian :math:`q(z|x) = \mathcal N(m, S)`, no Monte Carlo.

        .. math::

            \mathcal L(x) = \underbrace{\log \mathcal N(x;\, Wm + b,\, \sigma^2 I)
                - \frac{\mathrm{tr}(WSW^\top)}{2\sigma^2}}_{\mathbb E_q[\log p_\theta(x|z)]}
                - \mathrm{KL}(\mathcal N(m, S)\,\|\,\mathcal N(0, I))

        with the log-density by eq. 14 and the KL by eq. 16.

        :param torch.Tensor x: data, shape ``(B, x_dim)``.
        :param loc: :math:`m`, shape ``(B, z_dim)``; with ``cov`` omitted too, the encoder's q.
        :param cov: :math:`S`, any symmetric positive-definite matrix, shape ``(z_dim, z_dim)``
            or ``(B, z_dim, z_dim)``.
        :returns: :class:`~pyrovae.models.ElboTerms`, each of shape ``(B,)``.
        """
        self._check_x(x)
        loc, cov = self._q(x, loc, cov)
        w = self.weight
        trace = torch.diagonal(w @ cov @ w.mT, dim1=-2, dim2=-1).sum(-1)
        reconstruction = gaussian_log_likelihood(x, self.decoder(loc), self.sigma) - trace / (2 * self.sigma**2)
        eye = torch.eye(self.z_dim, dtype=loc.dtype, device=loc.device)
        kl = kl_gaussians(loc, cov, torch.zeros_like(loc), eye)
        return ElboTerms(reconstruction - kl, reconstruction, kl)

    def kl_to_posterior(
        self, x: torch.Tensor, loc: torch.Tensor | None = None, cov: torch.Tensor | None = None
    ) -> torch.Tensor:
        r""":math:`\mathrm{KL}(q(z|x)\,\|\,p_\theta(z|x))` by eq. 16, with the exact posterior.

        By eq. 20 this equals :math:`\log p_\theta(x) - \mathcal L(x)`, per data point.
        Arguments as in :meth:`exact_elbo`; returns shape ``(B,)``.
        """
        self._check_x(x)
        loc, cov = self._q(x, loc, cov)
        post_mean, post_cov = self.exact_posterior(x)
        return kl_gaussians(loc, cov, post_mean, post_cov)

    @torch.no_grad()
    def set_encoder_to_posterior(self, rtol: float = 1e-10) -> None:
        r"""Set the :class:`LinearEncoder` so that :math:`q_\phi(z|x) = p_\theta(z|x)` for every x.

        Possible only when :math:`\Sigma_{post}` is diagonal, i.e. :math:`W` has orthogonal
        columns: then :math:`A = \Sigma_{post} W^\top/\sigma^2`, :math:`c = -A b` and
        :math:`s = \tfrac12 \log \mathrm{diag}\,\Sigma_{post}`.

        :param float rtol: largest off-diagonal entry of :math:`\Sigma_{post}` allowed, relative to
            its largest diagonal entry.
        """
        if not isinstance(self.encoder, LinearEncoder):
            raise ConfigError(f"set_encoder_to_posterior needs encoder='linear', got {type(self.encoder).__name__}")
        cov = torch.cholesky_inverse(self._posterior_precision_cholesky())
        off_diagonal = (cov - torch.diag_embed(torch.diagonal(cov))).abs().max()
        if off_diagonal > rtol * torch.diagonal(cov).max():
            raise ConfigError(
                f"the exact posterior covariance has off-diagonal entries up to {float(off_diagonal):.3g} "
                f"(allowed: {rtol:g} relative), so no mean-field q equals it: give W orthogonal columns"
            )
        gain = cov @ self.weight.mT / self.sigma**2
        self.encoder.loc.weight.copy_(gain)
        self.encoder.loc.bias.copy_(-gain @ self.bias)
        self.encoder.log_scale.copy_(0.5 * torch.log(torch.diagonal(cov)))
