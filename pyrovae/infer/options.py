r"""The options of the objectives beyond the plain ELBO, each declared once: default and check.

:class:`ObjectiveOptions` owns them; :class:`pyrovae.train.FitOptions` (and through it
:func:`pyrovae.fit`, :class:`pyrovae.config.FitConfig` and ``pyrovae fit --help``) takes their
defaults from here, and :func:`pyrovae.infer.make_elbo` checks them here.

===================  ==================  =====================================================
option               for ``--elbo``      meaning
===================  ==================  =====================================================
``beta``             meanfield, trace    the KL's weight :math:`\beta` (eq. 26)
``kl_warmup``        meanfield, trace    steps over which the weight rises linearly from 0 to
                                         :math:`\beta` (0: none)
``free_bits``        meanfield, trace    nats per latent coordinate below which the KL is not
                                         penalised (eq. 27; 0: none)
``iwae_grad``        iwae                ``standard`` or ``dreg`` (doubly reparameterised,
                                         eq. 25) encoder gradients
``infovae_alpha``    infovae             :math:`\alpha` of eq. 28 (at most 1)
``infovae_lambda``   infovae             :math:`\lambda` of eq. 28 (:math:`\alpha + \lambda \ge 1`)
``mmd_kernel``       infovae             ``imq`` or ``rbf`` (eq. 30)
===================  ==================  =====================================================

An option that does not apply to the chosen ``--elbo`` must keep its default: a run that asks
for ``--beta 2 --elbo iwae`` is refused rather than silently trained without it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..models.mmd import check_kernel
from ..spec.names import IWAE_GRADS
from ..spec.run import OPTIONS_FOR

__all__ = ["ObjectiveOptions", "IWAE_GRADS", "OPTIONS_FOR"]


#: which ``--elbo`` each option applies to (the run spec's word for it)


def _number(name: str, value: Any, minimum: float | None = None, maximum: float | None = None) -> float:
    flag = f"--{name.replace('_', '-')}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} ({flag}) must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} ({flag}) must be >= {minimum:g}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} ({flag}) must be <= {maximum:g}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ObjectiveOptions:
    r"""The objectives' options (see the module docstring); building one checks every value.

    The InfoVAE defaults, :math:`\alpha = 0` and :math:`\lambda = 1000`, keep the ELBO's
    :math:`\mathrm{KL}(q(z|x)\,\|\,p(z))` whole and weight the MMD by :math:`\alpha + \lambda - 1 = 999`:
    our reading of the regime Zhao et al. recommend for the MMD (a large :math:`\lambda`, because an
    MMD between a batch's codes and prior draws is a small number next to the per-point terms),
    not re-checked against the paper's text when this was written.
    :math:`\alpha + \lambda < 1` would give the divergence a negative weight, rewarding an
    aggregate posterior *far* from the prior, and :math:`\alpha > 1` a negative KL weight,
    rewarding ever narrower :math:`q(z|x)` without bound: both are refused.
    """

    beta: float = 1.0
    kl_warmup: int = 0
    free_bits: float = 0.0
    iwae_grad: str = "dreg"
    infovae_alpha: float = 0.0
    infovae_lambda: float = 1000.0
    mmd_kernel: str = "imq"

    def __post_init__(self) -> None:
        _number("beta", self.beta, minimum=0.0)
        if isinstance(self.kl_warmup, bool) or not isinstance(self.kl_warmup, int) or self.kl_warmup < 0:
            raise ConfigError(f"kl_warmup (--kl-warmup) must be an int >= 0 (steps; 0: none), got {self.kl_warmup!r}")
        _number("free_bits", self.free_bits, minimum=0.0)
        if self.iwae_grad not in IWAE_GRADS:
            raise ConfigError(f"iwae_grad (--iwae-grad) must be one of {', '.join(IWAE_GRADS)}, got {self.iwae_grad!r}")
        alpha = _number("infovae_alpha", self.infovae_alpha, maximum=1.0)
        lam = _number("infovae_lambda", self.infovae_lambda)
        if alpha + lam < 1:
            raise ConfigError(
                f"infovae needs alpha + lambda >= 1 (the MMD's weight alpha + lambda - 1 must not be negative, or "
                f"the objective rewards codes unlike the prior), got alpha={alpha:g}, lambda={lam:g}: raise "
                f"--infovae-lambda to at least {1 - alpha:g}"
            )
        check_kernel(self.mmd_kernel)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def changed(self) -> list[str]:
        """The options set to something other than their default."""
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) != f.default]

    def check_for(self, elbo: str) -> ObjectiveOptions:
        """``self``, if every option that does not apply to ``elbo`` keeps its default."""
        wrong = [name for name in self.changed() if elbo not in OPTIONS_FOR[name]]
        if wrong:
            flags = "; ".join(
                f"--{name.replace('_', '-')} is for --elbo {' or '.join(OPTIONS_FOR[name])}" for name in wrong
            )
            raise ConfigError(f"{flags}, not --elbo {elbo}: leave it at its default, or choose that --elbo")
        return self

    @property
    def weights_kl(self) -> bool:
        """Whether ``meanfield`` / ``trace`` optimise something other than the ELBO itself."""
        return self.beta != 1.0 or self.kl_warmup > 0 or self.free_bits > 0
