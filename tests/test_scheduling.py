"""
Scheduling features through the public API, driven by TestClock: delayed work
(`not_before`), execution timeouts, cancelling a running pool event.
"""

import asyncio
from collections.abc import Awaitable
from datetime import timedelta
from typing import TypeVar

import attrs
import pytest

from durable_jobs import (
    Continuous,
    ContinuousContext,
    Engine,
    JobEvent,
    MemoryStorage,
    Ok,
    Result,
    ValidationError,
    WorkerPool,
    WorkerPoolContext,
    every,
)
from durable_jobs.testing import DEFAULT_START, TestClock


T = TypeVar("T")
T0 = DEFAULT_START
GUARD = 10.0
"""Seconds a test waits at most for a task or thread it expects (a hang guard, no timing)."""


async def promptly(awaitable: Awaitable[T]) -> T:
    async with asyncio.timeout(GUARD):
        return await awaitable


@attrs.frozen
class Job:
    label: str


@attrs.frozen
class Counter:
    n: int


def of_type(events: list[JobEvent], type_: str) -> list[JobEvent]:
    return [e for e in events if e.type == type_]


# -- delayed work ----------------------------------------------------------------------------


async def test_a_delayed_event_waits_for_its_time_and_shows_as_delayed(clock: TestClock) -> None:
    runs: list[tuple[str, object]] = []

    def execute(ctx: WorkerPoolContext[Job]) -> Result[None, str]:
        runs.append((ctx.event.label, ctx.now))
        return Ok(None)

    job = WorkerPool(name="mail", event=Job, concurrency=5, execute=execute)
    pool = Engine(jobs=[job], storage=MemoryStorage(), clock=clock).client.worker_pool(job)
    await pool.enqueue(Job("later"), not_before="10 minutes")
    await pool.enqueue(Job("at"), not_before=T0 + timedelta(minutes=5))
    await pool.enqueue(Job("now"))
    await pool.enqueue(Job("past"), not_before=T0 - timedelta(days=1))
    status = await pool.status()
    assert (status.queued, status.delayed, status.pending) == (2, 2, 4)

    await clock.run_due()
    assert [label for label, _ in runs] == ["now", "past"]
    await clock.advance("10 minutes")
    assert runs[2:] == [("at", T0 + timedelta(minutes=5)), ("later", T0 + timedelta(minutes=10))]
    status = await pool.status()
    assert (status.delayed, status.pending, status.processed) == (0, 0, 4)


async def test_a_delayed_event_holds_its_partition_key(clock: TestClock) -> None:
    runs: list[str] = []

    def execute(ctx: WorkerPoolContext[Job]) -> Result[None, str]:
        runs.append(ctx.event.label)
        return Ok(None)

    job = WorkerPool(name="mail", event=Job, concurrency=5, execute=execute)
    pool = Engine(jobs=[job], storage=MemoryStorage(), clock=clock).client.worker_pool(job)
    await pool.enqueue_many([Job("a1"), Job("a2")], partition_key="a", not_before="1 minute")
    await pool.enqueue(Job("a3"), partition_key="a")
    await clock.run_due()
    assert runs == []
    await clock.advance("1 minute")
    assert runs == ["a1", "a2", "a3"]


async def test_not_before_must_be_a_duration_or_an_aware_time(clock: TestClock) -> None:
    job = WorkerPool(name="mail", event=Job, concurrency=1, execute=lambda ctx: Ok(None))
    pool = Engine(jobs=[job], storage=MemoryStorage(), clock=clock).client.worker_pool(job)
    with pytest.raises(ValidationError, match="not_before"):
        await pool.enqueue(Job("x"), not_before=T0.replace(tzinfo=None))
    with pytest.raises(ValidationError, match="not_before"):
        await pool.enqueue(Job("x"), not_before="soon")
    assert (await pool.status()).pending == 0


async def test_a_continuous_start_not_before_delays_its_first_run(clock: TestClock) -> None:
    runs: list[object] = []

    def execute(ctx: ContinuousContext[Counter]) -> Result[None, str]:
        runs.append(ctx.now)
        return Ok(None)

    job = Continuous(name="sync", state=Counter, schedule=every("1 hour"), execute=execute)
    lazy = Continuous(
        name="lazy",
        state=Counter,
        schedule=every("1 hour"),
        execute=execute,
        start_immediately=False,
    )
    client = Engine(jobs=[job, lazy], storage=MemoryStorage(), clock=clock).client
    started = await client.continuous(job).start("a", Counter(0), not_before="30 minutes")
    assert started.next_run_at == T0 + timedelta(minutes=30)
    assert (await client.continuous(job).status("a")).next_run_at == T0 + timedelta(minutes=30)
    later = await client.continuous(lazy).start("b", Counter(0), not_before="30 minutes")
    assert later.next_run_at == T0 + timedelta(minutes=90)  # the schedule's first time after
    await clock.run_due()
    assert runs == []
    await clock.advance("30 minutes")
    assert runs == [T0 + timedelta(minutes=30)]
    await clock.advance("1 hour")
    # "a" once more an hour after its first run, and "b" for the first time
    assert runs == [T0 + timedelta(minutes=n) for n in (30, 90, 90)]
