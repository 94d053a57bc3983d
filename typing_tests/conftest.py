"""Run every YAML typing case under pyright too (mypy runs them via pytest-mypy-plugins)."""

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml


ROOT = Path(__file__).resolve().parent.parent
_RESULTS: dict[str, list[str]] | None = None


def _cases() -> list[tuple[Path, dict[str, Any]]]:
    found: list[tuple[Path, dict[str, Any]]] = []
    for path in sorted((ROOT / "typing_tests" / "cases").glob("test_*.yml")):
        for case in yaml.safe_load(path.read_text()) or []:
            found.append((path, case))
    return found


def _runs_under(case: dict[str, Any], checker: str) -> bool:
    return checker in case.get("checkers", ["mypy", "pyright"])


def _pyright_results() -> dict[str, list[str]]:
    """Check every case in one pyright process; map case name -> problems."""
    global _RESULTS  # noqa: PLW0603 - one pyright run per session
    if _RESULTS is not None:
        return _RESULTS
    workdir = Path(tempfile.mkdtemp(prefix="pyright-cases-"))
    names: dict[str, str] = {}
    for index, (_, case) in enumerate(_cases()):
        if not _runs_under(case, "pyright"):
            continue
        module = f"case_{index:04d}.py"
        (workdir / module).write_text(case["main"])
        names[module] = case["case"]
    config = {
        "typeCheckingMode": "strict",
        "pythonVersion": "3.11",
        "enableTypeIgnoreComments": False,
        "reportUnnecessaryTypeIgnoreComment": "error",
        "extraPaths": [str(ROOT / "src")],
    }
    (workdir / "pyrightconfig.json").write_text(json.dumps(config))
    pyright = shutil.which("pyright", path=str(Path(sys.executable).parent)) or "pyright"
    completed = subprocess.run(
        [pyright, "--outputjson", "--pythonpath", sys.executable, "-p", str(workdir)],
        capture_output=True,
        text=True,
        check=False,
        cwd=workdir,
    )
    report = json.loads(completed.stdout)
    results: dict[str, list[str]] = {name: [] for name in names.values()}
    for diagnostic in report.get("generalDiagnostics", []):
        if diagnostic.get("severity") not in ("error", "warning"):
            continue
        module = Path(diagnostic["file"]).name
        if module in names:
            line = diagnostic["range"]["start"]["line"] + 1
            rule = diagnostic.get("rule", "")
            results[names[module]].append(f"line {line}: {diagnostic['message']} ({rule})")
    _RESULTS = results
    shutil.rmtree(workdir, ignore_errors=True)
    return results


class PyrightItem(pytest.Item):
    """One case checked by pyright."""

    def __init__(self, *, case: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case

    def runtest(self) -> None:
        problems = _pyright_results().get(self.case["case"], [])
        if problems:
            raise PyrightCaseError("\n".join(problems))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"pyright::{self.case['case']}"


class PyrightCaseError(AssertionError):
    """Pyright reported problems for a case."""


class PyrightFile(pytest.File):
    """The pyright view of one YAML file of cases."""

    def collect(self) -> Iterator[PyrightItem]:
        for case in yaml.safe_load(self.path.read_text()) or []:
            if _runs_under(case, "pyright"):
                yield PyrightItem.from_parent(self, name=f"pyright::{case['case']}", case=case)


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> PyrightFile | None:
    if file_path.suffix == ".yml" and file_path.name.startswith("test_"):
        return PyrightFile.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip mypy items of cases marked `checkers: [pyright]`."""
    pyright_only = {case["case"] for _, case in _cases() if not _runs_under(case, "mypy")}
    for item in items:
        if not isinstance(item, PyrightItem) and item.name in pyright_only:
            item.add_marker(pytest.mark.skip(reason="pyright-only case (documented divergence)"))
