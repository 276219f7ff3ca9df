"""The command line starts without torch: ``--help``, ``--version`` and a mistyped option import no
torch, Pyro, scikit-learn, matplotlib or ArviZ (their times are measured in benchmarks/startup.py);
and the names it offers are exactly those the library's registries hold."""

import dataclasses
import inspect
import subprocess
import sys

import pytest

HEAVY = ("torch", "pyro", "sklearn", "matplotlib", "arviz")


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["--version"],
        ["fit", "--help"],
        ["evaluate", "--help"],
        ["export", "--help"],
        ["fit", "--epochs", "x"],
        ["fit", "--nope"],
    ],
    ids=["help", "version", "fit-help", "evaluate-help", "export-help", "bad-value", "unknown-option"],
)
def test_the_command_line_answers_without_importing_torch(args):
    code = (
        "import sys\n"
        "from pyrovae.cli import main\n"
        "try:\n"
        f"    main({args!r}, prog_name='pyrovae')\n"
        "except SystemExit as stop:\n"
        f"    print('heavy:', sorted(m for m in {HEAVY!r} if m in sys.modules), 'exit:', stop.code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("heavy: [] exit:"), (last, done.stderr[-2000:])
    assert last.endswith("exit: 0") == (args[-1] in ("--help", "--version")), last


def test_fit_sample_and_evaluate_import_only_what_they_use(tmp_path):
    # fit and sample draw their grids with Pillow (no matplotlib); evaluate draws its two histograms
    # with matplotlib and, without --inference-data, records ArviZ's version from the package
    # metadata without importing it; none of them needs scikit-learn
    run = tmp_path / "run"
    first = [
        ["fit", "--epochs", "1", "--device", "cpu", "--threads", "1", "--no-progress", "--out", str(run)],
        ["sample", str(run), "--out", str(tmp_path / "s.png")],
    ]
    evaluate = ["evaluate", str(run), "--points", "5", "--k", "10", "--device", "cpu", "--no-progress"]
    heavy = "sorted(m for m in ('sklearn', 'matplotlib', 'arviz') if m in sys.modules)"
    code = (
        "import json, sys\n"
        "from importlib import metadata\n"
        "from pyrovae.cli import main\n"
        f"for args in {first!r}:\n"
        "    main(args, prog_name='pyrovae', standalone_mode=False)\n"
        f"print('fit and sample:', {heavy})\n"
        f"main({evaluate!r}, prog_name='pyrovae', standalone_mode=False)\n"
        f"print('evaluate:', {heavy})\n"
        f"recorded = json.loads(open({str(run / 'evaluation.json')!r}).read())['versions']['arviz']\n"
        "print('arviz recorded as installed:', recorded == metadata.version('arviz'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    said = [line for line in done.stdout.splitlines() if line.startswith(("fit and sample:", "evaluate:", "arviz"))]
    assert said == [
        "fit and sample: []",
        "evaluate: ['matplotlib']",
        "arviz recorded as installed: True",
    ]
    assert (run / "samples.png").exists() and (tmp_path / "s.png").exists()


def test_the_names_the_command_line_offers_are_the_registries():
    import torch

    from pyrovae.commands import evaluate_run, sample_run
    from pyrovae.config import DTYPES
    from pyrovae.infer import DEPRECATED_ELBOS, ELBOS
    from pyrovae.models import MODELS
    from pyrovae.models.mmd import KERNELS
    from pyrovae.models.networks import ACTIVATIONS
    from pyrovae.spec import OBJECTIVE_OPTIONS, names
    from pyrovae.train.engines import ENGINES, engine_names

    assert tuple(ELBOS) == names.OBJECTIVES == tuple(OBJECTIVE_OPTIONS)
    assert DEPRECATED_ELBOS == names.DEPRECATED_ELBOS
    assert engine_names() == names.ENGINE_NAMES == ("auto", *ENGINES)
    assert tuple(MODELS) == names.MODEL_KINDS
    assert tuple(ACTIVATIONS) == names.ACTIVATIONS
    assert tuple(DTYPES) == names.DTYPES and all(isinstance(d, torch.dtype) for d in DTYPES.values())
    assert KERNELS == names.KERNELS
    for function, defaults in ((evaluate_run, names.EVALUATE_DEFAULTS), (sample_run, names.SAMPLE_DEFAULTS)):
        signature = inspect.signature(function).parameters
        assert {name: signature[name].default for name in defaults} == defaults
    assert [f.name for f in dataclasses.fields(OBJECTIVE_OPTIONS["iwae"])] == ["grad"]
