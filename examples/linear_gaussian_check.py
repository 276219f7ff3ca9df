"""The identities of docs/theory.md on a linear-Gaussian VAE (probabilistic PCA), where log p(x) and p(z|x) are exact.

p(z) = N(0, I), p(x|z) = N(Wz + b, sigma^2 I), float64. Prints, with the numbers:

1. ELBO <= log p(x) for every data point (eq. 11);
2. log p(x) - ELBO = KL(q(z|x) || p(z|x)) for arbitrary full-covariance Gaussian q (eq. 20);
3. ELBO = log p(x) when q is the exact posterior;
4. the IWAE estimate rises from the ELBO towards log p(x) as k grows;
5. PSIS k-hat < 0.5 when q is the exact posterior, large for a narrow, shifted q.

python examples/linear_gaussian_check.py --x-dim 10 --z-dim 3 --n 100
"""

from __future__ import annotations

import argparse
import math

import pyro
import torch

from pyrovae import LinearGaussianVAE, evaluate


def random_model(x_dim: int, z_dim: int, sigma: float, orthogonal: bool) -> LinearGaussianVAE:
    vae = LinearGaussianVAE(x_dim, z_dim, sigma=sigma).double()
    with torch.no_grad():
        w = torch.randn(x_dim, z_dim, dtype=torch.float64)
        if orthogonal:  # orthogonal columns: the exact posterior is diagonal, so the mean-field guide can hold it
            w = torch.linalg.qr(w)[0] * torch.linspace(2.0, 0.5, z_dim, dtype=torch.float64)
        vae.decoder.weight.copy_(w)
        vae.decoder.bias.copy_(torch.randn(x_dim, dtype=torch.float64))
    return vae


def draw_x(vae: LinearGaussianVAE, n: int) -> torch.Tensor:
    with torch.no_grad():
        return vae.decoder(torch.randn(n, vae.z_dim, dtype=torch.float64)) + vae.sigma * torch.randn(
            n, vae.x_dim, dtype=torch.float64
        )


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The docstring above as written, and the default of every option."""


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_Help)
    parser.add_argument("--x-dim", type=int, default=10)
    parser.add_argument("--z-dim", type=int, default=3)
    parser.add_argument("--sigma", type=float, default=0.7)
    parser.add_argument("--n", type=int, default=100, help="data points")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 10, 100, 1000, 5000], help="IWAE sample sizes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.z_dim > args.x_dim:
        parser.error(f"--z-dim must be <= --x-dim for orthogonal columns, got {args.z_dim} > {args.x_dim}")
    if max(args.k) < 21:
        parser.error(f"the largest --k must be >= 21 for PSIS k-hat, got {max(args.k)}")
    pyro.set_rng_seed(args.seed)
    out: dict[str, float] = {}

    vae = random_model(args.x_dim, args.z_dim, args.sigma, orthogonal=False)
    x = draw_x(vae, args.n)
    print(f"linear-Gaussian VAE: x_dim={args.x_dim} z_dim={args.z_dim} sigma={args.sigma} n={args.n} seed={args.seed}")
    print("dtype=float64, device=cpu; log p(x) and p(z|x) in closed form\n")
    with torch.no_grad():
        log_px = vae.exact_log_marginal(x)
        post_mean, post_cov = vae.exact_posterior(x)
        a = torch.randn(args.n, args.z_dim, args.z_dim, dtype=torch.float64) / math.sqrt(args.z_dim)
        loc = post_mean + 0.5 * torch.randn(args.n, args.z_dim, dtype=torch.float64)
        cov = 0.3 * a @ a.mT + 0.01 * torch.eye(args.z_dim)
        elbo = vae.exact_elbo(x, loc, cov).elbo
        kl = vae.kl_to_posterior(x, loc, cov)
        elbo_at_posterior = vae.exact_elbo(x, post_mean, post_cov).elbo
    out["max_elbo_minus_log_px"] = float((elbo - log_px).max())
    out["max_identity_20_error"] = float((log_px - elbo - kl).abs().max())
    out["max_posterior_elbo_error"] = float((elbo_at_posterior - log_px).abs().max())
    print(f"mean log p(x) = {log_px.mean():.6f} nats")
    print("q(z|x): a random full-covariance Gaussian per data point")
    print(f"1. eq. 11  ELBO <= log p(x): max over points of ELBO - log p(x) = {out['max_elbo_minus_log_px']:.4f}")
    print(f"           (mean ELBO {elbo.mean():.4f}, {int((elbo <= log_px).sum())} of {args.n} points below)")
    print(f"2. eq. 20  log p(x) - ELBO = KL(q || p(z|x)): mean gap {(log_px - elbo).mean():.6f},")
    print(f"           mean KL {kl.mean():.6f}, max |gap - KL| = {out['max_identity_20_error']:.2e}")
    print(f"3.         q = exact posterior: max |ELBO - log p(x)| = {out['max_posterior_elbo_error']:.2e}")

    # 4: a mean-field guide that is wider than the posterior in every direction, mean shifted by 0.3
    with torch.no_grad():
        gain = post_cov @ vae.weight.mT / vae.sigma**2
        vae.encoder.loc.weight.copy_(gain)
        vae.encoder.loc.bias.copy_(-gain @ vae.bias + 0.3)
        vae.encoder.log_scale.fill_(0.5 * math.log(1.5 * torch.linalg.eigvalsh(post_cov).max()))
        guide_elbo = vae.exact_elbo(x).elbo.mean()
    print("4. IWAE with a mean-field q, wider than p(z|x) and shifted (± standard error over points and draws):")
    print(f"           exact ELBO {guide_elbo:.4f}, log p(x) {log_px.mean():.4f}")
    for k in args.k:
        result = evaluate(vae, x, k=k, seed=k, psis=False)
        gap = log_px - result.log_px
        se = float(gap.std() / math.sqrt(args.n)) if args.n > 1 else math.nan
        iwae = out[f"iwae_{k}"] = float(result.log_px.mean())
        print(f"           k={k:>5}: mean IWAE {iwae:.4f}, log p(x) - IWAE = {gap.mean():.4f} ± {se:.4f}")

    # 5: PSIS k-hat; orthogonal columns make the exact posterior diagonal, so the guide can be it
    vae = random_model(args.x_dim, args.z_dim, args.sigma, orthogonal=True)
    x = draw_x(vae, args.n)
    vae.set_encoder_to_posterior()
    k = max(args.k)
    exact = evaluate(vae, x, k=k, seed=0)
    with torch.no_grad():
        error = float((exact.log_px - vae.exact_log_marginal(x)).abs().max())
        vae.encoder.log_scale.add_(math.log(0.3))
        vae.encoder.loc.bias.add_(vae.encoder.log_scale.exp() / 0.3)
    narrow = evaluate(vae, x, k=k, seed=0).summary()
    out["khat_exact_max"] = float(exact.khat.max())
    out["khat_narrow_median"] = float(narrow["khat_median"])
    print(f"5. PSIS k-hat with k={k}, orthogonal W so that the mean-field guide can be the exact posterior:")
    print(f"           q = exact posterior: max |IWAE - log p(x)| = {error:.2e}, max k-hat {out['khat_exact_max']}")
    print("           (-inf: every weight equals p(x) to rounding)")
    print(f"           q = N(mu + sd, (0.3 sd)^2): median k-hat {out['khat_narrow_median']:.2f}, "
          f"{100 * narrow['khat_fraction_above_threshold']:.0f}% of points above 0.7")  # fmt: skip
    return out


if __name__ == "__main__":
    main()
