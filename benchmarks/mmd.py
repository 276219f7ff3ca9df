"""What InfoVAE's MMD term costs a training step, and how long its calls take between steps.

Times the training step (``GuardedStep``: loss, backward, fused Adam) of ``--elbo meanfield`` and of
``--elbo infovae`` (eager) on the 784-400-50 MLP, on random binary rows, in alternating rounds so
that a change of the machine's load touches both alike, and, inside the ``infovae`` steps, each
call of the MMD (:func:`pyrovae.models.mmd.mmd`, its gradients included: they are computed in the
call). Where the two samples together reach :data:`pyrovae.models.mmd_tiles.MIN_ROWS` rows, the
``infovae`` step is timed twice, with the compiled tiles (``tiles``) and with the blocks of rows
(``blocks``, the tiles turned off). All times are CPU time of the training thread
(``time.thread_time``); the table gives medians over rounds (a round's MMD time is the median of
its calls).

    python benchmarks/mmd.py --rounds 7 --steps 30 --batches 128,1024 --out DIR
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from _provenance import parse_round_options, rounds_line, time_in_rounds, write_report  # noqa: I001 (this folder's helper)


def step_times(batch: int, rounds: int, steps: int) -> dict[str, list[float]]:
    """Per-step CPU milliseconds of each round for ``meanfield`` and each ``infovae`` form, and the
    median MMD call of each round (``mmd <form>``), alternating."""
    import pyro
    import torch

    import pyrovae.infer.infovae as infovae
    from pyrovae import VAE
    from pyrovae.infer import make_elbo
    from pyrovae.infer.objective import Objective
    from pyrovae.models import mmd_tiles
    from pyrovae.train.step import GuardedStep, make_adam

    torch.manual_seed(0)
    x = torch.bernoulli(torch.rand(batch, 784))
    tiled = mmd_tiles.MIN_ROWS is not None and 2 * batch >= mmd_tiles.MIN_ROWS
    forms = ["meanfield", "infovae tiles", "infovae blocks"] if tiled else ["meanfield", "infovae blocks"]
    calls: list[float] = []
    plain = infovae.mmd

    def timed(*args: object, **kwargs: object) -> torch.Tensor:
        start = time.thread_time()
        value = plain(*args, **kwargs)
        calls.append((time.thread_time() - start) * 1e3)
        return value

    times: dict[str, list[float]] = {form: [] for form in forms}
    times.update({f"mmd {form.split()[1]}": [] for form in forms if form != "meanfield"})
    minimum = mmd_tiles.MIN_ROWS
    infovae.mmd = timed
    try:
        with pyro.validation_enabled(False):
            for _ in range(rounds):
                for form in forms:
                    mmd_tiles.MIN_ROWS = None if form == "infovae blocks" else minimum
                    vae = VAE(784, z_dim=50, hidden_dims=(400,))
                    module = Objective(vae.model, vae.guide, make_elbo(form.split()[0], 1), num_data=60_000)
                    step: Callable[..., object] = GuardedStep(module, make_adam(vae.parameters(), 1e-4))
                    for _ in range(5):  # (warm-up, compiling included)
                        step(x)
                    calls.clear()
                    start = time.thread_time()
                    for _ in range(steps):
                        step(x)
                    times[form].append((time.thread_time() - start) / steps * 1e3)
                    if form != "meanfield":
                        times[f"mmd {form.split()[1]}"].append(statistics.median(calls))
    finally:
        infovae.mmd, mmd_tiles.MIN_ROWS = plain, minimum
    return times


def main(argv: list[str] | None = None) -> dict:
    args = parse_round_options(__doc__, argv, rounds=7, steps=30, batches="128,1024")
    from pyrovae.models import mmd_tiles

    def row(batch: int) -> dict:
        times = step_times(batch, args.rounds, args.steps)
        medians = {form: statistics.median(values) for form, values in times.items()}
        print(f"batch {batch}: " + ", ".join(f"{form} {ms:.3f} ms" for form, ms in medians.items()), flush=True)
        return {"batch": batch, "medians_ms": medians, "rounds": times}

    out, report = time_in_rounds("mmd", args, row, min_rows=mmd_tiles.MIN_ROWS)

    def cell(row: dict, form: str) -> str:
        return f"{row['medians_ms'][form]:.2f}" if form in row["medians_ms"] else "–"

    table = (
        "| batch | meanfield step (ms) | infovae step (ms) | infovae ÷ meanfield | MMD call, tiles (ms) "
        "| MMD call, blocks of rows (ms) | infovae step, blocks of rows (ms) |\n"
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    )
    for row in report["rows"]:
        medians = row["medians_ms"]
        infovae = medians.get("infovae tiles", medians["infovae blocks"])
        table += (
            f"| {row['batch']} | {medians['meanfield']:.2f} | {infovae:.2f} | {infovae / medians['meanfield']:.2f}× "
            f"| {cell(row, 'mmd tiles')} | {cell(row, 'mmd blocks')} | {cell(row, 'infovae blocks')} |\n"
        )
    header = (f"# The cost of InfoVAE's MMD term\n\nCPU time of the training thread, {rounds_line(report)}; random "
              f"binary rows, 784-400-50 MLP, eager engine. The infovae step takes the compiled tiles where its two "
              f"samples reach {mmd_tiles.MIN_ROWS} rows together, else the blocks of rows.")  # fmt: skip
    write_report(out, "mmd", "cpu", report, header, table.rstrip("\n"))
    return report


if __name__ == "__main__":
    main()
