"""Runs every benchmark and turns the measurements into table sections."""

import importlib.metadata
import importlib.util
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

from durable_jobs import SqliteStorage

from . import busy_add, debounce_add, kinds, latency, runner, worker
from ._harness import (
    Row,
    Section,
    Settings,
    Stats,
    load_average,
    missing,
    number,
    ratio,
    row,
    times,
)


if TYPE_CHECKING:
    from .connections import Counts

SECTIONS = ("debounce", "worker", "latency", "runner", "dbos", "postgres", "busy", "connections")
"""The names `--only` accepts, in running order."""

ADD_TARGET = 0.5
"""Target: our SQLite `add` throughput at least this fraction of the minimal loop's."""
P99_TARGET_MS = 50.0
"""Target: alarm latency p99 below this, idle and under load."""
SHORT_LEAD = 0.001
"""Seconds ahead of `send` the alarms of row 3c are scheduled."""
IDLE_FLOOR_MS = 5.0
"""The engine's shortest sleep once nothing is due (`_MIN_IDLE` in `_engine.py`)."""
DBOS_TIMEOUT = 600
"""Seconds the DBOS subprocess may take before its row says it timed out."""


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _versus_minimal(ours: Stats, minimal: Stats) -> str:
    share = ratio(ours.median, minimal.median)
    return f"{times(share)} minimal (target ≥ {ADD_TARGET}: {_met(share >= ADD_TARGET)})"


async def debounce(settings: Settings) -> tuple[Section, tuple[Stats, Stats]]:
    """Section 1: debounce `add` throughput; also our two SQLite rates, for section 5."""
    sequential = await debounce_add.ours_sqlite(settings)
    concurrent = await debounce_add.ours_sqlite(settings, adders=settings.adders)
    minimal = debounce_add.minimal_sqlite(settings)
    hopping = await debounce_add.minimal_sqlite_on_thread(settings)
    memory = await debounce_add.ours_memory(settings)
    total = settings.ids * settings.events_per_id
    section = Section(
        title=(
            f"1. Debounce add on SqliteStorage ({settings.ids} ids x {settings.events_per_id}"
            f" events = {total} adds per rep, {settings.reps} reps)"
        ),
        rows=(
            row(
                "1a",
                "ours: sequential `await client.add`",
                sequential,
                "adds/s",
                _versus_minimal(sequential, minimal),
            ),
            row(
                "1b",
                f"ours: {settings.adders} concurrent adders (gather)",
                concurrent,
                "adds/s",
                _versus_minimal(concurrent, minimal),
            ),
            row(
                "1c",
                "baseline: minimal sqlite3 loop (WAL, NORMAL, 1 txn/event)",
                minimal,
                "adds/s",
                "baseline",
            ),
            row(
                "1d",
                "diagnostic: minimal loop, 1 thread hop per event",
                hopping,
                "adds/s",
                f"{times(ratio(hopping.median, minimal.median))} minimal",
            ),
            row(
                "1e",
                "diagnostic: ours on MemoryStorage (no SQLite, no thread)",
                memory,
                "adds/s",
                f"{times(ratio(memory.median, minimal.median))} minimal",
            ),
        ),
        notes=(
            "each rep starts from an empty file in a fresh temp dir; the engine runs on"
            " TestClock (no flush). The minimal loop does per event: BEGIN IMMEDIATE, read"
            " the state row, json.loads, append, json.dumps, write the row, set the alarm"
            " column if unset, COMMIT, on the calling thread.",
            "1d and 1e split our cost: 1d is the minimal loop paying one event-loop→thread"
            " round trip per event (our add makes two), 1e is our engine without storage"
            " I/O.",
        ),
    )
    return section, (sequential, concurrent)


async def continuous(settings: Settings) -> Section:
    """Section 2: executions per second of each kind through the worker, on SQLite."""
    single = await worker.ours(settings, instances=1)
    many = await worker.ours(settings, instances=32)
    runs = {kind: await worker.drained(settings, kind) for kind in kinds.KINDS}
    sync_runs = await worker.drained(settings, "continuous", sync=True)
    drained = {kind: Stats(run.rates) for kind, run in runs.items()}
    sync = Stats(sync_runs.rates)
    minimal = worker.minimal_loop(settings)

    def versus(stats: Stats, lost: kinds.Drained | None = None) -> str:
        note = "" if lost is None else kinds.lost_note(lost)
        return f"{times(ratio(stats.median, minimal.median))} minimal (2g){note}"

    rows = [
        row(
            "2a",
            "ours: Continuous every 1 ms, 1 instance (sync execute)",
            single,
            "execs/s",
            "schedule-bound: a 1 ms schedule allows ~1,000/s; see 3c",
        ),
        row(
            "2b",
            "ours: Continuous every 1 ms, 32 instances (sync execute)",
            many,
            "execs/s",
            versus(many),
        ),
    ]
    rows.extend(
        row(
            f"2{letter}",
            f"ours: {kinds.LABELS[kind]}, drained",
            stats,
            "execs/s",
            versus(stats, runs[kind]),
        )
        for letter, (kind, stats) in zip("cdef", drained.items(), strict=True)
    )
    rows.append(
        row(
            "2g",
            "baseline: minimal sqlite3 claim → run → finish loop, drained",
            minimal,
            "execs/s",
            "baseline",
        )
    )
    rows.append(
        row(
            "2h",
            "diagnostic: 2c with a sync execute (thread pool)",
            sync,
            "execs/s",
            f"{versus(sync, sync_runs)};"
            f" {times(ratio(sync.median, drained['continuous'].median))} 2c",
        )
    )
    return Section(
        title=(
            f"2. Executions/s per kind through the worker on SQLite ({settings.drain_items}"
            f" due per drain; 2a-2b: {settings.worker_seconds:g} s counted;"
            f" {settings.timed_reps} reps)"
        ),
        rows=tuple(rows),
        notes=(
            "`async with engine:` with SystemClock, Engine(concurrency=16), a fresh file"
            " per rep. 2a-2b count executions over a fixed wall time after a 0.3 s warm-up;"
            " one instance is bound by its schedule plus the worker's idle floor (it never"
            " sleeps less than 5 ms once nothing is due), not by storage.",
            f"2c-2f: {settings.drain_items} pieces of work queued due before the worker"
            " starts (untimed), timed from the start until the last `job.executed` event"
            " (emitted after the fenced finish commits); async no-op callbacks. Debounce:"
            " one event per id, 1 ms window. Task: `on_event` schedules `execute` now."
            " WorkerPool: concurrency 16, no partition key.",
            "2g, the minimal loop, per execution on one connection on the calling thread:"
            " BEGIN IMMEDIATE, SELECT the earliest due unleased row, UPDATE its lease token"
            " and expiry, COMMIT; json.loads the state (the run); BEGIN IMMEDIATE, UPDATE"
            " state, alarm and lease WHERE the token still holds a live lease (row count"
            " checked), COMMIT.",
        ),
    )


def _latency_rows(
    prefix: str, what: str, runs: Sequence[latency.Latency], timer_runs: Sequence[latency.Latency]
) -> tuple[Row, Row]:
    p50 = Stats(tuple(run.p50 for run in runs))
    p99 = Stats(tuple(run.p99 for run in runs))
    timer_p50 = statistics.median(run.p50 for run in timer_runs)
    timer_p99 = statistics.median(run.p99 for run in timer_runs)
    worst = max(run.worst for run in runs)
    return (
        row(
            f"{prefix}1",
            f"ours: p50, {what}",
            p50,
            "ms",
            f"event-loop timer alone: p50 {number(timer_p50)} ms",
        ),
        row(
            f"{prefix}2",
            f"ours: p99, {what}",
            p99,
            "ms",
            f"target < {P99_TARGET_MS:g} ms: {_met(p99.median < P99_TARGET_MS)};"
            f" worst {number(worst)} ms; timer alone p99 {number(timer_p99)} ms",
        ),
    )


async def alarm_latency(settings: Settings) -> Section:
    """Section 3: alarm latency, idle and under load."""
    idle = await latency.ours(settings, loaded=False)
    short = await latency.ours(settings, loaded=False, lead=SHORT_LEAD)
    loaded = await latency.ours(settings, loaded=True)
    timer_idle = await latency.timer(settings, loaded=False)
    timer_loaded = await latency.timer(settings, loaded=True)
    load_rate = statistics.median(run.load_rate for run in loaded)
    return Section(
        title=(
            f"3. Alarm latency, due → `execute` start, SystemClock + SQLite"
            f" ({settings.latency_samples} alarms per rep, {settings.timed_reps} reps)"
        ),
        rows=(
            *_latency_rows("3a", "worker idle", idle, timer_idle),
            *_latency_rows(
                "3b",
                f"under load ({latency.LOAD_ADDERS} adders, ~{number(load_rate)} adds/s)",
                loaded,
                timer_loaded,
            ),
            row(
                "3c",
                f"ours: p50, worker idle, alarm only {SHORT_LEAD * 1000:g} ms ahead",
                Stats(tuple(run.p50 for run in short)),
                "ms",
                f"vs. 3a1: the worker's idle floor ({IDLE_FLOOR_MS:g} ms) delays near alarms",
            ),
        ),
        notes=(
            f"a Task schedules its alarm {latency.LEAD * 1000:g} ms ahead in `on_event`;"
            f" one send every {latency.SPACING * 1000:g} ms; lateness = wall time at the"
            " start of `execute` - the alarm time `send` returned. The load is debounce"
            " adds through the same engine and storage (`max_events=20` seals a batch every"
            " 20 events and makes it due: the same worker flushes it). 'timer alone' is how"
            " late `asyncio.sleep` wakes in the same conditions: the floor any asyncio"
            " scheduler has here.",
        ),
    )


async def runner_overhead(settings: Settings) -> Section:
    """Section 4: runner overhead per in-memory execution."""
    ours = await runner.ours(settings)
    on_loop = await runner.ours(settings, sync=False)
    direct = runner.direct(settings)
    rows = [
        row(
            "4a",
            "ours: `trigger` + `run_due` on MemoryStorage (claim, run, finish)",
            ours,
            "µs/exec",
            f"{times(ratio(ours.median, direct.median))} direct call",
        ),
        row("4b", "direct call of the same function", direct, "µs/exec", "baseline"),
    ]
    try:
        tenacity = runner.with_tenacity(settings)
    except ImportError as exc:
        rows.append(missing("4c", "tenacity `Retrying` around it (success)", f"{exc}"))
    else:
        rows[0] = row(
            "4a",
            rows[0].what,
            ours,
            "µs/exec",
            f"{times(ratio(ours.median, direct.median))} direct;"
            f" {times(ratio(ours.median, tenacity.median))} tenacity",
        )
        rows.append(
            row(
                "4c",
                f"tenacity {runner.tenacity_version()} `Retrying` around it (success)",
                tenacity,
                "µs/exec",
                f"{times(ratio(tenacity.median, direct.median))} direct call",
            )
        )
    overhead = Stats((ours.median - direct.median,))
    rows.append(
        row("4d", "ours - direct: runner overhead per execution", overhead, "µs", "derived")
    )
    rows.append(
        row(
            "4e",
            "diagnostic: 4a with an async `execute` (on the loop, no thread)",
            on_loop,
            "µs/exec",
            f"{times(ratio(on_loop.median, ours.median))} 4a",
        )
    )
    return Section(
        title=f"4. Runner overhead per in-memory execution ({settings.runner_calls} per rep)",
        rows=tuple(rows),
        notes=(
            "4a includes everything a durable execution does in memory: the trigger's"
            " block, the claim (a lease), decoding the state, the context, the runner, the"
            " outcome bookkeeping, the fenced finish block (copies of the record) and the"
            " worker's look for the next alarm (`engine.run_due()` on TestClock). Its"
            " `execute` is sync, so it runs in the engine's thread pool: one thread round"
            " trip per execution, which 4e avoids. tenacity keeps no state and makes one"
            " attempt.",
        ),
    )


def peer_dbos(settings: Settings, ours: tuple[Stats, Stats] | None) -> Section:
    """Section 5: DBOS `Debouncer` on SQLite, in a subprocess."""
    title = "5. Peer: the same add workload through DBOS `Debouncer` on SQLite"
    # key: (row id, what, index into `ours` and its row id to compare with)
    names = {
        "sequential-default": ("5a", "DBOS: sequential `debounce` (its defaults)", 0, "1a"),
        "concurrent-default": (
            "5b",
            f"DBOS: {settings.adders} concurrent `debounce_async`",
            1,
            "1b",
        ),
        "sequential-wal": ("5c", "DBOS: sequential, file switched to WAL first", 0, "1a"),
        "concurrent-wal": ("5d", f"DBOS: {settings.adders} concurrent, WAL file", 1, "1b"),
    }
    outcome = _run_dbos(settings)
    error = outcome.get("error")
    if error is not None:
        return Section(title, (missing("5", "DBOS Debouncer on SQLite", f"{error}"),))
    rows: list[Row] = []
    for key, (id, what, index, ours_id) in names.items():
        values = outcome.get(key)
        if not isinstance(values, list) or not values:
            rows.append(missing(id, what, f"no result for {key}: {outcome!r}"))
            continue
        stats = Stats(tuple(cast("list[float]", values)))
        versus = (
            f"ours ({ours_id}) is {times(ratio(ours[index].median, stats.median))} this"
            if ours is not None
            else ""
        )
        rows.append(row(id, what, stats, "adds/s", versus))
    return Section(
        title=f"{title} (dbos {outcome.get('version')}, {settings.reps} reps)",
        rows=tuple(rows),
        notes=(
            "own process, a fresh SQLite file and DBOS launch per rep; the window is 1 hour"
            " so nothing runs. DBOS's debounce keeps only the latest arguments (no fold into"
            " a state). Its SQLite defaults are a rollback journal with synchronous=FULL"
            " (an fsync per commit); 5c/5d switch the file to WAL (synchronous stays FULL).",
        ),
    )


def _run_dbos(settings: Settings) -> dict[str, object]:
    if importlib.util.find_spec("dbos") is None:
        return {"error": "dbos is not installed here (`.venv/bin/pip install -e '.[bench]'`)"}
    arguments = (settings.ids, settings.events_per_id, settings.adders, settings.reps)
    # the folder is ours: a run killed at the timeout cannot remove its own files
    with tempfile.TemporaryDirectory(prefix="bench-dbos-") as folder:
        command = [sys.executable, "-m", "benchmarks.dbos_peer", *map(str, arguments), folder]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=DBOS_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            return {"error": f"the DBOS run did not finish within {DBOS_TIMEOUT} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            parsed: dict[str, object] = json.loads(line.removeprefix("RESULT "))
            return parsed
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"the DBOS process exited with {done.returncode}: {tail}"}


BUSY_AIMS_MS = {"SQLite": 20.0, "PostgreSQL": 50.0}
"""The issue's aims for the p99 of an add while a flush of the same id runs."""


def _busy_rows(prefix: str, backend: str, runs: busy_add.BusyRuns) -> list[Row]:
    aim = BUSY_AIMS_MS[backend]
    calm50 = Stats(tuple(run.p50 for run in runs.calm))
    calm99 = Stats(tuple(run.p99 for run in runs.calm))
    busy50 = Stats(tuple(run.p50 for run in runs.busy))
    busy99 = Stats(tuple(run.p99 for run in runs.busy))
    calm_worst = max(run.worst for run in runs.calm)
    busy_worst = max(run.worst for run in runs.busy)
    adds = min(len(run.samples) for run in runs.busy)
    return [
        row(f"{prefix}1", f"{backend}: p50, no flush running", calm50, "ms", "baseline"),
        row(
            f"{prefix}2",
            f"{backend}: p99, no flush running",
            calm99,
            "ms",
            f"baseline; worst {number(calm_worst)} ms",
        ),
        row(
            f"{prefix}3",
            f"{backend}: p50, during a {busy_add.FLUSH_SECONDS:g} s flush of that id",
            busy50,
            "ms",
            f"{times(ratio(busy50.median, calm50.median))} {prefix}1",
        ),
        row(
            f"{prefix}4",
            f"{backend}: p99, during a {busy_add.FLUSH_SECONDS:g} s flush of that id",
            busy99,
            "ms",
            f"{times(ratio(busy99.median, calm99.median))} {prefix}2; aim < {aim:g} ms:"
            f" {_met(busy99.median < aim)}; worst {number(busy_worst)} ms; {adds}+ adds"
            " per phase",
        ),
    ]


async def busy(settings: Settings) -> Section:
    """Section 9: add latency on one id while a 3 s execute of it runs in a worker process."""
    reps = settings.timed_reps
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-busy-") as folder:
        path = Path(folder) / "jobs.db"
        try:
            runs = await busy_add.measure(
                ["sqlite", str(path)], SqliteStorage(path), reps, settings.busy_adds
            )
        except Exception as error:
            rows.append(missing("9a", "SQLite", f"{type(error).__name__}: {error}"))
        else:
            rows.extend(_busy_rows("9a", "SQLite", runs))
    try:
        from durable_jobs.postgres import PostgresStorage  # noqa: PLC0415

        from . import _pg_server  # noqa: PLC0415

        dsn = _pg_server.shared()
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        runs = await busy_add.measure(
            ["postgres", dsn, schema],
            PostgresStorage(dsn, schema=schema),
            reps,
            settings.busy_adds,
        )
    except Exception as error:
        rows.append(missing("9b", "PostgreSQL", f"{type(error).__name__}: {error}"))
    else:
        rows.extend(_busy_rows("9b", "PostgreSQL", runs))
    return Section(
        title=(
            f"9. `add` on one Debounce id while a {busy_add.FLUSH_SECONDS:g} s `execute` of"
            f" that id runs in a worker process ({settings.busy_adds} adds per phase,"
            f" {reps} rep{'s' if reps > 1 else ''})"
        ),
        rows=tuple(rows),
        notes=(
            "a worker process (`busy_worker.py`, SystemClock, 3 s lease) serves the job;"
            " this process is a client only: `Client(jobs=..., storage=...)` on its own"
            f" storage (same file or schema). Sequential adds, one every"
            f" {busy_add.SPACING * 1000:g} ms, each timed alone. Baseline phase: a fresh id,"
            " no flush running anywhere (the worker idle). Busy phase: a fresh id gets one"
            " event and `flush()`; once the worker prints that `execute` started, the same"
            " number of adds go to that id (they fold into its next batch), within the first"
            f" {busy_add.WINDOW * busy_add.FLUSH_SECONDS:g} s; the rep counts only if"
            " `status()` still shows the flush running after the last add. Even reps run the"
            " baseline phase first, odd reps the flush phase first. p50/p99 are per"
            " rep, the median over reps is shown. Aims from the issue: p99 < 20 ms on"
            " SQLite, < 50 ms on PostgreSQL (0.1.0 measured 2.4-3.0 s on SQLite).",
        ),
    )


OLD_DESIGN = (
    "derived from the 0.1.0 code (e3d0b26), not measured: a run executed inside its"
    " instance block (`_runtime/_continuous.py:137-166`, `on_alarm` → `run_execution`"
    " inside `storage.instance(key)`), and a PostgreSQL block holds its pooled connection"
    " and transaction, with an advisory lock and the row `FOR UPDATE`, from `__aenter__`"
    " to the commit in `__aexit__` (`_storage/_postgres.py:519-590`): one connection, one"
    " open transaction and two locks per running execution"
)


def _activity(counts: "Counts") -> str:
    busy = counts.in_transaction
    locks = counts.locks
    return (
        f"in a transaction: median {number(statistics.median(busy))}, max {max(busy)};"
        f" locks: median {number(statistics.median(locks))}, max {max(locks)}"
    )


async def connections(settings: Settings) -> Section:
    """Section 10: PostgreSQL connections per running execution."""
    del settings  # one size: the counts do not depend on the run's length
    from . import _pg_server  # noqa: PLC0415
    from . import connections as counting  # noqa: PLC0415

    title = "10. PostgreSQL connections a worker process holds per running execution"
    try:
        measured = await counting.measure(_pg_server.shared())
    except Exception as error:
        reason = f"{type(error).__name__}: {error}"
        return Section(title, (missing("10", "connections per running execution", reason),))
    rows: list[Row] = []
    for index, held in enumerate(measured, start=1):
        idle, running = held.idle, held.running
        letter = "abc"[index - 1] if index <= 3 else str(index)
        per = (running.open_median - idle.open_median) / held.held
        rows.append(
            row(
                f"10{letter}1",
                "fresh worker, idle (LISTEN + pool minimum): connections open",
                Stats(tuple(float(n) for n in idle.open)),
                "conns",
                f"baseline; {_activity(idle)}",
            )
        )
        rows.append(
            row(
                f"10{letter}2",
                f"same worker, {held.held} execution{'s' if held.held > 1 else ''} blocked"
                " in an async `execute`: connections open",
                Stats(tuple(float(n) for n in running.open)),
                "conns",
                f"per running execution: {number(per)} (aim 0); {_activity(running)}",
            )
        )
    if measured:
        last = measured[-1]
        derived = last.idle.open_median + last.held
        rows.append(
            Row(
                "10d",
                f"0.1.0 design, {last.held} executions running: connections open",
                number(derived),
                "—",
                "conns",
                f"per running execution: 1 ({OLD_DESIGN})",
            )
        )
    return Section(
        title=title,
        rows=tuple(rows),
        notes=(
            "a worker process (`busy_worker.py`, Engine(concurrency=16), PostgresStorage"
            " with its default pool: min 1, max 20) connects with an application_name of its"
            " own; its backends in pg_stat_activity are counted every"
            f" {counting.SAMPLE_EVERY * 1000:g} ms for {counting.SAMPLE_FOR:g} s, idle and"
            " then while n WorkerPool executions wait on an event (a fresh process for each"
            " n). The lease is 3 s, so the keeper renews (every second) while we count."
            " 'In a transaction': xact_start set; 'locks': pg_locks rows of those backends"
            " other than their virtual transaction id. Per running execution = (median open"
            " while blocked - median open idle) / n.",
        ),
    )


async def run(settings: Settings, only: Sequence[str]) -> list[Section]:
    """Every selected section, in order; a line with the load average as each one starts."""
    sections: list[Section] = []
    ours_adds: tuple[Stats, Stats] | None = None
    for name in SECTIONS:
        if name not in only:
            continue
        # other work on the machine moves the numbers: say how busy it was, per section
        print(f"- {name}: started at load average {load_average()}", flush=True)
        if name == "debounce":
            section, ours_adds = await debounce(settings)
            sections.append(section)
        elif name == "worker":
            sections.append(await continuous(settings))
        elif name == "latency":
            sections.append(await alarm_latency(settings))
        elif name == "runner":
            sections.append(await runner_overhead(settings))
        elif name == "dbos":
            sections.append(peer_dbos(settings, ours_adds))
        elif name == "postgres":
            from .postgres import postgres  # noqa: PLC0415 - imports psycopg only when asked

            sections.extend(await postgres(settings))
        elif name == "busy":
            sections.append(await busy(settings))
        else:
            sections.append(await connections(settings))
    return sections


def versions() -> str:
    """The versions that matter for reading the numbers."""
    parts = [f"Python {sys.version.split()[0]}", f"SQLite {sqlite3.sqlite_version}"]
    for name in ("durable-jobs", "tenacity", "dbos", "procrastinate", "pgqueuer"):
        try:
            parts.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{name} not installed")
    return ", ".join(parts)
