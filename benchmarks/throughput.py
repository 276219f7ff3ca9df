"""Training throughput: hand-written PyTorch vs the stock Pyro pattern vs pyrovae's ``fit``.

    python benchmarks/throughput.py                 # Fashion-MNIST if installed, 784-400-50 MLP
    python benchmarks/throughput.py --quick         # about a minute on 2 CPU cores

In one process, with the same architecture (x_dim-400-50 encoder, mirrored decoder), data,
optimizer (Adam, lr 1e-3) and batch sizes, it times one epoch of:

(a) ``hand``: hand-written PyTorch: z = mu + sigma * eps, BCE-with-logits + the closed-form KL
    (eq. 13 and eq. 18 of docs/theory.md), ``torch.optim.Adam`` with its defaults; minibatches
    sliced from the in-memory tensor. ``hand-fused`` is the same loop with torch's fused Adam, the optimizer
    ``fit`` uses, so that the table shows how much of pyrovae's speed is the optimizer;
(b) ``stock-pyro``: the pattern of Pyro's VAE example: a torch ``DataLoader`` over a
    ``TensorDataset`` and ``SVI(model, guide, pyro.optim.Adam, Trace_ELBO())``, with Pyro's
    default validation on;
(a'') ``hand-compiled`` (CPU only): the ``hand-fused`` loop with its loss compiled by ``torch.compile``
    in inductor's ``max-autotune-no-cudagraphs`` mode (inductor derives the backward pass): what
    hand-written PyTorch reaches with the compiler's strongest CPU setting, beside the floor;
(a') ``hand-graph`` (CUDA only): the ``hand-fused`` step recorded whole — forward, backward and
    the fused Adam — in one CUDA graph and replayed for each batch (torch's whole-network capture):
    the fastest this step runs on a GPU, the yardstick of the ``cudagraph`` engine;
(c) ``pyrovae-<elbo>``: ``pyrovae.fit`` with each ELBO it offers, and ``pyrovae-pyro-meanfield``:
    ``fit`` given Pyro's own ``TraceMeanField_ELBO`` (what the lean ELBO saves). ``compiled-*``
    compile in their first (warm-up) epoch: the table's "first epoch" column shows that cost, and
    the target line says after how many epochs the fastest method is ahead in total time;
(d) ``floor``: the step's matrix products alone, on random operands of each batch's shapes, and
    the fused Adam update of the model's parameters: what no float32 step with these layers and this
    optimizer can do without. It takes its turn in the rounds like the methods, so its speed-up
    over the stock pattern, measured under the same load, is the ceiling of any implementation here.

The machines this runs on are shared and noisy, so the methods take turns: each of ``--rounds``
rounds runs every method once (a fresh model, one warm-up epoch, one timed epoch), in an order
that rotates from round to round, and the table reports medians over rounds. pyrovae's times are
the ``seconds`` that ``fit`` records for the epoch's training loop.

It also measures where the time of one step goes (``--breakdown``, on by default): the matrix
products alone (in a tight loop, without the update), hand-written forward + backward, each
optimizer, each ELBO's ``loss_and_grads`` (compiled ones after compiling), a ``DataLoader`` batch
and a sliced batch, and the compiled step taken apart (its graph alone, the engine's lookup of the
graph, the gradient norm, the guard, and ``fit``'s loop around the step: :func:`compiled_step_pieces`),
at each of ``--breakdown-batches``.

It says what it measures: the first line names the data set (and, for ``--dataset auto``, why),
the training rows used out of those available, the batch sizes, rounds, device and methods.
Settings that cannot be measured are refused with one line before anything is timed (see
:func:`plan`); a method that cannot run one of the batch sizes is skipped there, with the reason
in the table and the JSON.

``--no-baselines`` times only the ``pyrovae-<elbo>`` rows that ``--elbos`` names (their ratios to
hand-written and stock are then left out): ``--elbos meanfield,infovae --no-baselines`` gives the
step time of InfoVAE's objective, its MMD term included, against ``meanfield``'s, at each batch size.
With ``infovae`` and ``compiled-infovae`` both named, the report checks ``auto``'s rule for InfoVAE
(:func:`~pyrovae.train.engines.eager_step_faster`) against the two steps at each batch size.

Writes ``throughput.json`` and ``throughput.md`` (``throughput_cuda.*`` on a GPU) under ``--out``,
by default a fresh temporary folder (its name is printed). The committed table is replaced only by
asking for it, from a quiet machine::

    OMP_NUM_THREADS=1 python benchmarks/throughput.py --threads 1 --rounds 7 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from _provenance import HelpFormatter, commit, write_report  # noqa: I001 (this folder's helper)
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import nn

from pyrovae import VAE, fit, load_dataset
from pyrovae._compat import own_code
from pyrovae.config import resolve_device
from pyrovae.data import DEFAULT_DATA_DIRS, minibatches
from pyrovae.infer import DEPRECATED_ELBOS, ELBOS, Objective, make_elbo
from pyrovae.train import FitOptions, GuardedStep, make_adam
from pyrovae.train.engines import CompiledEngine, eager_step_faster, make_engine
from pyrovae.train.step import gradient_norm

Z_DIM, HIDDEN = 50, (400,)

#: pyrovae's rows: name -> (what is estimated, the engine): the eager estimators, and an engine-elbo
#: label (the names pyrovae 0.1 gave them) for each other engine; ``cudagraph-*`` on a GPU only
PYROVAE_METHODS = {
    **{name: (name, "eager") for name in ELBOS},
    **DEPRECATED_ELBOS,
    "compiled-infovae": ("infovae", "compiled"),
    "cudagraph-meanfield": ("meanfield", "cudagraph"),
    "cudagraph-trace": ("trace", "cudagraph"),
}
#: the methods that record CUDA graphs (skipped, with the reason, off a GPU)
CUDA_ONLY = {"hand-graph", "pyrovae-cudagraph-meanfield", "pyrovae-cudagraph-trace"}
#: inductor's mode for ``hand-compiled``: its GEMM templates and autotuning, without CUDA graphs
HAND_COMPILED_MODE = "max-autotune-no-cudagraphs"

#: targets of the issue (CPU, batch 256 for the step ratio)
STEP_RATIO_TARGET, STOCK_SPEEDUP_TARGET, TARGET_BATCH = 1.10, 2.5, 256
#: the batch at which the default ``pyrovae fit`` must be STOCK_SPEEDUP_TARGET faster than stock
DEFAULT_TARGET_BATCH = 128
#: GPU targets: eager meanfield <= 1.15x hand-written eager at batch 128; the fastest pyrovae engine
#: within 1.3x of the hand-written CUDA-graph step at batch 128 and 1024, and >= 2M images/s at 1024
GPU_EAGER_RATIO_TARGET, GPU_GRAPH_RATIO_TARGET, GPU_RATE_TARGET = 1.15, 1.3, 2_000_000
GPU_GRAPH_BATCHES = (128, 1024)
#: the default ``fit`` step at most this many times the hand-fused step, at every batch, and at most
#: DEFAULT_FLOOR_TARGET times the floor at DEFAULT_TARGET_BATCH
DEFAULT_HAND_FUSED_TARGET, DEFAULT_FLOOR_TARGET = 1.10, 1.30
#: ``--elbo infovae``'s step (its MMD term included) at most this many times ``meanfield``'s, at every batch
INFOVAE_RATIO_TARGET = 1.3
#: training rows and rounds when --n-train / --rounds are not given (normal, --quick)
DEFAULT_ROWS, QUICK_ROWS, DEFAULT_ROUNDS, QUICK_ROUNDS = 10000, 2000, 7, 2


def refuse(message: str) -> NoReturn:
    """An impossible setting: one line on stderr and exit code 2, before anything is timed."""
    print(f"throughput.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


@dataclass(frozen=True)
class Method:
    """One method of the table: its ``name``, the ELBO ``fit`` trains it with (``None``: not
    pyrovae's ``fit``; ``pyro-meanfield``: Pyro's own ``TraceMeanField_ELBO``), the engine that runs
    it, and whether it needs every batch full (an engine with fixed shapes makes ``fit`` drop an
    incomplete last batch, so a batch larger than the data set leaves no step at all)."""

    name: str
    elbo: str | None = None
    engine: str = "eager"
    full_batches: bool = False
    #: for ``pyrovae-default``: the training rows of the data set whose default run decides the engine
    default_run_rows: int | None = None

    def engine_for(self, batch_size: int, device: torch.device | None = None) -> str:
        """The engine ``fit`` runs at ``batch_size`` on ``device``: for ``pyrovae-default``, the one
        ``auto`` picks for the default run (every option at its default but the batch size) on the
        whole data set."""
        if self.default_run_rows is None:
            return self.engine
        return FitOptions(batch_size=batch_size).make_engine(self.default_run_rows, device=device).name

    def cannot_run(self, batch_size: int, rows: int, device: torch.device | None = None) -> str | None:
        """Why this method cannot run ``batch_size`` on ``rows`` training rows on ``device`` (``None``: it can)."""
        if self.name in CUDA_ONLY and (device is None or device.type != "cuda"):
            return "records CUDA graphs: needs a CUDA device"
        if self.full_batches and batch_size > rows:
            return f"needs batch size <= the {rows} training rows (it drops an incomplete last batch)"
        return None


def method_table(
    elbos: Sequence[str],
    default_run_rows: int | None = None,
    device: torch.device | None = None,
    baselines: bool = True,
) -> list[Method]:
    """The methods timed, in table order: hand-written (and, on a GPU, its CUDA-graph step), stock
    Pyro, the floor (matrix products and the update alone), ``fit`` as ``pyrovae fit`` runs by
    default (no engine named: ``auto`` decides for a default run on ``default_run_rows`` rows),
    then ``fit`` with each ELBO and engine. Without ``baselines``, the ``fit`` rows of ``elbos`` only."""
    methods = []
    if baselines:
        methods += [Method("hand"), Method("hand-fused")]
        if device is not None and device.type == "cuda":
            methods.append(Method("hand-graph", full_batches=True))
        else:  # (on a GPU, max-autotune means minutes of Triton autotuning: hand-graph is the yardstick there)
            methods.append(Method("hand-compiled"))
        methods += [Method("stock-pyro"), Method("floor")]
        if default_run_rows is not None:
            methods.append(Method("pyrovae-default", "meanfield", "auto", default_run_rows=default_run_rows))
    for name in elbos:  # the rule fit applies: an engine that declares fixed shapes needs full batches
        elbo, engine = PYROVAE_METHODS[name]
        methods.append(Method(f"pyrovae-{name}", elbo, engine, make_engine(engine).fixed_shapes))
    if baselines and "meanfield" in elbos:
        methods.append(Method("pyrovae-pyro-meanfield", "pyro-meanfield"))
    return methods


def choose_dataset(asked: str) -> tuple[str, str]:
    """The data set ``--dataset`` names, and how it was chosen (``auto``: Fashion-MNIST where its
    IDX files are installed, else scikit-learn's 8x8 digits)."""
    if asked != "auto":
        return asked, "--dataset " + asked
    folder = DEFAULT_DATA_DIRS["fashion-mnist"]
    if folder and Path(folder).is_dir():
        return "fashion-mnist", f"--dataset auto: Fashion-MNIST found in {folder}"
    return "digits", f"--dataset auto: no Fashion-MNIST in {folder}, so the 8x8 digits"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _hand_loss(vae: VAE, batch: torch.Tensor, num_data: int) -> torch.Tensor:
    loc, scale = vae.encoder(batch)
    z = loc + scale * torch.randn_like(loc)
    reconstruction = -F.binary_cross_entropy_with_logits(vae.decoder(z), batch, reduction="none").sum(-1)
    kl = 0.5 * (-torch.log(scale**2) - 1 + scale**2 + loc**2).sum(-1)
    return -(reconstruction - kl).mean() * num_data


def hand_graphed(x: torch.Tensor, batch_size: int) -> Callable[[], int]:
    """(a') The ``hand-fused`` step recorded whole in one CUDA graph: three warm-up steps on a side
    stream, then forward, backward and the fused Adam recorded once, reading the batch from a fixed
    buffer; each step copies its batch in and replays. Returns a function that runs one epoch
    (full batches only: a graph has one shape)."""
    device, num_data = x.device, x.shape[0]
    vae = VAE(x.shape[1], z_dim=Z_DIM, hidden_dims=HIDDEN).to(device)
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3, fused=True)  # its step counts live on the GPU
    static = x[:batch_size].clone()
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            _hand_loss(vae, static, num_data).backward()
            optimizer.step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        _hand_loss(vae, static, num_data).backward()
        optimizer.step()

    def epoch() -> int:
        steps = 0
        for batch in minibatches(x, batch_size, drop_last=True):
            static.copy_(batch)
            graph.replay()
            steps += 1
        return steps

    return epoch


#: (rows, x_dim, device, batch size, mode) -> the model and its compiled loss (see _compiled_hand_loss)
_COMPILED_HAND: dict[tuple, tuple[VAE, Callable[[torch.Tensor, int], torch.Tensor]]] = {}


def _compiled_hand_loss(
    x: torch.Tensor, batch_size: int, mode: str
) -> tuple[VAE, Callable[[torch.Tensor, int], torch.Tensor]]:
    """A model and its hand-written loss compiled by ``torch.compile`` in ``mode``, made once per data
    set, batch size and mode, the model's weights drawn anew at each call. ``torch.compile`` keeps a
    few compiled variants per code object and guards on the model it saw: a new model every round
    would use them up and leave the loss uncompiled, so the model stays and its weights change, and
    each batch size's loss has a code object of its own."""
    key = (x.shape[0], x.shape[1], str(x.device), batch_size, mode)
    if key not in _COMPILED_HAND:
        vae = VAE(x.shape[1], z_dim=Z_DIM, hidden_dims=HIDDEN).to(x.device)

        def loss(batch: torch.Tensor, num_data: int) -> torch.Tensor:
            return _hand_loss(vae, batch, num_data)

        own = own_code(loss, f"hand_loss_{len(_COMPILED_HAND)}")
        _COMPILED_HAND[key] = vae, torch.compile(own, mode=mode, dynamic=False)
    vae, compiled = _COMPILED_HAND[key]
    for module in vae.modules():
        if isinstance(module, nn.Linear):
            module.reset_parameters()
    return vae, compiled


def hand_written(x: torch.Tensor, batch_size: int, fused: bool = False, mode: str | None = None) -> Callable[[], int]:
    """(a) The same network trained by hand: returns a function that runs one epoch. With ``mode``,
    the loss is compiled by ``torch.compile`` in that mode (``hand-compiled``; fused Adam)."""
    num_data = x.shape[0]
    if mode is None:
        vae = VAE(x.shape[1], z_dim=Z_DIM, hidden_dims=HIDDEN).to(x.device)
        loss_of = functools.partial(_hand_loss, vae)
    else:
        vae, loss_of = _compiled_hand_loss(x, batch_size, mode)
    optimizer = make_adam(vae.parameters(), lr=1e-3) if fused else torch.optim.Adam(vae.parameters(), lr=1e-3)

    def epoch() -> int:
        steps = 0
        for batch in minibatches(x, batch_size):
            loss = loss_of(batch, num_data)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
        return steps

    return epoch


class StockVAE(nn.Module):
    """(b) Model and guide written as in Pyro's VAE example (same networks as pyrovae's)."""

    def __init__(self, x_dim: int):
        super().__init__()
        networks = VAE(x_dim, z_dim=Z_DIM, hidden_dims=HIDDEN)
        self.encoder, self.decoder, self.z_dim = networks.encoder, networks.decoder, Z_DIM

    def model(self, x: torch.Tensor) -> None:
        pyro.module("stock_decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z_loc = x.new_zeros((x.shape[0], self.z_dim))
            z_scale = x.new_ones((x.shape[0], self.z_dim))
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            pyro.sample("obs", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        pyro.module("stock_encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encoder(x)
            pyro.sample("latent", dist.Normal(loc, scale).to_event(1))


def _stock_loader(x: torch.Tensor, batch_size: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x.cpu()), batch_size=batch_size, shuffle=True)


def stock_pyro(x: torch.Tensor, batch_size: int) -> Callable[[], int]:
    """(b) The stock pattern: returns a function that runs one epoch."""
    pyro.clear_param_store()
    vae = StockVAE(x.shape[1]).to(x.device)
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    loader = _stock_loader(x, batch_size)

    def epoch() -> int:
        steps = 0
        with pyro.validation_enabled(True):  # Pyro's default
            for (batch,) in loader:
                svi.step(batch.to(x.device))
                steps += 1
        return steps

    return epoch


def time_epoch(method: Method, x: torch.Tensor, batch_size: int) -> tuple[float, int, float]:
    """A fresh model, one warm-up epoch and one timed epoch: (seconds, steps) of the timed one and
    the seconds of the warm-up (first) epoch, which includes any compiling."""
    device = x.device
    if method.elbo is not None:
        vae = VAE(x.shape[1], z_dim=Z_DIM, hidden_dims=HIDDEN).to(device)
        elbo = TraceMeanField_ELBO(max_plate_nesting=1) if method.elbo == "pyro-meanfield" else method.elbo
        engine = method.engine_for(batch_size, device)
        history = fit(vae, x, FitOptions(elbo=elbo, engine=engine, epochs=2, batch_size=batch_size))
        first, record = history.epochs
        return record["seconds"], record["step"] - first["step"], first["seconds"]
    if method.name == "stock-pyro":
        epoch = stock_pyro(x, batch_size)
    elif method.name == "hand-graph":
        epoch = hand_graphed(x, batch_size)
    elif method.name == "floor":
        epoch = floor_epoch(x, batch_size)
    elif method.name == "hand-compiled":
        epoch = hand_written(x, batch_size, fused=True, mode=HAND_COMPILED_MODE)
    else:
        epoch = hand_written(x, batch_size, fused=method.name == "hand-fused")
    start = time.perf_counter()
    epoch()  # warm-up
    _sync(device)
    first = time.perf_counter() - start
    start = time.perf_counter()
    steps = epoch()
    _sync(device)
    return time.perf_counter() - start, steps, first


def _median_ms(fn: Callable[[], object], device: torch.device, repeats: int, rounds: int = 5) -> float:
    """Median over ``rounds`` of the mean time of ``repeats`` calls, in ms (after a warm-up)."""
    for _ in range(max(2, repeats // 4)):
        fn()
    times = []
    for _ in range(rounds):
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        _sync(device)
        times.append((time.perf_counter() - start) / repeats * 1e3)
    return statistics.median(times)


def _matmul_ops(x_dim: int, batch_size: int, device: torch.device) -> list[Callable[[], torch.Tensor]]:
    """The matrix products of one training step, on random operands of the step's shapes.

    Per linear layer: the forward ``addmm``, the weight gradient ``g^T h`` and, except for the
    first layer (whose input is data), the input gradient ``g W``. Every one of them is needed by
    any float32 implementation of the same step with these layers.
    """
    dims = (x_dim, *HIDDEN, 2 * Z_DIM)
    layers = list(zip(dims[:-1], dims[1:], strict=True))
    dims = (Z_DIM, *reversed(HIDDEN), x_dim)
    layers += list(zip(dims[:-1], dims[1:], strict=True))
    ops = []
    for index, (fan_in, fan_out) in enumerate(layers):
        h = torch.randn(batch_size, fan_in, device=device)
        w = torch.randn(fan_out, fan_in, device=device)
        b = torch.randn(fan_out, device=device)
        g = torch.randn(batch_size, fan_out, device=device)
        ops.append(lambda h=h, w=w, b=b: torch.addmm(b, h, w.t()))
        ops.append(lambda h=h, g=g: g.t().mm(h))
        if index != 0:
            ops.append(lambda w=w, g=g: g.mm(w))
    return ops


def matmul_floor_ms(x_dim: int, batch_size: int, device: torch.device, repeats: int) -> float:
    """The matrix products of one training step (:func:`_matmul_ops`) alone, timed in a tight loop (ms)."""
    ops = _matmul_ops(x_dim, batch_size, device)

    def step() -> None:
        for op in ops:
            op()

    return _median_ms(step, device, repeats)


def floor_epoch(x: torch.Tensor, batch_size: int) -> Callable[[], int]:
    """(d) The floor: per step of an epoch, the step's matrix products (:func:`_matmul_ops`, at
    that step's batch size) and the fused Adam update of the model's parameters (with gradients
    small enough to keep them finite), and nothing else: no loss, activation, noise, guard or
    data. Returns a function that runs one epoch."""
    device, n = x.device, x.shape[0]
    vae = VAE(x.shape[1], z_dim=Z_DIM, hidden_dims=HIDDEN).to(device)
    for p in vae.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    optimizer = make_adam(vae.parameters(), lr=1e-3)
    sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    ops = {size: _matmul_ops(x.shape[1], size, device) for size in set(sizes)}

    def epoch() -> int:
        for size in sizes:
            for op in ops[size]:
                op()
            optimizer.step()
        return len(sizes)

    return epoch


def step_pieces(x: torch.Tensor, batch_size: int, repeats: int) -> dict[str, float]:
    """The eager ``fit`` step (``meanfield``, fused Adam: what ``auto`` runs for short runs) beside
    the hand-written one, taken apart: the whole step as the loop calls it
    (:class:`~pyrovae.train.step.GuardedStep`), the step without the non-finite guard (the
    difference is the guard), the objective's forward pass (model and guide run as Pyro programs:
    traces, plates, distributions, the ELBO's terms) against the hand-written forward pass and the
    networks alone, and the hand-fused step; ms per step. What the eager step spends beyond the
    hand-fused one is read off these rows."""
    device, num_data = x.device, x.shape[0]
    batch = x[:batch_size]
    hand = VAE(x.shape[1], z_dim=Z_DIM, hidden_dims=HIDDEN).to(device)
    hand_adam = make_adam(hand.parameters(), lr=1e-9)
    vae = VAE(x.shape[1], z_dim=Z_DIM, hidden_dims=HIDDEN).to(device)
    objective = Objective(vae.model, vae.guide, make_elbo("meanfield"), num_data=num_data).to(device)
    adam = make_adam(vae.parameters(), lr=1e-9)
    guarded = GuardedStep(make_engine("eager").wrap(objective), adam)

    def hand_fused_step() -> None:
        loss = _hand_loss(hand, batch, num_data)
        hand_adam.zero_grad()
        loss.backward()
        hand_adam.step()

    def unguarded_step() -> None:
        objective(batch).backward()
        adam.step()
        adam.zero_grad(set_to_none=True)

    def networks() -> None:
        loc, scale = vae.encoder(batch)
        vae.decoder(loc + scale)

    parts: dict[str, float] = {}
    with pyro.validation_enabled(False):
        parts["hand-fused step (forward, backward, fused Adam)"] = _median_ms(hand_fused_step, device, repeats)
        parts["pyrovae eager meanfield step (GuardedStep: objective, guard, fused Adam)"] = _median_ms(
            lambda: guarded(batch), device, repeats
        )
        parts["pyrovae eager meanfield step without the guard"] = _median_ms(unguarded_step, device, repeats)
        parts["hand-written forward pass"] = _median_ms(lambda: _hand_loss(hand, batch, num_data), device, repeats)
        parts["pyrovae objective forward pass (model and guide as Pyro programs)"] = _median_ms(
            lambda: objective(batch), device, repeats
        )
        parts["encoder and decoder alone (forward)"] = _median_ms(networks, device, repeats)
    return parts


class _TimedStep(GuardedStep):
    """A :class:`~pyrovae.train.step.GuardedStep` that adds up the seconds its calls take."""

    seconds = 0.0

    def __call__(self, *batch: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        try:
            return super().__call__(*batch)
        finally:
            self.seconds += time.perf_counter() - start


class _TimedCompiledEngine(CompiledEngine):
    """The ``compiled`` engine, whose step (:class:`_TimedStep`) counts its seconds: the rest of an
    epoch's seconds is ``fit``'s loop around the step."""

    def make_step(self, module: nn.Module, optimizer: torch.optim.Optimizer, **guard: object) -> GuardedStep:
        self.step = _TimedStep(module, optimizer, **guard)
        return self.step


def loop_around_step_ms(x: torch.Tensor, batch_size: int) -> float:
    """``fit``'s own time per step outside the step (drawing the batch, reading the guard, recording
    the loss, the callbacks' hooks): a compiled ``meanfield`` run of two epochs whose second epoch's
    seconds, less those its steps took, are divided by its steps (ms)."""
    engine = _TimedCompiledEngine()
    marks: list[float] = []

    def mark(state: object) -> None:
        if getattr(state, "event", None) == "epoch":
            marks.append(engine.step.seconds)

    vae = VAE(x.shape[1], z_dim=Z_DIM, hidden_dims=HIDDEN).to(x.device)
    history = fit(vae, x, FitOptions(elbo="meanfield", engine=engine, epochs=2, batch_size=batch_size),
                  callbacks=[mark])  # fmt: skip
    first, second = history.epochs
    return (second["seconds"] - (marks[1] - marks[0])) / (second["step"] - first["step"]) * 1e3


def compiled_step_pieces(x: torch.Tensor, batch_size: int, repeats: int) -> dict[str, float]:
    """The compiled ``meanfield`` step (what ``pyrovae fit`` runs on Fashion-MNIST by default), taken
    apart, ms per step: the whole step as ``fit`` calls it; its compiled graph of the loss, the
    gradients and their norm (:attr:`~pyrovae.infer.compiled.CompiledGraph.joint`) called directly;
    what the engine does around that call (one walk of the modules for the graph's inputs and key,
    the lookup); the gradient norm computed apart, as the eager step computes it (the ``grad_norm``
    metric, which the guard also reads; the compiled graph computes it inside); the guard's reading
    of the loss and the norm; the per-tensor gradient sums the guard takes only when the norm
    cannot prove them finite; setting the gradients to ``None``; and ``fit``'s loop around the step
    (:func:`loop_around_step_ms`). The fused Adam update has its own row (``torch Adam step (fused,
    as in fit)``)."""
    device, num_data = x.device, x.shape[0]
    batch = x[:batch_size]
    vae = VAE(x.shape[1], z_dim=Z_DIM, hidden_dims=HIDDEN).to(device)
    module = make_engine("compiled").wrap(Objective(vae.model, vae.guide, make_elbo("meanfield"), num_data=num_data))
    guarded = GuardedStep(module, make_adam(vae.parameters(), lr=1e-9))
    parameters = guarded.parameters
    parts: dict[str, float] = {}
    with pyro.validation_enabled(False):
        for _ in range(2):  # record and compile
            guarded(batch)
        graph = module.graph_for(batch)
        params, buffers, _ = module._tensors()
        inputs = ([p for _, p in params], [b for _, b in buffers], [batch])

        def none() -> None:
            for p in parameters:
                p.grad = None

        def fresh_none() -> None:  # (gradients put back first: setting them to None frees nothing here)
            for p, g in zip(parameters, grads, strict=True):
                p.grad = g
            none()

        def graph_step() -> None:
            with torch.no_grad():
                _, found, _ = graph.joint(*inputs)
            for p, g in zip(inputs[0], found, strict=True):
                p.grad = g
            none()

        def lookup() -> None:
            module.graphs.get(module._key((batch,), {}, module._tensors()))

        parts["compiled step as fit calls it (graph, guard, fused Adam)"] = _median_ms(
            lambda: guarded(batch), device, repeats
        )
        parts["compiled graph: loss, gradients and their norm, called directly"] = _median_ms(
            graph_step, device, repeats
        )
        parts["compiled engine around the graph (module walk, key, lookup)"] = _median_ms(lookup, device, repeats)
        loss = guarded.loss_and_guard(batch)  # (the gradients stay)
        norm, grads = gradient_norm(parameters), [p.grad for p in parameters]
        parts["gradient norm computed apart (the eager step's; the compiled graph's is inside it)"] = _median_ms(
            lambda: gradient_norm(parameters), device, repeats
        )
        parts["guard: reading the loss and the norm"] = _median_ms(
            lambda: guarded.gradients_finite(float(norm)) and math.isfinite(float(loss)), device, repeats
        )
        parts["guard: per-tensor gradient sums (only where the norm proves nothing)"] = _median_ms(
            lambda: math.isfinite(sum(s.item() for s in guarded._gradient_sums())), device, repeats
        )
        parts["gradients set to None"] = _median_ms(fresh_none, device, repeats)
    parts["fit's loop around the compiled step (batch, check, records)"] = loop_around_step_ms(x, batch_size)
    return parts


def breakdown(x: torch.Tensor, batch_size: int, repeats: int, compiled: Sequence[str] = ()) -> dict[str, float]:
    """Where one step's time goes: each piece timed on its own, in ms per step (medians); the
    ``compiled`` ELBOs (names such as ``compiled-meanfield``) too, after they have compiled."""
    device, num_data = x.device, x.shape[0]
    batch = x[:batch_size]
    vae = VAE(x.shape[1], z_dim=Z_DIM, hidden_dims=HIDDEN).to(device)
    parts: dict[str, float] = {"matmuls only": matmul_floor_ms(x.shape[1], batch_size, device, repeats)}
    parts.update(step_pieces(x, batch_size, repeats))
    parts.update(compiled_step_pieces(x, batch_size, repeats))

    def forward_backward() -> None:
        _hand_loss(vae, batch, num_data).backward()
        vae.zero_grad(set_to_none=True)

    parts["hand-written forward + backward"] = _median_ms(forward_backward, device, repeats)
    _hand_loss(vae, batch, num_data).backward()
    vae.register_params()  # pyro.optim.Adam looks its tensors up by name in Pyro's param store
    parameters = list(vae.parameters())
    parts["torch Adam step (default)"] = _median_ms(torch.optim.Adam(parameters, lr=1e-9).step, device, repeats)
    parts["torch Adam step (fused, as in fit)"] = _median_ms(make_adam(parameters, lr=1e-9).step, device, repeats)
    pyro_adam = pyro.optim.Adam({"lr": 1e-9})
    parts["pyro.optim.Adam step (one Adam per tensor)"] = _median_ms(lambda: pyro_adam(parameters), device, repeats)
    vae.zero_grad(set_to_none=True)
    # pyrovae's steps as fit runs them (compiled ones compile first): the compiled engine's loss and
    # gradients from its one graph (loss_and_gradients), the eager ones by loss = module(batch); loss.backward()
    steps = {f"pyrovae {name} loss and gradients": PYROVAE_METHODS[name] for name in compiled}
    steps["pyrovae meanfield loss and gradients (eager)"] = ("meanfield", "eager")
    steps["pyrovae trace loss and gradients (eager)"] = ("trace", "eager")
    for name, (elbo, engine) in steps.items():
        module = make_engine(engine).wrap(Objective(vae.model, vae.guide, make_elbo(elbo), num_data=num_data))

        def module_step(module=module) -> None:
            together = getattr(module, "loss_and_gradients", None)
            if together is None or together(batch) is None:
                module(batch).backward()
            vae.zero_grad(set_to_none=True)

        with pyro.validation_enabled(False):
            parts[name] = _median_ms(module_step, device, repeats)
    # Pyro's own classes, through Pyro's protocol (validation on as Pyro's default for the stock one)
    pyro_elbos = {
        "Pyro TraceMeanField_ELBO loss_and_grads": (TraceMeanField_ELBO(max_plate_nesting=1), False),
        "Pyro Trace_ELBO loss_and_grads, validation on (stock)": (Trace_ELBO(max_plate_nesting=1), True),
    }
    for name, (elbo, validate) in pyro_elbos.items():

        def elbo_step(elbo=elbo) -> None:
            elbo.loss_and_grads(vae.model, vae.guide, batch, num_data=num_data)
            vae.zero_grad(set_to_none=True)

        with pyro.validation_enabled(validate):
            parts[name] = _median_ms(elbo_step, device, repeats)
    loader = _stock_loader(x, batch_size)
    iterator = iter(loader)

    def loader_batch() -> None:
        nonlocal iterator
        try:
            (b,) = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            (b,) = next(iterator)
        b.to(device)

    parts["DataLoader batch (stock)"] = _median_ms(loader_batch, device, repeats)
    order = torch.randperm(num_data, device=device)
    parts["index_select batch (fit)"] = _median_ms(lambda: x.index_select(0, order[:batch_size]), device, repeats)
    return parts


def _sizes(flag: str, text: str) -> list[int]:
    try:
        sizes = [int(b) for b in text.split(",")]
    except ValueError:
        refuse(f"{flag} must be comma-separated positive integers such as 32,256; got {text!r}")
    if min(sizes) < 1:
        refuse(f"{flag} must be positive, got {text}")
    return sizes


def plan(args: argparse.Namespace) -> dict:
    """Check every setting and load the data before anything is timed; refuse impossible settings.

    Refused (one line, exit code 2): an unknown ELBO, a device torch cannot see, a data set that
    cannot be loaded, ``--n-train`` above the training rows the data set has, and a breakdown
    batch larger than the rows used (the breakdown times steps of exactly that many rows). A
    ``--batch-sizes`` entry above the rows used is not refused: the methods that take an
    incomplete batch run one step of all rows per epoch (noted in the table), the others are
    skipped at that size (noted too).
    """
    for name in ("n_train", "rounds", "breakdown_repeats"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            refuse(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    batch_sizes = _sizes("--batch-sizes", args.batch_sizes)
    breakdown_batches = _sizes("--breakdown-batches", args.breakdown_batches) if args.breakdown else []
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        refuse(str(error))
    # (by default every ELBO and engine; the CUDA-graph ones on a GPU only)
    default = [m for m in PYROVAE_METHODS if device.type == "cuda" or f"pyrovae-{m}" not in CUDA_ONLY]
    elbos = [e.strip() for e in args.elbos.split(",")] if args.elbos else default
    unknown = sorted(set(elbos) - set(PYROVAE_METHODS))
    if unknown:
        refuse(f"--elbos: unknown {unknown}; expected names from {sorted(PYROVAE_METHODS)}")
    dataset, chosen = choose_dataset(args.dataset)
    try:
        data = load_dataset(dataset, binarization="static", data_dir=args.data_dir)
    except ValueError as error:
        refuse(str(error))
    available = data.train.shape[0]
    if args.n_train is not None and args.n_train > available:
        refuse(
            f"--n-train {args.n_train}, but {dataset} has {available} training rows ({chosen}): "
            f"pass --n-train {available} or less, or a larger data set"
        )
    limit = args.n_train or (QUICK_ROWS if args.quick else DEFAULT_ROWS)
    rows = min(limit, available)
    too_large = [b for b in breakdown_batches if b > rows]
    if too_large:
        refuse(
            f"--breakdown-batches {','.join(map(str, too_large))} larger than the {rows} training rows used: "
            "the breakdown times steps of exactly that many rows"
        )
    return {
        "device": device,
        "x": data.train[:rows].to(device),
        "data": {
            "dataset": dataset,
            "chosen": chosen,
            "train_rows_available": available,
            "train_rows": rows,
            "rows_chosen": f"--n-train {args.n_train}" if args.n_train else f"all, at most {limit}",
            "x_dim": data.x_dim,
        },
        "batch_sizes": batch_sizes,
        "breakdown_batches": breakdown_batches,
        "elbos": elbos,
        "methods": method_table(elbos, default_run_rows=available, device=device, baselines=args.baselines),
        "rounds": args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS),
        "breakdown_repeats": args.breakdown_repeats or (10 if args.quick else 40),
    }


def run(args: argparse.Namespace, settings: dict | None = None) -> dict:
    """Time every method at every batch size (``settings``: :func:`plan`'s, made here if not given)."""
    settings = plan(args) if settings is None else settings
    device, x, methods = settings["device"], settings["x"], settings["methods"]
    n = x.shape[0]
    torch.manual_seed(0)
    results = []
    for batch_size in settings["batch_sizes"]:
        runnable = [m for m in methods if m.cannot_run(batch_size, n, device) is None]
        times: dict[str, list[float]] = {m.name: [] for m in runnable}
        firsts: dict[str, list[float]] = {m.name: [] for m in runnable}
        steps: dict[str, int] = {}
        for round_index in range(settings["rounds"]):
            shift = round_index % len(runnable)
            for method in runnable[shift:] + runnable[:shift]:
                seconds, steps[method.name], first = time_epoch(method, x, batch_size)
                times[method.name].append(seconds)
                firsts[method.name].append(first)
        # (--no-baselines: no hand-written or stock row to compare with)
        hand_step = statistics.median(times["hand"]) / steps["hand"] if "hand" in times else None
        stock_rate = (
            min(n, steps["stock-pyro"] * batch_size) / statistics.median(times["stock-pyro"])
            if "stock-pyro" in times
            else None
        )
        for method in methods:
            reason = method.cannot_run(batch_size, n, device)
            if reason is not None:
                results.append({"method": method.name, "batch_size": batch_size, "skipped": reason})
                print(f"batch {batch_size:>5} {method.name:<24} skipped: {reason}", flush=True)
                continue
            epoch_seconds = statistics.median(times[method.name])
            step_ms = epoch_seconds / steps[method.name] * 1e3
            row = {
                "method": method.name,
                "batch_size": batch_size,
                "epoch_seconds": epoch_seconds,
                "epoch_seconds_all": times[method.name],
                # the warm-up epoch: compiled ELBOs compile in it (round 1: inductor's on-disk cache
                # is cold for this process's first compile of each graph; later rounds hit it)
                "first_epoch_seconds": statistics.median(firsts[method.name]),
                "first_epoch_seconds_all": firsts[method.name],
                "steps": steps[method.name],
                "engine": method.engine_for(batch_size, device) if method.elbo is not None else None,
                "ms_per_step": step_ms,
                # JIT ELBOs drop the last incomplete batch
                "images_per_second": min(n, steps[method.name] * batch_size) / epoch_seconds,
                "step_ratio_to_hand": step_ms / 1e3 / hand_step if hand_step else None,
                # the time for an epoch's worth of images (JIT ELBOs' epochs are a batch short)
                "epoch_speedup_vs_stock": (
                    min(n, steps[method.name] * batch_size) / epoch_seconds / stock_rate if stock_rate else None
                ),
            }
            if batch_size > n:
                row["note"] = f"batch {batch_size} > {n} rows: one step of all {n} rows per epoch"
            results.append(row)
            compared = (
                f"  x{row['step_ratio_to_hand']:.2f} of hand  {row['epoch_speedup_vs_stock']:.2f}x faster than stock"
                if hand_step and stock_rate
                else ""
            )
            print(
                f"batch {batch_size:>5} {method.name:<24} {step_ms:8.3f} ms/step  {row['images_per_second']:9.0f} "
                f"img/s{compared}" + (f"  ({row['note']})" if "note" in row else ""),
                flush=True,
            )
    report = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch": torch.__version__,
            "pyro": pyro.__version__,
        },
        "settings": {k: v for k, v in vars(args).items()},
        "data": settings["data"],
        "train_images": n,
        "results": results,
    }
    if settings["breakdown_batches"]:
        report["breakdown"] = []
        compiled = [e for e in settings["elbos"] if e.startswith("compiled-")]
        for batch_size in settings["breakdown_batches"]:
            parts = breakdown(x, batch_size, settings["breakdown_repeats"], compiled)
            report["breakdown"].append({"batch_size": batch_size, "ms_per_step": parts})
    report["targets"] = targets(report)
    return report


def targets(report: dict) -> dict:
    """The issue's two targets, read off the table (``None`` where the run did not measure them)."""
    timed = [r for r in report["results"] if "skipped" not in r]
    rows = {(r["method"], r["batch_size"]): r for r in timed}
    at_target = rows.get(("pyrovae-meanfield", TARGET_BATCH))
    compiled = rows.get(("pyrovae-compiled-meanfield", TARGET_BATCH))
    default = rows.get(("pyrovae-default", DEFAULT_TARGET_BATCH))
    floor = rows.get(("floor", DEFAULT_TARGET_BATCH))
    pyrovae = [r for r in timed if r["method"].startswith("pyrovae-")]
    compared = [r for r in pyrovae if r["epoch_speedup_vs_stock"] is not None]
    best = max(compared, key=lambda r: r["epoch_speedup_vs_stock"], default=None)
    best_entry = None
    if best is not None:
        best_entry = {k: best[k] for k in ("method", "batch_size", "epoch_speedup_vs_stock", "first_epoch_seconds")}
        stock = rows[("stock-pyro", best["batch_size"])]
        # seconds per epoch's worth of images (JIT epochs are a batch short)
        per_image = best["epoch_seconds"] / min(report["train_images"], best["steps"] * best["batch_size"])
        stock_epoch, epoch = stock["epoch_seconds"], per_image * report["train_images"]
        best_entry["stock_epoch_seconds"] = stock_epoch
        # epochs after which the method's total time (first epoch, compiling included) is the lower
        overhead = best["first_epoch_seconds"] - best["epoch_seconds"]
        best_entry["break_even_epochs"] = (
            max(1, math.ceil(overhead / (stock_epoch - epoch))) if epoch < stock_epoch else None
        )
    gpu = None
    if report["machine"]["device"].startswith("cuda"):
        eager = rows.get(("pyrovae-meanfield", DEFAULT_TARGET_BATCH))
        gpu = {"eager_meanfield_ratio_at_128": eager["step_ratio_to_hand"] if eager else None, "graph": []}
        for batch_size in GPU_GRAPH_BATCHES:
            graph = rows.get(("hand-graph", batch_size))
            ours = [r for r in pyrovae if r["batch_size"] == batch_size and r["method"] != "pyrovae-default"]
            fastest = min(ours, key=lambda r: r["ms_per_step"], default=None)
            if graph is None or fastest is None:
                continue
            gpu["graph"].append({
                "batch_size": batch_size, "method": fastest["method"], "ms_per_step": fastest["ms_per_step"],
                "hand_graph_ms_per_step": graph["ms_per_step"], "ratio": fastest["ms_per_step"] / graph["ms_per_step"],
                "images_per_second": fastest["images_per_second"],
            })  # fmt: skip
    infovae = [
        {
            "batch_size": r["batch_size"],
            "ms_per_step": r["ms_per_step"],
            "meanfield_ms_per_step": rows[("pyrovae-meanfield", r["batch_size"])]["ms_per_step"],
            "ratio": r["ms_per_step"] / rows[("pyrovae-meanfield", r["batch_size"])]["ms_per_step"],
        }
        for r in timed
        if r["method"] == "pyrovae-infovae" and ("pyrovae-meanfield", r["batch_size"]) in rows
    ]
    # auto's per-step rule for infovae (eager_step_faster) against the two steps measured side by side
    infovae_engines = [
        {
            "batch_size": r["batch_size"],
            "eager_ms_per_step": r["ms_per_step"],
            "compiled_ms_per_step": rows[("pyrovae-compiled-infovae", r["batch_size"])]["ms_per_step"],
            "rule_says_eager": eager_step_faster("infovae", r["batch_size"], report["machine"]["device"]),
        }
        for r in timed
        if r["method"] == "pyrovae-infovae" and ("pyrovae-compiled-infovae", r["batch_size"]) in rows
    ]
    default_vs = [
        {
            "batch_size": r["batch_size"],
            "ms_per_step": r["ms_per_step"],
            "hand_fused_ms_per_step": rows[("hand-fused", r["batch_size"])]["ms_per_step"],
            "ratio_to_hand_fused": r["ms_per_step"] / rows[("hand-fused", r["batch_size"])]["ms_per_step"],
            "ratio_to_floor": (
                r["ms_per_step"] / rows[("floor", r["batch_size"])]["ms_per_step"]
                if ("floor", r["batch_size"]) in rows
                else None
            ),
        }
        for r in timed
        if r["method"] == "pyrovae-default" and ("hand-fused", r["batch_size"]) in rows
    ]
    # the hand-written steps over the floor, per batch: how near the floor hand-written PyTorch gets
    hand_vs_floor = [
        {"method": r["method"], "batch_size": r["batch_size"],
         "ratio_to_floor": r["ms_per_step"] / rows[("floor", r["batch_size"])]["ms_per_step"]}
        for r in timed
        if r["method"] in ("hand-fused", "hand-compiled") and ("floor", r["batch_size"]) in rows
    ]  # fmt: skip
    return {
        # the default fit step over the hand-fused step and over the floor, per batch
        "default_step_ratios": default_vs,
        "hand_step_ratios_to_floor": hand_vs_floor,
        "default_hand_fused_target": DEFAULT_HAND_FUSED_TARGET,
        "default_floor_target": DEFAULT_FLOOR_TARGET,
        "gpu": gpu,
        # the eager infovae step (its MMD term included) over the eager meanfield step, per batch
        "infovae_step_ratio_to_meanfield": infovae,
        "infovae_ratio_target": INFOVAE_RATIO_TARGET,
        # per batch: the eager and compiled infovae steps, and whether auto's rule keeps infovae eager there
        "infovae_engine_rule": infovae_engines,
        "meanfield_step_ratio_at_256": at_target["step_ratio_to_hand"] if at_target else None,
        "meanfield_step_ratio_to_hand_fused_at_256": (
            at_target["ms_per_step"] / rows[("hand-fused", TARGET_BATCH)]["ms_per_step"]
            if at_target and ("hand-fused", TARGET_BATCH) in rows
            else None
        ),
        "compiled_meanfield_step_ratio_at_256": compiled["step_ratio_to_hand"] if compiled else None,
        "step_ratio_target": STEP_RATIO_TARGET,
        "best_epoch_speedup_vs_stock": best_entry,
        "default_epoch_speedup_at_128": default["epoch_speedup_vs_stock"] if default else None,
        "default_engine_at_128": default["engine"] if default else None,
        # the most any float32 step with these layers and Adam reaches over stock, in the same rounds
        "floor_epoch_speedup_at_128": floor["epoch_speedup_vs_stock"] if floor else None,
        "epoch_speedup_target": STOCK_SPEEDUP_TARGET,
    }


def markdown(report: dict) -> str:
    lines = [
        "| batch | method | ms / step | images / s | step time ÷ hand-written | epoch speed-up vs stock Pyro "
        "| first epoch (s) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["results"]:
        if "skipped" in r:
            lines.append(f"| {r['batch_size']} | {r['method']} | skipped: {r['skipped']} | | | | |")
            continue
        to_hand = "—" if r["step_ratio_to_hand"] is None else f"{r['step_ratio_to_hand']:.2f}×"
        to_stock = "—" if r["epoch_speedup_vs_stock"] is None else f"{r['epoch_speedup_vs_stock']:.2f}×"
        lines.append(
            f"| {r['batch_size']} | {r['method']} | {r['ms_per_step']:.3f} | {r['images_per_second']:,.0f} | "
            f"{to_hand} | {to_stock} | {r['first_epoch_seconds']:.2f} |"
        )
    notes = sorted({r["note"] for r in report["results"] if "note" in r})
    lines += ["", *(f"Note: {note}." for note in notes)] if notes else []
    ceilings = [
        f"{r['epoch_speedup_vs_stock']:.2f}× at batch {r['batch_size']}"
        for r in report["results"]
        if r["method"] == "floor" and "skipped" not in r
    ]
    if ceilings:
        lines += [
            "",
            "The floor row is the step's matrix products and the fused Adam update alone, timed in the same "
            "rounds: the largest epoch speed-up over the stock pattern that any float32 step with these layers "
            f"and this optimizer could reach here: {', '.join(ceilings)}.",
        ]
    if report.get("breakdown"):
        entries = report["breakdown"]
        batches = ", ".join(str(b["batch_size"]) for b in entries)
        lines += ["", f"Where the time of one step goes (each piece timed alone; ms per step at batch {batches}):", ""]
        lines += ["| piece | " + " | ".join(f"batch {b['batch_size']}" for b in entries) + " |"]
        lines += ["| --- |" + " ---: |" * len(entries)]
        for name in entries[0]["ms_per_step"]:
            lines.append(f"| {name} | " + " | ".join(f"{b['ms_per_step'][name]:.3f}" for b in entries) + " |")
    t = report["targets"]
    lines.append("")
    gpu = t.get("gpu")
    if gpu is not None:
        ratio = gpu["eager_meanfield_ratio_at_128"]
        if ratio is not None:
            met = "met" if ratio <= GPU_EAGER_RATIO_TARGET else "not met"
            lines.append(
                f"Target (GPU): pyrovae-meanfield (eager) at batch {DEFAULT_TARGET_BATCH} ≤ "
                f"{GPU_EAGER_RATIO_TARGET:.2f}× hand-written eager: {ratio:.2f}× ({met})."
            )
        for g in gpu["graph"]:
            met = g["ratio"] <= GPU_GRAPH_RATIO_TARGET
            rate = ""
            if g["batch_size"] == max(GPU_GRAPH_BATCHES):
                met = met and g["images_per_second"] >= GPU_RATE_TARGET
                rate = f", {g['images_per_second']:,.0f} images/s (target ≥ {GPU_RATE_TARGET:,})"
            verdict = "met" if met else "not met"
            lines.append(
                f"Target (GPU): the fastest pyrovae engine at batch {g['batch_size']} within "
                f"{GPU_GRAPH_RATIO_TARGET}× of the hand-written CUDA-graph step ({g['hand_graph_ms_per_step']:.3f} "
                f"ms): {g['method']} {g['ms_per_step']:.3f} ms, {g['ratio']:.2f}×{rate} ({verdict})."
            )
    if t.get("default_step_ratios"):
        ratios = t["default_step_ratios"]
        met = all(r["ratio_to_hand_fused"] <= DEFAULT_HAND_FUSED_TARGET for r in ratios)
        lines.append(
            f"Target: the default `pyrovae fit` step ≤ {DEFAULT_HAND_FUSED_TARGET:.2f}× hand-fused: "
            + ", ".join(f"{r['ratio_to_hand_fused']:.2f}× at batch {r['batch_size']}" for r in ratios)
            + f" ({'met' if met else 'not met'})."
        )
        at = [r for r in ratios if r["batch_size"] == DEFAULT_TARGET_BATCH and r["ratio_to_floor"] is not None]
        if at:
            met = "met" if at[0]["ratio_to_floor"] <= DEFAULT_FLOOR_TARGET else "not met"
            hand = [
                f"{r['method']} {r['ratio_to_floor']:.2f}×"
                for r in t.get("hand_step_ratios_to_floor", [])
                if r["batch_size"] == DEFAULT_TARGET_BATCH
            ]
            lines.append(
                f"Target: the default step ≤ {DEFAULT_FLOOR_TARGET:.2f}× the floor at batch {DEFAULT_TARGET_BATCH}: "
                f"{at[0]['ratio_to_floor']:.2f}× ({met})"
                + (f"; hand-written, the same batch: {', '.join(hand)} the floor." if hand else ".")
            )
    if t["infovae_step_ratio_to_meanfield"]:
        ratios = t["infovae_step_ratio_to_meanfield"]
        met = "met" if all(r["ratio"] <= INFOVAE_RATIO_TARGET for r in ratios) else "not met"
        lines.append(
            f"Target: pyrovae-infovae ≤ {INFOVAE_RATIO_TARGET}× pyrovae-meanfield per step: "
            + ", ".join(
                f"{r['ratio']:.2f}× at batch {r['batch_size']} ({r['ms_per_step']:.2f} against "
                f"{r['meanfield_ms_per_step']:.2f} ms)"
                for r in ratios
            )
            + f" ({met})."
        )
    if t.get("infovae_engine_rule"):
        checks = t["infovae_engine_rule"]
        agree = all((c["eager_ms_per_step"] <= c["compiled_ms_per_step"]) == c["rule_says_eager"] for c in checks)
        lines.append(
            "Target: `auto` keeps `infovae` eager where its eager step is the faster one "
            "(`pyrovae.train.engines.eager_step_faster`): "
            + "; ".join(
                f"batch {c['batch_size']}: eager {c['eager_ms_per_step']:.2f}, compiled "
                f"{c['compiled_ms_per_step']:.2f} ms, the rule says {'eager' if c['rule_says_eager'] else 'compiled'}"
                for c in checks
            )
            + f" ({'met: the rule picks the faster step at every batch' if agree else 'not met'})."
        )
    if t["meanfield_step_ratio_at_256"] is not None:
        met = "met" if t["meanfield_step_ratio_at_256"] <= STEP_RATIO_TARGET else "not met"
        lines.append(
            f"Target: pyrovae-meanfield at batch {TARGET_BATCH} ≤ {STEP_RATIO_TARGET:.2f}× hand-written: "
            f"{t['meanfield_step_ratio_at_256']:.2f}× ({met}; {t['meanfield_step_ratio_to_hand_fused_at_256']:.2f}× "
            "hand-written with the same fused Adam)."
        )
    if t.get("compiled_meanfield_step_ratio_at_256") is not None:
        lines.append(
            f"pyrovae-compiled-meanfield (the same estimator, compiled) at batch {TARGET_BATCH}: "
            f"{t['compiled_meanfield_step_ratio_at_256']:.2f}× hand-written."
        )
    if t.get("default_epoch_speedup_at_128") is not None:
        met = "met" if t["default_epoch_speedup_at_128"] >= STOCK_SPEEDUP_TARGET else "not met"
        floor = t.get("floor_epoch_speedup_at_128")
        ceiling = f"; the floor row, in the same rounds: {floor:.2f}×" if floor is not None else ""
        lines.append(
            f"Target: the default `pyrovae fit` (no engine named: `auto` picks {t['default_engine_at_128']} for the "
            f"default run at batch {DEFAULT_TARGET_BATCH}) ≥ {STOCK_SPEEDUP_TARGET}× faster per epoch than the stock "
            f"pattern: {t['default_epoch_speedup_at_128']:.2f}× ({met}{ceiling})."
        )
    if t["best_epoch_speedup_vs_stock"] is not None:
        best = t["best_epoch_speedup_vs_stock"]
        met = "met" if best["epoch_speedup_vs_stock"] >= STOCK_SPEEDUP_TARGET else "not met"
        lines.append(
            f"Target: a pyrovae epoch ≥ {STOCK_SPEEDUP_TARGET}× faster than the stock pattern's: best "
            f"{best['epoch_speedup_vs_stock']:.2f}× ({best['method']}, batch {best['batch_size']}; {met}). "
            f"Its first epoch, compiling included, took {best['first_epoch_seconds']:.1f} s against the stock "
            f"epoch's {best['stock_epoch_seconds']:.1f} s: ahead in total time "
            + (f"from epoch {best['break_even_epochs']} on." if best["break_even_epochs"] else "never.")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--dataset", default="auto", help="auto = fashion-mnist if installed, else digits")
    parser.add_argument("--data-dir", help="folder of the IDX files of mnist / fashion-mnist")
    parser.add_argument(
        "--n-train",
        type=int,
        help=f"training images per epoch (default: all, at most {DEFAULT_ROWS}; more than the data set has is refused)",
    )
    parser.add_argument("--batch-sizes", default="32,128,256,1024")
    parser.add_argument(
        "--elbos", default=None, help=f"of {', '.join(PYROVAE_METHODS)} (default: all; cudagraph-* on a GPU only)"
    )
    parser.add_argument(
        "--rounds", type=int, help=f"timed epochs per method, taken in turns (default {DEFAULT_ROUNDS})"
    )
    parser.add_argument(
        "--baselines",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time the hand-written, stock, floor, default and Pyro-class rows too (--no-baselines: only the "
        "--elbos rows, without their ratios to hand-written and stock)",
    )
    parser.add_argument("--breakdown", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--breakdown-batches", default=f"32,{TARGET_BATCH}", help="batch sizes of the breakdown")
    parser.add_argument("--breakdown-repeats", type=int, help="calls per timing of each piece (default 40)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"defaults of at most {QUICK_ROWS} images, {QUICK_ROUNDS} rounds: about a minute on 2 cores",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="folder for throughput.json and .md (default: a fresh temporary folder; --out benchmarks/results "
        "replaces the committed table: do that from a quiet machine, with --rounds 7 or more)",
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    settings = plan(args)
    data = settings["data"]
    print(
        f"throughput: {data['dataset']} ({data['chosen']}), {data['train_rows']} of {data['train_rows_available']} "
        f"training rows ({data['rows_chosen']}), x_dim {data['x_dim']}, batch sizes "
        f"{','.join(map(str, settings['batch_sizes']))}, {settings['rounds']} rounds, device {settings['device']}; "
        f"methods {', '.join(m.name for m in settings['methods'])}",
        flush=True,
    )
    pyro.set_rng_seed(0)
    report = run(args, settings)
    report["command"] = " ".join(["python benchmarks/throughput.py", *(argv if argv is not None else sys.argv[1:])])
    report["commit"] = commit()
    table = markdown(report)
    machine = report["machine"]
    header = (
        f"{report['train_images']} training images ({data['dataset']}, {data['chosen']}), x_dim-400-50 MLP, Adam; "
        f"{machine['device']} ({machine['gpu'] or machine['processor']}, {machine['cpu_count']} cores, "
        f"{machine['torch_threads']} torch threads, torch {machine['torch']}, pyro {machine['pyro']}); "
        f"median of {settings['rounds']} rounds, each method taking one warm-up and one timed epoch per round; "
        f"commit {report['commit'] or 'unknown'}, `{report['command']}`"
    )
    print(f"\n{header}\n\n{table}")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="pyrovae-throughput-"))
    write_report(out, "throughput", machine["device"], report, header, table)
    print(f"wrote the report under {out}")
    return report


if __name__ == "__main__":
    main()
