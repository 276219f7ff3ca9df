"""The README's Python example runs as written, and .ci/run reads its set-up commands."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_python_example_runs():
    (block,) = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["history"].last["test_elbo"] < 0
    terms = namespace["terms"]
    assert terms.elbo.shape == (359,)


def test_ci_runs_the_readme_setup_commands():
    extract = subprocess.run(
        [
            "bash",
            "-c",
            "sed -n '/mapfile/,/README.md)/p' .ci/run > /tmp/_extract && source /tmp/_extract && "
            "printf '%s\\n' \"${commands[@]}\"",
        ],  # fmt: skip
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert extract.stdout.splitlines() == ['pip install -e ".[test]"', "python -m pytest"]
