"""The README's Python example runs as written, and .ci/run reads its set-up commands."""

import re
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_python_examples_run():
    # the blocks run in order, in one namespace, as a reader would paste them
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert len(blocks) == 2
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["history"].last["test_elbo"] < 0
    terms = namespace["terms"]
    assert terms.elbo.shape == (359,)
    before = [p.detach().clone() for p in namespace["vae"].parameters()]
    exec(compile(blocks[1], "README.md", "exec"), namespace)
    loss = namespace["loss"]
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0  # a negative ELBO scaled to the data set
    assert any(not torch.equal(a, b) for a, b in zip(namespace["vae"].parameters(), before, strict=True))


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
