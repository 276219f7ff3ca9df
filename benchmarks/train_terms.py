"""What recording the training set's KL (``train_kl``, ``train_reconstruction``) costs a step.

Times the training step (``GuardedStep``: loss, backward, fused Adam) of ``--elbo meanfield`` on
the 784-400-50 MLP, on random binary rows, with the objective as it is and wrapped by
:class:`pyrovae.train.step_kl.KLRecorder` (plus the loop's per-step sum on the device), in
alternating rounds so that a change of the machine's load touches both alike. Each round's time is
the CPU time of the training thread (``time.thread_time``) per step; the table gives the medians
and the median of the rounds' paired differences.

    python benchmarks/train_terms.py --rounds 9 --steps 200 --batches 32,128,256 --out DIR
"""

from __future__ import annotations

import statistics
import time

from _provenance import parse_round_options, rounds_line, time_in_rounds, write_report  # noqa: I001 (this folder's helper)


def step_times(batch: int, rounds: int, steps: int) -> dict[str, list[float]]:
    """Per-step CPU milliseconds of each round, ``plain`` and ``recorded``, alternating."""
    import pyro
    import torch

    from pyrovae import VAE
    from pyrovae.infer import make_elbo
    from pyrovae.infer.objective import Objective
    from pyrovae.train.step import GuardedStep, make_adam
    from pyrovae.train.step_kl import record_train_terms

    torch.manual_seed(0)
    vae = VAE(784, z_dim=50, hidden_dims=(400,))
    x = torch.bernoulli(torch.rand(batch, 784))
    estimator = make_elbo("meanfield", 1)
    plain = Objective(vae.model, vae.guide, estimator, num_data=60_000)
    recorded, terms = record_train_terms(plain, vae, estimator, 60_000)
    times: dict[str, list[float]] = {"plain": [], "recorded": []}
    with pyro.validation_enabled(False):
        for _ in range(rounds):
            for name, module in (("plain", plain), ("recorded", recorded)):
                step = GuardedStep(module, make_adam(vae.parameters(), 1e-4))
                add = terms.add if name == "recorded" else (lambda: None)
                for _ in range(10):  # (warm-up)
                    step(x)
                    add()
                start = time.thread_time()
                for _ in range(steps):
                    step(x)
                    add()
                times[name].append((time.thread_time() - start) / steps * 1e3)
    return times


def main(argv: list[str] | None = None) -> dict:
    args = parse_round_options(__doc__, argv, rounds=9, steps=200, batches="32,128,256")

    def row(batch: int) -> dict:
        times = step_times(batch, args.rounds, args.steps)
        plain, recorded = statistics.median(times["plain"]), statistics.median(times["recorded"])
        paired = statistics.median(r - p for p, r in zip(times["plain"], times["recorded"], strict=True))
        print(f"batch {batch}: plain {plain:.3f} ms, recorded {recorded:.3f} ms, paired difference {paired:+.3f} ms")
        return {"batch": batch, "plain_ms": plain, "recorded_ms": recorded, "paired_difference_ms": paired,
                "rounds": times}  # fmt: skip

    out, report = time_in_rounds("train_terms", args, row)
    table = "| batch | step (ms) | step with the recorder (ms) | median paired difference (ms) |\n"
    table += "| ---: | ---: | ---: | ---: |\n"
    table += "\n".join(
        f"| {r['batch']} | {r['plain_ms']:.3f} | {r['recorded_ms']:.3f} | {r['paired_difference_ms']:+.3f} |"
        for r in report["rows"]
    )
    header = (
        f"# The cost of recording the training KL\n\nCPU time of the training thread per step, {rounds_line(report)}."
    )
    write_report(out, "train_terms", "cpu", report, header, table)
    return report


if __name__ == "__main__":
    main()
