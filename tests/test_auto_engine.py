"""``--engine auto``: compiled exactly when a run's steps repay compiling (the measured rule of
pyrovae.train.engines), never jit or cudagraph, eager whatever the length under validation or
anomaly detection."""

import pytest

from pyrovae.train import FitOptions, engines
from pyrovae.train.engines import (
    AUTO_COMPILE_SECONDS,
    AUTO_MIN_STEPS,
    AUTO_SAVING_MS,
    compile_pays,
    eager_step_faster,
    make_engine,
)


def saving_seconds(steps, batch_size):
    return steps * (AUTO_SAVING_MS[0] + AUTO_SAVING_MS[1] * batch_size) / 1000


@pytest.mark.parametrize("batch_size", [1, 32, 128, 256, 1024, 8192])
def test_auto_compiles_on_a_cpu_from_the_step_whose_saving_repays_compiling(batch_size):
    per_step = (AUTO_SAVING_MS[0] + AUTO_SAVING_MS[1] * batch_size) / 1000
    first = next(s for s in range(1, 10**6) if s * per_step >= AUTO_COMPILE_SECONDS)  # the first run that repays
    assert saving_seconds(first, batch_size) >= AUTO_COMPILE_SECONDS > saving_seconds(first - 1, batch_size)
    for device in ("cpu", None):
        assert make_engine("auto", first - 1, batch_size=batch_size, device=device).name == "eager"
        assert make_engine("auto", first, batch_size=batch_size, device=device).name == "compiled"
    # larger batches save more per step, so fewer steps repay the compile
    assert first <= next(s for s in range(1, 10**6) if saving_seconds(s, 1) >= AUTO_COMPILE_SECONDS)


@pytest.mark.parametrize(
    "batch_size, engine",
    [(32, "compiled"), (128, "compiled"), (256, "compiled"), (1024, "compiled")],
)
def test_the_default_fashion_mnist_run_on_a_cpu(batch_size, engine):
    # 30 epochs of the 60,000 training rows, every other option at its default; 2 epochs stay eager
    options = FitOptions(batch_size=batch_size)
    assert options.make_engine(60_000, device="cpu").name == engine
    assert FitOptions(batch_size=batch_size, epochs=2).make_engine(60_000, device="cpu").name == "eager"


def test_auto_on_other_devices_and_without_a_batch_size_counts_steps():
    for device in ("cuda", "cuda:1", "mps"):
        assert not compile_pays(AUTO_MIN_STEPS - 1, 1024, device)
        assert compile_pays(AUTO_MIN_STEPS, 1, device)
    assert not compile_pays(AUTO_MIN_STEPS - 1, None, "cpu") and compile_pays(AUTO_MIN_STEPS, None, "cpu")
    assert not compile_pays(None, 128, "cpu")  # an unknown length is never compiled
    assert make_engine("auto").name == "eager"


def test_auto_never_picks_jit_or_cudagraph_and_stays_eager_where_a_graph_cannot_replay(monkeypatch):
    for steps in (1, 10**3, 10**5, 10**8):
        for batch_size in (1, 128, 4096):
            for device in ("cpu", "cuda"):
                assert make_engine("auto", steps, batch_size=batch_size, device=device).name in ("eager", "compiled")
    huge = 10**9
    assert make_engine("auto", huge, validate=True, batch_size=128, device="cpu").name == "eager"
    assert make_engine("auto", huge, anomaly=True, batch_size=128, device="cpu").name == "eager"
    # the rule follows its constants (nothing else is hard-coded)
    monkeypatch.setattr(engines, "AUTO_COMPILE_SECONDS", 10**9)
    assert make_engine("auto", huge // 10, batch_size=128, device="cpu").name == "eager"


def test_objectives_without_measurements_keep_the_step_count_rule():
    # infovae at batch 1024: 1,770 steps would repay a meanfield compile, not counted for infovae
    assert FitOptions(batch_size=1024).make_engine(60_000, device="cpu").name == "compiled"
    for elbo, batch_size in (("infovae", 256), ("iwae", 1024)):  # (infovae from 768: the next test)
        assert FitOptions(elbo=elbo, batch_size=batch_size).make_engine(60_000, device="cpu").name == "eager"
        long = FitOptions(elbo=elbo, batch_size=batch_size, epochs=200)  # 11,800 steps at 1024
        assert long.make_engine(60_000, device="cpu").name == "compiled"


def test_auto_keeps_infovae_eager_on_a_cpu_where_its_mmd_takes_the_compiled_tiles(monkeypatch):
    # from 768 codes a step (1,536 with the prior draws) the eager step, whose MMD takes the tiles,
    # beats the compiled one: auto stays eager however long the run; below that the step-count rule
    from pyrovae.train.engines import AUTO_INFOVAE_EAGER_ROWS

    assert AUTO_INFOVAE_EAGER_ROWS == 768
    long = dict(elbo="infovae", epochs=400)
    assert FitOptions(batch_size=768, **long).make_engine(60_000, device="cpu").name == "eager"
    assert FitOptions(batch_size=384, particles=2, **long).make_engine(60_000, device="cpu").name == "eager"
    assert FitOptions(batch_size=512, **long).make_engine(60_000, device="cpu").name == "compiled"
    assert FitOptions(batch_size=256, particles=2, **long).make_engine(60_000, device="cpu").name == "compiled"
    assert FitOptions(batch_size=1024, **long).make_engine(60_000, device="cuda").name == "compiled"
    assert FitOptions(batch_size=1024, epochs=400).make_engine(60_000, device="cpu").name == "compiled"
    assert not eager_step_faster("meanfield", 4096, "cpu") and eager_step_faster("infovae", 768, None)
    assert not eager_step_faster("infovae", 767, "cpu")
    monkeypatch.setattr("pyrovae.models.mmd_tiles.MIN_ROWS", 2048)  # tiles from 1,024 codes only
    assert not eager_step_faster("infovae", 768, "cpu") and eager_step_faster("infovae", 1024, "cpu")
    monkeypatch.setattr("pyrovae.models.mmd_tiles.MIN_ROWS", None)  # the tiles turned off
    assert FitOptions(batch_size=768, **long).make_engine(60_000, device="cpu").name == "compiled"
