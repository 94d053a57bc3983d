"""
Collect every YAML typing case as two pytest items, `mypy::<case>` and `pyright::<case>`.

The checkers run once per session, in parallel, over all cases (`checkers.py`): one mypy
process with `mypy-cases.ini`, one with `mypy-plugin-cases.ini` for the cases marked
`mypy_plugin: true`, and one pyright process. The settings live in those files and in
`checkers.PYRIGHT_CONFIG`, not on the command line: plain `pytest typing_tests` is strict.
"""

from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from typing_tests import checkers


_SUITE: "Future[checkers.SuiteRun] | None" = None


def _suite(session: pytest.Session) -> checkers.SuiteRun:
    """Start the checkers for every collected case on first use; wait for them."""
    global _SUITE  # noqa: PLW0603 - one run of each checker per session
    if _SUITE is None:
        cases = {item.case.name: item.case for item in session.items if isinstance(item, CaseItem)}
        _SUITE = checkers.start_suite(list(cases.values()))
    return _SUITE.result()


class CaseItem(pytest.Item):
    """One case checked by one checker."""

    def __init__(self, *, case: checkers.Case, checker: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case
        self.checker = checker

    def runtest(self) -> None:
        problems = _suite(self.session).failures(self.case, self.checker)
        if problems:
            raise TypingCaseError("\n".join(problems))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, TypingCaseError):
            return f"{self.checker} on {self.case.name}:\n{excinfo.value}"
        return str(super().repr_failure(excinfo, style))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"{self.checker}::{self.case.name}"


class TypingCaseError(AssertionError):
    """A checker disagreed with a case's expectations."""


class CaseFile(pytest.File):
    """The cases of one YAML file."""

    def collect(self) -> Iterator[CaseItem]:
        for case in checkers.load_file(self.path):
            for checker in checkers.CHECKERS:
                if case.runs_under(checker):
                    yield CaseItem.from_parent(
                        self, name=f"{checker}::{case.name}", case=case, checker=checker
                    )


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> CaseFile | None:
    if file_path.suffix == ".yml" and file_path.name.startswith("test_"):
        return CaseFile.from_parent(parent, path=file_path)
    return None
