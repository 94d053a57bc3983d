"""
The application the crash tests run in worker subprocesses (`durable-jobs worker crash_app:engine`).

Configured by environment variables so one module serves SQLite and PostgreSQL:

* `CRASH_STORAGE`: `sqlite:<path>` or `postgres:<dsn>`
* `CRASH_SCHEMA`: the PostgreSQL schema (default `crash`)
* `CRASH_SINK`: a SQLite file where every job writes what it did, outside the job storage —
  the ground truth the tests check (a killed worker's effects stay in it).

Every `execute` writes idempotently (`INSERT OR IGNORE` keyed by what it did), and also
appends one row per run to `runs` (instance, pid, start, end) so the tests can check that no
instance ever ran in two places at once.
"""

import asyncio
import os
import sqlite3
import threading
import time
from pathlib import Path

import attrs

from durable_jobs import (
    Backoff,
    Continuous,
    ContinuousContext,
    Debounce,
    DebounceEventContext,
    DebounceExecuteContext,
    Engine,
    Err,
    Ok,
    Result,
    Retry,
    SqliteStorage,
    Storage,
    Task,
    TaskEventContext,
    TaskExecuteContext,
    WorkerPool,
    WorkerPoolContext,
    every,
)


SINK_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (batch TEXT, event TEXT, PRIMARY KEY (event, batch));
CREATE TABLE IF NOT EXISTS runs (
    job TEXT, instance TEXT, pid INTEGER, started REAL, ended REAL
);
CREATE TABLE IF NOT EXISTS ticks (pid INTEGER, at REAL);
CREATE TABLE IF NOT EXISTS fired (task TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS items (item TEXT PRIMARY KEY);
"""


def sink() -> sqlite3.Connection:
    """A connection to the ground-truth file (autocommit, waits for other writers)."""
    db = sqlite3.connect(os.environ["CRASH_SINK"], timeout=30, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    # A killed process loses nothing with synchronous=OFF (only a power cut would).
    db.execute("PRAGMA synchronous=OFF")
    db.executescript(SINK_SCHEMA)
    return db


# One connection per sink file: the test process runs several scenarios, one sink each.
_sinks: dict[str, sqlite3.Connection] = {}


def _write(sql: str, *params: object) -> int:
    path = os.environ["CRASH_SINK"]
    key = f"{path}:{threading.get_ident()}"
    if key not in _sinks:
        _sinks[key] = sink()
    cursor = _sinks[key].execute(sql, params)
    return cursor.lastrowid or 0


async def _observed(job: str, instance: str) -> int:
    """Record the start of a run; a short await lets an overlapping run interleave."""
    run = _write(
        "INSERT INTO runs VALUES (?, ?, ?, ?, NULL)", job, instance, os.getpid(), time.time()
    )
    await asyncio.sleep(0.002)
    return run


def _ended(run: int) -> None:
    _write("UPDATE runs SET ended = ? WHERE rowid = ?", time.time(), run)


class Rejected(Exception):
    """The poison batch is always refused."""


@attrs.frozen
class Batch:
    """The event ids collected in one debounce window."""

    events: tuple[str, ...]


def fold(ctx: DebounceEventContext[str, Batch]) -> Batch:
    return Batch((*(ctx.state.events if ctx.state else ()), ctx.event))


async def deliver(ctx: DebounceExecuteContext[Batch]) -> Result[None, Rejected]:
    run = await _observed("collect", ctx.id)
    if "poison" in ctx.state.events:
        _ended(run)
        return Err(Rejected(ctx.id))
    # The batch id is stable across re-runs of one flush (a sealed batch never changes).
    batch = f"{ctx.id}@{ctx.batch_id}"
    for event in ctx.state.events:
        _write("INSERT OR IGNORE INTO batches VALUES (?, ?)", batch, event)
    _ended(run)
    return Ok(None)


COLLECT = Debounce(
    name="collect",
    event=str,
    state=Batch,
    flush_after="300 milliseconds",
    max_events=7,
    on_event=fold,
    execute=deliver,
    retry=Retry(max_attempts=2, delay=Backoff.fixed("50 milliseconds")),
)


def tick(ctx: ContinuousContext[int]) -> Ok[None]:
    _write("INSERT INTO ticks VALUES (?, ?)", os.getpid(), time.time())
    ctx.set_state(ctx.state + 1)
    return Ok(None)


TICKER = Continuous(name="ticker", state=int, schedule=every("200 milliseconds"), execute=tick)


def arm(ctx: TaskEventContext[str, str]) -> None:
    ctx.set_state(ctx.event)
    ctx.schedule("300 milliseconds")


async def fire(ctx: TaskExecuteContext[str]) -> Ok[None]:
    run = await _observed("reminder", ctx.id)
    _write("INSERT OR IGNORE INTO fired VALUES (?)", ctx.id)
    _ended(run)
    ctx.terminate("fired")


REMINDER = Task(name="reminder", event=str, state=str, on_event=arm, execute=fire)


async def work(ctx: WorkerPoolContext[str]) -> Ok[None]:
    # the unit that must never run twice at once is the event (concurrency is 4)
    run = await _observed("pool", ctx.event)
    _write("INSERT OR IGNORE INTO items VALUES (?)", ctx.event)
    _ended(run)
    return Ok(None)


POOL = WorkerPool(name="pool", event=str, concurrency=4, execute=work)


JOBS = (COLLECT, TICKER, REMINDER, POOL)


def build_engine(storage: Storage) -> Engine[None]:
    """The scenario's engine; a dead worker's leases expire 2 seconds after it died."""
    return Engine(jobs=list(JOBS), storage=storage, lease="2 seconds")


def storage_from_env() -> Storage:
    """`CRASH_STORAGE`: `sqlite:<path>` or `postgres:<dsn>`."""
    kind, _, where = os.environ["CRASH_STORAGE"].partition(":")
    if kind == "sqlite":
        return SqliteStorage(Path(where))
    from durable_jobs.postgres import PostgresStorage

    return PostgresStorage(where, schema=os.environ.get("CRASH_SCHEMA", "crash"), pool_size=8)


def __getattr__(name: str) -> Engine[None]:
    # `engine` is built on first access, so the tests can import the jobs without a storage.
    if name == "engine":
        return build_engine(storage_from_env())
    raise AttributeError(name)
