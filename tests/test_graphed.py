"""The cudagraph engine's step (pyrovae.train.graphed): recorded once after a warm-up, then replayed.

Without a GPU a stand-in records by keeping the function and replays by calling it again, writing
the gradients and the output in place as a CUDA graph does; that checks everything around the
graph (warm-up steps are real steps, the batch buffer, the guard's state carried from replay to
replay, the optimizer after the graph, the refusals). tests/test_cuda.py checks the real graphs.
"""

import contextlib

import pyro
import pytest
import torch

from pyrovae import VAE, fit, make_elbo
from pyrovae.errors import ConfigError
from pyrovae.infer import Objective
from pyrovae.train import FitOptions, GraphedStep, GuardedStep, make_adam
from pyrovae.train.engines import CompiledEngine, CudaGraphEngine, EagerEngine, StepPlan, make_engine
from pyrovae.train.graphed import check_recordable


class RerunGraphs:
    """A CUDA graph's behaviour on a CPU: recording runs nothing; a replay runs the recorded
    function with the gradients it wrote last time zeroed in place (a graph overwrites them), and
    copies its output into the tensor recording returned."""

    def __init__(self, parameters):
        self.parameters = list(parameters)
        self.warmups = self.records = self.replays = 0

    @contextlib.contextmanager
    def warmup_context(self):
        self.warmups += 1
        yield

    def capture(self, record):
        self.records += 1
        out = torch.full((), float("nan"), dtype=torch.get_default_dtype())

        def replay():
            self.replays += 1
            for p in self.parameters:
                if p.grad is not None:
                    p.grad.zero_()
            out.copy_(record())

        return out, replay


def _objective(seed=0, n=40, x_dim=7):
    pyro.set_rng_seed(seed)
    vae = VAE(x_dim, z_dim=2, hidden_dims=(5,)).double()
    x = torch.bernoulli(torch.rand(n, x_dim, dtype=torch.float64))
    return vae, Objective(vae.model, vae.guide, make_elbo("meanfield"), num_data=n), x


@pyro.validation_enabled(False)
def _run(graphed, steps=9, lrs=None, clip_norm=0.0, poison=None):
    vae, objective, x = _objective()
    optimizer = make_adam(vae.parameters(), lr=0.05)
    if graphed:
        backend = RerunGraphs(vae.parameters())
        step = GraphedStep(objective, optimizer, clip_norm=clip_norm, warmup=3, backend=backend)
    else:
        backend, step = None, GuardedStep(objective, optimizer, clip_norm=clip_norm)
    pyro.set_rng_seed(5)
    losses = []
    for i in range(steps):
        if lrs is not None:
            for group in optimizer.param_groups:
                group["lr"] = lrs[i]
        batch = x[(4 * i) % 40 : (4 * i) % 40 + 8].clone()
        if poison is not None and i == poison:
            batch[0, 0] = float("nan")
        losses.append(step(batch))
    return step, backend, torch.stack(losses), [p.detach().clone() for p in vae.parameters()]


@pytest.mark.parametrize("clip_norm", [0.0, 0.5])
def test_replays_take_the_same_steps_as_the_guarded_step(float64, clip_norm):
    lrs = [0.05, 0.05, 0.04, 0.04, 0.03, 0.02, 0.02, 0.01, 0.005]  # a schedule: set between steps
    step, backend, losses, params = _run(True, lrs=lrs, clip_norm=clip_norm)
    _, _, plain_losses, plain_params = _run(False, lrs=lrs, clip_norm=clip_norm)
    assert step.recorded and (backend.warmups, backend.records, backend.replays) == (3, 1, 6)
    torch.testing.assert_close(losses, plain_losses, rtol=1e-12, atol=0)
    for a, b in zip(params, plain_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert step.failed() is None and int(step._count) == 9


def test_a_non_finite_replay_is_caught_and_never_applied(float64):
    step, _, losses, params = _run(True, steps=9, poison=6)  # a replay's batch has a NaN
    _, _, _, before = _run(True, steps=6)  # the same run stopped before it
    assert step.failed() == (7, "the loss became nan")
    assert torch.isfinite(losses[:6]).all() and not torch.isfinite(losses[6])
    for p, q in zip(params, before, strict=True):  # steps 7-9 changed nothing
        assert torch.equal(p, q)


@pyro.validation_enabled(False)
def test_a_batch_of_another_shape_is_refused_after_recording(float64):
    vae, objective, x = _objective()
    step = GraphedStep(objective, make_adam(vae.parameters(), lr=0.01), warmup=1, backend=RerunGraphs(vae.parameters()))
    step(x[:8])
    step(x[:8])
    with pytest.raises(ConfigError, match=r"recorded for batches of shape \[\(8, 7\)\], got \[\(5, 7\)\]"):
        step(x[:5])


def test_what_a_graph_cannot_replay_is_refused(float64):
    vae, objective, _ = _objective()
    with pytest.raises(ConfigError, match="needs a CUDA device; got cpu: use --engine compiled"):
        GraphedStep(objective, make_adam(vae.parameters(), lr=0.01))
    with pytest.raises(ConfigError, match="runs in one process, got 2"):
        check_recordable("cuda", processes=2)
    backend = RerunGraphs(vae.parameters())
    with pyro.validation_enabled(True), pytest.raises(ConfigError, match="Pyro's validation on"):
        GraphedStep(objective, make_adam(vae.parameters(), lr=0.01), backend=backend)
    with pyro.validation_enabled(False):
        with pytest.raises(ConfigError, match="fused Adam"):
            GraphedStep(objective, torch.optim.SGD(vae.parameters(), lr=0.1), backend=backend)
        with torch.autograd.set_detect_anomaly(True), pytest.raises(ConfigError, match="anomaly detection on"):
            GraphedStep(objective, make_adam(vae.parameters(), lr=0.01), backend=backend)
        with pytest.raises(ConfigError, match="records one process's step, so GraphedStep takes no reduce"):
            GraphedStep(objective, make_adam(vae.parameters(), lr=0.01), backend=backend, reduce=lambda loss: loss)
        with pytest.raises(ConfigError, match="warmup must be at least 1"):
            GraphedStep(objective, make_adam(vae.parameters(), lr=0.01), warmup=0, backend=backend)


def test_the_engine_declares_what_it_needs():
    engine = make_engine("cudagraph")
    assert isinstance(engine, CudaGraphEngine) and isinstance(engine.inner, CompiledEngine)
    assert engine.fixed_shapes
    assert isinstance(CudaGraphEngine(EagerEngine()).inner, EagerEngine)
    with pytest.raises(ConfigError, match="records another engine's step"):
        CudaGraphEngine(CudaGraphEngine())


def test_each_engine_checks_its_run_once_and_builds_its_step():
    vae = VAE(6, z_dim=2, hidden_dims=(4,))
    objective = Objective(vae.model, vae.guide, make_elbo("meanfield"), num_data=16)
    for name in ("eager", "compiled", "jit"):
        step = make_engine(name).make_step(objective, make_adam(vae.parameters(), lr=0.01), clip_norm=1.0)
        assert type(step) is GuardedStep and step.module is objective
    cpu = StepPlan(torch.device("cpu"), 1, 8, 16)
    with pytest.raises(ConfigError, match="needs a CUDA device; got cpu"):
        make_engine("cudagraph").check(cpu)
    with pytest.raises(ConfigError, match="needs a CUDA device; got cpu"):  # (GraphedStep's own guard)
        make_engine("cudagraph").make_step(objective, make_adam(vae.parameters(), lr=0.01))
    if torch.cuda.is_available():
        gpu = StepPlan(torch.device("cuda"), 1, 8, 16, validate=True)
        with pytest.raises(ConfigError, match="with Pyro's validation"):
            make_engine("cudagraph").check(gpu)
    jit = make_engine("jit")
    with pytest.raises(ConfigError, match="--batch-size 32 must not exceed the 16 training rows"):
        jit.check(StepPlan(torch.device("cpu"), 1, 32, 16))
    calls = []
    jit.require = lambda plan: calls.append(plan)  # a plan checked once is not checked again
    jit.check(cpu)
    jit.check(cpu)
    jit.check(StepPlan(torch.device("cpu"), 1, 4, 16))
    assert len(calls) == 2


def test_fit_refuses_it_off_a_gpu_before_training():
    pyro.set_rng_seed(0)
    vae = VAE(6, z_dim=2, hidden_dims=(4,))
    with pytest.raises(ConfigError, match="needs a CUDA device; got cpu"):
        fit(vae, torch.bernoulli(torch.rand(16, 6)), FitOptions(epochs=1, batch_size=8, engine="cudagraph"))


def test_the_cli_refuses_it_off_a_gpu_in_one_line_and_writes_nothing(tmp_path):
    from click.testing import CliRunner

    from pyrovae.cli import main

    out = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["fit", "--engine", "cudagraph", "--device", "cpu", "--epochs", "1", "--out", str(out)]
    )
    assert result.exit_code != 0
    assert "needs a CUDA device; got cpu" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_a_graphed_step_records_autograds_backward_even_where_the_module_has_one_graph_of_both(float64):
    # the compiled engine's module can give loss and gradients from one graph; a recorded step keeps
    # to loss.backward() (one launch a step either way), and still takes the plain step's steps
    from pyrovae.infer import CompiledObjective

    vae, objective, x = _objective()
    module = CompiledObjective(objective, backend=None)
    with pyro.validation_enabled(False):
        step = GraphedStep(module, make_adam(vae.parameters(), lr=0.05), backend=RerunGraphs(vae.parameters()))
        assert step.together is None
        assert GuardedStep(module, make_adam(vae.parameters(), lr=0.05)).together is not None
        pyro.set_rng_seed(5)
        losses = torch.stack([step(x[:8].clone()) for _ in range(5)])
    _, _, plain, _ = _run(False, steps=1)
    assert step.recorded and torch.isfinite(losses).all()
    torch.testing.assert_close(losses[0], plain[0], rtol=1e-12, atol=0)  # the same first step as the plain one
