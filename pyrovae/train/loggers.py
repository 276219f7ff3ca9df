"""Loggers of a training run (``--logger csv|tensorboard|mlflow``): one callback of
:func:`pyrovae.fit` that hands what the loop measures to each writer of
:mod:`pyrovae.train.log_writers`.

- every ``log_every`` steps, ``loss``: the step's objective estimate per data point, negated (the
  negative ELBO for ``meanfield``/``trace``), read from the history as the loop moves each step's
  loss there, so logging adds no synchronisation to a step;
- after every epoch, every number of the epoch's record (``metrics.jsonl``'s fields, tables such
  as ``test_kl_sites`` as ``test_kl_sites/z``) at the epoch's last step, and the sample and
  reconstruction grids as pictures (drawn with their own random generator, so logging changes no
  draw of the run).

A writer that fails (a folder that is not writable, a full disk, a tracking server that cannot be
reached) is dropped and said once, ``logging to WHERE stopped: ...``; the run goes on with the others.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DependencyError
from .history import FitState, History
from .log_writers import LOGGER_NAMES, WRITERS, RunDir, Writer

__all__ = ["TrainingLogger", "make_writers", "epoch_values", "image_grid", "LOGGER_NAMES"]

_log = logging.getLogger("pyrovae")


def make_writers(
    names: Sequence[str], run_dir: RunDir, mlflow_uri: str | None = None, home: Path | None = None
) -> list[Writer]:
    """The writers named (each once), for the run directory ``run_dir`` (a path, or a function that
    says where the run directory is now); ``home``: where a run that replaces another ends up
    (:class:`~pyrovae.train.log_writers.MLflowWriter` keeps a local store there)."""
    writers: list[Writer] = []
    for name in dict.fromkeys(names):
        if name not in WRITERS:
            raise ConfigError(f"--logger must be among {', '.join(LOGGER_NAMES)}, got {name!r}")
        writers.append(WRITERS[name](run_dir, mlflow_uri, home) if name == "mlflow" else WRITERS[name](run_dir))
    return writers


def epoch_values(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of an epoch's record, a table's entries as ``key/entry`` (words left out)."""
    values: dict[str, float] = {}
    for key, value in record.items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for entry, number in items:
            if isinstance(number, (int, float)) and not isinstance(number, bool):
                values[key if entry is None else f"{key}/{entry}"] = number
    return values


def image_grid(x: torch.Tensor, image_shape: Sequence[int] | None, ncols: int) -> np.ndarray:
    """The rows of ``x`` (values in [0, 1]) as one ``(H, W, C)`` picture of ``uint8``, ``ncols``
    to a row, one pixel of grey between them; rows that are no picture are drawn as strips."""
    shape = tuple(image_shape) if image_shape else (1, x.shape[-1])
    if len(shape) == 3 and shape[0] in (1, 3):  # (C, H, W) -> (H, W, C)
        images = x.reshape(-1, *shape).permute(0, 2, 3, 1)
    elif len(shape) == 3:
        images = x.reshape(-1, *shape)
    else:
        images = x.reshape(-1, math.prod(shape[:-1]), shape[-1], 1)
    images = images.detach().float().clamp(0, 1).cpu()
    n, h, w, c = images.shape
    rows = math.ceil(n / ncols)
    grid = torch.full((rows * (h + 1) + 1, ncols * (w + 1) + 1, c), 0.5)
    for i in range(n):
        r, col = divmod(i, ncols)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + col * (w + 1) : 1 + col * (w + 1) + w] = images[i]
    out = (grid * 255).round().to(torch.uint8).numpy()
    return np.repeat(out, 3, axis=2) if c == 1 else out


class TrainingLogger:
    """The callback: ``fit(..., callbacks=[TrainingLogger(writers, ...)])``.

    :param writers: where to log (:func:`make_writers`).
    :param int log_every: log the step's loss every this many steps.
    :param test_x: rows whose reconstructions are drawn each epoch (``None``: no reconstructions).
    :param resume_step: the step a resumed run continues from (``None``: a new run).
    :param params: the run's options, which writers that keep parameters record once.
    :param say: how a writer's failure is said (default: a warning of the ``pyrovae`` logger).
    :param bool pictures: log the sample and reconstruction grids each epoch.
    """

    def __init__(
        self,
        writers: Sequence[Writer],
        log_every: int = 50,
        test_x: torch.Tensor | None = None,
        resume_step: int | None = None,
        params: dict[str, Any] | None = None,
        say: Callable[[str], None] | None = None,
        pictures: bool = True,
    ) -> None:
        if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
            raise ConfigError(f"log_every (--log-every) must be a whole number of steps >= 1, got {log_every!r}")
        self.log_every, self.test_x, self.pictures = log_every, test_x, pictures
        self.say = say or _log.warning
        self.writers: list[Writer] = []
        self.held: dict[int, int] = {}  # id(writer) -> last step it holds
        for writer in writers:
            held = self._guard(writer, lambda w=writer: w.open(resume_step, params or {}))
            if held is not None:
                self.writers.append(writer)
                self.held[id(writer)] = held
        self.logged = resume_step or 0  # the last step whose loss was logged

    def _guard(self, writer: Writer, action: Callable[[], Any]) -> Any:
        """``action()``, or ``None`` with the writer dropped and its failure said once."""
        try:
            return action()
        except DependencyError:
            raise
        except Exception as error:  # noqa: BLE001 (a logger never stops the run it logs)
            if writer in self.writers:
                self.writers.remove(writer)
            reason = f"{type(error).__name__}: {error}" if not isinstance(error, OSError) else str(error)
            first = reason.splitlines()[0] if reason else type(error).__name__
            self.say(f"logging to {writer.where} stopped: {first[:300]}")
            self._close(writer)
            return None

    @staticmethod
    def _close(writer: Writer) -> None:
        try:
            writer.close()
        except Exception:  # noqa: BLE001 (already said: it failed)
            pass

    def _each(self, step: int, write: Callable[[Writer], None]) -> None:
        for writer in list(self.writers):
            if step > self.held[id(writer)]:
                self._guard(writer, lambda w=writer: write(w))

    # -- the loop's hooks ---------------------------------------------------------------------------
    def on_steps(self, history: History) -> None:
        """The steps' estimates the loop has just recorded: log the loss of every ``log_every``-th."""
        done = len(history.step_elbos)
        every = self.log_every
        for step in range((self.logged // every + 1) * every, done + 1, every):
            self._each(step, lambda w, s=step: w.scalars({"loss": -history.step_elbos[s - 1]}, s))
        self.logged = max(self.logged, done)

    def __call__(self, state: FitState) -> None:
        if state.event == "epoch" and state.record is not None:
            self.on_steps(state.history)
            record = state.record
            step = int(record["step"])
            values = epoch_values(record)
            self._each(step, lambda w: w.epoch(record, values))
            if self.pictures and self.writers:
                self._pictures(state, step)
        elif state.event in ("interrupt", "selected"):
            self.on_steps(state.history)

    def _pictures(self, state: FitState, step: int) -> None:
        vae = state.vae
        grids = {}
        devices = [vae.device] if vae.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():  # (the run's draws stay as they were)
            torch.manual_seed(0)  # the same prior draws every epoch
            grids["samples"] = image_grid(vae.sample(64), vae.image_shape, 8)
            if self.test_x is not None and self.test_x.shape[0] > 0:
                x = self.test_x[:8].to(device=vae.device, dtype=vae.dtype)
                grids["reconstructions"] = image_grid(torch.cat([x, vae.reconstruct(x)]), vae.image_shape, x.shape[0])
        for tag, grid in grids.items():
            self._each(step, lambda w, t=tag, g=grid: w.image(t, g, step))

    def close(self) -> None:
        """Close every writer (a failure is said, not raised)."""
        for writer in list(self.writers):
            self._guard(writer, writer.close)
        self.writers = []
