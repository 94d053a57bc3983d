"""
Run the typing cases through mypy and pyright in batches, and compare with their expectations.

One mypy process and one pyright process check every case at once (each case is its own
module, named after the case), so the suite costs two checker runs, not one per case. The
same functions serve the pytest collector (`conftest.py`) and the mutation runner
(`python -m typing_tests.mutate`), which runs them against mutated copies of `src/`.

Expectations live on the offending line, after `# E:`, one or more of

    mypy[<error-code>] `<message fragment>`    pyright[<rule>] `<message fragment>`

Every diagnostic a checker reports must match an expectation of its line (same code, the
fragment found in the message), and every expectation must match one: a missing, extra or
different error fails the case. Ignore comments are not allowed in cases.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import yaml


ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "typing_tests" / "cases"
SRC = ROOT / "src"
MYPY_CONFIG = ROOT / "typing_tests" / "mypy-cases.ini"
MYPY_PLUGIN_CONFIG = ROOT / "typing_tests" / "mypy-plugin-cases.ini"
CHECKERS = ("mypy", "pyright")
PYRIGHT_CONFIG: dict[str, object] = {
    "typeCheckingMode": "strict",
    "pythonVersion": "3.11",
    "enableTypeIgnoreComments": False,
    "reportUnnecessaryTypeIgnoreComment": "error",
}
"""pyright's settings for the cases (strict; `extraPaths` is added per run)."""

_MARKER = "# E:"
_EXPECTATION = re.compile(r"(mypy|pyright)\[([A-Za-z0-9-]+)\]\s*`([^`]+)`")
_IGNORE_COMMENT = re.compile(r"#\s*(type|pyright):\s*ignore")


class Expectation(NamedTuple):
    """One expected diagnostic: which checker, on which line, which code, which words."""

    checker: str
    line: int
    code: str
    fragment: str


class Diagnostic(NamedTuple):
    """One error a checker reported for a case."""

    line: int
    code: str
    message: str


class Case(NamedTuple):
    """One typing case: its text, where it comes from, and which checkers run it."""

    name: str
    file: Path
    main: str
    checkers: tuple[str, ...]
    tags: Mapping[str, str]
    mypy_plugin: bool

    def runs_under(self, checker: str) -> bool:
        """Whether `checker` (mypy or pyright) checks this case."""
        return checker in self.checkers


class CheckerRun(NamedTuple):
    """What one checker process said: diagnostics per case, and anything else it printed."""

    diagnostics: dict[str, list[Diagnostic]]
    failure: str | None
    """Set when the checker itself failed (a crash, or a report that could not be read)."""


def load_cases(directory: Path = CASES) -> list[Case]:
    """Every case of `directory/test_*.yml`, in file order."""
    return [case for path in sorted(directory.glob("test_*.yml")) for case in load_file(path)]


def load_file(path: Path) -> list[Case]:
    """The cases of one YAML file, in order."""
    raw: list[dict[str, Any]] = yaml.safe_load(path.read_text()) or []
    found: list[Case] = []
    for entry in raw:
        tags: dict[str, Any] = entry.get("matrix") or {}
        found.append(
            Case(
                name=str(entry["case"]),
                file=path,
                main=str(entry["main"]),
                checkers=tuple(str(c) for c in entry.get("checkers", CHECKERS)),
                tags={str(k): str(v) for k, v in tags.items()},
                mypy_plugin=bool(entry.get("mypy_plugin", False)),
            )
        )
    return found


def expectations(case: Case) -> tuple[list[Expectation], list[str]]:
    """The expectations written in `case`, and the problems with how they are written."""
    found: list[Expectation] = []
    problems: list[str] = []
    for number, text in enumerate(case.main.splitlines(), start=1):
        if _IGNORE_COMMENT.search(text):
            problems.append(f"line {number}: ignore comments are not allowed, write `# E:`")
        code_part, marker, rest = text.partition(_MARKER)
        if not marker:
            continue
        if _MARKER in rest or not code_part.strip():
            problems.append(f"line {number}: one `# E:` per line, after the code it is about")
        position = 0
        while True:
            while position < len(rest) and rest[position] in " \t,;":
                position += 1
            if position >= len(rest):
                break
            match = _EXPECTATION.match(rest, position)
            if match is None:
                problems.append(f"line {number}: cannot read the expectation {rest[position:]!r}")
                break
            checker, code, fragment = match.groups()
            found.append(Expectation(checker, number, code, fragment))
            position = match.end()
    return found, problems


def compare(case: Case, checker: str, diagnostics: Iterable[Diagnostic]) -> list[str]:
    """What is wrong with `case` under `checker`: unmet expectations and unexpected errors."""
    expected, problems = expectations(case)
    mine = [e for e in expected if e.checker == checker]
    reported = list(diagnostics)
    for expectation in mine:
        if not any(_matches(expectation, d) for d in reported):
            on_line = [d for d in reported if d.line == expectation.line]
            saw = "; ".join(f"[{d.code}] {d.message}" for d in on_line) or "nothing"
            problems.append(
                f"line {expectation.line}: expected {checker}[{expectation.code}]"
                f" `{expectation.fragment}`, got {saw}"
            )
    for diagnostic in reported:
        if not any(_matches(e, diagnostic) for e in mine):
            problems.append(
                f"line {diagnostic.line}: unexpected {checker}[{diagnostic.code}]"
                f" {diagnostic.message}"
            )
    return problems


def _matches(expectation: Expectation, diagnostic: Diagnostic) -> bool:
    return (
        expectation.line == diagnostic.line
        and expectation.code == diagnostic.code
        and expectation.fragment in diagnostic.message
    )


def _write_modules(cases: Iterable[Case], directory: Path) -> dict[str, str]:
    """One module per case, named after it; returns module file name -> case name."""
    modules: dict[str, str] = {}
    for case in cases:
        module = f"{case.name}.py"
        (directory / module).write_text(case.main)
        modules[module] = case.name
    return modules


def run_mypy(
    cases: Iterable[Case],
    *,
    src: Path = SRC,
    config: Path = MYPY_CONFIG,
    cache_dir: Path | None = None,
) -> CheckerRun:
    """Check `cases` in one mypy process, with `src` first on the import path."""
    cases = list(cases)
    if not cases:
        return CheckerRun({}, None)
    workdir = Path(tempfile.mkdtemp(prefix="mypy-cases-"))
    try:
        modules = _write_modules(cases, workdir)
        cache = cache_dir or ROOT / ".mypy_cache" / "typing-cases"
        command = [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(config),
            "--cache-dir",
            str(cache),
            "--output",
            "json",
            "--no-error-summary",
            *sorted(modules),
        ]
        environment = {**os.environ, "MYPYPATH": str(src)}
        done = subprocess.run(
            command, cwd=workdir, env=environment, capture_output=True, text=True, check=False
        )
        results: dict[str, list[Diagnostic]] = {name: [] for name in modules.values()}
        unreadable: list[str] = []
        for text in done.stdout.splitlines():
            try:
                report = json.loads(text)
            except json.JSONDecodeError:
                unreadable.append(text)
                continue
            module = Path(report["file"]).name
            if report["severity"] != "error" or module not in modules:
                continue
            if Path(report["file"]).parent not in (Path(), workdir):
                continue
            results[modules[module]].append(
                Diagnostic(report["line"], report["code"] or "", report["message"])
            )
        failure = None
        if done.returncode not in (0, 1) or unreadable:
            failure = f"mypy exited with {done.returncode}:\n{done.stderr}{''.join(unreadable)}"
        return CheckerRun(results, failure)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_pyright(cases: Iterable[Case], *, src: Path = SRC) -> CheckerRun:
    """Check `cases` in one pyright process, with `src` first on the import path."""
    cases = list(cases)
    if not cases:
        return CheckerRun({}, None)
    workdir = Path(tempfile.mkdtemp(prefix="pyright-cases-"))
    try:
        modules = _write_modules(cases, workdir)
        config = {**PYRIGHT_CONFIG, "extraPaths": [str(src)]}
        (workdir / "pyrightconfig.json").write_text(json.dumps(config))
        pyright = shutil.which("pyright", path=str(Path(sys.executable).parent)) or "pyright"
        done = subprocess.run(
            [pyright, "--outputjson", "--pythonpath", sys.executable, "-p", str(workdir)],
            capture_output=True,
            text=True,
            check=False,
            cwd=workdir,
        )
        try:
            report = json.loads(done.stdout)
        except json.JSONDecodeError:
            return CheckerRun({}, f"pyright exited with {done.returncode}:\n{done.stderr}")
        results: dict[str, list[Diagnostic]] = {name: [] for name in modules.values()}
        for diagnostic in report.get("generalDiagnostics", []):
            if diagnostic.get("severity") not in ("error", "warning"):
                continue
            module = Path(diagnostic["file"]).name
            if module in modules:
                line = diagnostic["range"]["start"]["line"] + 1
                results[modules[module]].append(
                    Diagnostic(line, diagnostic.get("rule", ""), diagnostic["message"])
                )
        return CheckerRun(results, None)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class SuiteRun(NamedTuple):
    """Both checkers' runs over a list of cases (mypy split by its two configurations)."""

    mypy: CheckerRun
    mypy_plugin: CheckerRun
    pyright: CheckerRun

    def failures(self, case: Case, checker: str) -> list[str]:
        """Why `case` fails under `checker` (empty when it passes)."""
        run = self.pyright if checker == "pyright" else self.mypy
        if checker == "mypy" and case.mypy_plugin:
            run = self.mypy_plugin
        if run.failure is not None:
            return [run.failure]
        return compare(case, checker, run.diagnostics.get(case.name, []))


def start_suite(
    cases: list[Case],
    *,
    src: Path = SRC,
    cache_dir: Path | None = None,
    executor: ThreadPoolExecutor | None = None,
) -> "Future[SuiteRun]":
    """Start the three checker runs in parallel; the future yields all three."""
    pool = executor or ThreadPoolExecutor(max_workers=4)
    plain = [c for c in cases if c.runs_under("mypy") and not c.mypy_plugin]
    plugin = [c for c in cases if c.runs_under("mypy") and c.mypy_plugin]
    typed = [c for c in cases if c.runs_under("pyright")]
    cache = cache_dir or ROOT / ".mypy_cache" / "typing-cases"
    mypy = pool.submit(run_mypy, plain, src=src, cache_dir=cache)
    with_plugin = pool.submit(
        run_mypy,
        plugin,
        src=src,
        config=MYPY_PLUGIN_CONFIG,
        cache_dir=cache.with_name(f"{cache.name}-plugin"),
    )
    pyright = pool.submit(run_pyright, typed, src=src)
    return pool.submit(lambda: SuiteRun(mypy.result(), with_plugin.result(), pyright.result()))
