"""The documentation holds to the code: docs/theory.md defines every equation cited as "eq. N", the
reliability page names tests that exist, the guide's code blocks run, every option of a command is on
its page, and the figures of the performance pages are those of the committed results."""

import ast
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
THEORY = DOCS / "theory.md"
#: the pages of the site (the API reference holds only mkdocstrings directives)
PAGES = sorted(p for p in DOCS.rglob("*.md") if "reference" not in p.relative_to(DOCS).parts)
#: where equations are cited: the package, tests, examples, benchmarks, the README and the pages
CITING = [
    *(p for folder in ("pyrovae", "tests", "examples", "benchmarks") for p in sorted((ROOT / folder).rglob("*.py"))),
    ROOT / "README.md",
    *PAGES,
]
CITING.remove(Path(__file__).resolve())  # its examples below are not citations
CITATION = re.compile(r"\beqs?\.\s*(\d+(?:\s*(?:[-–/,]|and)\s*\d+)*)", re.IGNORECASE)


def cited_numbers(text: str) -> list[tuple[int, int]]:
    """(equation number, line) of every citation: ``eq. 11-18`` cites 11 to 18, ``eq. 13 / 14`` and
    ``eq. 11 and 18`` cite both."""
    cited = []
    for match in CITATION.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        parts = re.split(r"\s*(/|,|and)\s*", match.group(1))
        for part in parts[::2]:
            first, _, last = part.replace("–", "-").partition("-")
            cited += [(n, line) for n in range(int(first), int(last or first) + 1)]
    return cited


def defined_numbers() -> list[int]:
    return [int(n) for n in re.findall(r"\\tag\{(\d+)\}", THEORY.read_text(encoding="utf-8"))]


def test_citations_are_read_as_written():
    text = "eq. 11-18 here\nEq. 7 and eq. 13 / 14, eq. 11 and 18, eq. 16–17; eqs. 19, 21"
    assert cited_numbers(text) == [
        *((n, 1) for n in range(11, 19)),
        (7, 2), (13, 2), (14, 2), (11, 2), (18, 2), (16, 2), (17, 2), (19, 2), (21, 2),
    ]  # fmt: skip
    assert cited_numbers("the seed 12, equation 3, freq. 5") == []


def test_the_theory_numbers_each_equation_once():
    numbers = defined_numbers()
    assert sorted(numbers) == numbers and len(set(numbers)) == len(numbers), numbers
    assert {3, 4, 7, 8, 11, 12, 13, 14, 16, 17, 18, 19, 20, 21} <= set(numbers)


def test_every_cited_equation_is_in_docs_theory():
    defined = set(defined_numbers())
    missing, found = [], set()
    for path in CITING:
        for number, line in cited_numbers(path.read_text(encoding="utf-8")):
            found.add(number)
            if number not in defined:
                missing.append(f"{path.relative_to(ROOT)}:{line} cites eq. {number}")
    assert not missing, "docs/theory.md does not define:\n" + "\n".join(missing)
    assert {11, 13, 14, 18} <= found  # the scan does see the code's citations


def test_readme_links_the_theory_and_nothing_outside_the_repository():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/theory.md)" in readme and "theory.md" in (ROOT / "mkdocs.yml").read_text()
    for path in CITING:
        text = path.read_text(encoding="utf-8")
        assert "../shared" not in text and "vae_review_notes" not in text, path
        assert not re.search(r"\bseed eq\.", text, re.IGNORECASE), f"{path}: cite docs/theory.md as 'eq. N'"


# -- the reliability page: every promise names a test that exists ------------------------------------------
TEST_NAME = re.compile(r"`tests/([\w/]+\.py)::(\w+)`")


def defined_tests(path: Path) -> set[str]:
    """The test functions of a test file, top-level or in a class."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def promise_rows(text: str) -> list[str]:
    """The rows of the page's promise tables (header and rule lines left out)."""
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    return [row for row in rows if row not in ("| promise | test |", "| --- | --- |")]


def test_every_promise_names_tests_that_exist():
    text = (DOCS / "reliability.md").read_text(encoding="utf-8")
    rows = promise_rows(text)
    assert len(rows) >= 30, "the reliability page lists the promises in tables"
    missing = []
    for row in rows:
        named = TEST_NAME.findall(row)
        assert named, f"a promise without a test: {row[:100]}"
        for file, name in named:
            path = ROOT / "tests" / file
            if not path.is_file() or name not in defined_tests(path):
                missing.append(f"tests/{file}::{name}")
    assert not missing, "the reliability page names tests that do not exist:\n" + "\n".join(missing)


def test_the_promise_check_can_fail(tmp_path):
    assert "test_every_promise_names_tests_that_exist" in defined_tests(Path(__file__))
    assert "test_no_such_thing" not in defined_tests(Path(__file__))
    assert TEST_NAME.findall("| p | `tests/test_x.py::test_y`, `tests/test_z.py::test_w` |") == [
        ("test_x.py", "test_y"),
        ("test_z.py", "test_w"),
    ]


# -- every option of a command is on its page ----------------------------------------------------------------
@pytest.mark.parametrize("command", ["fit", "evaluate", "sample", "plots"])
def test_every_option_is_on_its_commands_page(command):
    from pyrovae.cli import main

    page = (DOCS / "guide" / f"{command}.md").read_text(encoding="utf-8")
    options = [
        name
        for param in main.commands[command].params
        for name in (*param.opts, *param.secondary_opts)
        if name.startswith("--") and name != "--help"
    ]
    assert len(options) >= 5
    missing = [name for name in options if not re.search(rf"`{re.escape(name)}[ `=\\]", page)]
    assert not missing, f"docs/guide/{command}.md does not document: {', '.join(missing)}"


# -- the code blocks of the pages run ------------------------------------------------------------------------
NO_RUN = "<!-- no-run"
#: a runnable shell block: its first command is pyrovae, perhaps after VAR=value assignments
PYROVAE_COMMAND = re.compile(r"^(?:\w+=\S+\s+)*pyrovae\s")


def code_blocks(text: str, language: str) -> list[str]:
    """The ```language blocks of a page, in order, without those marked <!-- no-run: ... --> on the line before."""
    blocks = []
    for match in re.finditer(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        if not before.startswith(NO_RUN):
            blocks.append(match.group(1))
    return blocks


def shell_blocks(text: str) -> list[str]:
    """The runnable ```bash blocks: those whose first command is ``pyrovae``."""
    return [block for block in code_blocks(text, "bash") if PYROVAE_COMMAND.match(first_command(block))]


def first_command(block: str) -> str:
    return next((line for line in block.splitlines() if line.strip() and not line.startswith("#")), "")


def page_id(path: Path) -> str:
    return str(path.relative_to(DOCS))


def test_the_block_reader_keeps_runnable_blocks_only():
    text = (
        "```bash\npyrovae fit --epochs 1\n```\n\n"
        "<!-- no-run: needs a GPU -->\n```bash\npyrovae fit --device cuda\n```\n"
        "```bash\npip install pyrovae\n```\n```bash\nPYTHONPATH=examples pyrovae evaluate runs/x\n```\n"
    )
    assert shell_blocks(text) == ["pyrovae fit --epochs 1\n", "PYTHONPATH=examples pyrovae evaluate runs/x\n"]
    assert code_blocks("<!-- no-run -->\n```python\nx = 1\n```\n```python\ny = 2\n```\n", "python") == ["y = 2\n"]


def test_runnable_blocks_are_tiny():
    """A runnable block trains for one or two epochs on the CPU, so that the test suite stays quick."""
    for page in PAGES:
        for block in shell_blocks(page.read_text(encoding="utf-8")):
            for line in block.replace("\\\n", " ").splitlines():
                run_file = re.search(r"--(print-)?config\b", line)  # (a resume keeps the run's device)
                if re.search(r"\bpyrovae (fit|evaluate)\b", line) and not run_file and "--resume" not in line:
                    assert "--device cpu" in line, f"{page_id(page)}: {line}"
                if re.search(r"\bpyrovae fit\b", line) and not re.search(r"--(print-)?config\b", line):
                    assert re.search(r"--epochs [12]\b", line), f"{page_id(page)}: {line}"
                if re.search(r"\bpyrovae evaluate\b", line):
                    assert "--k " in line and "--points " in line, f"{page_id(page)}: {line}"


def pyrovae_on_path(folder: Path) -> dict[str, str]:
    """An environment whose ``pyrovae`` is this checkout's, whatever PYTHONPATH a block sets."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    script = bin_dir / "pyrovae"
    script.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(ROOT)!r})\n"
        "from pyrovae.__main__ import main\nmain()\n"
    )
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}


#: pages whose shell blocks run in a real shell, with the ``pyrovae`` command of this checkout; the
#: others run each command in this process through click's test runner (the same commands, without
#: paying torch's import for each of them)
REAL_SHELL = {"getting-started.md"}


def shell_commands(block: str) -> list[list[str]]:
    """The commands of a block as words: continued lines joined, comments dropped."""
    lines = block.replace("\\\n", " ").splitlines()
    return [words for words in (shlex.split(line, comments=True) for line in lines) if words]


def runnable_blocks(text: str) -> list[tuple[str, str]]:
    """(language, block) of every runnable block of a page, in the page's order."""
    found = []
    for match in re.finditer(r"^```(bash|python|toml)\n(.*?)^```", text, flags=re.S | re.M):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        language, block = match.group(1), match.group(2)
        if language == "toml":  # a run file the page's commands read: <!-- file: NAME --> on the line before
            named = re.fullmatch(r"<!-- file: (\S+) -->", before.strip())
            if named:
                found.append((f"file:{named.group(1)}", block))
            continue
        if before.startswith(NO_RUN) or (language == "bash" and not PYROVAE_COMMAND.match(first_command(block))):
            continue
        found.append((language, block))
    return found


def run_in_shell(page: Path, blocks: list[str], work: Path, tmp_path: Path) -> None:
    """The page's shell blocks in a real shell, with the ``pyrovae`` command of this checkout."""
    script = "set -euo pipefail\n" + "\n".join(blocks)
    env = pyrovae_on_path(tmp_path)
    done = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{page_id(page)}:\n{script}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr


def run_in_process(page: Path, block: str, work: Path, monkeypatch) -> None:
    """Each command of a shell block through click's test runner, in this process."""
    from click.testing import CliRunner

    from pyrovae.cli import main

    for words in shell_commands(block):
        while "=" in words[0] and words[0].split("=")[0].isidentifier():  # VAR=value before the command
            name, value = words.pop(0).split("=", 1)
            assert name == "PYTHONPATH", f"{page_id(page)}: only PYTHONPATH=... is understood here"
            monkeypatch.syspath_prepend(str(work / value))
        target = None
        if ">" in words:
            target, words = work / words[words.index(">") + 1], words[: words.index(">")]
        assert words[0] == "pyrovae" and not {"|", "&&", ";", "<"} & set(words), f"{page_id(page)}: {words}"
        result = CliRunner().invoke(main, words[1:])
        assert result.exit_code == 0, f"{page_id(page)}: {' '.join(words)}\n{result.output[-3000:]}"
        if target is not None:
            target.write_text(result.stdout)


@pytest.mark.parametrize("page", [p for p in PAGES if runnable_blocks(p.read_text(encoding="utf-8"))], ids=page_id)
def test_the_code_blocks_of_a_page_run(page, tmp_path, monkeypatch):
    """A page's shell and Python blocks run in the page's order, in one folder, so a Python block can
    read the run a shell block made."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(work)
    blocks = runnable_blocks(page.read_text(encoding="utf-8"))
    if page_id(page) in REAL_SHELL:
        assert all(language == "bash" for language, _ in blocks), f"{page_id(page)}: shell blocks only"
        run_in_shell(page, [block for _, block in blocks], work, tmp_path)
        return
    namespace: dict = {"__name__": "__docs__"}
    for number, (language, block) in enumerate(blocks):
        if language.startswith("file:"):
            (work / language.removeprefix("file:")).write_text(block, encoding="utf-8")
        elif language == "bash":
            run_in_process(page, block, work, monkeypatch)
        else:
            exec(compile(block, f"{page_id(page)} (block {number + 1})", "exec"), namespace)


def test_the_python_guide_trains_and_checks_the_closed_form(tmp_path, monkeypatch):
    """The blocks of the Python guide compute what they say: a trained model, the closed form's
    terms per test image, and a step of a loop of one's own that moves the parameters."""
    import torch

    monkeypatch.chdir(tmp_path)
    blocks = code_blocks((DOCS / "guide" / "python.md").read_text(encoding="utf-8"), "python")
    namespace: dict = {}
    exec(compile(blocks[0], "python.md", "exec"), namespace)
    assert namespace["history"].last["test_elbo"] < 0
    terms = namespace["terms"]
    assert terms.elbo.shape == (359,)
    torch.testing.assert_close(terms.elbo, terms.reconstruction - terms.kl)
    before = [p.detach().clone() for p in namespace["vae"].parameters()]
    exec(compile(blocks[1], "python.md", "exec"), namespace)
    loss = namespace["loss"]
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0  # a negative ELBO scaled to the data set
    assert any(not torch.equal(a, b) for a, b in zip(namespace["vae"].parameters(), before, strict=True))
    exec(compile(blocks[2], "python.md", "exec"), namespace)
    assert namespace["result"].summary()["n"] == 50
    again = namespace["again"].parameters()
    assert all(torch.equal(a, b) for a, b in zip(namespace["vae"].parameters(), again, strict=True))


# -- the figures of the performance pages are those of the committed results ---------------------------------
RESULTS = ROOT / "benchmarks" / "results"


def table_rows(text: str, header_start: str) -> list[list[str]]:
    """The body rows (cells stripped) of the first table whose header starts with ``header_start``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def number(text: str) -> float:
    """The first number of a cell, read with the page's typography (−, thousands commas, bold)."""
    match = re.search(r"[−-]?\d[\d,]*(?:\.\d+)?", text.replace("**", ""))
    assert match, text
    return float(match.group(0).replace("−", "-").replace(",", ""))


def page(name: str) -> str:
    return (DOCS / "performance" / name).read_text(encoding="utf-8")


def test_start_up_times_are_the_committed_ones():
    rows = table_rows(page("speed.md"), "| command | median wall time |")
    measured = {row["command"]: row["median_s"] for row in json.loads((RESULTS / "startup.json").read_text())["rows"]}
    assert len(rows) >= 6
    for command, seconds in rows:
        command = re.match(r"`([^`]+)`", command).group(1)
        (match,) = [median for name, median in measured.items() if name.startswith(command)]
        assert number(seconds) == round(match, 2), command


def test_throughput_table_is_the_committed_run():
    results = json.loads((RESULTS / "throughput.json").read_text())["results"]
    by = {(r["method"], r["batch_size"]): r for r in results}
    columns = ["hand", "hand-fused", "stock-pyro", "floor", "pyrovae-default", "pyrovae-meanfield"]
    columns.append("pyrovae-compiled-meanfield")
    rows = table_rows(page("speed.md"), "| batch | hand-written |")
    assert [int(row[0]) for row in rows] == [32, 128, 256, 1024]
    for row in rows:
        for method, cell in zip(columns, row[1:], strict=True):
            result = by[(method, int(row[0]))]
            ms, ratio = re.match(r"([\d.]+) ms \(([\d.]+)×", cell).groups()
            assert float(ms) == round(result["ms_per_step"], 2), (method, row[0])
            assert float(ratio) == round(result["step_ratio_to_hand"], 2), (method, row[0])
            if method == "pyrovae-default":
                assert cell.endswith(f"{result['engine']})")


def test_infovae_step_table_is_the_committed_run():
    report = json.loads((RESULTS / "throughput.json").read_text())
    by = {(r["method"], r["batch_size"]): r for r in report["results"]}
    ratios = {r["batch_size"]: r["ratio"] for r in report["targets"]["infovae_step_ratio_to_meanfield"]}
    text = page("speed.md")
    rules = {r["batch_size"]: r["rule_says_eager"] for r in report["targets"]["infovae_engine_rule"]}
    rows = table_rows(text, "| batch | `meanfield` step |")
    assert [int(row[0]) for row in rows] == sorted(ratios) == sorted(rules)
    for batch, meanfield, infovae, ratio, compiled, rule in rows:
        assert number(meanfield) == round(by[("pyrovae-meanfield", int(batch))]["ms_per_step"], 2)
        assert number(infovae) == round(by[("pyrovae-infovae", int(batch))]["ms_per_step"], 2)
        assert number(ratio) == round(ratios[int(batch)], 2)
        assert number(compiled) == round(by[("pyrovae-compiled-infovae", int(batch))]["ms_per_step"], 2)
        assert rule == ("eager" if rules[int(batch)] else "compiled")
    assert f"commit {report['commit']}" in text


def test_mmd_call_table_is_the_committed_run():
    report = json.loads((RESULTS / "mmd.json").read_text())
    medians = {row["batch"]: row["medians_ms"] for row in report["rows"]}
    text = page("speed.md")
    rows = table_rows(text, "| batch | `meanfield` step | `infovae` step | `infovae` ÷ `meanfield` | an MMD call")
    assert [int(row[0]) for row in rows] == sorted(medians)
    for batch, meanfield, infovae, ratio, tiles, blocks, infovae_blocks in rows:
        measured = medians[int(batch)]
        step = measured.get("infovae tiles", measured["infovae blocks"])
        assert number(meanfield) == round(measured["meanfield"], 2) and number(infovae) == round(step, 2)
        assert number(ratio) == round(step / measured["meanfield"], 2)
        assert tiles == "–" if "mmd tiles" not in measured else number(tiles) == round(measured["mmd tiles"], 2)
        assert number(blocks) == round(measured["mmd blocks"], 2)
        assert number(infovae_blocks) == round(measured["infovae blocks"], 2)
    assert f"commit {report['commit']}" in text


def test_scaling_table_is_the_committed_run():
    results = json.loads((RESULTS / "scaling.json").read_text())["results"]
    by = {(r["batch_size"], r["processes"], r["threads"]): r for r in results}
    rows = table_rows(page("speed.md"), "| global batch | processes × threads |")
    assert len(rows) == len(results)
    for batch, layout, per_process, images, _ in rows:
        processes, threads = (int(n) for n in layout.split(" × "))
        result = by[(int(batch), processes, threads)]
        assert number(images) == round(result["images_per_second"])
        assert int(per_process) == int(batch) // processes


def test_quality_figures_are_the_committed_run():
    (result,) = json.loads((RESULTS / "quality.json").read_text())["results"]
    text = page("quality.md")
    for value in (result["nll"], result["nll_se"], result["full_test"]["nll"], result["full_test"]["nll_se"]):
        assert f"{value:.2f}" in text
    assert f"{result['epochs_run']} epochs" in text and f"best epoch {result['best_epoch']}" in text
    assert f"commit {json.loads((RESULTS / 'quality.json').read_text())['commit']}" in text


def test_kl_estimator_tables_are_the_committed_run():
    data = json.loads((RESULTS / "kl_estimators.json").read_text())
    summary = data["training"]["summary"]
    rows = table_rows(page("kl-estimators.md"), "| ELBO | KL | ms per step")
    assert [row[0].strip("`") for row in rows] == list(summary)
    for name, _, ms, elbo, difference in rows:
        run = summary[name.strip("`")]
        assert number(ms) == round(1000 * run["seconds_per_step"], 1)
        mean, sd = (number(part) for part in elbo.split("±"))
        assert (mean, sd) == (round(run["final_test_elbo_mean"], 2), round(run["final_test_elbo_sd"], 2))
        if difference != "—":
            assert number(difference) == round(statistics.mean(run["difference_to_first_by_seed"]), 2)
    committed = (RESULTS / "kl_estimators.md").read_text()
    for row in table_rows(page("kl-estimators.md"), "| point (step) |"):
        for cell in row[1:]:
            assert cell in committed, cell  # every ratio and interval, as the benchmark wrote it
    for picture in ("kl_estimators_variance.png", "kl_estimators_curves.png"):
        assert (DOCS / "figures" / picture).read_bytes() == (RESULTS / picture).read_bytes()


def test_objectives_and_priors_tables_are_the_committed_runs():
    rows = json.loads((DOCS / "results" / "objectives" / "objectives.json").read_text())["rows"]
    table = table_rows(page("objectives.md"), "| objective |")
    assert len(table) == len(rows)
    for cells, row in zip(table, rows, strict=True):
        assert number(cells[2]) == round(row["test_elbo"], 2) and number(cells[3]) == round(row["log_px"], 2)
        assert number(cells[4]) == round(row["kl"], 2) and int(cells[6]) == row["active_units"]
    priors = json.loads((DOCS / "results" / "priors.json").read_text())["rows"]
    table = table_rows(page("priors.md"), "| prior |")
    assert [cells[0] for cells in table] == [row["prior"] for row in priors]
    for cells, row in zip(table, priors, strict=True):
        assert cells[1] == row["kl_mode"]
        assert number(cells[2]) == round(row["test_elbo"], 3) and number(cells[3]) == round(row["log_px"], 3)


def test_the_fashion_mnist_run_is_its_committed_records():
    records = [json.loads(line) for line in (DOCS / "results" / "fashion-mnist-meanfield-metrics.jsonl").open()]
    header = next(line for line in page("runs.md").splitlines() if line.startswith("| epoch |"))
    epochs = [cell.strip() for cell in header.split("|")[2:-1]]
    (elbos,) = table_rows(page("runs.md"), "| epoch |")
    assert len(epochs) >= 5 and elbos[0] == "test ELBO (nats)"
    for epoch, elbo in zip(epochs, elbos[1:], strict=True):
        assert number(elbo) == round(records[int(epoch) - 1]["test_elbo"], 2)


def test_data_table_is_the_committed_run():
    report = json.loads((RESULTS / "data.json").read_text())
    by = {(r["data"], r["loader"], r["workers"]): r for r in report["throughput"]}
    text = (DOCS / "guide" / "data.md").read_text(encoding="utf-8")
    rows = table_rows(text, "| data, read from |")
    names = {"a `.npy` array (float32)": "array (.npy)", "a PNG folder's cache (uint8)": "PNG folder"}
    assert [row[0] for row in rows] == list(names)
    for row in rows:
        data = names[row[0]]
        cells = zip([("resident", 0), ("stream", 0), ("stream", 2), ("stream", 4)], row[1:], strict=True)
        for (loader, workers), cell in cells:
            result = by[(data, loader, workers)]
            assert number(cell) == round(result["images_per_second"]), (data, loader, workers)
            if loader == "stream":
                assert number(re.search(r"\((.*?)%", cell).group(1)) == round(100 * result["cost"]), (data, workers)
    memory = report["memory"]
    assert f"from {round(memory['footprint_rss_mb'])} MB" in text and f"to {round(memory['peak_rss_mb'])} MB" in text
    assert f"+{round(memory['added_mb'])} MB" in text and f"{round(report['first_decode_rate']):,} images/s" in text
    assert f"commit {report['commit']}" in text and f"--rounds {report['rounds']}" in text
