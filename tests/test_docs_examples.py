"""
The documentation's code is real code.

Every file under docs/examples runs to a clean exit (a subprocess with this interpreter), and
every Python code block of the user guide pages is an excerpt of one of those files: the
block's lines appear, in order and consecutively, in an example (indentation may differ by a
constant amount, so a block can show the body of a function).
"""

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest


DOCS = Path(__file__).resolve().parent.parent / "docs"
EXAMPLES = sorted((DOCS / "examples").glob("*.py"))
GUIDE_PAGES = ["index.md", "getting-started.md", "kinds.md", "retries-and-errors.md"]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"\]\((examples/[^)#]+)\)")


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 11


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_example_runs(example: Path) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(example)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=example.parent,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    assert elapsed < 10, f"{example.name} took {elapsed:.1f} s; examples should take < 2 s"


def _blocks(page: str) -> list[str]:
    return _BLOCK.findall((DOCS / page).read_text())


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" "))]


def _occurs_in(block: list[str], lines: list[str]) -> bool:
    """Whether `block` is `lines[i : i + len(block)]` for some i, indented by a constant."""
    for start, line in enumerate(lines):
        shift = len(_indent(line)) - len(_indent(block[0]))
        if line.strip() != block[0].strip() or shift < 0:
            continue
        window = lines[start : start + len(block)]
        if len(window) == len(block) and all(
            got.strip() == "" if want.strip() == "" else got == " " * shift + want
            for want, got in zip(block, window, strict=True)
        ):
            return True
    return False


@pytest.mark.parametrize("page", GUIDE_PAGES)
def test_code_blocks_are_excerpts_of_examples(page: str) -> None:
    sources = {path.name: path.read_text().splitlines() for path in EXAMPLES}
    missing = []
    for block in _blocks(page):
        lines = block.rstrip("\n").splitlines()
        if not any(_occurs_in(lines, source) for source in sources.values()):
            missing.append(block)
    assert not missing, f"{page}: blocks not found in docs/examples:\n\n" + "\n---\n".join(missing)


@pytest.mark.parametrize("page", GUIDE_PAGES)
def test_linked_examples_exist(page: str) -> None:
    for target in _LINK.findall((DOCS / page).read_text()):
        assert (DOCS / target).exists(), f"{page} links to {target}, which does not exist"
