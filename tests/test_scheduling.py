"""
Scheduling features through the public API, driven by TestClock: delayed work
(`not_before`), execution timeouts, cancelling a running pool event.
"""

import asyncio
import threading
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

import attrs
import pytest

from durable_jobs import (
    Continuous,
    ContinuousContext,
    Debounce,
    DebounceEventContext,
    DebounceExecuteContext,
    DefectPolicy,
    Engine,
    Err,
    ErrorContext,
    InvalidDefinitionError,
    JobEvent,
    MemoryStorage,
    Ok,
    RateLimit,
    Result,
    Retry,
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


# -- execution timeouts ----------------------------------------------------------------------


async def until(condition: Callable[[], bool]) -> None:
    """Let other tasks run until `condition()` holds (bounded by the guard, no timing)."""
    async with asyncio.timeout(GUARD):
        # what it waits for is set by other tasks, or by a thread: no event to await
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0)


class Refused(Exception):
    pass


async def test_an_async_execute_past_its_timeout_is_a_defect_never_an_e(
    clock: TestClock,
) -> None:
    started = asyncio.Event()
    handled: list[Refused] = []

    async def execute(ctx: ContinuousContext[Counter]) -> Result[None, Refused]:
        ctx.set_state(Counter(ctx.state.n + 1))  # discarded with the attempt
        if not started.is_set():
            started.set()
            await asyncio.Event().wait()  # hangs: the timeout cancels it
        return Ok(None)

    def on_error(e: Refused, ctx: ErrorContext[Counter]) -> None:
        handled.append(e)

    job = Continuous(
        name="sync",
        state=Counter,
        schedule=every("1 hour"),
        execute=execute,
        on_error=on_error,
        timeout="30 seconds",
    )
    events: list[JobEvent] = []
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock, observers=[events.append])
    client = engine.client.continuous(job)
    await client.start("a", Counter(0))
    worker = asyncio.create_task(clock.run_due())
    await promptly(started.wait())
    clock.set(T0 + timedelta(seconds=30))
    await promptly(worker)

    (failed,) = of_type(events, "job.failed")
    assert (failed.defect, failed.reason, failed.will_retry) == (True, "timeout", True)
    assert failed.error == "TimeoutError: execute ran longer than its timeout (30 s)"
    status = await client.status("a")
    assert (status.status, status.run_count) == ("retrying", 1)  # run 1, to be retried
    assert await client.get_state("a") == Counter(0)
    await clock.advance("1 second")  # the defect policy's first retry
    assert await client.get_state("a") == Counter(1)
    assert handled == []  # on_error only ever sees an E


async def test_a_sync_execute_past_its_timeout_holds_its_key_until_its_thread_returns(
    clock: TestClock,
) -> None:
    go = threading.Event()
    runs: list[str] = []

    def execute(ctx: WorkerPoolContext[Job]) -> Result[None, str]:
        runs.append(ctx.event.label)
        if ctx.event.label == "slow":
            go.wait(GUARD)  # a sync execute cannot be stopped
        return Ok(None)

    job = WorkerPool(name="mail", event=Job, concurrency=5, execute=execute, timeout=5)
    events: list[JobEvent] = []
    engine = Engine(
        jobs=[job],
        storage=MemoryStorage(),
        clock=clock,
        observers=[events.append],
        defect_policy=DefectPolicy(max_retries=0),
    )
    pool = engine.client.worker_pool(job)
    await pool.enqueue(Job("slow"), partition_key="k")
    await pool.enqueue(Job("next"), partition_key="k")
    worker = asyncio.create_task(clock.run_due())
    await until(lambda: runs == ["slow"])
    clock.set(T0 + timedelta(seconds=5))
    await until(lambda: engine.abandoned_threads == 1)
    status = await pool.status()
    assert (status.running, status.abandoned, status.queued) == (1, 1, 1)  # "next" waits
    assert runs == ["slow"]

    go.set()
    await promptly(worker)
    assert engine.abandoned_threads == 0
    (letter,) = await engine.dead_letters()
    assert (letter.reason, letter.event) == ("timeout", {"label": "slow"})
    assert [e.reason for e in of_type(events, "job.failed")] == ["timeout"]
    await clock.run_due()
    assert runs == ["slow", "next"]
    status = await pool.status()
    assert (status.pending, status.processed) == (0, 1)


def test_a_timeout_must_be_a_positive_duration() -> None:
    with pytest.raises(InvalidDefinitionError, match="timeout"):
        WorkerPool(name="p", event=Job, concurrency=1, execute=lambda ctx: Ok(None), timeout=0)
    with pytest.raises(InvalidDefinitionError, match="timeout"):
        Continuous(
            name="c",
            state=Counter,
            schedule=every("1 hour"),
            execute=lambda ctx: Ok(None),
            timeout="soon",
        )


# -- cancelling a running pool event ---------------------------------------------------------


async def test_cancelling_a_running_async_event_stops_it_and_records_it_cancelled(
    clock: TestClock,
) -> None:
    started = asyncio.Event()
    unwound: list[str] = []

    async def execute(ctx: WorkerPoolContext[Job]) -> Result[None, str]:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            unwound.append(ctx.event.label)
            raise
        return Ok(None)

    retry: Retry[str] = Retry(max_attempts=5, delay="1 second")
    job = WorkerPool(name="mail", event=Job, concurrency=1, execute=execute, retry=retry)
    events: list[JobEvent] = []
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock, observers=[events.append])
    pool = engine.client.worker_pool(job)
    queued = await pool.enqueue(Job("a"))
    worker = asyncio.create_task(clock.run_due())
    await promptly(started.wait())
    assert (await pool.cancel(queued.event_id)).status == "running"
    await promptly(worker)

    assert unwound == ["a"]
    assert [(e.type, e.event_id) for e in events if e.type.startswith("job.")] == [
        ("job.cancelled", queued.event_id)
    ]
    await clock.advance("1 hour")  # never retried
    status = await pool.status()
    assert (status.pending, status.processed, status.cancelled) == (0, 0, 1)
    assert await engine.dead_letters() == []


async def test_a_cancelled_sync_event_sees_ctx_cancelled_and_is_never_retried(
    clock: TestClock,
) -> None:
    go = threading.Event()
    seen: list[bool] = []

    def execute(ctx: WorkerPoolContext[Job]) -> Result[None, str]:
        seen.append(ctx.cancelled)
        go.wait(GUARD)
        seen.append(ctx.cancelled)
        return Err("gave up")  # would be retried, were it not cancelled

    retry: Retry[str] = Retry(max_attempts=5, delay="1 second")
    job = WorkerPool(name="mail", event=Job, concurrency=1, execute=execute, retry=retry)
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    pool = engine.client.worker_pool(job)
    queued = await pool.enqueue(Job("a"))
    worker = asyncio.create_task(clock.run_due())
    await until(lambda: seen == [False])
    assert (await pool.cancel(queued.event_id)).status == "running"
    await until(lambda: engine.abandoned_threads == 1)  # stopped; its thread still runs
    assert (await pool.status()).abandoned == 1
    go.set()
    await promptly(worker)

    assert seen == [False, True]
    await clock.advance("1 hour")
    status = await pool.status()
    assert (status.pending, status.cancelled) == (0, 1)


# -- quiet-period debounce -------------------------------------------------------------------


async def test_a_quiet_period_debounce_flushes_once_events_stop_or_at_its_cap(
    clock: TestClock,
) -> None:
    flushed: list[tuple[tuple[str, ...], object, str]] = []

    def fold(ctx: DebounceEventContext[str, tuple[str, ...]]) -> tuple[str, ...]:
        return (*(ctx.state or ()), ctx.event)

    def execute(ctx: DebounceExecuteContext[tuple[str, ...]]) -> Result[None, str]:
        flushed.append((ctx.state, ctx.now, ctx.flush_reason))
        return Ok(None)

    job = Debounce(
        name="typing",
        event=str,
        state=tuple,
        on_event=fold,
        execute=execute,
        flush_after="60 seconds",
        quiet=True,
        max_wait="150 seconds",
    )
    client = Engine(jobs=[job], storage=MemoryStorage(), clock=clock).client.debounce(job)
    first = await client.add("a", "h")
    assert first.will_flush_at == T0 + timedelta(seconds=60)
    await clock.advance("50 seconds")
    assert (await client.add("a", "e")).will_flush_at == T0 + timedelta(seconds=110)
    await clock.advance("50 seconds")
    # the quiet period would end at 160 s: the cap (150 s after the first event) comes first
    assert (await client.add("a", "y")).will_flush_at == T0 + timedelta(seconds=150)
    await clock.advance("49 seconds")
    assert flushed == []
    await clock.advance("1 second")
    assert flushed == [(("h", "e", "y"), T0 + timedelta(seconds=150), "flush_after")]

    await client.add("b", "x")  # a lone event flushes once the quiet period is over
    await clock.advance("60 seconds")
    assert flushed[1:] == [(("x",), T0 + timedelta(seconds=210), "flush_after")]


def test_a_quiet_period_needs_a_cap_and_only_it_takes_one() -> None:
    def execute(ctx: DebounceExecuteContext[str]) -> Result[None, str]:
        return Ok(None)

    with pytest.raises(InvalidDefinitionError, match="max_wait"):
        Debounce(name="d", event=str, flush_after=60, execute=execute, quiet=True)
    with pytest.raises(InvalidDefinitionError, match="max_wait"):
        Debounce(name="d", event=str, flush_after=60, execute=execute, max_wait=120)
    with pytest.raises(InvalidDefinitionError, match="max_wait"):
        Debounce(name="d", event=str, flush_after=60, execute=execute, quiet=True, max_wait=30)


# -- rate limits -----------------------------------------------------------------------------


async def test_a_rate_limit_bounds_the_starts_per_period(clock: TestClock) -> None:
    starts: list[tuple[str, object]] = []

    def execute(ctx: WorkerPoolContext[Job]) -> Result[None, str]:
        starts.append((ctx.event.label, ctx.now))
        return Ok(None)

    job = WorkerPool(
        name="api",
        event=Job,
        concurrency=10,
        execute=execute,
        rate_limit=RateLimit(limit=2, period="10 seconds"),
    )
    pool = Engine(jobs=[job], storage=MemoryStorage(), clock=clock).client.worker_pool(job)
    await pool.enqueue_many([Job(label) for label in "abcde"])
    await clock.run_due()
    assert [label for label, _ in starts] == ["a", "b"]
    await clock.advance("9 seconds")
    assert len(starts) == 2
    await clock.advance("30 seconds")  # the worker waits for the budget, then starts more
    assert starts == [
        ("a", T0),
        ("b", T0),
        ("c", T0 + timedelta(seconds=10)),
        ("d", T0 + timedelta(seconds=10)),
        ("e", T0 + timedelta(seconds=20)),
    ]


async def test_a_rate_limit_per_key_gives_each_key_its_own_budget(clock: TestClock) -> None:
    starts: list[tuple[str, object]] = []

    def execute(ctx: WorkerPoolContext[Job]) -> Result[None, str]:
        starts.append((ctx.event.label, ctx.now))
        return Ok(None)

    job = WorkerPool(
        name="api",
        event=Job,
        concurrency=10,
        execute=execute,
        rate_limit=RateLimit(limit=1, period="1 minute", per_key=True),
    )
    pool = Engine(jobs=[job], storage=MemoryStorage(), clock=clock).client.worker_pool(job)
    await pool.enqueue_many([Job("a1"), Job("a2")], partition_key="tenant-a")
    await pool.enqueue(Job("b1"), partition_key="tenant-b")
    await clock.advance("1 minute")
    assert starts == [("a1", T0), ("b1", T0), ("a2", T0 + timedelta(minutes=1))]


def test_a_rate_limit_needs_a_positive_limit_and_period() -> None:
    with pytest.raises(InvalidDefinitionError, match="limit"):
        RateLimit(limit=0, period=1)
    with pytest.raises(InvalidDefinitionError, match="period"):
        RateLimit(limit=1, period=0)
