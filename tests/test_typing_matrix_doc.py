"""The typing matrix in docs/typing.md is generated from the cases and kept current."""

import subprocess
import sys
from pathlib import Path

import yaml


ROOT = Path(__file__).resolve().parent.parent
KINDS = ("continuous", "debounce", "task", "worker_pool")
CHANNELS = ("on_error", "should_retry", "retry_after", "retry_inline", "retry_prebuilt")


def _cases() -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    for path in sorted((ROOT / "typing_tests" / "cases").glob("test_*.yml")):
        found.extend(yaml.safe_load(path.read_text()) or [])
    return found


def test_the_doc_matches_the_cases() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "typing_tests.matrix", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_every_cell_of_the_kind_matrix_has_a_positive_and_a_negative_case() -> None:
    seen: set[tuple[str, str, str, str]] = set()
    for case in _cases():
        tags = case.get("matrix")
        if isinstance(tags, dict) and "kind" in tags:
            seen.add((tags["kind"], tags["execute"], tags["channel"], tags["check"]))
    missing = [
        (kind, execute, channel, check)
        for kind in KINDS
        for execute in ("sync", "async")
        for channel in CHANNELS
        for check in ("positive", "negative")
        if (kind, execute, channel, check) not in seen
    ]
    assert missing == []


def test_the_suite_has_at_least_150_cases_with_unique_names() -> None:
    names = [str(case["case"]) for case in _cases()]
    assert len(names) >= 150
    assert len(set(names)) == len(names)
