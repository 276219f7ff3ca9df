"""One rank of the multi-process tests in ``tests/test_distributed.py``.

Started with ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` in its environment (as
``torchrun`` starts a process), it runs a scenario through ``pyrovae.fit(..., world=...)`` and
leaves what it found in a folder: ``python tests/ddp_worker.py SCENARIO FOLDER``. The test process
runs the same tiny runs in one process (:func:`tiny_run`) to compare.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pyro
import torch

from pyrovae import VAE
from pyrovae.data import Dataset
from pyrovae.data.loading import choose_loading
from pyrovae.errors import DistributedError
from pyrovae.train import FitInterrupted, GuardedStep, fit
from pyrovae.train.distributed import World, launch

#: the runs the equivalence test compares: (elbo, prior)
RUNS = {
    "meanfield": ("meanfield", "normal"),
    "trace": ("trace", "normal"),
    "vamp": ("meanfield", "vamp"),
    "iwae": ("iwae", "normal"),  # not the ELBO: each epoch also estimates the training ELBO
}
#: 151 training rows in batches of 32: four full batches (16 rows a rank) and one of 23 (12 + 11)
TRAIN_ROWS, TEST_ROWS, BATCH = 151, 37, 32


def tiny_data() -> Dataset:
    """Grey levels, binarized afresh every epoch (every rank draws the whole training set alike);
    a binary test set of 37 rows (19 + 18). Made from a fixed seed, the same in every process."""
    generator = torch.Generator().manual_seed(7)
    grey = torch.rand(TRAIN_ROWS + TEST_ROWS, 16, generator=generator, dtype=torch.float64) ** 2
    test = torch.bernoulli(grey[TRAIN_ROWS:], generator=generator)
    return Dataset("toy", grey[:TRAIN_ROWS], test, (4, 4), dynamic_binarization=True)


def tiny_run(
    name: str, world: World | None = None, state: dict[str, Any] | None = None, stream: bool = False, **options: Any
):
    """The run ``name`` of :data:`RUNS` in float64 (2 epochs, 2 particles), from ``state`` (a
    checkpoint: ``{"vae": state_dict, "resume": resume state}``) if given, with the training rows
    streamed (each rank reading its rows of every batch) if ``stream``; ``(vae, history)``."""
    elbo, prior = RUNS[name]
    data = tiny_data()
    if stream:
        data = choose_loading(data, "stream", 1)
    pyro.set_rng_seed(0)
    vae = VAE(data.x_dim, z_dim=3, hidden_dims=(16,), prior=prior, prior_components=3).double()
    if state is not None:
        vae.load_state_dict(state["vae"])
    elif prior == "vamp":
        vae.prior.initialize_from_data(data.train.double())
    history = fit(vae, data, elbo=elbo, epochs=2, batch_size=BATCH, num_particles=2, eval_particles=2, seed=0,
                  device="cpu", engine="eager", world=world, resume=None if state is None else state["resume"],
                  **options)  # fmt: skip
    return vae, history


def result(vae: VAE, history: Any) -> dict[str, Any]:
    return {"params": [p.detach().clone() for p in vae.parameters()], "epochs": history.epochs,
            "step_elbos": history.step_elbos}  # fmt: skip


def first_checkpoint(saved: dict[str, Any]):
    """A callback keeping the model and resume state at the first ``checkpoint`` event in ``saved``."""

    def keep(state) -> None:
        if state.event == "checkpoint" and not saved:
            vae = {k: v.clone() for k, v in state.vae.state_dict().items()}
            saved.update(vae=vae, resume=copy.deepcopy(state.resume_state()))  # (its lists grow as training goes on)

    return keep


def at_step(step: int, action) -> None:
    """Make this process's step guard call ``action()`` right after its ``step``-th step."""
    original, count = GuardedStep.__call__, [0]

    def call(self, *batch):
        loss = original(self, *batch)
        count[0] += 1
        if count[0] == step:
            action()
        return loss

    GuardedStep.__call__ = call


def main(scenario: str, folder: Path) -> None:
    torch.set_num_threads(1)
    with launch("cpu") as world:
        if scenario == "train":
            for name in RUNS:  # equivalence; the first run also keeps a checkpoint at step 3 (2 -> 1)
                saved: dict[str, Any] = {}
                vae, history = tiny_run(name, world, checkpoint_every=3, callbacks=[first_checkpoint(saved)])
                if world.is_main:
                    torch.save(result(vae, history), folder / f"{name}.pt")
                    if name == "meanfield":
                        torch.save(saved, folder / "checkpoint-2.pt")
            state = torch.load(folder / "checkpoint-1.pt", weights_only=True)  # written by one process (1 -> 2)
            vae, history = tiny_run("meanfield", world, state=state)
            if world.is_main:
                torch.save(result(vae, history), folder / "resumed-on-2.pt")
            # SIGTERM reaches rank 1 alone, during its 4th step: every rank stops after that step
            if world.rank == 1:
                at_step(4, lambda: os.kill(os.getpid(), signal.SIGTERM))
            events: list[tuple[str, int]] = []
            try:
                tiny_run(
                    "meanfield", world, handle_signals=True, callbacks=[lambda s: events.append((s.event, s.step))]
                )
            except FitInterrupted as stop:
                (folder / f"stopped-{world.rank}.json").write_text(json.dumps([stop.signal_name, stop.step, events]))
        elif scenario == "stream":  # the streaming path, from the start and resumed from one process's checkpoint
            vae, history = tiny_run("meanfield", world, stream=True)
            state = torch.load(folder / "checkpoint-1.pt", weights_only=True)
            resumed = tiny_run("meanfield", world, state=state, stream=True)
            if world.is_main:
                torch.save(result(vae, history), folder / "stream.pt")
                torch.save(result(*resumed), folder / "stream-resumed.pt")
        elif scenario in ("die", "die-stream"):  # rank 1 dies at its 3rd step (streaming: its loader's worker too)
            stream = scenario == "die-stream"
            if world.rank == 1:
                at_step(3, lambda: os._exit(7))
                tiny_run("meanfield", world, stream=stream)
                return
            last = [time.monotonic()]
            at_step(3, lambda: last.__setitem__(0, time.monotonic()))
            try:
                tiny_run("meanfield", world, stream=stream)
            except DistributedError as error:
                report = {"message": str(error), "seconds": time.monotonic() - last[0]}
                (folder / "report.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
