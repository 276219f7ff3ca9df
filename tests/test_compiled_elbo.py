"""The compiled engine gives the eager numbers on the same draws, step after step.

Each test compares a :class:`CompiledObjective` with the :class:`Objective` it wraps (the ``eager``
engine). Most run the recorded graph uncompiled (``backend = None``: the recording is pyrovae's code,
and compiling takes seconds); the inductor-compiled graph is checked on its own and in ``fit``.
"""

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovae import VAE, closed_form_elbo, fit, load_dataset
from pyrovae.infer import CompiledObjective, Objective
from pyrovae.infer.lean_elbo import LeanTrace_ELBO, LeanTraceMeanField_ELBO
from pyrovae.train import FitOptions

from .test_lean_elbo import PARTICLES

LIKELIHOODS = ("bernoulli", "gaussian")

ESTIMATORS = {"meanfield": LeanTraceMeanField_ELBO, "trace": LeanTrace_ELBO}
PRIORS = ("normal", "gaussian", "mog", "vamp", "flow")
PROGRAMS = [(prior, likelihood) for prior in PRIORS for likelihood in LIKELIHOODS]


def make(programs, estimator="meanfield", particles=(1, False), backend=None):
    """``(compiled, eager)``: the :class:`Objective` of ``programs`` (a VAE, or ``(model, guide)``)
    with the lean estimator, and the same objective in a :class:`CompiledObjective`."""
    model, guide = (programs.model, programs.guide) if isinstance(programs, torch.nn.Module) else programs
    elbo = ESTIMATORS[estimator](num_particles=particles[0], vectorize_particles=particles[1], max_plate_nesting=1)
    eager = Objective(model, guide, elbo)
    return CompiledObjective(eager, backend), eager


def step(objective, params, x, seed, **kwargs):
    """One seeded loss and backward pass; returns (loss, gradients) and clears the gradients."""
    pyro.set_rng_seed(seed)
    loss = objective(x, **kwargs)
    loss.backward()
    grads = [p.grad.clone() if p.grad is not None else None for p in params]
    for p in params:
        p.grad = None
    return loss.item(), grads


def assert_same_steps(compiled, eager, x, seeds=(0, 1, 2), rtol=1e-10, **kwargs):
    params = list(eager.parameters())
    for seed in seeds:
        (a, grads_a), (b, grads_b) = step(compiled, params, x, seed, **kwargs), step(eager, params, x, seed, **kwargs)
        assert a == pytest.approx(b, rel=rtol)
        for ga, gb in zip(grads_a, grads_b, strict=True):
            torch.testing.assert_close(ga, gb, rtol=rtol, atol=rtol * 1e-2)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("prior, likelihood", PROGRAMS)
@pytest.mark.parametrize("particles", PARTICLES.values(), ids=PARTICLES.keys())
def test_recorded_graph_gives_the_lean_elbos_numbers(float64, estimator, prior, likelihood, particles):
    vae = VAE(10, z_dim=3, hidden_dims=(7,), prior=prior, likelihood=likelihood, learn_sigma=likelihood == "gaussian")
    x = torch.bernoulli(torch.rand(5, 10))
    compiled, eager = make(vae, estimator, particles)
    with pyro.validation_enabled(False):
        assert_same_steps(compiled, eager, x, num_data=20)
    recorded = compiled.graph_for(x, num_data=20)
    assert recorded is not None and not recorded.compiled
    placeholders = [node for node in recorded.graph.graph.nodes if node.op == "placeholder"]
    assert len(placeholders) == len(list(vae.parameters())) + len(list(vae.buffers())) + 1  # + the data


@pytest.mark.parametrize("prior", ["normal", "gaussian"])
@pytest.mark.parametrize("block", [None, 8], ids=["one-block", "blocks"])
def test_recorded_infovae_gives_the_eager_numbers(float64, monkeypatch, prior, block):
    # the MMD is recorded with the gradients it computes (both samples': a learned prior's draws
    # need theirs); the recorded graph's loss and gradients equal the eager objective's
    from pyrovae.infer import make_elbo
    from pyrovae.models import mmd as mmd_module

    if block is not None:
        monkeypatch.setattr(mmd_module, "BLOCK_ELEMENTS", block)
    vae = VAE(10, z_dim=3, hidden_dims=(7,), prior=prior)
    x = torch.bernoulli(torch.rand(6, 10))
    eager = Objective(vae.model, vae.guide, make_elbo("infovae", infovae_alpha=0.5, infovae_lambda=50.0))
    compiled = CompiledObjective(eager, None)
    with pyro.validation_enabled(False):
        assert_same_steps(compiled, eager, x, num_data=20)
    assert not compiled.graph_for(x, num_data=20).compiled


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_inductor_compiled_steps_give_the_lean_elbos_numbers(float64, estimator):
    vae = VAE(12, z_dim=3, hidden_dims=(8,))
    x = torch.bernoulli(torch.rand(6, 12))
    compiled, eager = make(vae, estimator, backend="inductor")
    with pyro.validation_enabled(False):
        assert_same_steps(compiled, eager, x, seeds=range(4), num_data=30)
        recorded = compiled.graph_for(x, num_data=30)
        assert recorded is not None and recorded.compiled
        # the graph reads the parameters as they are now: after an update, still the eager numbers
        with torch.no_grad():
            for p in vae.parameters():
                p.add_(0.1 * torch.randn_like(p))
        assert_same_steps(compiled, eager, x, seeds=(7,), num_data=30)
        # float32: the same to rounding
        compiled32, eager32 = make(VAE(12, z_dim=3, hidden_dims=(8,)).float(), estimator, backend="inductor")
        assert_same_steps(compiled32, eager32, x.float(), seeds=(1, 2), rtol=1e-4, num_data=30)
    assert compiled.graph_for(x, num_data=30).compiled and compiled32.graph_for(x.float(), num_data=30).compiled


def test_compiled_meanfield_loss_and_gradients_equal_the_closed_form_elbo(float64):
    # eq. 11 with eq. 13 and eq. 18, scaled by N/B = 4, on the draw the compiled graph makes:
    # the same seed makes the guide draw the same eps eagerly
    vae = VAE(12, z_dim=4, hidden_dims=(9,))
    x = torch.bernoulli(torch.rand(6, 12))
    compiled, _ = make(vae, backend="inductor")
    params = list(vae.parameters())
    with pyro.validation_enabled(False):
        step(compiled, params, x, 0, num_data=24)  # records and compiles
        assert compiled.graph_for(x, num_data=24).compiled
        loss, grads = step(compiled, params, x, 9, num_data=24)
        pyro.set_rng_seed(9)
        with vae.without_param_sites():
            z = vae.guide(x, num_data=24).detach()
    loc, scale = vae.encoder(x)
    eps = ((z - loc) / scale).detach()
    elbo = 4 * closed_form_elbo(vae, x, eps=eps).elbo.sum()
    assert -loss == pytest.approx(elbo.item(), rel=1e-12)
    expected = torch.autograd.grad(-elbo, params, allow_unused=True)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, torch.zeros_like(got) if want is None else want, rtol=1e-10, atol=1e-12)


def test_gradients_accumulate_like_the_eager_elbo(float64):
    vae = VAE(8, z_dim=2, hidden_dims=(5,))
    x = torch.bernoulli(torch.rand(4, 8))
    compiled, eager = make(vae)
    with pyro.validation_enabled(False):
        step(compiled, list(vae.parameters()), x, 0)  # records
        sums = []
        for objective in (compiled, eager):
            pyro.set_rng_seed(3)
            objective(x).backward()
            objective(x).backward()
            sums.append([p.grad.clone() for p in vae.parameters()])
            vae.zero_grad(set_to_none=True)
    for a, b in zip(*sums, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_a_new_shape_mode_argument_or_parameter_records_again(float64):
    vae = VAE(8, z_dim=2, hidden_dims=(5,))
    x = torch.bernoulli(torch.rand(6, 8))
    compiled, eager = make(vae)

    def recorded():
        return [g for g in compiled.graphs.values() if not isinstance(g, str)]

    with pyro.validation_enabled(False):
        for _ in range(2):
            step(compiled, list(vae.parameters()), x, 0, num_data=10)
        assert len(recorded()) == 1
        step(compiled, list(vae.parameters()), x[:4], 0, num_data=10)  # batch shape
        step(compiled, list(vae.parameters()), x, 0, num_data=60)  # scale N/B
        vae.eval()
        step(compiled, list(vae.parameters()), x, 0, num_data=10)  # train/eval mode
        vae.train()
        assert len(recorded()) == 4
        vae.decoder = type(vae.decoder)(2, 8, (5,), "relu")  # new parameters
        step(compiled, list(vae.parameters()), x, 0, num_data=10)
        assert len(recorded()) == 5
        assert_same_steps(compiled, eager, x[:4], num_data=10)
        assert_same_steps(compiled, eager, x, num_data=60)


def test_the_graph_inputs_are_the_modules_named_tensors_and_modes():
    # the one walk the engine makes at every call finds what torch's own walks find, in their order
    from pyrovae._compat import module_state

    shared = torch.nn.Linear(2, 2)
    frozen = torch.nn.Linear(3, 3).requires_grad_(False)
    norm = torch.nn.BatchNorm1d(3)
    norm.register_buffer("unset", None)
    module = torch.nn.Sequential(shared, torch.nn.Sequential(shared, frozen, torch.nn.ReLU()), norm)
    module[1].eval()
    vae = VAE(8, z_dim=2, hidden_dims=(5,))
    for tree in (module, Objective(vae.model, vae.guide, LeanTraceMeanField_ELBO(), num_data=10)):
        params, buffers, modes = module_state(tree)
        assert [(n, id(t)) for n, t in params] == [(n, id(t)) for n, t in tree.named_parameters()]
        assert [(n, id(t)) for n, t in buffers] == [(n, id(t)) for n, t in tree.named_buffers()]
        assert modes == tuple(m.training for m in tree.modules())
    assert [n for n, _ in module_state(module)[0]] == ["0.weight", "0.bias", "1.1.weight", "1.1.bias", "2.weight",
                                                      "2.bias"]  # fmt: skip
    assert module_state(module)[2] == (True, False, False, False, False, True)  # (eval() reached the shared layer)


def test_fit_with_the_compiled_engine_trains_to_the_eager_parameters(float64, monkeypatch):
    compiles = []
    compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda *args, **kwargs: compiles.append(1) or compile(*args, **kwargs))
    data = load_dataset("digits", "static")
    data = type(data)(data.name, data.train[:300].double(), data.test[:100].double(), data.image_shape)
    runs = []
    for engine in ("eager", "compiled"):
        pyro.set_rng_seed(0)
        vae = VAE(data.x_dim, z_dim=4, hidden_dims=(16,)).double()
        history = fit(
            vae, data, FitOptions(elbo="meanfield", engine=engine, epochs=2, batch_size=64, seed=1)
        )  # 4 batches of 64, 1 of 44
        runs.append((vae, history))
    (eager_vae, eager), (compiled_vae, compiled) = runs
    assert compiled.last["step"] == eager.last["step"] == 10
    assert compiled.step_elbos == pytest.approx(eager.step_elbos, rel=1e-10)
    assert compiled.last["test_elbo"] == pytest.approx(eager.last["test_elbo"], rel=1e-10)
    for a, b in zip(compiled_vae.parameters(), eager_vae.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    assert len(compiles) == 2  # batch 64 and batch 44


def test_a_program_calling_pyro_module_on_every_step_is_recorded(float64):
    # Pyro's VAE tutorial calls pyro.module in model and guide on every step: inside a recording
    # those calls answer the module's own tensors, and Pyro's parameter store is left as it was
    class TutorialVAE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            networks = VAE(7, z_dim=2, hidden_dims=(5,))
            self.encoder, self.decoder = networks.encoder, networks.decoder

        def model(self, x):
            pyro.module("decoder", self.decoder)
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([x.shape[0], 2]).to_event(1))
                pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

        def guide(self, x):
            pyro.module("encoder", self.encoder)
            with pyro.plate("data", x.shape[0]):
                loc, scale = self.encoder(x)
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    vae = TutorialVAE()
    x = torch.bernoulli(torch.rand(5, 7))
    compiled, eager = make(vae)
    with pyro.validation_enabled(False), pyro.get_param_store().scope():
        assert_same_steps(compiled, eager, x)
        assert compiled.graph_for(x) is not None
        store = pyro.get_param_store()
        assert len(store.keys()) == len(list(vae.parameters()))
        # the store still holds the module's own tensors, not recorded ones
        assert all(any(store[name] is p for p in vae.parameters()) for name in store.keys())


def test_validation_runs_the_objective_eagerly_and_records_nothing(float64):
    vae = VAE(8, z_dim=2, hidden_dims=(5,))
    x = torch.bernoulli(torch.rand(4, 8))
    compiled, _ = make(vae)
    with pyro.validation_enabled(True), pyro.get_param_store().scope():
        with pytest.warns(RuntimeWarning, match="runs this objective eagerly: Pyro's validation is on"):
            for seed in (0, 1):
                step(compiled, list(vae.parameters()), x, seed)
    assert compiled.graphs == {}


def bad_program(name):
    """(model, guide, parameters, what the warning says) of a program it must not compile."""
    vae = VAE(6, z_dim=2, hidden_dims=(4,))

    def store_model(x):
        sigma = pyro.param("sigma", torch.tensor(0.5), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([x.shape[0], 2]).to_event(1))
            pyro.sample("x", dist.Normal(vae.decoder(z), sigma).to_event(1), obs=x)

    def store_guide(x):
        with pyro.plate("data", x.shape[0]):
            loc, scale = vae.encoder(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    class Scored(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.logit = torch.nn.Parameter(torch.tensor(0.3))

        def model(self, x):
            pyro.sample("c", dist.Bernoulli(logits=torch.tensor(0.0)))
            pyro.sample("x", dist.Normal(0.0, 1.0).expand(x.shape).to_event(2), obs=x)

        def guide(self, x):
            pyro.sample("c", dist.Bernoulli(logits=self.logit))

    class StoreParam(torch.nn.Module):  # a module whose model also reads a pyro.param of the store
        def __init__(self):
            super().__init__()
            self.vae = vae

        def model(self, x):
            store_model(x)

        def guide(self, x):
            store_guide(x)

    scored, store_param = Scored(), StoreParam()
    return {
        "functions": (store_model, store_guide, [*vae.parameters()], "pyro.param('sigma') is not a parameter"),
        "score-function": (scored.model, scored.guide, [scored.logit], "could not be recorded"),
        "store-param": (
            store_param.model,
            store_param.guide,
            [*vae.parameters()],
            "pyro.param('sigma') is not a parameter",
        ),
    }[name]


@pytest.mark.parametrize("name", ["functions", "score-function", "store-param"])
def test_programs_it_cannot_record_run_eagerly_with_one_warning(float64, name):
    model, guide, params, why = bad_program(name)
    x = torch.rand(4, 6)
    compiled, eager = make((model, guide), "trace")
    results = []
    with pyro.validation_enabled(False), pyro.get_param_store().scope():
        for objective in (compiled, eager):
            losses, grads = [], []
            for seed in (0, 1, 2):
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    loss, grad = step(objective, params, x, seed)
                said = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
                if objective is compiled and seed == 0:
                    assert len(said) == 1 and why in said[0], said
                else:
                    assert not said, said
                losses.append(loss)
                grads.append([g for g in grad if g is not None])
            results.append((losses, grads))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-12)
    assert compiled.graph_for(x) is None


def test_a_tensor_outside_the_modules_parameters_is_not_frozen_into_a_graph(float64):
    # a tensor with a gradient that the program reads but the module does not own (not an
    # nn.Parameter): recording would freeze it into the graph, so the program runs eagerly
    class WithStoreParam(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vae = VAE(6, z_dim=2, hidden_dims=(4,), likelihood="gaussian")
            self.sigma = torch.tensor(0.7, requires_grad=True)  # not an nn.Parameter

        def model(self, x):
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([x.shape[0], 2]).to_event(1))
                pyro.sample("x", dist.Normal(self.vae.decoder(z), self.sigma).to_event(1), obs=x)

        def guide(self, x):
            with pyro.plate("data", x.shape[0]):
                loc, scale = self.vae.encoder(x)
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    program = WithStoreParam()
    x = torch.rand(4, 6)
    compiled, _ = make(program, "trace")
    with pyro.validation_enabled(False):
        with pytest.warns(RuntimeWarning, match="with a gradient is not a parameter of the objective"):
            compiled(x).backward()
        program.sigma.grad = None
        compiled(x).backward()
    assert program.sigma.grad is not None and program.sigma.grad.abs() > 0
    assert compiled.graph_for(x) is None


def test_a_failed_compile_runs_the_recorded_graph_with_a_warning(float64, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", broken)
    vae = VAE(8, z_dim=2, hidden_dims=(5,))
    x = torch.bernoulli(torch.rand(4, 8))
    compiled, eager = make(vae, backend="inductor")
    with pyro.validation_enabled(False):
        with pytest.warns(RuntimeWarning, match="torch.compile failed .*no C\\+\\+ compiler.*uncompiled"):
            step(compiled, list(vae.parameters()), x, 0)
        assert_same_steps(compiled, eager, x)
        assert not compiled.graph_for(x).compiled


def test_recording_does_not_move_the_random_stream(float64):
    # the first call runs eagerly and then records: the draws after it must be the eager objective's
    vae = VAE(8, z_dim=2, hidden_dims=(5,))
    x = torch.bernoulli(torch.rand(4, 8))
    states = []
    for objective in make(vae):
        with pyro.validation_enabled(False):
            pyro.set_rng_seed(11)
            objective(x).backward()
        states.append(torch.get_rng_state())
        vae.zero_grad(set_to_none=True)
    assert torch.equal(*states)


def test_unhashable_arguments_run_eagerly(float64):
    vae = VAE(8, z_dim=2, hidden_dims=(5,))
    x = torch.bernoulli(torch.rand(4, 8))

    def model(x, extra):
        return vae.model(x)

    def guide(x, extra):
        return vae.guide(x)

    compiled, _ = make((model, guide))
    with pyro.validation_enabled(False):
        with pytest.warns(RuntimeWarning, match="runs this objective eagerly: an argument is not hashable"):
            loss = compiled(x, extra=[1])
        loss.backward()
    assert loss > 0 and all(p.grad is not None for p in vae.encoder.parameters())


def joint_step(compiled, params, x, seed, **kwargs):
    """One seeded :meth:`~CompiledObjective.loss_and_gradients`: (loss, gradients, norm); clears the gradients."""
    pyro.set_rng_seed(seed)
    found = compiled.loss_and_gradients(x, **kwargs)
    assert found is not None
    loss, norm = found
    assert not loss.requires_grad and not norm.requires_grad
    grads = [p.grad.clone() if p.grad is not None else None for p in params]
    for p in params:
        p.grad = None
    return loss.item(), grads, norm.item()


def assert_same_gradients(got, want, rtol=1e-10):
    for g, w in zip(got, want, strict=True):
        assert (g is None) == (w is None)  # (a parameter the loss does not use has none either way)
        if g is not None:
            torch.testing.assert_close(g, w, rtol=rtol, atol=rtol * 1e-2)


def eager_norm(grads):
    return torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads if g is not None])).item()


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("prior, likelihood", [("normal", "bernoulli"), ("vamp", "gaussian"), ("flow", "bernoulli")])
def test_loss_and_gradients_in_one_graph_give_the_eager_step(float64, estimator, prior, likelihood):
    vae = VAE(10, z_dim=3, hidden_dims=(7,), prior=prior, likelihood=likelihood, learn_sigma=likelihood == "gaussian")
    x = torch.bernoulli(torch.rand(5, 10))
    compiled, eager = make(vae, estimator)
    params = list(vae.parameters())
    with pyro.validation_enabled(False):
        for seed in (0, 1, 2):  # the first call runs as it is and records; the others run the joint graph
            loss, grads, norm = joint_step(compiled, params, x, seed, num_data=20)
            want, want_grads = step(eager, params, x, seed, num_data=20)
            assert loss == pytest.approx(want, rel=1e-10)
            assert_same_gradients(grads, want_grads)
            assert norm == pytest.approx(eager_norm(want_grads), rel=1e-10)
    recorded = compiled.graph_for(x, num_data=20)
    assert recorded.joint is not None and not recorded.joint_compiled and recorded.joint_failed == ""
    assert recorded.run is None  # a step never needed the forward graph on its own
    outputs = next(n for n in recorded.joint.graph.nodes if n.op == "output").args[0]
    assert len(outputs) == 1 + len(params) + 1  # (flattened) the loss, a gradient a parameter, the norm


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_inductor_compiled_loss_and_gradients_give_the_eager_step(float64, estimator):
    vae = VAE(12, z_dim=3, hidden_dims=(8,))
    x = torch.bernoulli(torch.rand(6, 12))
    compiled, eager = make(vae, estimator, backend="inductor")
    params = list(vae.parameters())
    with pyro.validation_enabled(False):
        for seed in range(3):
            loss, grads, norm = joint_step(compiled, params, x, seed, num_data=30)
            want, want_grads = step(eager, params, x, seed, num_data=30)
            assert loss == pytest.approx(want, rel=1e-10) and norm == pytest.approx(eager_norm(want_grads), rel=1e-10)
            assert_same_gradients(grads, want_grads)
        recorded = compiled.graph_for(x, num_data=30)
        assert recorded.joint_compiled and recorded.run is None
        # a call of the objective itself compiles the forward graph then, and gives the eager numbers too
        assert_same_steps(compiled, eager, x, seeds=(5,), num_data=30)
        assert recorded.compiled and compiled.graph_for(x, num_data=30) is recorded
        # the joint graph reads the parameters as they are now
        with torch.no_grad():
            for p in params:
                p.add_(0.1 * torch.randn_like(p))
        loss, grads, _ = joint_step(compiled, params, x, 7, num_data=30)
        want, want_grads = step(eager, params, x, 7, num_data=30)
        assert loss == pytest.approx(want, rel=1e-10)
        assert_same_gradients(grads, want_grads)
        # float32: the same to rounding
        vae32 = VAE(12, z_dim=3, hidden_dims=(8,)).float()
        compiled32, eager32 = make(vae32, estimator, backend="inductor")
        for seed in (1, 2):
            loss, grads, _ = joint_step(compiled32, list(vae32.parameters()), x.float(), seed, num_data=30)
            want, want_grads = step(eager32, list(vae32.parameters()), x.float(), seed, num_data=30)
            assert loss == pytest.approx(want, rel=1e-5)
            assert_same_gradients(grads, want_grads, rtol=1e-4)
        assert compiled32.graph_for(x.float(), num_data=30).joint_compiled


def test_loss_and_gradients_leave_to_autograd_what_they_cannot_take(float64):
    # None, with nothing computed and no draw made, wherever the one graph would not do what
    # loss.backward() does; a call of the objective then takes the usual way
    vae = VAE(8, z_dim=2, hidden_dims=(5,))
    x = torch.bernoulli(torch.rand(4, 8))
    compiled, _ = make(vae)
    params = list(vae.parameters())
    with pyro.validation_enabled(False):
        joint_step(compiled, params, x, 0)  # records
        state = torch.get_rng_state()
        params[0].grad = torch.zeros_like(params[0])  # backward() would add to it
        assert compiled.loss_and_gradients(x) is None
        params[0].grad = None
        with torch.no_grad():
            assert compiled.loss_and_gradients(x) is None
        with warnings.catch_warnings(), torch.autograd.detect_anomaly():
            warnings.simplefilter("ignore")  # (anomaly detection announces itself)
            assert compiled.loss_and_gradients(x) is None
        assert compiled.loss_and_gradients(x, extra=[1]) is None  # (unhashable: the objective's call runs eagerly)
        assert torch.equal(torch.get_rng_state(), state) and all(p.grad is None for p in params)
    with pyro.validation_enabled(True):
        assert compiled.loss_and_gradients(x) is None
    frozen = VAE(8, z_dim=2, hidden_dims=(5,)).requires_grad_(False)
    assert make(frozen)[0].loss_and_gradients(x) is None  # no parameter with a gradient


def test_a_backward_pass_that_cannot_be_recorded_leaves_the_gradients_to_autograd(float64, monkeypatch):
    from pyrovae.infer import joint_graph

    vae = VAE(8, z_dim=2, hidden_dims=(5,))
    x = torch.bernoulli(torch.rand(4, 8))
    compiled, eager = make(vae)
    params = list(vae.parameters())
    recorder = joint_graph.make_fx

    def no_joint(function, *args, **kwargs):
        if function.__name__ == "loss_and_gradients":
            raise RuntimeError("cannot trace this backward")
        return recorder(function, *args, **kwargs)

    monkeypatch.setattr(joint_graph, "make_fx", no_joint)
    with pyro.validation_enabled(False):
        with pytest.warns(RuntimeWarning, match="could not record .*backward pass.*cannot trace this backward"):
            first = joint_step(compiled, params, x, 0)  # the first call's own numbers stand
        assert compiled.loss_and_gradients(x) is None
        recorded = compiled.graph_for(x)
        assert recorded.joint is None and "cannot trace this backward" in recorded.joint_failed
        want, want_grads = step(eager, params, x, 0)
        assert first[0] == pytest.approx(want, rel=1e-10)
        assert_same_gradients(first[1], want_grads)
        assert_same_steps(compiled, eager, x)  # the objective's own call still runs the recorded graph


def test_the_step_takes_loss_and_gradients_together_only_for_the_optimizers_own_parameters(float64):
    from pyrovae.train import GuardedStep, make_adam

    vae = VAE(8, z_dim=2, hidden_dims=(5,))
    compiled, eager = make(vae)
    adam = make_adam(vae.parameters(), lr=1e-3)
    assert GuardedStep(compiled, adam).together == compiled.loss_and_gradients
    assert GuardedStep(compiled, make_adam(vae.encoder.parameters(), lr=1e-3)).together is None  # another norm
    assert GuardedStep(compiled, adam, reduce=lambda loss: loss).together is None  # over several processes
    assert GuardedStep(eager, adam).together is None


@pytest.mark.parametrize("clip_norm", [0.0, 0.5])
def test_guarded_steps_through_the_joint_graph_take_the_eager_steps(float64, clip_norm):
    from pyrovae.train import GuardedStep, make_adam

    x = torch.bernoulli(torch.rand(6, 8))
    runs = []
    for engine in ("eager", "compiled"):
        pyro.set_rng_seed(0)
        vae = VAE(8, z_dim=2, hidden_dims=(5,))
        compiled, eager = make(vae)
        module = compiled if engine == "compiled" else eager
        guarded = GuardedStep(module, make_adam(vae.parameters(), lr=1e-2), clip_norm=clip_norm)
        assert (guarded.together is not None) == (engine == "compiled")
        with pyro.validation_enabled(False):
            losses = [guarded(x).item() for _ in range(4)]
        if engine == "compiled":
            assert compiled.graph_for(x).joint is not None
        runs.append((losses, guarded.grad_norms(), [p.detach().clone() for p in vae.parameters()]))
    (eager_losses, eager_norms, eager_params), (losses, norms, params) = runs
    assert losses == pytest.approx(eager_losses, rel=1e-10)
    assert norms[0] == pytest.approx(eager_norms[0], rel=1e-10) and norms[1] == eager_norms[1] == 4
    for a, b in zip(params, eager_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_on_a_cpu_graphs_get_a_cpp_launcher_and_are_compiled_without_it_where_that_fails(float64, monkeypatch):
    from pyrovae.infer.compiled import COMPILE_OPTIONS, CPU_COMPILE_OPTIONS

    asked = []
    compile = torch.compile

    def launcher_fails(function, **kwargs):
        asked.append(kwargs["options"])
        if kwargs["options"].get("cpp_wrapper"):
            raise RuntimeError("no C++ launcher here")
        return compile(function, **kwargs)

    monkeypatch.setattr(torch, "compile", launcher_fails)
    vae = VAE(8, z_dim=2, hidden_dims=(5,))
    x = torch.bernoulli(torch.rand(4, 8))
    compiled, eager = make(vae, backend="inductor")
    params = list(vae.parameters())
    with pyro.validation_enabled(False), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # (no warning: the graph is compiled all the same)
        joint_step(compiled, params, x, 0)
        loss, grads, _ = joint_step(compiled, params, x, 1)
    assert asked == [{**COMPILE_OPTIONS, **CPU_COMPILE_OPTIONS}, COMPILE_OPTIONS]
    assert compiled.graph_for(x).joint_compiled
    want, want_grads = step(eager, params, x, 1)
    assert loss == pytest.approx(want, rel=1e-10)
    assert_same_gradients(grads, want_grads)
    # options given by the caller are used as they are
    asked.clear()
    own = CompiledObjective(eager, "inductor", {"fallback_random": True})
    with pyro.validation_enabled(False):
        joint_step(own, params, x, 0)
    assert asked == [{"fallback_random": True}]
