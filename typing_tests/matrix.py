"""
`python -m typing_tests.matrix [--check]`: the typing matrix in docs/typing.md, from the cases.

Rewrites only the region between the markers of docs/typing.md, from
`typing_tests/cases/*.yml`: the kind matrix (kind x execute x channel, positive and
negative cases), case counts per concept and per file, the cases pinning a divergence and
the cases only one checker runs.
`--check` changes nothing and exits 1 when the file is not what this would write.

Every case carries `matrix: {concept: ...}`; a kind-matrix case also carries `kind`,
`execute`, `channel` and `check`; a case pinning a mypy/pyright divergence says what in
`divergence`.
"""

import sys
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import yaml


ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "typing_tests" / "cases"
DOC = ROOT / "docs" / "typing.md"
START, END = "<!-- typing-matrix:start -->", "<!-- typing-matrix:end -->"
KINDS = ("continuous", "debounce", "task", "worker_pool")
EXECUTES = ("sync", "async")
CHANNELS = ("on_error", "should_retry", "retry_after", "retry_inline", "retry_prebuilt")
CHECKS = ("positive", "negative")
CHECKERS = ("mypy", "pyright")
UNTAGGED = "(untagged)"
CHANNEL_TITLES = {
    "on_error": "`on_error`",
    "should_retry": "`should_retry`",
    "retry_after": "retry-after delay",
    "retry_inline": "inline `Retry(...)`",
    "retry_prebuilt": "pre-built `Retry[E]`",
}

Cell = tuple[str, str, str]


class Case(NamedTuple):
    """One typing case as the matrix sees it."""

    file: str
    name: str
    tags: dict[str, str]
    checkers: tuple[str, ...]

    @property
    def concept(self) -> str:
        return self.tags.get("concept", UNTAGGED)

    @property
    def cell(self) -> Cell | None:
        """(kind, execute, channel) of a kind-matrix case, else None."""
        key = (
            self.tags.get("kind", ""),
            self.tags.get("execute", ""),
            self.tags.get("channel", ""),
        )
        return key if key[0] in KINDS and key[1] in EXECUTES and key[2] in CHANNELS else None


def _tags(raw: Any) -> dict[str, str]:
    mapping: dict[str, Any] = raw or {}
    return {str(key): str(value) for key, value in mapping.items()}


def load_cases(directory: Path = CASES) -> list[Case]:
    """Every case of `directory/test_*.yml`, in file order."""
    found: list[Case] = []
    for path in sorted(directory.glob("test_*.yml")):
        raw: list[dict[str, Any]] = yaml.safe_load(path.read_text()) or []
        found.extend(
            Case(
                file=path.name,
                name=str(case["case"]),
                tags=_tags(case.get("matrix")),
                checkers=tuple(str(c) for c in case.get("checkers", CHECKERS)),
            )
            for case in raw
        )
    return found


def matrix_cells(cases: list[Case]) -> dict[Cell, Counter[str]]:
    """(kind, execute, channel) -> number of positive and negative cases, every cell present."""
    cells: dict[Cell, Counter[str]] = {
        (kind, execute, channel): Counter()
        for kind in KINDS
        for execute in EXECUTES
        for channel in CHANNELS
    }
    for case in cases:
        if case.cell is not None:
            cells[case.cell][case.tags.get("check", "")] += 1
    return cells


def missing_cells(cases: list[Case]) -> list[tuple[str, str, str, str]]:
    """(kind, execute, channel, check) combinations of the kind matrix with no case."""
    return [
        (*cell, check)
        for cell, counts in matrix_cells(cases).items()
        for check in CHECKS
        if counts[check] == 0
    ]


def _mark(count: int) -> str:
    return "—" if count == 0 else "✓" if count == 1 else f"✓ ({count})"


def render(cases: list[Case]) -> str:
    """The Markdown between the markers."""
    cells = matrix_cells(cases)
    one_checker = [case for case in cases if set(case.checkers) != set(CHECKERS)]
    lines = [
        f"{len(cases)} cases; {len(cases) - len(one_checker)} are checked by both mypy and"
        f" pyright, {len(one_checker)} by one checker only (listed below).",
        "",
        "**The kind matrix** — for each kind and each `execute` style, the positive",
        "(`assert_type`) / negative (rejected, with each checker's error code) cases proving",
        "that the error type `E` reaches each place (✓ one case, ✓ (n) several, — none):",
        "",
        "| kind | execute | " + " | ".join(CHANNEL_TITLES[c] for c in CHANNELS) + " |",
        "| --- | --- | " + " | ".join("---" for _ in CHANNELS) + " |",
    ]
    for kind in KINDS:
        for execute in EXECUTES:
            row = [
                " / ".join(_mark(cells[(kind, execute, channel)][check]) for check in CHECKS)
                for channel in CHANNELS
            ]
            lines.append(f"| {kind} | {execute} | " + " | ".join(row) + " |")

    per_concept = Counter(case.concept for case in cases)
    lines += ["", "**Cases per concept** (`matrix.concept`):", ""]
    lines += ["| concept | cases |", "| --- | ---: |"]
    lines += [f"| {name} | {count} |" for name, count in sorted(per_concept.items())]

    per_file = Counter(case.file for case in cases)
    lines += ["", "**Cases per file** (`typing_tests/cases/`):", ""]
    lines += ["| file | cases |", "| --- | ---: |"]
    lines += [f"| `{name}` | {count} |" for name, count in sorted(per_file.items())]

    diverging = [case for case in cases if "divergence" in case.tags]
    lines += ["", "**Cases pinning a divergence** (`matrix.divergence`; both checkers run them,"]
    lines += ["the diverging line carries only the reporting checker's comment):", ""]
    lines += [
        f"- `{case.name}` (`{case.file}`): {case.tags['divergence']}" for case in diverging
    ] or ["- none"]

    lines += ["", "**Cases only one checker runs** (`checkers:`):", ""]
    lines += [
        f"- `{case.name}` (`{case.file}`, {', '.join(case.checkers)} only)" for case in one_checker
    ] or ["- none"]
    return "\n".join(lines)


def rewritten(text: str, cases: list[Case]) -> str:
    """`text` with the region between the markers replaced by `render(cases)`."""
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{render(cases)}\n{END}{tail}"


def doc_is_current(doc: Path = DOC, directory: Path = CASES) -> bool:
    """Whether `doc` already holds what `main` would write."""
    text = doc.read_text()
    return rewritten(text, load_cases(directory)) == text


def main(argv: list[str]) -> int:
    text = DOC.read_text()
    if START not in text or END not in text:
        print(f"{DOC}: the markers {START} / {END} are missing", file=sys.stderr)
        return 2
    wanted = rewritten(text, load_cases())
    if "--check" in argv:
        if wanted != text:
            print(f"{DOC} is out of date: run python -m typing_tests.matrix", file=sys.stderr)
            return 1
        return 0
    if wanted != text:
        DOC.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
