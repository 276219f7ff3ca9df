"""pyrovae's ELBO classes pass Pyro's own tests exactly as Pyro's classes do, test by test.

``LeanTrace_ELBO`` and ``LeanTraceMeanField_ELBO`` claim to be drop-in replacements for
:class:`pyro.infer.Trace_ELBO` and :class:`pyro.infer.TraceMeanField_ELBO`. This test runs Pyro's
``tests/infer/test_gradient.py``, ``test_jit.py`` and ``test_valid_models.py`` twice, once as they
are and once with pyrovae's classes in place of Pyro's (the plugin
``tests/pyro_suite/pyrovae_elbos.py``), and asks for the same outcome (passed, failed, skipped,
xfailed, ...) for every test id. It does so with Pyro's validation as Pyro's ``conftest.py`` sets it
(on: pyrovae's classes then run Pyro's own code) and with validation off (pyrovae's own code runs
wherever it applies).

It needs a Pyro source checkout (only its ``tests/`` folder and ``setup.cfg`` are used, copied to a
temporary folder, so the installed ``pyro`` is the one tested) and skips without one::

    PYROVAE_PYRO_CHECKOUT=/path/to/pyro python -m pytest tests/test_pyro_suite.py -q -s

or, printing the comparison for one validation setting::

    python tests/test_pyro_suite.py /path/to/pyro --validation off

Each of the four runs takes minutes (Pyro's sequential-particle gradient tests dominate).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DIR = Path(__file__).resolve().parent / "pyro_suite"
#: Pyro's test files that exercise ``Trace_ELBO`` and ``TraceMeanField_ELBO``
FILES = ("tests/infer/test_gradient.py", "tests/infer/test_jit.py", "tests/infer/test_valid_models.py")
CHECKOUT = os.environ.get("PYROVAE_PYRO_CHECKOUT")


def copy_tests(checkout: Path, workdir: Path) -> Path:
    """Pyro's ``tests/`` and ``setup.cfg`` (its pytest settings) under ``workdir``, without the
    ``pyro`` package beside them (which would shadow the installed one)."""
    checkout = Path(checkout)
    missing = [f for f in FILES if not (checkout / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{checkout} should be a Pyro source checkout; it has no {', '.join(missing)}")
    if not (workdir / "tests").exists():
        shutil.copytree(checkout / "tests", workdir / "tests")
        shutil.copy(checkout / "setup.cfg", workdir / "setup.cfg")
    return workdir


def run_suite(workdir: Path, substitute: bool, validation: str) -> dict[str, str]:
    """``{test id: outcome}`` of :data:`FILES` run in ``workdir`` (see :func:`copy_tests`), with
    pyrovae's classes in place of Pyro's where ``substitute``; ``validation`` ``"on"`` (as Pyro's
    ``conftest.py`` sets it) or ``"off"``."""
    name = f"{'pyrovae' if substitute else 'pyro'}-validation-{validation}"
    outcomes = workdir / f"{name}.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGIN_DIR), str(ROOT), env.get("PYTHONPATH")]))
    env.update(
        PYROVAE_SUITE_OUTCOMES=str(outcomes),
        PYROVAE_SUITE_SUBSTITUTE="1" if substitute else "0",
        PYROVAE_SUITE_VALIDATION=validation,
    )
    command = [sys.executable, "-m", "pytest", "-p", "pyrovae_elbos", "-p", "no:cacheprovider", "-q", *FILES]
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    (workdir / f"{name}.log").write_text(done.stdout + done.stderr)
    if not outcomes.exists():
        raise RuntimeError(f"pytest wrote no outcomes (exit {done.returncode}); see {workdir / name}.log")
    return json.loads(outcomes.read_text())


def differences(pyro: dict[str, str], ours: dict[str, str]) -> list[str]:
    """One line per test id whose outcome differs (or that only one run has)."""
    return [
        f"{test}: Pyro {pyro.get(test, 'not run')}, pyrovae {ours.get(test, 'not run')}"
        for test in sorted(set(pyro) | set(ours))
        if pyro.get(test) != ours.get(test)
    ]


def compare(checkout: Path, workdir: Path, validation: str) -> tuple[int, list[str]]:
    """The number of test ids and the differences between Pyro's run and pyrovae's."""
    copy_tests(checkout, workdir)
    pyro = run_suite(workdir, substitute=False, validation=validation)
    ours = run_suite(workdir, substitute=True, validation=validation)
    return len(set(pyro) | set(ours)), differences(pyro, ours)


@pytest.mark.skipif(not CHECKOUT, reason="set PYROVAE_PYRO_CHECKOUT to a Pyro source checkout to run Pyro's tests")
@pytest.mark.parametrize("validation", ["on", "off"])
def test_pyros_tests_give_the_same_outcomes_with_pyrovaes_elbos(validation, tmp_path_factory):
    total, found = compare(Path(CHECKOUT), tmp_path_factory.mktemp("pyro"), validation)
    print(f"\nvalidation {validation}: {total - len(found)}/{total} identical outcomes")
    assert total > 0
    assert not found, "\n".join(found)


def test_differences_name_each_test_whose_outcome_differs():
    pyro = {"a": "passed", "b": "failed", "c": "skipped"}
    ours = {"a": "passed", "b": "passed", "d": "passed"}
    assert differences(pyro, ours) == [
        "b: Pyro failed, pyrovae passed",
        "c: Pyro skipped, pyrovae not run",
        "d: Pyro not run, pyrovae passed",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="a Pyro source checkout")
    parser.add_argument("--validation", choices=["on", "off"], default="on")
    parser.add_argument("--workdir", type=Path, default=None, help="where to copy Pyro's tests (default: a new one)")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pyro-suite-"))
    workdir.mkdir(parents=True, exist_ok=True)
    total, found = compare(args.checkout, workdir, args.validation)
    print("\n".join(found))
    print(f"validation {args.validation}: {total - len(found)}/{total} identical outcomes (logs in {workdir})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
