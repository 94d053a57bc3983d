"""
How long a worker takes to park corrupted rows (not part of `make bench`).

    .venv/bin/python -m benchmarks.park_time

100 Continuous instances, two of them corrupted by hand (SQLite: one with invalid JSON,
one with a state of an old class shape; PostgreSQL, whose JSONB holds only valid JSON:
two of an old shape). A worker with the system clock and the default 30 s lease starts;
the time is from its start until both dead letters are stored, next to the time the
same worker takes to run all 100 healthy instances of a clean database (the baseline,
measured in the same run).
"""

import asyncio
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
import psycopg

from durable_jobs import (
    Continuous,
    ContinuousContext,
    Engine,
    JobEvent,
    Ok,
    Result,
    SqliteStorage,
    every,
)
from durable_jobs._storage._interface import Storage
from durable_jobs.postgres import PostgresStorage

from . import _pg_server


INSTANCES = 100


@attrs.frozen
class Feed:
    """A small state."""

    n: int


@attrs.define
class _Progress:
    """What the worker did, and events set when it is done."""

    ran: set[str] = attrs.field(factory=set)
    letters: int = 0
    healthy: int = INSTANCES
    all_ran: asyncio.Event = attrs.field(factory=asyncio.Event)
    parked: asyncio.Event = attrs.field(factory=asyncio.Event)

    def observe(self, event: JobEvent) -> None:
        if event.type == "job.dead_lettered":
            self.letters += 1
            if self.letters == 2:
                self.parked.set()


progress = _Progress()


async def _tick(ctx: ContinuousContext[Feed]) -> Result[None, Exception]:
    progress.ran.add(ctx.id)
    if len(progress.ran) == progress.healthy:
        progress.all_ran.set()
    return Ok(None)


FEEDS = Continuous(name="feeds", state=Feed, schedule=every("1 hour"), execute=_tick)


async def _time(
    open_storage: Callable[[], Storage],
    corrupt: Callable[[], Awaitable[None]] | None,
) -> tuple[float, float]:
    """(time until both corrupted rows are parked, time until every healthy one ran)."""
    global progress  # noqa: PLW0603 - one measurement at a time
    storage = open_storage()
    engine = Engine(jobs=[FEEDS], storage=storage)
    for n in range(INSTANCES):
        await engine.client.continuous(FEEDS).start(f"f{n}", Feed(n))
    await storage.close()
    if corrupt is not None:
        await corrupt()
    progress = _Progress(healthy=INSTANCES - (0 if corrupt is None else 2))
    storage = open_storage()
    engine = Engine(jobs=[FEEDS], storage=storage, observers=[progress.observe])
    started = time.monotonic()
    async with engine:
        parked = 0.0
        if corrupt is not None:
            await progress.parked.wait()
            parked = time.monotonic() - started
        await progress.all_ran.wait()
        done = time.monotonic() - started
    await storage.close()
    return parked, done


async def _sqlite() -> tuple[float, tuple[float, float]]:
    def at(path: Path) -> Callable[[], Storage]:
        return lambda: SqliteStorage(path)

    _, baseline = await _time(at(Path(tempfile.mkdtemp()) / "jobs.db"), None)
    path = Path(tempfile.mkdtemp()) / "jobs.db"

    async def corrupt() -> None:
        with sqlite3.connect(path) as raw:
            raw.execute("UPDATE instances SET state = '{oops' WHERE id = 'f7'")
            raw.execute("""UPDATE instances SET state = '{"n": "old"}' WHERE id = 'f8'""")

    return baseline, await _time(at(path), corrupt)


async def _postgres() -> tuple[float, tuple[float, float]]:
    dsn = _pg_server.shared()

    def at(schema: str) -> Callable[[], Storage]:
        return lambda: PostgresStorage(dsn, schema=schema)

    _, baseline = await _time(at(f"park_{uuid.uuid4().hex[:12]}"), None)
    schema = f"park_{uuid.uuid4().hex[:12]}"

    async def corrupt() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as raw:
            await raw.execute(
                f"""UPDATE {schema}.instances SET state = '{{"n": "old"}}'"""
                " WHERE id IN ('f7', 'f8')"
            )

    return baseline, await _time(at(schema), corrupt)


async def _main() -> None:
    print(f"{INSTANCES} instances, 2 corrupted; wall time from the worker's start (lease 30 s):\n")
    print("| database | clean: all 100 ran (baseline) | corrupted: 2 parked |", end="")
    print(" corrupted: the 98 others ran | ratio to the baseline |")
    print("| --- | --- | --- | --- | --- |")
    for name, measure in (("SQLite", _sqlite), ("PostgreSQL", _postgres)):
        baseline, (parked, others) = await measure()
        print(f"| {name} | {baseline * 1000:.0f} ms | {parked * 1000:.0f} ms |", end="")
        print(f" {others * 1000:.0f} ms | {others / baseline:.2f} |")


if __name__ == "__main__":
    asyncio.run(_main())
