"""Print both sides of the ELBO's equivalent forms (eq. 19-21) and of the split of its KL (eq. 32).

    python examples/seed_identities.py --n 8 --draws 200000

A linear-Gaussian VAE (probabilistic PCA, exact log p(x) and posterior) with a random model and a
linear encoder that is *not* its posterior, and a data set of --n points with p_D uniform over them.
Eq. 19 and 20 are computed in closed form, eq. 21 and 32 by Monte Carlo over z ~ q(z) (the mixture
of the n encoder Gaussians, eq. 31), with standard errors; see pyrovae.evaluation.identities.
"""

from __future__ import annotations

import argparse

import pyro
import torch

from pyrovae import LinearGaussianVAE
from pyrovae.evaluation.identities import elbo_forms


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The docstring above as written, and the default of every option."""


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_Help)
    parser.add_argument("--x-dim", type=int, default=4)
    parser.add_argument("--z-dim", type=int, default=2)
    parser.add_argument("--n", type=int, default=8, help="data points (p_D uniform over them)")
    parser.add_argument("--draws", type=int, default=200_000, help="Monte Carlo draws of z ~ q(z)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    pyro.set_rng_seed(args.seed)
    vae = LinearGaussianVAE(args.x_dim, args.z_dim, sigma=0.7).double()
    with torch.no_grad():
        vae.decoder.weight.normal_()
        vae.decoder.bias.normal_()
        vae.encoder.loc.weight.normal_(0.0, 0.5)
        vae.encoder.log_scale.fill_(-0.5)
    x = torch.randn(args.n, args.x_dim, dtype=torch.float64)
    f = elbo_forms(vae, x, draws=args.draws, seed=args.seed)

    print(f"linear-Gaussian VAE, x_dim={args.x_dim}, z_dim={args.z_dim}, p_D uniform over N={f.n_points} points, "
          f"float64; H(p_D) = log N = {f.entropy_data:.6f}")  # fmt: skip
    print(f"ELBO (eq. 12), exact:                          {f.elbo:.12f}")
    print(f"eq. 19  -KL(q(x,z)||p(x,z)) - H(p_D):          {f.eq19:.12f}   (KL = {f.kl_joint:.6f})")
    print(f"eq. 20  -KL(p_D||p) - E KL(q(z|x)||p(z|x)) - H: {f.eq20:.12f}   "
          f"(KL(p_D||p) = {f.kl_data_model:.6f}, E KL(q||posterior) = {f.kl_posterior:.6f})")  # fmt: skip
    print(f"eq. 21  -KL(q(z)||p(z)) - E KL(q(x|z)||p(x|z)) - H: {f.eq21:.6f} +- {f.eq21_se:.6f}   "
          f"(KL(q(z)||p(z)) = {f.kl_aggregate:.6f}, E KL(q(x|z)||p(x|z)) = {f.conditional_kl:.6f}; "
          f"{f.draws} draws)")  # fmt: skip
    print(
        f"eq. 32  E KL(q(z|x)||p(z)) = {f.kl_prior:.6f} (exact)  vs  I(x;z) + KL(q(z)||p(z)) = "
        f"{f.mutual_information + f.kl_aggregate:.6f} +- {f.kl_split_se:.6f}  (I = {f.mutual_information:.6f})"
    )
    result = f.to_dict()
    result.update(
        eq19_error=abs(f.elbo - f.eq19),
        eq20_error=abs(f.elbo - f.eq20),
        eq21_z=(f.elbo - f.eq21) / f.eq21_se,
        eq32_z=(f.kl_prior - f.mutual_information - f.kl_aggregate) / f.kl_split_se,
    )
    print(f"|ELBO - eq. 19| = {result['eq19_error']:.1e}, |ELBO - eq. 20| = {result['eq20_error']:.1e}, "
          f"eq. 21 off by {result['eq21_z']:+.2f} s.e., eq. 32 off by {result['eq32_z']:+.2f} s.e.")  # fmt: skip
    return result


if __name__ == "__main__":
    main()
