"""
Continuous executions per second through the worker (`async with engine:`) on SQLite.

A `Continuous` job on `every("1 ms")` runs on the real clock; executions are counted over a
fixed wall time after a short warm-up. The baseline is a minimal sqlite3 scheduler loop
doing per execution what a durable scheduler must: claim the earliest due row (lease it),
read and decode its state, run the function, encode the state, write it with the next
alarm and no lease, each step in its own committed transaction.
"""

import asyncio
import json
import sqlite3
import tempfile
import time
from pathlib import Path

import attrs

from durable_jobs import Continuous, ContinuousContext, Engine, Ok, Result, SqliteStorage, every

from ._harness import Settings, Stats, quiet


WARM_UP = 0.3
"""Seconds the worker runs before counting starts."""


@attrs.frozen
class Tick:
    """The continuous job's state."""

    label: str


class Counter:
    """Counts executions; `execute` only increments it."""

    def __init__(self) -> None:
        self.count = 0

    def execute(self, ctx: ContinuousContext[Tick]) -> Result[None, Exception]:
        self.count += 1
        return Ok(None)


async def _ours_once(settings: Settings, instances: int, concurrency: int) -> float:
    counter = Counter()
    job = Continuous(
        name="ticks",
        state=Tick,
        schedule=every("1 ms"),
        execute=counter.execute,
        start_immediately=False,
    )
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as folder:
        storage = SqliteStorage(Path(folder) / "jobs.db")
        engine = Engine(jobs=[job], storage=storage, concurrency=concurrency)
        client = engine.client.continuous(job)
        for index in range(instances):
            await client.start(f"tick-{index}", Tick(f"tick-{index}"))
        async with engine:
            await asyncio.sleep(WARM_UP)
            quiet()
            before, start = counter.count, time.perf_counter()
            await asyncio.sleep(settings.worker_seconds)
            done, elapsed = counter.count - before, time.perf_counter() - start
        await storage.close()
    return done / elapsed


async def ours(settings: Settings, *, instances: int, concurrency: int = 16) -> Stats:
    """Executions per second of `instances` instances sharing one worker."""
    rates = [await _ours_once(settings, instances, concurrency) for _ in range(settings.timed_reps)]
    return Stats(tuple(rates))


class MinimalScheduler:
    """The least storage work per scheduled execution, by hand on sqlite3 (WAL, NORMAL)."""

    def __init__(self, path: Path, instances: int) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, state TEXT NOT NULL,"
            " alarm_at INTEGER, lease_until INTEGER) WITHOUT ROWID"
        )
        self.conn.execute("CREATE INDEX jobs_alarm ON jobs (alarm_at)")
        now = _now_us()
        self.conn.executemany(
            "INSERT INTO jobs VALUES (?, ?, ?, NULL)",
            [(f"tick-{i}", json.dumps({"label": f"tick-{i}"}), now) for i in range(instances)],
        )
        self.count = 0

    def step(self) -> None:
        """Claim the earliest due row, run it, reschedule it (alarms here are always due)."""
        conn = self.conn
        now = _now_us()
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute(
            "SELECT id FROM jobs WHERE alarm_at <= ? AND (lease_until IS NULL OR lease_until <= ?)"
            " ORDER BY alarm_at LIMIT 1",
            (now, now),
        ).fetchone()
        conn.execute("UPDATE jobs SET lease_until = ? WHERE id = ?", (now + 300_000_000, row[0]))
        conn.execute("COMMIT")
        conn.execute("BEGIN IMMEDIATE")
        (text,) = conn.execute("SELECT state FROM jobs WHERE id = ?", (row[0],)).fetchone()
        state = json.loads(text)
        self.count += 1  # the "execute"
        conn.execute(
            "UPDATE jobs SET state = ?, alarm_at = ?, lease_until = NULL WHERE id = ?",
            (json.dumps(state, separators=(",", ":")), now, row[0]),
        )
        conn.execute("COMMIT")


def minimal(settings: Settings, *, instances: int = 32) -> Stats:
    """Executions per second of the minimal scheduler loop (always due: an upper bound)."""
    rates: list[float] = []
    for _ in range(settings.timed_reps):
        with tempfile.TemporaryDirectory(prefix="bench-minimal-") as folder:
            scheduler = MinimalScheduler(Path(folder) / "minimal.db", instances)
            quiet()
            start = time.perf_counter()
            deadline = start + settings.worker_seconds / 4
            while time.perf_counter() < deadline:
                scheduler.step()
            rates.append(scheduler.count / (time.perf_counter() - start))
            scheduler.conn.close()
    return Stats(tuple(rates))


def _now_us() -> int:
    return time.time_ns() // 1000
