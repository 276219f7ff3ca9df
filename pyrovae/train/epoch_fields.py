r"""The fields of an epoch's record beyond the ELBOs: the held-out ELBO's two terms, the KL weight,
the learning rate and the gradient norm.

- ``test_elbo``, ``test_reconstruction``, ``test_kl``, ``test_kl_sites`` (and ``validation_*``):
  eq. 11 split into :math:`\mathbb E_q[\log p_\theta(x|z)]` and :math:`\mathrm{KL}(q\,\|\,p)` per
  data point, from one pass on the same draws (:func:`pyrovae.infer.elbo_terms.estimate_elbo_terms`;
  the ELBO is the number the test ELBO always was); ``eval_kl_mode`` says how each site's KL was
  computed there (in closed form where the prior has one, as the test ELBO always computes it);
- ``kl_weight``: the weight of the KL at the epoch's end, :math:`\beta_t` of eq. 26 (1 for the
  ELBO, :math:`1-\alpha` for InfoVAE, eq. 28; absent for objectives without one, ``iwae``);
- ``lr``: the learning rate of the epoch's last step;
- ``grad_norm``: the mean over the epoch's steps of the Euclidean norm of the whole gradient,
  before clipping (summed on the device by the step, read once per epoch).
"""

from __future__ import annotations

from typing import Any

import torch
from pyro.infer import ELBO

from ..infer.elbo_terms import ELBOTerms, estimate_elbo_terms
from ..infer.module_elbo import optimises_the_elbo
from .sharding import GlobalBatchNoise
from .state import ResumeState
from .step import GuardedStep

__all__ = ["held_out_fields", "step_fields", "kl_weight", "carried_grad_norms"]


def _terms(world: Any, vae: torch.nn.Module, x: torch.Tensor, particles: int, batch_size: int = 1024) -> ELBOTerms:
    """:func:`estimate_elbo_terms` over the ranks of ``world``, split as ``world.test_elbo`` splits
    the test ELBO (each chunk's noise drawn whole, each rank's rows summed, the sums all-reduced)."""
    if not world.launched:
        return estimate_elbo_terms(vae, x, particles, batch_size)
    total, sums, modes, complete = 0.0, {}, {}, True
    for chunk in x.split(batch_size):
        rows, *layout = world.shard(chunk)
        start, chunk_rows, owned = layout[0] if layout else (world.span(len(chunk))[0], len(chunk), len(rows))
        with GlobalBatchNoise(start, start + rows.shape[0], chunk_rows):
            terms = estimate_elbo_terms(vae, rows, particles, batch_size=rows.shape[0])
        total += terms.elbo * owned
        if terms.kl_sites is None:  # (alike on every rank: the same program)
            complete = False
            continue
        modes.update(terms.kl_mode)
        for name, value in {"": terms.reconstruction, **terms.kl_sites}.items():
            sums[name] = sums.get(name, 0.0) + value * owned
    if not complete:
        return ELBOTerms(world.sum(total) / x.shape[0], None, None, None, {})
    means = {name: world.sum(value) / x.shape[0] for name, value in sums.items()}
    reconstruction = means.pop("")
    return ELBOTerms(world.sum(total) / x.shape[0], reconstruction, sum(means.values()), means, modes)


def held_out_fields(name: str, world: Any, vae: torch.nn.Module, x: torch.Tensor, particles: int) -> dict[str, Any]:
    """``{name}_elbo`` and, where the model's terms can be read off its traces, ``{name}_reconstruction``,
    ``{name}_kl``, ``{name}_kl_sites`` and ``eval_kl_mode``, for the rows ``x`` (see the module)."""
    terms = _terms(world, vae, x, particles)
    fields: dict[str, Any] = {f"{name}_elbo": terms.elbo}
    if terms.kl_sites is not None:
        fields[f"{name}_reconstruction"] = terms.reconstruction
        fields[f"{name}_kl"] = terms.kl
        fields[f"{name}_kl_sites"] = terms.kl_sites
        fields["eval_kl_mode"] = terms.kl_mode
    return fields


def kl_weight(estimator: ELBO, step: int) -> float | None:
    """The KL's weight after ``step`` steps: :math:`\\beta_t` (eq. 26) of a weighted ELBO, its KL
    part's for InfoVAE, 1 for the ELBO, ``None`` for an objective without one (IWAE)."""
    for owner in (estimator, getattr(estimator, "weighted", None)):
        weight_at = getattr(owner, "weight_at", None)
        if callable(weight_at):
            return float(weight_at(step))
    return 1.0 if optimises_the_elbo(estimator) else None


def step_fields(estimator: ELBO, optimizer: torch.optim.Optimizer, guarded: GuardedStep, steps: int) -> dict[str, Any]:
    """``kl_weight``, ``lr`` and ``grad_norm`` at the end of an epoch, ``steps`` steps into the run;
    the step's sum of gradient norms starts again at 0."""
    total, counted = guarded.grad_norms()
    guarded.set_grad_norms()
    fields: dict[str, Any] = {"lr": float(optimizer.param_groups[0]["lr"])}
    weight = kl_weight(estimator, steps)
    if weight is not None:
        fields["kl_weight"] = weight
    if counted:
        fields["grad_norm"] = total / counted
    return fields


def carried_grad_norms(resume: ResumeState | None) -> tuple[float, int]:
    """Where a resumed epoch's sum of gradient norms starts (a new run's: 0 over 0 steps)."""
    return (0.0, 0) if resume is None else resume.grad_norms
