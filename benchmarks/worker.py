"""
Executions per second through the worker (`async with engine:`) on SQLite.

`ours`: a `Continuous` job on `every("1 ms")` runs on the real clock; executions are
counted over a fixed wall time after a short warm-up. `drained`: each kind drains due work
queued up front (see `kinds.py`). The baseline of both is the minimal claim -> run ->
finish loop of `minimal.py` draining as many due rows.
"""

import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import attrs

from durable_jobs import (
    Continuous,
    ContinuousContext,
    Engine,
    Ok,
    Result,
    SqliteStorage,
    Storage,
    every,
)

from . import kinds, minimal
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


@contextlib.asynccontextmanager
async def _fresh_file() -> AsyncIterator[Storage]:
    with tempfile.TemporaryDirectory(prefix="bench-kinds-") as folder:
        yield SqliteStorage(Path(folder) / "jobs.db")


async def drained(settings: Settings, kind: kinds.Kind, *, sync: bool = False) -> kinds.Drained:
    """Executions per second of the worker draining due work of `kind` on SQLite."""
    return await kinds.repeat(
        kind, _fresh_file, settings.drain_items, settings.timed_reps, sync=sync
    )


def minimal_loop(settings: Settings) -> Stats:
    """The minimal claim -> run -> finish loop draining as many due rows on SQLite."""
    return Stats(
        tuple(minimal.sqlite_loop(settings.drain_items) for _ in range(settings.timed_reps))
    )
