"""
Debounce `add` throughput on SQLite, against a minimal hand-written sqlite3 loop.

Each repetition starts from an empty database file in a fresh temporary directory and adds
`events_per_id` events to each of `ids` ids, round by round (so each batch grows by one event
per round). The engine runs on `TestClock`: no window ends, nothing flushes, only `add` is
timed.
"""

import asyncio
import json
import sqlite3
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from durable_jobs import Engine, MemoryStorage, SqliteStorage, Storage
from durable_jobs.testing import TestClock

from ._harness import Settings, Stats, quiet
from ._workloads import Click, debounce_job, shard, stream


ALARM_DELAY_US = 3_600_000_000
"""The minimal loop's alarm: one hour after the first event, like the engine's window."""


async def _ours_once(settings: Settings, storage: Storage, *, adders: int) -> float:
    """Adds per second of one repetition on `storage` (opened and closed here)."""
    job = debounce_job()
    engine = Engine(jobs=[job], storage=storage, clock=TestClock())
    client = engine.client.debounce(job)
    if isinstance(storage, SqliteStorage):
        await storage.open()  # file creation and schema are not part of the measurement

    async def adder(index: int) -> None:
        for id, click in shard(settings.ids, settings.events_per_id, index, adders):
            await client.add(id, click)

    total = settings.ids * settings.events_per_id
    quiet()
    start = time.perf_counter()
    if adders == 1:
        for id, click in stream(settings.ids, settings.events_per_id):
            await client.add(id, click)
    else:
        await asyncio.gather(*(adder(index) for index in range(adders)))
    elapsed = time.perf_counter() - start
    if isinstance(storage, SqliteStorage):
        await storage.close()
    return total / elapsed


async def ours_sqlite(settings: Settings, *, adders: int = 1) -> Stats:
    """Our `add` on `SqliteStorage`, sequential (`adders=1`) or from concurrent adders."""
    rates: list[float] = []
    for _ in range(settings.reps):
        with tempfile.TemporaryDirectory(prefix="bench-ours-") as folder:
            storage = SqliteStorage(Path(folder) / "jobs.db")
            rates.append(await _ours_once(settings, storage, adders=adders))
    return Stats(tuple(rates))


async def ours_memory(settings: Settings) -> Stats:
    """Our `add` on `MemoryStorage`: the engine's own cost, without SQLite or a thread."""
    rates = [await _ours_once(settings, MemoryStorage(), adders=1) for _ in range(settings.reps)]
    return Stats(tuple(rates))


class MinimalDebounce:
    """
    The least storage work one debounce event needs, written by hand on sqlite3.

    WAL, `synchronous=NORMAL`, one connection; per event one write transaction that reads
    the state row, JSON-decodes it, appends the event, JSON-encodes it, writes the row,
    sets the alarm column if unset, and commits.
    """

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS batches"
            " (id TEXT PRIMARY KEY, state TEXT NOT NULL, alarm_at INTEGER) WITHOUT ROWID"
        )

    def add(self, id: str, click: Click) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute("SELECT state FROM batches WHERE id = ?", (id,)).fetchone()
        state: dict[str, list[object]] = json.loads(row[0]) if row is not None else {"clicks": []}
        state["clicks"].append({"user": click.user, "n": click.n})
        text = json.dumps(state, separators=(",", ":"))
        conn.execute(
            "INSERT INTO batches (id, state) VALUES (?, ?)"
            " ON CONFLICT (id) DO UPDATE SET state = excluded.state",
            (id, text),
        )
        due = int(time.time() * 1_000_000) + ALARM_DELAY_US
        conn.execute("UPDATE batches SET alarm_at = COALESCE(alarm_at, ?) WHERE id = ?", (due, id))
        conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


def _minimal_once(run: Callable[[MinimalDebounce], float]) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-minimal-") as folder:
        db = MinimalDebounce(Path(folder) / "minimal.db")
        try:
            return run(db)
        finally:
            db.close()


def minimal_sqlite(settings: Settings) -> Stats:
    """The minimal loop, synchronous on the calling thread (the baseline)."""

    def run(db: MinimalDebounce) -> float:
        events = list(stream(settings.ids, settings.events_per_id))
        quiet()
        start = time.perf_counter()
        for id, click in events:
            db.add(id, click)
        return len(events) / (time.perf_counter() - start)

    return Stats(tuple(_minimal_once(run) for _ in range(settings.reps)))


async def minimal_sqlite_on_thread(settings: Settings) -> Stats:
    """The minimal loop with one event-loop → thread → event-loop hop per event."""
    loop = asyncio.get_running_loop()
    rates: list[float] = []
    for _ in range(settings.reps):
        with (
            tempfile.TemporaryDirectory(prefix="bench-minimal-") as folder,
            ThreadPoolExecutor(1) as executor,
        ):
            db = await loop.run_in_executor(executor, MinimalDebounce, Path(folder) / "m.db")
            events = list(stream(settings.ids, settings.events_per_id))
            quiet()
            start = time.perf_counter()
            for id, click in events:
                await loop.run_in_executor(executor, db.add, id, click)
            rates.append(len(events) / (time.perf_counter() - start))
            await loop.run_in_executor(executor, db.close)
    return Stats(tuple(rates))
