"""Write your own model: a VAE with a Laplace decoder, as a Pyro model and guide of your own; train it,
evaluate it and reload it with pyrovae.

    python examples/custom_model.py --epochs 20

A model subclasses ``pyrovae.models.LatentVariableModel`` and writes three things: ``model(x,
num_data=None)`` and ``guide(x, num_data=None)`` (Pyro programs over the plate ``"data"``, scaled
by ``num_data / batch`` when it is given) and ``hparams()`` (its constructor's arguments as plain
JSON values, for checkpoints). It sets ``x_dim``, ``z_dim``, ``likelihood`` (whose ``name`` picks
the data checks) and ``prior``. Everything else pyrovae asks has a default that works from the Pyro
program: ``evaluate`` traces the guide with k particles and replays the model on its draws
(``log_weights``), ``meanfield`` asks torch's KL registry at each latent site (here a Gaussian q
against the N(0, I) prior: in closed form).

A checkpoint records the class path (``custom_model:LaplaceVAE``, or ``__main__:LaplaceVAE`` for
this script) and ``hparams()``, but loading never imports a class because a file names it:
``load_vae(path, model=LaplaceVAE)`` rebuilds it from the class you pass, ``model="package.module:
LaplaceVAE"`` imports the path you name, and ``load_vae(path)`` alone is refused.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from torch import nn

from pyrovae import FitOptions, evaluate, fit, load_vae, save_checkpoint
from pyrovae.models import LatentVariableModel, Likelihood, StandardNormalPrior


class LaplaceLikelihood(Likelihood):
    r"""p(x|z) = prod_d Laplace(x_d; mu_d, b_d): the decoder gives a location and a log-scale per dimension."""

    name = "laplace"
    params_per_dim = 2

    def distribution(self, output: torch.Tensor) -> dist.TorchDistribution:
        loc, log_scale = output.chunk(2, dim=-1)
        return dist.Laplace(loc, log_scale.exp()).to_event(1)

    def log_prob(self, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """-sum_d [|x_d - mu_d| / b_d + log(2 b_d)]."""
        loc, log_scale = output.chunk(2, dim=-1)
        return -((x - loc).abs() / log_scale.exp() + log_scale + torch.log(torch.tensor(2.0))).sum(-1)

    def mean(self, output: torch.Tensor) -> torch.Tensor:
        return output.chunk(2, dim=-1)[0]


class LaplaceVAE(LatentVariableModel):
    """z ~ N(0, I), x ~ Laplace(decoder(z)); q(z|x) = N(mu(x), diag sigma(x)^2), MLPs of one hidden layer."""

    def __init__(self, x_dim: int, z_dim: int = 2, hidden: int = 32):
        super().__init__()
        self.x_dim, self.z_dim, self.hidden = x_dim, z_dim, hidden
        self.encoder = nn.Sequential(nn.Linear(x_dim, hidden), nn.Tanh(), nn.Linear(hidden, 2 * z_dim))
        self.decoder = nn.Sequential(nn.Linear(z_dim, hidden), nn.Tanh(), nn.Linear(hidden, 2 * x_dim))
        self.likelihood = LaplaceLikelihood()
        self.prior = StandardNormalPrior(z_dim)

    def hparams(self) -> dict:
        return {"x_dim": self.x_dim, "z_dim": self.z_dim, "hidden": self.hidden}

    def model(self, x: torch.Tensor, num_data: int | None = None) -> None:
        scale = 1.0 if num_data is None else num_data / x.shape[0]
        with pyro.plate("data", x.shape[0], dim=-1), poutine.scale(scale=scale):
            z = pyro.sample("z", self.prior((x.shape[0],)))
            pyro.sample("x", self.likelihood.distribution(self.decoder(z)), obs=x)

    def guide(self, x: torch.Tensor, num_data: int | None = None) -> None:
        scale = 1.0 if num_data is None else num_data / x.shape[0]
        with pyro.plate("data", x.shape[0], dim=-1), poutine.scale(scale=scale):
            loc, raw_scale = self.encoder(x).chunk(2, dim=-1)
            pyro.sample("z", dist.Normal(loc, F.softplus(raw_scale) + 1e-6).to_event(1))


def make_data(n: int, x_dim: int, z_dim: int, seed: int) -> torch.Tensor:
    """Rows x = W z + b + Laplace noise (scale 0.3), z ~ N(0, I): data the model can fit."""
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(z_dim, x_dim, generator=generator)
    z = torch.randn(n, z_dim, generator=generator)
    noise = dist.Laplace(0.0, 0.3).sample((n, x_dim))
    return z @ w + 0.5 + noise


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The docstring above as written, and the default of every option."""


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_Help)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--n", type=int, default=1000, help="data points (a tenth held out for evaluation)")
    parser.add_argument("--x-dim", type=int, default=8)
    parser.add_argument("--z-dim", type=int, default=2)
    parser.add_argument("--k", type=int, default=100, help="importance samples per test point")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/custom-model", help="folder for checkpoint.pt")
    args = parser.parse_args(argv)

    pyro.set_rng_seed(args.seed)
    x = make_data(args.n, args.x_dim, args.z_dim, args.seed)
    test, train = x[: args.n // 10], x[args.n // 10 :]
    vae = LaplaceVAE(args.x_dim, z_dim=args.z_dim)
    history = fit(vae, train, FitOptions(epochs=args.epochs, batch_size=100, seed=args.seed), log=print)
    result = evaluate(vae, test, k=args.k, seed=args.seed)
    print(result.report())

    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = save_checkpoint(Path(args.out) / "checkpoint.pt", vae, history=history.epochs)
    try:
        load_vae(path)
    except ValueError as error:
        print(f"load_vae({path}) without the class is refused: {error}")
    else:
        raise RuntimeError("a checkpoint with a model class of yours loaded without naming the class")
    loaded = load_vae(path, model=LaplaceVAE)
    again = evaluate(loaded, test, k=args.k, seed=args.seed)
    same = torch.equal(again.log_px, result.log_px)
    print(f"load_vae({path}, model=LaplaceVAE): the same log p(x) on every test point: {same}")
    return {
        "kl_mode": history.kl_mode["z"],
        "log_px": result.summary()["log_px"],
        "elbo": result.summary()["elbo"],
        "reloaded_same": same,
    }


if __name__ == "__main__":
    main()
