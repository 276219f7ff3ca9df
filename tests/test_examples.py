"""Every script in examples/ runs with tiny arguments; an unlisted example fails the suite."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"

#: script -> tiny arguments
EXAMPLES = {
    "quickstart.py": ["--epochs", "1", "--z-dim", "2", "--hidden", "16"],
    "linear_gaussian_check.py": ["--x-dim", "4", "--z-dim", "2", "--n", "20", "--k", "1", "500"],
}


def test_every_example_is_listed():
    scripts = sorted(p.name for p in EXAMPLES_DIR.glob("*.py"))
    assert scripts == sorted(EXAMPLES), "add new examples to EXAMPLES in tests/test_examples.py"


@pytest.mark.parametrize("script", sorted(EXAMPLES))
def test_example_runs(script, tmp_path):
    done = subprocess.run(
        [sys.executable, str(EXAMPLES_DIR / script), *EXAMPLES[script]],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip(), "an example prints what it found"


def test_quickstart_closed_form_matches_pyro():
    sys.path.insert(0, str(EXAMPLES_DIR))
    try:
        import quickstart
    finally:
        sys.path.pop(0)
    result = quickstart.main(["--epochs", "1", "--z-dim", "2", "--hidden", "16"])
    assert result["pyro_elbo"] == pytest.approx(result["closed_form_elbo"], rel=1e-5)


def test_linear_gaussian_check_finds_the_identities():
    sys.path.insert(0, str(EXAMPLES_DIR))
    try:
        import linear_gaussian_check
    finally:
        sys.path.pop(0)
    result = linear_gaussian_check.main(EXAMPLES["linear_gaussian_check.py"])
    assert result["max_elbo_minus_log_px"] < 0
    assert result["max_identity_20_error"] < 1e-10 and result["max_posterior_elbo_error"] < 1e-10
    assert result["khat_exact_max"] < 0.5 and result["khat_narrow_median"] > 0.7
