"""
`python -m typing_tests.matrix [--check]`: the typing matrix in docs/typing.md, from the cases.

Writes the region between the markers of docs/typing.md from `typing_tests/cases/*.yml`:
the kind matrix (kind x execute x channel, positive and negative cases), case counts per
concept, and the cases only one checker runs. `--check` changes nothing and exits 1 when
the file is not what this would write.

A case's concept is its `matrix.concept`, or else its file's (`test_<concept>.yml`).
"""

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml


ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "typing_tests" / "cases"
DOC = ROOT / "docs" / "typing.md"
START, END = "<!-- typing-matrix:start -->", "<!-- typing-matrix:end -->"
KINDS = ("continuous", "debounce", "task", "worker_pool")
EXECUTES = ("sync", "async")
CHANNELS = ("on_error", "should_retry", "retry_after", "retry_inline", "retry_prebuilt")
CHANNEL_TITLES = {
    "on_error": "`on_error`",
    "should_retry": "`should_retry`",
    "retry_after": "retry-after delay",
    "retry_inline": "inline `Retry(...)`",
    "retry_prebuilt": "pre-built `Retry[E]`",
}


def cases() -> list[tuple[str, dict[str, Any]]]:
    """Every case with the name of its file."""
    found: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(CASES.glob("test_*.yml")):
        found.extend((path.name, case) for case in yaml.safe_load(path.read_text()) or [])
    return found


def concept(file: str, case: dict[str, Any]) -> str:
    """`matrix.concept`, the kind matrix, or the file's concept."""
    tags: dict[str, str] = case.get("matrix") or {}
    if "concept" in tags:
        return tags["concept"]
    if "kind" in tags:
        return "kind matrix"
    return file.removeprefix("test_").removesuffix(".yml").replace("_", " ")


def matrix_cells() -> dict[tuple[str, str, str], Counter[str]]:
    """(kind, execute, channel) -> how many positive and negative cases."""
    cells: dict[tuple[str, str, str], Counter[str]] = {}
    for kind in KINDS:
        for execute in EXECUTES:
            for channel in CHANNELS:
                cells[(kind, execute, channel)] = Counter()
    for _, case in cases():
        tags: dict[str, str] = case.get("matrix") or {}
        key = (tags.get("kind", ""), tags.get("execute", ""), tags.get("channel", ""))
        if key in cells:
            cells[key][tags.get("check", "")] += 1
    return cells


def render() -> str:
    """The Markdown between the markers."""
    all_cases = cases()
    cells = matrix_cells()
    lines = [
        f"{len(all_cases)} cases, each checked by mypy and by pyright unless marked below.",
        "",
        "**The kind matrix** — for each kind and each `execute` style, the number of",
        "positive (`assert_type`) / negative (rejected, with each checker's error code)",
        "cases proving that the error type `E` reaches each place:",
        "",
        "| kind | execute | " + " | ".join(CHANNEL_TITLES[c] for c in CHANNELS) + " |",
        "| --- | --- | " + " | ".join("---" for _ in CHANNELS) + " |",
    ]
    for kind in KINDS:
        for execute in EXECUTES:
            row = [
                f"{cells[(kind, execute, c)]['positive']} / {cells[(kind, execute, c)]['negative']}"
                for c in CHANNELS
            ]
            lines.append(f"| {kind} | {execute} | " + " | ".join(row) + " |")
    per_concept = Counter(concept(file, case) for file, case in all_cases)
    lines += ["", "**Cases per concept:**", "", "| concept | cases |", "| --- | ---: |"]
    lines += [f"| {name} | {count} |" for name, count in sorted(per_concept.items())]
    one_checker = [
        (case["case"], ", ".join(case["checkers"])) for _, case in all_cases if "checkers" in case
    ]
    lines += ["", "**Cases only one checker runs** (a documented divergence):", ""]
    lines += [f"- `{name}` ({only} only)" for name, only in one_checker] or ["- none"]
    return "\n".join(lines)


def rewritten(text: str) -> str:
    """`text` with the region between the markers replaced by `render()`."""
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{render()}\n{END}{tail}"


def main(argv: list[str]) -> int:
    text = DOC.read_text()
    if START not in text or END not in text:
        print(f"{DOC}: the markers {START} / {END} are missing", file=sys.stderr)
        return 2
    wanted = rewritten(text)
    if "--check" in argv:
        if wanted != text:
            print(f"{DOC} is out of date: run python -m typing_tests.matrix", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
