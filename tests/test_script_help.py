"""`--help` of every example and benchmark shows the options' defaults, and each default once."""

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(ROOT.glob("examples/*.py")) + sorted(p for p in ROOT.glob("benchmarks/*.py") if p.name[0] != "_")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_help_shows_each_default_once(script, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(script.parent))  # (a benchmark imports its folder's helper)
    spec = importlib.util.spec_from_file_location(f"_help_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as done:
        module.main(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    shown = re.findall(r"\(default: [^)]*\)", text)
    assert shown, f"{script.name} --help shows no default"
    assert not re.search(r"\(default[^()]*\) \(default: ", text), "a default said twice"
    if script.parent.name == "benchmarks":  # (an option whose default is None says in words what it does)
        assert "(default: None)" not in text
