"""
`python -m typing_tests.mutate`: break the library's types, count the cases that notice.

Each mutation is a small change to a type in `src/` — a variance, a default, a parameter or
return type — located by **symbol**, not by file: `"Retry"` is the class `Retry` wherever
`durable_jobs/__init__.py` imports it from, `"ErrorContext.reschedule"` a method of it,
`"Debounce.on_error"` a field, `"Engine.__init__#2"` the second definition of that name (an
overload), and `"Retry@E"` the module-level name `E` of the module that defines `Retry`
(`"TaskEventContext@_TaskContext.state"`: a private class of that module). The text `old`
must occur exactly `count` times (once by default) in that symbol's source; it becomes
`new`. For every mutation, a copy of `src/` is mutated and the whole suite runs against it
under both checkers (`checkers.py`: one mypy, one pyright process); a checker *catches* the
mutation when at least one case fails under it.

Every mutation is expected to be caught by both checkers unless it says which checker cannot
see it and why (`invisible_to`); the run fails when a checker that should catch a mutation
does not, or when a checker catches one it was declared blind to (the declaration is then
stale). `--doc` rewrites the result table in docs/typing.md, `--check-doc` compares it.

A full run checks the suite once per mutation (about 40 s per mutation on a 2-core machine
shared with other work, some 25 minutes in all), too slow for every `make check`: `make
mutate` runs it and records the table in docs/typing.md. `--static` (what `make check` runs,
through tests/test_typing_suite.py) only proves that every mutation still applies to `src/`
and that the recorded table lists exactly the current mutations.
"""

import argparse
import ast
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from typing_tests import checkers


PACKAGE = checkers.SRC / "durable_jobs"
DOC = checkers.ROOT / "docs" / "typing.md"
START, END = "<!-- typing-mutations:start -->", "<!-- typing-mutations:end -->"


class Mutation(NamedTuple):
    """One deliberate break of the library's types."""

    name: str
    symbol: str
    old: str
    new: str
    why: str
    """What the mutation breaks for a user, in a few words."""
    invisible_to: tuple[str, ...] = ()
    """Checkers that cannot see this mutation (the reason is in `why`)."""
    count: int = 1
    """How many times `old` occurs in the symbol's source (all are replaced)."""


_AWAITABLE_NONE = "None | Awaitable[None]"

MUTATIONS: tuple[Mutation, ...] = (
    # -- the definitions: type parameters and callback types
    Mutation(
        "debounce_s_default_dropped",
        "Debounce@S",
        'TypeVar("S", default=I)',
        'TypeVar("S")',
        "without on_event, S is no longer I",
    ),
    Mutation(
        "continuous_e_default_dropped",
        "Continuous@_E",
        'TypeVar("_E", default=Never)',
        'TypeVar("_E")',
        "a continuous job that cannot fail no longer has E = Never",
    ),
    Mutation(
        "worker_pool_e_default_dropped",
        "WorkerPool@E",
        'TypeVar("E", default=Never)',
        'TypeVar("E")',
        "`WorkerPool[bytes]` needs all four type arguments",
    ),
    Mutation(
        "task_r_default_dropped",
        "Task@R",
        'TypeVar("R", contravariant=True, default=object)',
        'TypeVar("R", contravariant=True)',
        "`Task[str, int]` no longer means a task that needs nothing",
    ),
    Mutation(
        "definition_r_invariant",
        "JobDefinition@R",
        'TypeVar("R", contravariant=True, default=object)',
        'TypeVar("R", default=object)',
        "a job needing less than the engine's deps (or nothing) no longer fits it",
    ),
    Mutation(
        "debounce_on_error_returns_object",
        "Debounce.on_error",
        _AWAITABLE_NONE,
        "object",
        "on_error may return anything (the runner would await it)",
    ),
    Mutation(
        "continuous_on_error_returns_object",
        "Continuous.__new__",
        f"{_AWAITABLE_NONE}] | None = None",
        "object] | None = None",
        "on_error may return anything (the runner would await it)",
    ),
    Mutation(
        "task_on_event_returns_object",
        "Task.on_event",
        _AWAITABLE_NONE,
        "object",
        "a task's on_event may return a value, which is dropped",
    ),
    Mutation(
        "debounce_on_event_returns_object",
        "Debounce.on_event",
        "S] | None",
        "object] | None",
        "the fold's result is no longer checked against the state",
    ),
    Mutation(
        "debounce_execute_sync_only",
        "Debounce.execute",
        "Result[None, E] | Awaitable[Result[None, E]]",
        "Result[None, E]",
        "an async execute is rejected",
    ),
    Mutation(
        "task_on_error_state_not_optional",
        "Task.on_error",
        "ErrorContext[S | None, R]",
        "ErrorContext[S, R]",
        "a task's on_error sees `S` although the task may have no state yet",
    ),
    Mutation(
        "worker_pool_on_error_state_is_none",
        "WorkerPool.on_error",
        "ErrorContext[I, R]",
        "ErrorContext[S, R]",
        "a pool's on_error no longer sees the failed event",
    ),
    Mutation(
        "continuous_r_lost",
        "Continuous.__new__",
        '"Continuous[_T, _T, _E, _R]"',
        '"Continuous[_T, _T, _E, object]"',
        "a continuous job's requirement R is dropped: any engine takes it",
    ),
    # -- the engine's dependency gate
    Mutation(
        "engine_deps_unchecked",
        "Engine.__init__#2",
        '"Sequence[Registrable[R]]"',
        '"Sequence[Registrable[Any]]"',
        "deps no longer has to satisfy the jobs' requirements",
    ),
    Mutation(
        "engine_without_deps_takes_any_job",
        "Engine.__init__#1",
        '"Sequence[Registrable[None]]"',
        '"Sequence[Registrable[Any]]"',
        "omitting deps is accepted for jobs that need some",
    ),
    # -- contexts
    Mutation(
        "error_context_s_invariant",
        "ErrorContext",
        "_covariant.S",
        "S",
        "one on_error for jobs of several state types is rejected",
        count=3,
    ),
    Mutation(
        "context_r_invariant",
        "ContinuousContext@R",
        'TypeVar("R", covariant=True, default=object)',
        'TypeVar("R", default=object)',
        "a callback needing less than the job's R no longer fits",
    ),
    Mutation(
        "continuous_context_state_optional",
        "ContinuousContext.state",
        "-> S:",
        "-> S | None:",
        "a continuous job's state may seem to be missing",
    ),
    Mutation(
        "debounce_event_state_not_optional",
        "DebounceEventContext.state",
        "-> S | None:",
        "-> S:",
        "the first event's fold sees a batch that does not exist",
    ),
    Mutation(
        "task_state_not_optional",
        "TaskEventContext@_TaskContext.state",
        "-> S | None:",
        "-> S:",
        "a task's callbacks see a state that may not be set yet",
    ),
    Mutation(
        "worker_pool_event_is_object",
        "WorkerPoolContext.event",
        "-> I:",
        "-> object:",
        "a pool's execute loses the event's type",
    ),
    Mutation(
        "flush_reason_is_str",
        "DebounceExecuteContext.flush_reason",
        "-> FlushReason:",
        "-> str:",
        "the flush reason is no longer a closed set",
    ),
    Mutation(
        "reschedule_returns_datetime",
        "ErrorContext.reschedule",
        "-> None:",
        "-> datetime:",
        "`on_error=lambda e, ctx: ctx.reschedule(...)` is rejected again",
    ),
    # -- the client (typed from the definition object, deps-free)
    Mutation(
        "client_requires_jobs_needing_nothing",
        "Client.__init__",
        '"Sequence[JobDefinition[Never]]"',
        '"Sequence[JobDefinition[object]]"',
        "a web process's client rejects jobs whose callbacks need deps",
    ),
    Mutation(
        "debounce_add_takes_any_event",
        "DebounceClient.add",
        "event: I,",
        "event: object,",
        "`add` accepts an event of another type",
    ),
    Mutation(
        "task_send_takes_any_event",
        "TaskClient.send",
        "event: I,",
        "event: object,",
        "`send` accepts an event of another type",
    ),
    Mutation(
        "task_get_state_not_optional",
        "TaskClient.get_state",
        "-> S | None:",
        "-> S:",
        "`get_state` hides that an instance may not exist",
    ),
    Mutation(
        "pool_enqueue_takes_any_event",
        "WorkerPoolClient.enqueue",
        "event: I,",
        "event: object,",
        "`enqueue` accepts an event of another type",
    ),
    # -- Retry
    Mutation(
        "retry_covariant",
        "Retry@E",
        'TypeVar("E")',
        'TypeVar("E", covariant=True)',
        "a Retry for a subclass of E (its callables can't take E) fits the job",
    ),
    Mutation(
        "retry_contravariant",
        "Retry@E",
        'TypeVar("E")',
        'TypeVar("E", contravariant=True)',
        "a Retry for a base class no longer widens E the same in both checkers",
    ),
    Mutation(
        "should_retry_returns_object",
        "Retry.should_retry",
        "Callable[[E], bool]",
        "Callable[[E], object]",
        "should_retry may return anything",
    ),
    Mutation(
        "retry_delay_ignores_e",
        "Retry.delay",
        "Callable[[E, int], DurationInput]",
        "Callable[[object, int], DurationInput]",
        "a retry-after delay no longer receives E",
    ),
    # -- Result
    Mutation(
        "err_invariant",
        "Err@E",
        'TypeVar("E", covariant=True)',
        'TypeVar("E")',
        "`Err(NetError())` no longer fits `Result[None, OSError]`",
    ),
    Mutation(
        "ok_invariant",
        "Ok@T",
        'TypeVar("T", covariant=True)',
        'TypeVar("T")',
        "`Ok(True)` no longer fits `Result[int, E]`",
    ),
    Mutation(
        "err_map_err_keeps_e",
        "Err.map_err",
        '-> "Err[F]":',
        '-> "Err[E]":',
        "`map_err` no longer changes the error type",
    ),
)


class Outcome(NamedTuple):
    """How many cases failed under each checker for one mutation."""

    mutation: Mutation
    failing: dict[str, list[str]]
    seconds: float

    def caught_by(self, checker: str) -> bool:
        """Whether at least one case failed under `checker`."""
        return bool(self.failing[checker])

    def problems(self) -> list[str]:
        """Where this outcome disagrees with what the mutation declares."""
        found: list[str] = []
        for checker in checkers.CHECKERS:
            expected = checker not in self.mutation.invisible_to
            if expected and not self.caught_by(checker):
                found.append(f"{self.mutation.name}: no case fails under {checker}")
            if not expected and self.caught_by(checker):
                found.append(
                    f"{self.mutation.name}: declared invisible to {checker}, but"
                    f" {len(self.failing[checker])} cases fail under it"
                )
        return found


def _module_of(public_name: str) -> Path:
    """The file defining `durable_jobs.<public_name>`, from the imports of `__init__.py`."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    for node in tree.body:
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 1
            and node.module
            and any((alias.asname or alias.name) == public_name for alias in node.names)
        ):
            return PACKAGE.joinpath(*node.module.split(".")).with_suffix(".py")
    msg = f"durable_jobs does not export {public_name!r}"
    raise LookupError(msg)


def _named(body: Sequence[ast.stmt], name: str) -> ast.stmt:
    name, _, nth = name.partition("#")
    wanted = int(nth or 1)
    for node in body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            found = node.name == name
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found = node.target.id == name
        elif isinstance(node, ast.Assign):
            found = any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
        else:
            found = False
        if found:
            wanted -= 1
            if wanted == 0:
                return node
    msg = f"no {name!r} here"
    raise LookupError(msg)


def locate(symbol: str, package: Path = PACKAGE) -> tuple[Path, int, int]:
    """The file of `symbol` and the line span (1-based, inclusive) of its source."""
    public, _, module_level = symbol.partition("@")
    path = _module_of(public.split(".")[0])
    path = package / path.relative_to(PACKAGE)
    tree = ast.parse(path.read_text())
    body: Sequence[ast.stmt] = tree.body
    node: ast.stmt | None = None
    for part in (module_level or public).split("."):
        node = _named(body, part)
        body = node.body if isinstance(node, ast.ClassDef) else []
    assert node is not None
    return path, node.lineno, node.end_lineno or node.lineno


def apply(mutation: Mutation, package: Path) -> None:
    """Mutate the copy of the package at `package` in place."""
    path, first, last = locate(mutation.symbol, package)
    lines = path.read_text().splitlines(keepends=True)
    span = "".join(lines[first - 1 : last])
    count = span.count(mutation.old)
    if count != mutation.count:
        msg = f"{mutation.name}: {mutation.old!r} occurs {count} times in {mutation.symbol}"
        raise LookupError(msg)
    lines[first - 1 : last] = [span.replace(mutation.old, mutation.new)]
    text = "".join(lines)
    ast.parse(text)
    path.write_text(text)


def failing_cases(run: checkers.SuiteRun, cases: list[checkers.Case]) -> dict[str, list[str]]:
    """Checker -> names of the cases that fail under it."""
    return {
        checker: [c.name for c in cases if c.runs_under(checker) and run.failures(c, checker)]
        for checker in checkers.CHECKERS
    }


def run_all(mutations: Sequence[Mutation], *, verbose: bool = True) -> list[Outcome]:
    """Check the unmutated suite, then every mutation; one outcome per mutation."""
    cases = checkers.load_cases()
    workdir = Path(tempfile.mkdtemp(prefix="typing-mutate-"))
    cache = workdir / "mypy-cache"
    try:
        for mutation in mutations:  # every mutation applies, before anything slow runs
            scratch = workdir / "check"
            shutil.copytree(checkers.SRC, scratch)
            apply(mutation, scratch / "durable_jobs")
            shutil.rmtree(scratch)
        baseline = checkers.start_suite(cases, cache_dir=cache).result()
        broken = {k: v for k, v in failing_cases(baseline, cases).items() if v}
        if broken:
            msg = f"the unmutated suite fails: {broken}"
            raise RuntimeError(msg)
        outcomes: list[Outcome] = []
        for number, mutation in enumerate(mutations, start=1):
            started = time.perf_counter()
            src = workdir / f"src-{number}"
            shutil.copytree(checkers.SRC, src)
            apply(mutation, src / "durable_jobs")
            run = checkers.start_suite(cases, src=src, cache_dir=cache).result()
            outcome = Outcome(mutation, failing_cases(run, cases), time.perf_counter() - started)
            outcomes.append(outcome)
            shutil.rmtree(src)
            if verbose:
                counts = ", ".join(f"{c} {len(outcome.failing[c])}" for c in checkers.CHECKERS)
                print(f"[{number}/{len(mutations)}] {mutation.name}: {counts}", flush=True)
        return outcomes
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def render(outcomes: Sequence[Outcome], total_cases: int) -> str:
    """The Markdown table (and score) written into docs/typing.md."""
    score = {
        checker: (
            sum(o.caught_by(checker) for o in outcomes),
            sum(checker not in o.mutation.invisible_to for o in outcomes),
        )
        for checker in checkers.CHECKERS
    }
    lines = [
        f"{len(outcomes)} mutations of `src/` (`typing_tests/mutate.py`), each checked against"
        f" all {total_cases} cases."
        " Caught (at least one case fails) / visible to the checker: "
        + ", ".join(f"{c} {caught}/{visible}" for c, (caught, visible) in score.items())
        + ".",
        "",
        "| mutation | symbol | what it breaks | cases failing: mypy | pyright |",
        "| --- | --- | --- | ---: | ---: |",
    ]
    for outcome in outcomes:
        m = outcome.mutation
        cells = [
            "invisible" if c in m.invisible_to and not outcome.caught_by(c)
            else str(len(outcome.failing[c]))
            for c in checkers.CHECKERS
        ]  # fmt: skip
        lines.append(f"| `{m.name}` | `{m.symbol}` | {m.why} | {' | '.join(cells)} |")
    return "\n".join(lines)


def rewritten(text: str, table: str) -> str:
    """`text` with the region between the markers replaced by `table`."""
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{table}\n{END}{tail}"


def static_problems(doc: Path = DOC) -> list[str]:
    """Without running a checker: mutations that no longer apply, and a stale doc table."""
    found: list[str] = []
    names = [m.name for m in MUTATIONS]
    if len(set(names)) != len(names):
        found.append("two mutations share a name")
    with tempfile.TemporaryDirectory(prefix="typing-mutate-") as scratch:
        for mutation in MUTATIONS:
            copy = Path(scratch) / mutation.name
            shutil.copytree(checkers.SRC, copy)
            try:
                apply(mutation, copy / "durable_jobs")
            except (LookupError, SyntaxError) as error:
                found.append(f"{mutation.name} does not apply: {error}")
    _, _, rest = doc.read_text().partition(START)
    table, _, _ = rest.partition(END)
    recorded = re.findall(r"^\| `([a-z0-9_]+)` \|", table, flags=re.MULTILINE)
    if recorded != names:
        found.append(f"{doc} records {recorded}, not {names}: python -m typing_tests.mutate --doc")
    return found


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m typing_tests.mutate", description=__doc__)
    parser.add_argument("--only", action="append", help="run only this mutation (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--doc", action="store_true", help="rewrite the table in docs/typing.md")
    parser.add_argument(
        "--check-doc", action="store_true", help="fail if docs/typing.md holds another table"
    )
    parser.add_argument(
        "--static", action="store_true", help="only check that the mutations apply (fast)"
    )
    args = parser.parse_args(argv)
    if args.static:
        problems = static_problems()
        for problem in problems:
            print(f"PROBLEM: {problem}", file=sys.stderr)
        return 1 if problems else 0
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.name:48} {m.symbol:32} {m.why}")
        return 0
    started = time.perf_counter()
    outcomes = run_all(chosen)
    table = render(outcomes, len(checkers.load_cases()))
    print(table)
    problems = [p for o in outcomes for p in o.problems()]
    print(f"\n{len(outcomes)} mutations in {time.perf_counter() - started:.0f} s")
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    status = 1 if problems else 0
    text = DOC.read_text()
    if args.doc and not args.only:
        DOC.write_text(rewritten(text, table))
    if args.check_doc and rewritten(text, table) != text:
        print(f"{DOC} holds another mutation table: python -m typing_tests.mutate --doc")
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
