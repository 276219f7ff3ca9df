"""The package's shape: imports flow one way, no private Pyro or torch names, one owner per option."""

import ast
import dataclasses
import inspect
import re
from pathlib import Path

import pytest
import torch

import pyrovae
from pyrovae.cli import main
from pyrovae.config import FitConfig
from pyrovae.train import FitOptions, fit

PACKAGE = Path(pyrovae.__file__).parent

#: each unit of the package (a subpackage or a top-level module) and its layer: a unit may import
#: only units of lower layers (the README's "How it is built" draws these)
LAYERS = {
    "_compat": 0,
    "errors": 0,
    "rng": 1,
    "rundir": 1,
    "memory": 1,
    "signals": 1,
    "reporting": 1,
    "spec": 1,
    "data": 2,
    "models": 2,
    "image_grid": 2,
    "infer": 3,
    "evaluation": 3,
    "pretrained": 3,
    "plots": 3,
    "train": 4,
    "config": 5,
    "plan": 6,
    "commands": 7,
    "runs": 8,
    "cli": 9,
    "__main__": 10,
}


def _units_imported(path: Path) -> set[str]:
    """The package units that ``path`` imports with relative imports (``from ..x import``)."""
    package = path.relative_to(PACKAGE).parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(package)[: len(package) - node.level + 1]
            target = base + (node.module.split(".") if node.module else [])
            names = target[:1] if target else [alias.name for alias in node.names]
            found.update(names)
    return found


def _unit(path: Path) -> str:
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def test_every_unit_has_a_layer():
    assert {_unit(p) for p in _modules()} == set(LAYERS)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_flow_one_way(path):
    unit = _unit(path)
    upward = sorted(u for u in _units_imported(path) - {unit, "__version__"} if LAYERS[u] >= LAYERS[unit])
    assert not upward, f"{path.relative_to(PACKAGE)} (layer {LAYERS[unit]}) imports {upward} from its layer or above"


PRIVATE = [
    re.compile(r"\b(?:torch|pyro|poutine|dist)(?:\.[A-Za-z]\w*)*\._[A-Za-z]"),  # torch._x, pyro.infer._y
    re.compile(r"^\s*(?:from|import)\s+(?:torch|pyro)[\w.]*\._"),  # a private module
    re.compile(r"^\s*from\s+(?:torch|pyro)[\w.]*\s+import\s+.*\b_[A-Za-z]"),  # a private name
    re.compile(r"super\(\)\._[A-Za-z]"),  # a private method of a Pyro or torch parent class
]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_pyro_or_torch_names(path):
    lines = [
        f"{number}: {line.strip()}"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if any(pattern.search(line) for pattern in PRIVATE)
    ]
    assert not lines, lines


def test_the_private_name_check_can_fail():
    assert any(p.search("torch.nn.utils.stateless._reparametrize_module(m, d)") for p in PRIVATE)
    assert any(p.search("from pyro.poutine.runtime import _PYRO_STACK") for p in PRIVATE)
    assert any(p.search("return super()._differentiable_loss_particle(a, b)") for p in PRIVATE)
    assert not any(p.search("torch.func.functional_call(module, state, args)") for p in PRIVATE)


def _fit_command_defaults() -> dict[str, object]:
    return {param.name: param.default for param in main.commands["fit"].params if param.name is not None}


def test_the_cli_and_the_config_agree_on_every_default():
    cli = _fit_command_defaults()
    for name, default in FitConfig.defaults().items():
        assert name in cli, f"FitConfig.{name} has no option in `pyrovae fit`"
        given = cli[name]
        if name in ("hidden_dims", "channels"):  # comma-separated on the command line
            given = tuple(int(h) for h in given.split(","))
        elif name in ("prior_options", "model_options", "objective_options"):  # repeatable KEY=VALUE: none is {}
            given = main.commands["fit"].params[[p.name for p in main.commands["fit"].params].index(name)].multiple
            given = {} if given else None
        assert given == default, f"--{name}: the CLI says {given!r}, FitConfig says {default!r}"


def test_training_defaults_have_one_owner():
    # FitConfig's training fields take the spec's defaults, which are FitOptions' (seed aside: a run
    # directory is always seeded); fit takes a FitOptions rather than restating them
    fields = dataclasses.fields(FitOptions)
    owner = {f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default for f in fields}
    for name in set(owner) & set(FitConfig.defaults()) - {"seed"}:
        assert FitConfig.defaults()[name] == owner[name], name
    assert FitConfig.defaults()["seed"] == 0 and owner["seed"] is None


def test_fit_takes_at_most_eight_parameters():
    parameters = inspect.signature(fit).parameters.values()
    named = [p for p in parameters if p.kind is not inspect.Parameter.VAR_KEYWORD]
    assert len(named) <= 8, [p.name for p in named]
    assert [p.name for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD] == ["deprecated"]


def test_model_defaults_come_from_the_vae():
    signature = inspect.signature(pyrovae.VAE).parameters
    for name in (
        "z_dim",
        "hidden_dims",
        "likelihood",
        "prior",
        "sigma",
        "learn_sigma",
        "activation",
        "arch",
        "channels",
    ):
        assert FitConfig.defaults()[name] == signature[name].default, name
    assert FitConfig.defaults()["latents"] == inspect.signature(pyrovae.models.make_vae).parameters["latents"].default


def test_the_version_is_written_once():
    setup = (PACKAGE.parent / "setup.py").read_text()
    assert '__version__ = "' in (PACKAGE / "__init__.py").read_text()
    assert not re.search(r'version="\d', setup), "setup.py restates the version"


def test_a_bad_option_is_refused_by_the_one_check_whoever_asks():
    from pyrovae.errors import ConfigError

    for build in (lambda: FitConfig(lr=float("inf")), lambda: FitOptions(lr=float("inf"))):
        with pytest.raises(ConfigError, match=r"lr \(--lr\) must be a finite number > 0"):
            build()
    with pytest.raises(ConfigError, match=r"lr \(--lr\) must be a finite number > 0"):
        fit(pyrovae.VAE(4, z_dim=2, hidden_dims=(3,)), torch.bernoulli(torch.rand(8, 4)), FitOptions(lr=float("inf")))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_above_400_lines(path):
    # one concept per module: a module that grows past a screenful or two is split by concept
    assert len(path.read_text().splitlines()) <= 400, f"{path.relative_to(PACKAGE)}: split it by concept"


INTERNALS = re.compile(
    r"^\s*from (pyro\.(infer\.util|util|poutine\.util|poutine\.messenger|distributions\.util|params\.param_store)"
    r"|torch\.fx)\b|\._(validate_sample|extended_shape)\(",
    re.M,
)


def test_pyro_and_torch_internals_are_used_through_compat_alone():
    # pyrovae/_compat.py says which versions they are tested against; a version that moves one breaks it alone
    users = sorted(str(p.relative_to(PACKAGE)) for p in _modules() if INTERNALS.search(p.read_text()))
    assert users == ["_compat.py"], users
