"""
Remembered event ids expire: the worker forgets those older than `event_id_retention`.

Never forgotten, whatever their age: the id of an event still queued, and the ids folded into
a Debounce batch that has not flushed (a repeat must not be folded twice).
"""

import attrs
import pytest

from durable_jobs import (
    Debounce,
    DebounceEventContext,
    DebounceExecuteContext,
    Engine,
    InvalidDefinitionError,
    MemoryStorage,
    Ok,
    Result,
    Task,
    TaskEventContext,
    TaskExecuteContext,
    WorkerPool,
    WorkerPoolContext,
)
from durable_jobs.testing import TestClock


@attrs.frozen
class Ping:
    n: int


def count(ctx: DebounceEventContext[Ping, int]) -> int:
    return (ctx.state or 0) + 1


def keep(ctx: TaskEventContext[Ping, int]) -> None:
    ctx.set_state((ctx.state or 0) + ctx.event.n)


async def flush(ctx: DebounceExecuteContext[int]) -> Result[None, Exception]:
    del ctx
    return Ok(None)


async def run(ctx: TaskExecuteContext[int]) -> Result[None, Exception]:
    del ctx
    return Ok(None)


async def ship(ctx: WorkerPoolContext[Ping]) -> Result[None, Exception]:
    del ctx
    return Ok(None)


slow = Debounce(
    name="slow", event=Ping, state=int, flush_after="30 days", on_event=count, execute=flush
)
tasks = Task(name="tasks", event=Ping, state=int, on_event=keep, execute=run)
pool = WorkerPool(name="pool", event=Ping, concurrency=1, execute=ship)
held = WorkerPool(name="held", event=Ping, concurrency=1, execute=ship)


async def test_event_ids_older_than_the_window_are_forgotten(clock: TestClock) -> None:
    storage = MemoryStorage()
    engine = Engine(
        jobs=[slow, tasks, pool, held],
        storage=storage,
        clock=clock,
        event_id_retention="7 days",
    )
    client = engine.client
    await client.worker_pool(pool).enqueue(Ping(1), event_id="ran")
    await client.task(tasks).send("t", Ping(1), event_id="applied")
    await client.worker_pool(held).pause()
    await client.worker_pool(held).enqueue(Ping(1), event_id="waiting")
    await client.debounce(slow).add("d", Ping(1), event_id="folded")
    await clock.run_due()
    for _ in range(6):  # one day at a time: inside the window, every id is remembered
        await clock.advance("1 day")
        assert (await client.worker_pool(pool).enqueue(Ping(1), event_id="ran")).duplicate
    await clock.advance("2 days")
    await clock.run_due()
    assert not (await client.worker_pool(pool).enqueue(Ping(2), event_id="ran")).duplicate
    assert (await client.task(tasks).send("t", Ping(2), event_id="applied")).status == "applied"
    # still queued, still in an open batch: remembered whatever their age
    assert (await client.worker_pool(held).enqueue(Ping(2), event_id="waiting")).duplicate
    assert (await client.debounce(slow).add("d", Ping(2), event_id="folded")).duplicate
    assert await client.debounce(slow).get_state("d") == 1


def test_the_retention_window_must_be_positive() -> None:
    with pytest.raises(InvalidDefinitionError, match="event_id_retention"):
        Engine(jobs=[pool], storage=MemoryStorage(), event_id_retention="0 seconds")
