"""A pytest plugin for Pyro's own test files: records every test's outcome and, on request, puts
pyrovae's ELBO classes where the tests find Pyro's.

Loaded by ``tests/test_pyro_suite.py`` (``python -m pytest -p pyrovae_elbos ...``, this folder on
``PYTHONPATH``), configured by environment variables:

- ``PYROVAE_SUITE_OUTCOMES``: a JSON file to write ``{test id: outcome}`` to (outcome ``passed``,
  ``failed``, ``skipped``, ``xfailed``, ``xpassed`` or ``error``);
- ``PYROVAE_SUITE_SUBSTITUTE=1``: ``pyro.infer.Trace_ELBO`` and ``pyro.infer.TraceMeanField_ELBO``
  become :class:`pyrovae.infer.LeanTrace_ELBO` and :class:`pyrovae.infer.LeanTraceMeanField_ELBO`
  before any test module is imported (so ``from pyro.infer import Trace_ELBO`` in a test finds
  pyrovae's class); test ids are written with Pyro's class names, so the two runs compare id by id;
- ``PYROVAE_SUITE_VALIDATION=off``: Pyro's validation is turned off before every test, after Pyro's
  ``conftest.py`` turned it on (pyrovae's classes run Pyro's own code under validation, so only
  this mode exercises their own).
"""

from __future__ import annotations

import json
import os

import pyro
import pytest

#: pyrovae's class -> the Pyro class it stands in for (filled when substituting)
RENAMES: dict[str, str] = {}
#: test id (with Pyro's class names) -> outcome
OUTCOMES: dict[str, str] = {}


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYROVAE_SUITE_SUBSTITUTE") == "1":
        import pyro.infer

        from pyrovae.infer import LeanTrace_ELBO, LeanTraceMeanField_ELBO

        for ours, theirs in ((LeanTrace_ELBO, "Trace_ELBO"), (LeanTraceMeanField_ELBO, "TraceMeanField_ELBO")):
            setattr(pyro.infer, theirs, ours)
            RENAMES[ours.__name__] = theirs


def _pyro_id(nodeid: str) -> str:
    for ours in sorted(RENAMES, key=len, reverse=True):
        nodeid = nodeid.replace(ours, RENAMES[ours])
    return nodeid


@pytest.hookimpl(trylast=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if os.environ.get("PYROVAE_SUITE_VALIDATION") == "off":
        pyro.enable_validation(False)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or report.outcome != "passed":
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        elif report.when != "call" and report.failed:
            outcome = "error"
        else:
            outcome = report.outcome
        OUTCOMES.setdefault(_pyro_id(report.nodeid), outcome)


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("PYROVAE_SUITE_OUTCOMES")
    if path:
        with open(path, "w") as f:
            json.dump(OUTCOMES, f, indent=1, sort_keys=True)
