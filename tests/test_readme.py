"""The README is the front page: short, its set-up commands are the ones CI runs, its links lead to pages
that exist, and its numbers are those of the pages it links."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


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
    assert extract.stdout.splitlines() == ['pip install -e ".[test,docs,all]"', "python -m pytest"]


def test_ci_builds_the_site_strictly_after_the_tests():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "mkdocs build --strict" in ci
    assert ci.index('eval "${commands[1]}"') < ci.index("mkdocs build --strict")


def test_the_install_command_brings_the_tools_the_site_needs():
    setup = (ROOT / "setup.py").read_text()
    docs_extra = re.search(r"\"docs\": \[(.*)\],\n", setup).group(1)
    assert "mkdocs-material" in docs_extra and "mkdocstrings[python]" in docs_extra


def test_the_readme_is_short_and_links_pages_that_exist():
    assert len(README.splitlines()) < 200
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if not link.startswith("http")]
    assert len(local) >= 20
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, missing
    nav = (ROOT / "mkdocs.yml").read_text()
    for link in local:
        if link.startswith("docs/") and link.endswith(".md"):
            assert link.removeprefix("docs/") in nav, f"{link} is linked from the README but not in the site's nav"


def test_the_readme_numbers_are_those_of_its_pages():
    """The README's run is the one the example-runs and evaluate pages describe."""
    runs = (ROOT / "docs" / "performance" / "runs.md").read_text(encoding="utf-8")
    evaluate = (ROOT / "docs" / "guide" / "evaluate.md").read_text(encoding="utf-8")
    for line in re.findall(r"^\| `(?:meanfield|trace)`.*$", README, flags=re.M):
        name, elbos = line.split("|")[1:3]
        assert elbos.strip() in runs and name.strip() in runs
    for figure in ("−24.79", "0.88 nats", "376f0a3"):
        assert figure in README
    assert "log p(x), IWAE  -24.788" in evaluate and "IWAE - ELBO     0.883 nats" in evaluate
    for picture in re.findall(r"\((docs/figures/[^)]+\.png)\)", README):
        assert (ROOT / picture).is_file()
