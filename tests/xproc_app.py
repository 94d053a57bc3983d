"""
The application of the cross-process tests (`durable-jobs worker xproc_app:engine`).

Configured by environment variables so one module serves SQLite and PostgreSQL:

* `XPROC_STORAGE`: `sqlite:<path>` or `postgres:<dsn>` (the DSN may set `application_name`,
  so a test can find this worker's server connections)
* `XPROC_SCHEMA`: the PostgreSQL schema
* `XPROC_SINK`: a SQLite file where every callback writes what it did and in which process:
  the ground truth the tests read (it survives a killed worker)
* `XPROC_LEASE`: the engine's lease (default "30 seconds")
* `XPROC_HOLD`: seconds a slow callback runs (default 3)
"""

import asyncio
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import attrs

from durable_jobs import (
    Continuous,
    ContinuousContext,
    Debounce,
    DebounceEventContext,
    DebounceExecuteContext,
    Engine,
    Ok,
    RateLimit,
    SqliteStorage,
    Storage,
    WorkerPool,
    WorkerPoolContext,
    every,
)
from durable_jobs._storage._interface import InstanceKey, ItemClaim, PoolRate
from durable_jobs.postgres import PostgresStorage


SINK_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    job TEXT, instance TEXT, batch TEXT, events INTEGER, pid INTEGER, started REAL, ended REAL
);
CREATE TABLE IF NOT EXISTS claims (job TEXT, event_id TEXT, pid INTEGER, at REAL);
"""


@attrs.frozen
class Batch:
    """The events of one debounce batch."""

    events: tuple[str, ...]


def _sink() -> sqlite3.Connection:
    db = sqlite3.connect(os.environ["XPROC_SINK"], timeout=30, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SINK_SCHEMA)
    return db


def started(job: str, instance: str, batch: str = "", events: int = 0) -> int:
    """Record the start of a run (before the slow part); returns its row id."""
    with _sink() as db:
        cursor = db.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, NULL)",
            (job, instance, batch, events, os.getpid(), time.time()),
        )
        return cursor.lastrowid or 0


def ended(run: int) -> None:
    """Record the end of a run."""
    with _sink() as db:
        db.execute("UPDATE runs SET ended = ? WHERE rowid = ?", (time.time(), run))


def hold() -> float:
    """How long a slow callback runs, in seconds."""
    return float(os.environ.get("XPROC_HOLD", "3"))


def fold(ctx: DebounceEventContext[str, Batch]) -> Batch:
    return Batch((*(ctx.state.events if ctx.state else ()), ctx.event))


async def slow_flush(ctx: DebounceExecuteContext[Batch]) -> Ok[None]:
    """An async flush that takes `XPROC_HOLD` seconds."""
    run = started("slow", ctx.id, ctx.batch_id, len(ctx.state.events))
    await asyncio.sleep(hold())
    ended(run)
    return Ok(None)


SLOW = Debounce(
    name="slow",
    event=str,
    state=Batch,
    flush_after="1 hour",
    max_events=3,
    on_event=fold,
    execute=slow_flush,
)


def blocking_tick(ctx: ContinuousContext[int]) -> Ok[None]:
    """A sync run that blocks its thread for `XPROC_HOLD` seconds (longer than the lease)."""
    run = started("blocking", ctx.id)
    time.sleep(hold())
    ctx.set_state(ctx.state + 1)
    ended(run)
    return Ok(None)


BLOCKING = Continuous(
    name="blocking",
    state=int,
    schedule=every("1 hour"),
    execute=blocking_tick,
)


async def async_tick(ctx: ContinuousContext[int]) -> Ok[None]:
    """An async run of `XPROC_HOLD` seconds."""
    run = started("waiting", ctx.id)
    await asyncio.sleep(hold())
    ctx.set_state(ctx.state + 1)
    ended(run)
    return Ok(None)


WAITING = Continuous(
    name="waiting",
    state=int,
    schedule=every("1 hour"),
    execute=async_tick,
)


def stamp(ctx: ContinuousContext[int]) -> Ok[None]:
    """A sync run that leaves its process id as the state (whose result was applied?)."""
    run = started("stamp", ctx.id)
    time.sleep(hold())
    ctx.set_state(os.getpid())
    ended(run)
    return Ok(None)


STAMP = Continuous(name="stamp", state=int, schedule=every("1 hour"), execute=stamp)


def _ran_before(job: str, instance: str) -> bool:
    with _sink() as db:
        row = db.execute(
            "SELECT 1 FROM runs WHERE job = ? AND instance = ?", (job, instance)
        ).fetchone()
    return row is not None


def sleepy_tick(ctx: ContinuousContext[int]) -> Ok[None]:
    """A sync run whose first attempt blocks `XPROC_HOLD` s, past its 1 s timeout."""
    first = not _ran_before("sleepy", ctx.id)
    run = started("sleepy", ctx.id)
    if first:
        time.sleep(hold())
    ctx.set_state(ctx.state + 1)
    ended(run)
    return Ok(None)


SLEEPY = Continuous(
    name="sleepy",
    state=int,
    schedule=every("1 hour"),
    execute=sleepy_tick,
    timeout="1 second",
)


def rated_call(ctx: WorkerPoolContext[str]) -> Ok[None]:
    """A quick pool event of the rate-limited pool."""
    ended(started("rated", ctx.event_id))
    return Ok(None)


RATED = WorkerPool(
    name="rated",
    event=str,
    concurrency=10,
    execute=rated_call,
    rate_limit=RateLimit(limit=3, period="1 second"),
)

JOBS = (SLOW, BLOCKING, WAITING, STAMP, SLEEPY, RATED)


class _RecordsClaims:
    """Mixed into a storage: records every claim of a pool event with its engine time."""

    async def claim_items(
        self,
        pools: Mapping[InstanceKey, int],
        now: datetime,
        *,
        limit: int,
        lease: timedelta,
        rates: Mapping[InstanceKey, PoolRate] | None = None,
    ) -> Sequence[ItemClaim]:
        """Claim (see `Storage.claim_items`), then write each claim to the sink."""
        # the storage class it is mixed into comes next in the method resolution order
        claims: Sequence[ItemClaim] = await super().claim_items(
            pools, now, limit=limit, lease=lease, rates=rates
        )
        if claims:
            rows = [(c.pool.job, c.item.event_id, os.getpid(), now.timestamp()) for c in claims]
            with _sink() as db:
                db.executemany("INSERT INTO claims VALUES (?, ?, ?, ?)", rows)
        return claims


class RecordingPostgres(_RecordsClaims, PostgresStorage):
    """PostgreSQL storage that records every claim of a pool event with its engine time."""


class RecordingSqlite(_RecordsClaims, SqliteStorage):
    """SQLite storage that records every claim of a pool event with its engine time."""


def storage_from_env() -> Storage:
    """`XPROC_STORAGE`: `sqlite:<path>` or `postgres:<dsn>`."""
    kind, _, where = os.environ["XPROC_STORAGE"].partition(":")
    if kind == "sqlite":
        return RecordingSqlite(Path(where))
    return RecordingPostgres(where, schema=os.environ["XPROC_SCHEMA"], pool_size=4)


def build_engine(storage: Storage) -> Engine[None]:
    """The workers' engine."""
    return Engine(
        jobs=list(JOBS), storage=storage, lease=os.environ.get("XPROC_LEASE", "30 seconds")
    )


def __getattr__(name: str) -> Engine[None]:
    # `engine` is built on first access, so the tests can import the jobs without a storage.
    if name == "engine":
        return build_engine(storage_from_env())
    raise AttributeError(name)
