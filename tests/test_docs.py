"""docs/theory.md defines every equation that the code, the tests and the README cite as "eq. N"."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THEORY = ROOT / "docs" / "theory.md"
#: where equations are cited: the package, tests, examples, benchmarks, the README and the theory itself
CITING = [
    *(p for folder in ("pyrovae", "tests", "examples", "benchmarks") for p in sorted((ROOT / folder).rglob("*.py"))),
    ROOT / "README.md",
    THEORY,
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
    assert "(docs/theory.md)" in readme
    for path in CITING:
        text = path.read_text(encoding="utf-8")
        assert "../shared" not in text and "vae_review_notes" not in text, path
        assert not re.search(r"\bseed eq\.", text, re.IGNORECASE), f"{path}: cite docs/theory.md as 'eq. N'"
