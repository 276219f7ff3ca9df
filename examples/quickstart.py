"""Train a VAE on the embedded digits with the Python API, then check Pyro against the closed form.

python examples/quickstart.py --epochs 20
"""

from __future__ import annotations

import argparse

import pyro
import torch
from pyro import poutine

from pyrovae import VAE, FitOptions, closed_form_elbo, fit, load_dataset, make_elbo


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The docstring above as written, and the default of every option."""


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_Help)
    parser.add_argument("--epochs", type=int, default=20, help="passes over the digits training set")
    parser.add_argument("--z-dim", type=int, default=10, help="latent dimensions")
    parser.add_argument("--hidden", type=int, default=256, help="units of the hidden layer")
    parser.add_argument(
        "--elbo", default="meanfield", choices=["meanfield", "trace"], help="KL in closed form or by sampling"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    args = parser.parse_args(argv)

    data = load_dataset("digits", binarization="dynamic")
    pyro.set_rng_seed(args.seed)
    vae = VAE(data.x_dim, z_dim=args.z_dim, hidden_dims=(args.hidden,), image_shape=data.image_shape)
    history = fit(
        vae, data, FitOptions(elbo=args.elbo, epochs=args.epochs, batch_size=128, lr=1e-3, seed=args.seed), log=print
    )

    # One draw of z from the guide; Pyro's TraceMeanField_ELBO and the closed form on that draw.
    x = data.test
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    loc, scale = vae.encoder(x)
    eps = (guide_trace.nodes["z"]["value"] - loc) / scale
    replay = {"trace": guide_trace}
    pyro_elbo = -make_elbo("meanfield").loss(
        poutine.replay(vae.model, **replay), poutine.replay(vae.guide, **replay), x
    )
    with torch.no_grad():
        terms = closed_form_elbo(vae, x, eps=eps)
    closed = terms.elbo.sum().item()
    print(f"test ELBO per image: {history.last['test_elbo']:.3f} nats")
    print(f"same draw, summed over {len(x)} test images: Pyro {pyro_elbo:.6f}, closed form {closed:.6f}")
    print(f"  reconstruction {terms.reconstruction.mean():.3f}, KL {terms.kl.mean():.3f} nats per image")
    return {"test_elbo": history.last["test_elbo"], "pyro_elbo": pyro_elbo, "closed_form_elbo": closed}


if __name__ == "__main__":
    main()
