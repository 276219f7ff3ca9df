import json
import math
from contextlib import nullcontext

import pyro
import pytest
import torch

from pyrovae import VAE, NonFiniteLossError, estimate_elbo, fit, load_dataset
from pyrovae.models.likelihoods import GaussianLikelihood
from pyrovae.train import FitOptions


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "dynamic")


@pytest.mark.parametrize(
    "elbo, engine", [("meanfield", "eager"), ("trace", "eager"), ("meanfield", "jit"), ("trace", "jit")]
)
def test_a_few_epochs_on_digits_improve_the_test_elbo(digits, elbo, engine):
    vae = VAE(digits.x_dim, z_dim=8, hidden_dims=(64,), image_shape=digits.image_shape)
    pyro.set_rng_seed(0)
    before = estimate_elbo(vae, digits.test)
    history = fit(vae, digits, FitOptions(elbo=elbo, engine=engine, epochs=4, batch_size=64, lr=3e-3, seed=0))
    after = [record["test_elbo"] for record in history.epochs]
    assert after[-1] > before + 10, (before, after)  # about -44 nats at initialisation, -30 after
    assert after[-1] > after[0]
    steps = 1438 // 64 if engine == "jit" else math.ceil(1438 / 64)
    assert history.last["step"] == 4 * steps
    assert len(history.step_elbos) == 4 * steps


def test_history_records_are_json_and_complete(digits):
    vae = VAE(digits.x_dim, z_dim=4, hidden_dims=(32,))
    history = fit(vae, digits, FitOptions(epochs=2, batch_size=256, seed=1))
    for record in history.epochs:
        assert set(record) >= {"epoch", "step", "train_elbo", "test_elbo", "seconds", "images_per_second"}
        assert record["images_per_second"] == pytest.approx(1438 / record["seconds"])
        json.dumps(record)
    # the train ELBO of an epoch is the mean of its step estimates
    assert history.epochs[0]["train_elbo"] == pytest.approx(sum(history.step_elbos[:6]) / 6)


def test_same_seed_same_history(digits):
    runs = []
    for _ in range(2):
        pyro.set_rng_seed(5)
        vae = VAE(digits.x_dim, z_dim=4, hidden_dims=(32,))
        runs.append(fit(vae, digits, FitOptions(epochs=2, batch_size=128, seed=5)))
    assert runs[0].step_elbos == runs[1].step_elbos
    assert [r["test_elbo"] for r in runs[0].epochs] == [r["test_elbo"] for r in runs[1].epochs]


def test_fit_on_a_tensor_without_test_set(float64):
    x = torch.bernoulli(torch.rand(50, 6))
    vae = VAE(6, z_dim=2, hidden_dims=(8,)).double()
    history = fit(vae, x, FitOptions(epochs=2, batch_size=16))
    assert "test_elbo" not in history.last and history.last["step"] == 8


def test_particles_and_gaussian_learned_sigma_train():
    data = load_dataset("digits")
    vae = VAE(data.x_dim, z_dim=4, hidden_dims=(32,), likelihood="gaussian", sigma=0.5, learn_sigma=True)
    sigma_before = vae.likelihood.sigma.detach().clone()
    history = fit(vae, data, FitOptions(epochs=2, batch_size=128, particles=3, lr=1e-2, seed=0))
    assert history.epochs[-1]["test_elbo"] > history.epochs[0]["test_elbo"]
    assert not torch.equal(vae.likelihood.sigma.detach(), sigma_before)  # sigma is learned


def test_fit_leaves_the_global_param_store_alone(digits):
    pyro.param("users_own_param", torch.ones(2))
    fit(VAE(digits.x_dim, z_dim=2, hidden_dims=(8,)), digits, FitOptions(epochs=1, batch_size=512))
    assert list(pyro.get_param_store().keys()) == ["users_own_param"]


def test_callbacks_and_log_are_called_every_epoch(digits):
    seen, lines = [], []
    fit(
        VAE(digits.x_dim, z_dim=2, hidden_dims=(8,)),
        digits,
        FitOptions(epochs=3, batch_size=512, seed=7),
        callbacks=[lambda state: seen.append(state.record["epoch"])],
        log=lines.append,
    )
    assert seen == [1, 2, 3]
    assert "device=cpu" in lines[0] and "dtype=float32" in lines[0] and "seed=7" in lines[0]
    assert "elbo=meanfield (LeanTraceMeanField_ELBO" in lines[0] and "optimizer=adam(fused)" in lines[0]
    assert [line.split()[1] for line in lines[1:]] == ["1/3", "2/3", "3/3"]


def test_non_finite_loss_stops_with_epoch_and_step():
    class Broken(GaussianLikelihood):
        def distribution(self, output):
            return super().distribution(output * float("nan"))

    vae = VAE(4, z_dim=2, hidden_dims=(4,), likelihood=Broken(4))
    with pytest.raises(NonFiniteLossError, match="at epoch 1, step 1"):
        fit(vae, torch.rand(20, 4), FitOptions(epochs=1, batch_size=10))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(elbo="tracegraph"), "elbo must be one of"),
        (dict(epochs=0), "epochs must be a positive int"),
        (dict(batch_size=-3), "batch_size must be a positive int"),
        (dict(lr=0.0), r"lr \(--lr\) must be a finite number > 0"),
        (dict(particles=0), "particles must be a positive int"),
        (
            dict(engine="jit", batch_size=100),
            "jit engine drops incomplete batches, so --batch-size 100 must not exceed the 20",
        ),
        (dict(engine="turbo"), "engine must be one of auto, eager, compiled, jit"),
        (dict(elbo="jit-trace", engine="compiled"), "names the engine 'jit', but engine is 'compiled'"),
        (dict(seed=-1), r"seed \(--seed\) must be an int from 0 to 4294967295"),
        (dict(lr=float("inf")), r"lr \(--lr\) must be a finite number > 0"),
    ],
)
def test_fit_bad_arguments(kwargs, message):
    # (a pyrovae 0.1 name of an ELBO and an engine says it is deprecated before it is refused)
    deprecated = pytest.warns(FutureWarning, match="deprecated") if "-" in kwargs.get("elbo", "") else nullcontext()
    with pytest.raises(ValueError, match=message), deprecated:
        fit(VAE(4, z_dim=2, hidden_dims=(4,)), torch.bernoulli(torch.rand(20, 4)), FitOptions(**kwargs))


def test_fit_validates_data_against_the_likelihood():
    with pytest.raises(ValueError, match="not all 0 or 1"):
        fit(VAE(4, z_dim=2, hidden_dims=(4,)), torch.rand(20, 4))
    with pytest.raises(ValueError, match=r"shape \(N, 4\), got \(20, 5\)"):
        fit(VAE(4, z_dim=2, hidden_dims=(4,)), torch.rand(20, 5))


@pytest.mark.parametrize("elbo", ["meanfield", "trace"])
def test_fit_makes_the_same_updates_as_pyro_svi_with_pyro_adam(float64, elbo):
    # fit = ELBO.loss_and_grads + one torch Adam over all parameters; pyro.optim.Adam keeps one
    # Adam per tensor. Replay fit's RNG use (one randperm per epoch) around a stock SVI loop.
    from pyro.infer import SVI

    from pyrovae import make_elbo

    x = torch.bernoulli(torch.rand(24, 6))
    pyro.set_rng_seed(11)
    vae = VAE(6, z_dim=2, hidden_dims=(5,), likelihood="gaussian", learn_sigma=True).double()
    twin = VAE(6, z_dim=2, hidden_dims=(5,), likelihood="gaussian", learn_sigma=True, name="twin").double()
    twin.load_state_dict(vae.state_dict())

    history = fit(vae, x, FitOptions(elbo=elbo, epochs=3, batch_size=8, lr=0.01, seed=3))

    pyro.set_rng_seed(3)
    svi = SVI(twin.model, twin.guide, pyro.optim.Adam({"lr": 0.01}), make_elbo(elbo))
    losses = []
    for _ in range(3):
        order = torch.randperm(24)
        for i in range(3):
            losses.append(-svi.step(x.index_select(0, order[i * 8 : (i + 1) * 8]), num_data=24) / 24)
    assert history.step_elbos == pytest.approx(losses, rel=1e-12)
    for (name, a), b in zip(vae.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14, msg=name)


@pytest.mark.parametrize("elbo", ["meanfield", "trace"])
def test_fit_with_validation_runs_pyros_code_and_makes_the_same_updates(float64, elbo):
    # validate=True: the lean ELBO hands over to Pyro's own code (which needs param sites, so model
    # and guide register on every call); the draws and so the updates are the same as without
    x = torch.bernoulli(torch.rand(24, 6))
    vae = VAE(6, z_dim=2, hidden_dims=(5,)).double()
    twin = VAE(6, z_dim=2, hidden_dims=(5,)).double()
    twin.load_state_dict(vae.state_dict())
    initial = [p.detach().clone() for p in vae.parameters()]
    lean = fit(vae, x, FitOptions(elbo=elbo, epochs=2, batch_size=8, lr=0.01, seed=3, validate=False))
    checked = fit(twin, x, FitOptions(elbo=elbo, epochs=2, batch_size=8, lr=0.01, seed=3, validate=True))
    assert lean.step_elbos == pytest.approx(checked.step_elbos, rel=1e-12)
    for a, b, start in zip(vae.parameters(), twin.parameters(), initial, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
        assert not torch.equal(b, start)  # validation on, and it still trained
    assert vae._register_on_call and twin._register_on_call  # fit left per-call registration on


def test_fit_accepts_an_elbo_instance_and_the_jit_engine_traces_once_per_fit(digits, monkeypatch):
    from pyro.infer import Trace_ELBO, TraceGraph_ELBO

    from pyrovae import make_elbo

    traces = []
    trace = torch.jit.trace
    monkeypatch.setattr(torch.jit, "trace", lambda *args, **kwargs: traces.append(1) or trace(*args, **kwargs))
    vae = VAE(digits.x_dim, z_dim=4, hidden_dims=(32,))
    first = fit(vae, digits, FitOptions(elbo=make_elbo("meanfield"), engine="jit", epochs=3, batch_size=128, seed=0))
    assert len(traces) == 1  # 33 steps of one shape (the last, smaller batch is dropped): one trace
    assert first.kl_mode == {"z": "analytic"} and first.last["step"] == 3 * (1438 // 128)
    assert first.last["test_elbo"] > first.epochs[0]["test_elbo"]
    other = fit(
        VAE(digits.x_dim, z_dim=2, hidden_dims=(8,)), digits, FitOptions(elbo=Trace_ELBO(), epochs=1, batch_size=512)
    )
    assert other.kl_mode == {"z": "monte-carlo"} and math.isfinite(other.last["test_elbo"])
    with pytest.raises(ValueError, match="TraceGraph_ELBO has no differentiable_loss"):
        fit(VAE(digits.x_dim, z_dim=2, hidden_dims=(8,)), digits, FitOptions(elbo=TraceGraph_ELBO(), epochs=1))


@pytest.mark.parametrize("name", ["jit-meanfield", "jit-trace", "compiled-meanfield"])
def test_pyrovae_0_1_elbo_names_still_train_with_a_future_warning(digits, name):
    estimator, engine = name.split("-")[1], name.split("-")[0]
    with pytest.warns(FutureWarning, match=f"use --elbo {estimator} --engine {engine}"):
        options = FitOptions(elbo=name, epochs=1, batch_size=256)
        history = fit(VAE(digits.x_dim, z_dim=4, hidden_dims=(16,)), digits, options)
    steps = 1438 // 256 if engine == "jit" else math.ceil(1438 / 256)
    assert history.last["step"] == steps and math.isfinite(history.last["test_elbo"])


@pytest.mark.parametrize("engine", ["eager", "compiled", "jit"])
def test_every_engine_gives_the_eager_losses_and_parameters(float64, engine):
    # the engine changes how a step runs, never what it computes: same seed, same draws, same numbers
    x = torch.bernoulli(torch.rand(64, 6))
    runs = []
    for name in ("eager", engine):
        pyro.set_rng_seed(0)
        vae = VAE(6, z_dim=2, hidden_dims=(5,)).double()
        runs.append((vae, fit(vae, x, FitOptions(engine=name, epochs=3, batch_size=16, lr=0.01, seed=1))))
    (a, history_a), (b, history_b) = runs
    assert history_b.step_elbos == pytest.approx(history_a.step_elbos, rel=1e-10)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)


class _Inject(torch.autograd.Function):
    """0 in the forward pass; the given gradient for the parameter in the backward pass."""

    @staticmethod
    def forward(ctx, parameter, grad):
        ctx.save_for_backward(grad)
        return parameter.new_zeros(())

    @staticmethod
    def backward(ctx, _):
        return ctx.saved_tensors[0], None


class _Fixed(torch.nn.Module):
    """A loss module whose loss value and gradients are both chosen by the test."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3))
        self.v = torch.nn.Parameter(torch.zeros(2, 2))

    def forward(self, grads: tuple[torch.Tensor, torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
        return _Inject.apply(self.w, grads[0]) + _Inject.apply(self.v, grads[1]) + loss


@pytest.mark.parametrize(
    "bad, finite",
    [(None, True), (float("nan"), False), (float("inf"), False), (-float("inf"), False), ("both-infs", False)],
)
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("on_host", [True, False], ids=["host-check", "device-check"])
def test_the_step_guard_catches_every_non_finite_gradient_and_never_applies_it(bad, finite, fused, on_host):
    from pyrovae.train import GuardedStep

    module = _Fixed()
    optimizer = torch.optim.Adam(module.parameters(), lr=0.1, fused=fused)
    step = GuardedStep(module, optimizer, first_step=4, on_host=on_host)
    assert step.device_flag is fused and step.on_host is on_host
    good = (torch.ones(3), torch.ones(2, 2))
    step(good, torch.tensor(0.0))
    after_one = [p.detach().clone() for p in module.parameters()]
    g = torch.randn(2, 2)
    if bad == "both-infs":
        g[0, 0], g[1, 1] = float("inf"), -float("inf")
    elif bad is not None:
        g[0, 1] = bad
    step((torch.ones(3), g), torch.tensor(0.0))
    step(good, torch.tensor(0.0))  # a finite step after a bad one must not update either
    if finite:
        assert step.failed() is None
        assert not torch.equal(module.w, after_one[0])
    else:
        assert step.failed() == (6, "a gradient became NaN or inf")  # the 2nd step of this guard, 6th of the run
        for p, before in zip(module.parameters(), after_one, strict=True):
            assert torch.equal(p, before)
        if fused:  # Adam's step counts were not advanced by the skipped steps
            assert all(int(state["step"]) == 1 for state in optimizer.state.values())


@pytest.mark.parametrize(
    "value, finite",
    [
        (1e20, True),  # finite: its float32 norm overflows to inf, but every sum is finite
        (2e38, False),  # finite elements whose float32 sums overflow: the guard has always called that non-finite
        (float("nan"), False),
    ],
)
def test_the_host_guard_reads_the_gradient_norm_and_gives_the_sums_verdict(value, finite):
    from pyrovae.train import GuardedStep

    # the host form tests the norm it computes anyway; where the norm is too large (or not finite) to
    # prove the sums finite it falls back to the sums: its verdict is the device form's, always
    verdicts, updated, norms = [], [], []
    for on_host in (True, False):
        module = _Fixed()
        step = GuardedStep(module, torch.optim.SGD(module.parameters(), lr=1e-40), on_host=on_host)
        before = module.v.detach().clone()
        step((torch.zeros(3), torch.full((2, 2), value)), torch.tensor(0.0))
        verdicts.append(step.failed())
        updated.append(not torch.equal(module.v, before))
        norms.append(step.grad_norms())
    assert verdicts[0] == verdicts[1] == (None if finite else (1, "a gradient became NaN or inf"))
    assert updated == [finite, finite]
    assert str(norms[0]) == str(norms[1])  # the same grad_norm either way (NaN included)
    if value != 1e20:
        return
    # the case that needs the fallback: a norm that overflowed, on a gradient the sums call finite
    assert norms[0] == (math.inf, 1)


def test_the_host_guard_sums_the_gradients_only_when_their_norm_cannot_prove_them_finite(monkeypatch):
    from pyrovae.train import GuardedStep

    module = _Fixed()
    step = GuardedStep(module, torch.optim.SGD(module.parameters(), lr=0.1), on_host=True)
    assert step.safe_norm == pytest.approx(torch.finfo(torch.float32).max / (4 * 2.0))  # 4 elements at most
    sums = []
    monkeypatch.setattr(step, "_gradient_sums", lambda: sums.append(1) or [p.grad.sum() for p in step.parameters])
    step((torch.ones(3), torch.ones(2, 2)), torch.tensor(0.0))
    assert sums == [] and step.failed() is None  # a small norm: no sums
    step((torch.ones(3), torch.full((2, 2), 1e20)), torch.tensor(0.0))  # float32 norm inf: the sums decide
    assert sums == [1] and step.failed() is None
    assert step.grad_norms() == (math.inf, 2)


def test_gradient_norm_is_computed_as_torch_computes_it():
    from torch.nn.utils import get_total_norm

    from pyrovae.train.step import gradient_norm

    generator = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        grads = [torch.randn(*shape, generator=generator, dtype=dtype) * 1e3 for shape in [(400, 784), (400,), (7, 3)]]
        parameters = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
        for p, g in zip(parameters, grads, strict=True):
            p.grad = g
        norm = gradient_norm(parameters)
        assert norm.dtype == dtype and torch.equal(norm, get_total_norm(grads))  # bit for bit
    mixed = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))]
    mixed[0].grad, mixed[1].grad = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0, 12.0], dtype=torch.float64)
    assert gradient_norm(mixed).item() == pytest.approx(13.0)  # (several dtypes: torch's own grouping)


@pytest.mark.parametrize("on_host", [True, False], ids=["host-check", "device-check"])
def test_the_step_guard_names_a_non_finite_loss_with_its_value(on_host):
    from pyrovae.train import GuardedStep

    module = _Fixed()
    step = GuardedStep(module, torch.optim.Adam(module.parameters(), lr=0.1, fused=True), on_host=on_host)
    loss = step((torch.ones(3), torch.ones(2, 2)), torch.tensor(float("inf")))
    assert loss.requires_grad is False and math.isinf(loss.item())
    assert step.failed() == (1, "the loss became inf")
    step((torch.ones(3), torch.ones(2, 2)), torch.tensor(float("nan")))  # the first bad step is the one named
    assert step.failed() == (1, "the loss became inf")


def test_the_step_guard_checks_on_the_host_on_a_cpu_and_on_the_device_elsewhere():
    from pyrovae.train import GuardedStep
    from pyrovae.train.graphed import GraphedStep

    module = _Fixed()
    assert GuardedStep(module, torch.optim.Adam(module.parameters(), lr=0.1)).on_host is True
    meta = torch.nn.Linear(2, 1, device="meta")
    assert GuardedStep(meta, torch.optim.SGD(meta.parameters(), lr=0.1)).on_host is False
    # a recorded step carries its guard on the device, whatever the device
    with pyro.validation_enabled(False):
        graphed = GraphedStep(module, torch.optim.Adam(module.parameters(), lr=0.1, fused=True), backend=object())
    assert graphed.on_host is False


class _Root(torch.nn.Module):
    """``sum(sqrt(w * x))``: a finite loss with a NaN gradient where ``x`` is 0, and a NaN loss where negative."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(self.w * x).sum()


@pytest.mark.parametrize("on_host", [True, False], ids=["host-check", "device-check"])
@pytest.mark.parametrize("poison, why", [(0.0, "a gradient became NaN or inf"), (-1.0, "the loss became nan")])
def test_the_step_guard_holds_for_loss_and_gradients_from_the_compiled_engines_one_graph(on_host, poison, why):
    from pyrovae.infer import CompiledObjective
    from pyrovae.train import GuardedStep

    module = CompiledObjective(_Root(), backend=None)
    step = GuardedStep(module, torch.optim.Adam(module.parameters(), lr=0.1, fused=True), on_host=on_host)
    assert step.together is not None
    with pyro.validation_enabled(False):
        step(torch.ones(3))
        step(torch.ones(3))  # the first call recorded its graph; this one ran the joint graph
        assert module.graph_for(torch.ones(3)).joint is not None and step.failed() is None
        before = module.objective.w.detach().clone()
        step(torch.full((3,), poison))  # the same shape: the joint graph again
        step(torch.ones(3))
    assert step.failed() == (3, why)
    assert torch.equal(module.objective.w, before)
    total, steps = step.grad_norms()
    assert steps == 4 and not math.isfinite(total)
