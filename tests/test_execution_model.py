"""
Where user code runs: never in a client call, sync callbacks in the engine's thread pool,
async ones on the loop; and a run that lost its lease writes nothing.

Each test says why it fails on the old release (0.1.0 and `main` before claim -> run ->
finish), where client calls ran `execute` inline and a sync `execute` ran on the loop.
"""

import asyncio
import threading
from datetime import datetime, timedelta

import attrs

from durable_jobs import (
    Client,
    Continuous,
    ContinuousContext,
    Debounce,
    DebounceExecuteContext,
    Engine,
    InstanceKey,
    JobEvent,
    JobKind,
    MemoryStorage,
    Ok,
    Result,
    every,
)
from durable_jobs.testing import DEFAULT_START, TestClock


T0 = DEFAULT_START
GUARD = 10.0
"""Seconds a test waits at most for a thread or a task it expects (a hang guard, no timing)."""


@attrs.frozen
class Ping:
    n: int


@attrs.frozen
class Counter:
    n: int


def of_type(events: list[JobEvent], type_: str) -> list[JobEvent]:
    return [e for e in events if e.type == type_]


async def settle() -> None:
    """Let every ready task run until it waits (no time passes)."""
    for _ in range(20):
        await asyncio.sleep(0)


# -- client calls never run user code ------------------------------------------------------


async def test_client_calls_only_make_work_due_a_worker_runs_it(clock: TestClock) -> None:
    """
    `add` reaching `max_events`, `flush()`, `start` (start_immediately) and `trigger` store
    what they ask for and return; `execute` runs at the next `clock.run_due()`.

    On the old release each of these calls ran `execute` itself, before returning: the
    counters would already be 1 right after the call.
    """
    flushes: list[tuple[int, str]] = []
    runs: list[datetime] = []

    def flush(ctx: DebounceExecuteContext[Ping]) -> Result[None, str]:
        flushes.append((ctx.event_count, ctx.flush_reason))
        return Ok(None)

    def run(ctx: ContinuousContext[Counter]) -> Result[None, str]:
        runs.append(ctx.now)
        return Ok(None)

    batches = Debounce(
        name="batches", event=Ping, flush_after="1 hour", max_events=2, execute=flush
    )
    ticker = Continuous(name="ticker", state=Counter, schedule=every("1 hour"), execute=run)
    engine = Engine(jobs=[batches, ticker], storage=MemoryStorage(), clock=clock)
    debounce = engine.client.debounce(batches)
    continuous = engine.client.continuous(ticker)

    await debounce.add("full", Ping(1))
    added = await debounce.add("full", Ping(2))
    assert flushes == []
    assert (added.sealed, added.will_flush_at) == (True, T0)
    await clock.run_due()
    assert flushes == [(2, "max_events")]

    await debounce.add("manual", Ping(1))
    assert (await debounce.flush("manual")).requested
    assert flushes == [(2, "max_events")]
    await clock.run_due()
    assert flushes == [(2, "max_events"), (1, "manual")]

    assert (await continuous.start("t", Counter(0))).next_run_at == T0
    assert runs == []
    await clock.run_due()
    assert runs == [T0]

    await clock.advance("1 minute")
    assert (await continuous.trigger("t")).triggered
    assert runs == [T0]
    await clock.run_due()
    assert runs == [T0, T0 + timedelta(minutes=1)]


@attrs.define
class Outbox:
    """A dependency only the worker process has."""

    sent: list[tuple[str, int]] = attrs.field(factory=list[tuple[str, int]])


def deliver(ctx: DebounceExecuteContext[Ping, Outbox]) -> Result[None, str]:
    ctx.deps.sent.append((ctx.id, ctx.state.n))
    return Ok(None)


async def test_a_client_without_deps_feeds_an_engine_that_has_them(clock: TestClock) -> None:
    """
    A web process opens `Client(jobs=..., storage=...)` without the jobs' deps; the engine
    built with the deps on the same storage runs the work.

    The old release had no such client: only `engine.client`, which needed the deps
    because `add` reaching `max_events` ran `execute` (with its deps) in the caller.
    """
    job = Debounce(name="mail", event=Ping, flush_after="1 hour", max_events=2, execute=deliver)
    storage = MemoryStorage()
    outbox = Outbox()
    Engine(jobs=[job], deps=outbox, storage=storage, clock=clock)  # attaches to the clock
    web = Client(jobs=[job], storage=storage, clock=clock).debounce(job)

    await web.add("team-7", Ping(1))
    assert (await web.add("team-7", Ping(2))).sealed
    assert outbox.sent == []
    await clock.run_due()
    assert outbox.sent == [("team-7", 2)]
    assert (await web.status("team-7")).status == "not_found"


# -- sync callbacks in the thread pool, async ones on the loop ------------------------------


def waiting_ticker(barrier: threading.Barrier) -> Continuous[Counter, Counter, str]:
    """A sync `execute` that can only finish once another execution reaches the barrier."""

    def execute(ctx: ContinuousContext[Counter]) -> Result[None, str]:
        barrier.wait()  # raises BrokenBarrierError (a defect) if the other never comes
        return Ok(None)

    return Continuous(name="meet", state=Counter, schedule=every("1 hour"), execute=execute)


async def test_two_sync_executes_run_at_the_same_time(clock: TestClock) -> None:
    """
    Two blocking sync executes of two instances both get through a `Barrier(2)`: they can
    only if they run at the same time, each in a thread of the pool.

    On the old release a sync `execute` ran on the event loop: the first blocked the loop
    in `barrier.wait()`, the second could not start, and the first broke the barrier at its
    timeout (a defect for both).
    """
    events: list[JobEvent] = []
    job = waiting_ticker(threading.Barrier(2, timeout=GUARD))
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock, observers=[events.append])
    client = engine.client.continuous(job)
    await client.start("a", Counter(0))
    await client.start("b", Counter(0))

    await clock.run_due()

    assert of_type(events, "job.failed") == []
    assert sorted(e.id for e in of_type(events, "job.executed")) == ["a", "b"]


async def test_one_thread_runs_sync_executes_one_at_a_time(clock: TestClock) -> None:
    """
    With `Engine(threads=1)` the second sync execute waits for the thread: the first one's
    barrier times out (a defect), and the second finds it broken (a defect too).

    On the old release there was no thread pool (and no `threads` parameter).
    """
    events: list[JobEvent] = []
    # the barrier must time out here, so its wait is short: the other party cannot come
    job = waiting_ticker(threading.Barrier(2, timeout=0.2))
    engine = Engine(
        jobs=[job], storage=MemoryStorage(), clock=clock, observers=[events.append], threads=1
    )
    client = engine.client.continuous(job)
    await client.start("a", Counter(0))
    await client.start("b", Counter(0))

    await clock.run_due()

    failed = of_type(events, "job.failed")
    assert sorted(e.id for e in failed) == ["a", "b"]
    assert all(e.defect and e.error and "BrokenBarrierError" in e.error for e in failed)
    assert of_type(events, "job.executed") == []


async def test_sync_callbacks_run_in_a_pool_thread_async_ones_on_the_loop(
    clock: TestClock,
) -> None:
    """
    A sync `execute` runs off the loop's thread; an async one on it.

    On the old release the sync one ran on the loop's thread too (so it blocked the loop).
    """
    loop_thread = threading.get_ident()
    threads: dict[str, int] = {}

    def blocking(ctx: ContinuousContext[Counter]) -> Result[None, str]:
        threads["sync"] = threading.get_ident()
        return Ok(None)

    async def cooperative(ctx: ContinuousContext[Counter]) -> Result[None, str]:
        threads["async"] = threading.get_ident()
        return Ok(None)

    sync_job = Continuous(name="sync", state=Counter, schedule=every(60), execute=blocking)
    async_job = Continuous(name="async", state=Counter, schedule=every(60), execute=cooperative)
    engine = Engine(jobs=[sync_job, async_job], storage=MemoryStorage(), clock=clock)
    await engine.client.continuous(sync_job).start("x", Counter(0))
    await engine.client.continuous(async_job).start("x", Counter(0))

    await clock.run_due()

    assert threads["async"] == loop_thread
    assert threads["sync"] != loop_thread


# -- a lost lease discards the run's result ------------------------------------------------


async def test_a_run_that_lost_its_lease_writes_nothing(clock: TestClock) -> None:
    """
    The first run's lease ends while it runs (as when it expires): its finish is refused,
    `job.lease_lost` is emitted, and nothing of it is stored: the instance runs again from
    the state it had, with the same run number.

    The old release had no leases on runs (`Storage.release` did not exist) and wrote a
    run's outcome whatever happened meanwhile.
    """
    storage = MemoryStorage()
    key = InstanceKey(JobKind.CONTINUOUS, "counter", "c")
    seen: list[tuple[int, Counter]] = []

    async def execute(ctx: ContinuousContext[Counter]) -> Result[None, str]:
        seen.append((ctx.run_count, ctx.state))
        if len(seen) == 1:
            record = await storage.read(key)
            assert record is not None
            assert record.lease is not None
            await storage.release([record.lease.token])
        ctx.set_state(Counter(ctx.state.n + 1))
        return Ok(None)

    job = Continuous(name="counter", state=Counter, schedule=every("1 hour"), execute=execute)
    events: list[JobEvent] = []
    engine = Engine(jobs=[job], storage=storage, clock=clock, observers=[events.append])
    client = engine.client.continuous(job)
    await client.start("c", Counter(0))

    await clock.run_due()

    # the instance was still due: the next claim ran it again from the stored state
    assert seen == [(1, Counter(0)), (1, Counter(0))]
    assert [(e.type, e.id) for e in events if e.type in ("job.lease_lost", "job.executed")] == [
        ("job.lease_lost", "c"),
        ("job.executed", "c"),
    ]
    assert await client.get_state("c") == Counter(1)
    status = await client.status("c")
    assert (status.status, status.run_count) == ("scheduled", 1)


async def test_lease_lost_is_reported_once_while_other_runs_carry_on(clock: TestClock) -> None:
    """A lost run is reported for its own instance only; a run beside it finishes normally."""
    storage = MemoryStorage()
    lost = InstanceKey(JobKind.CONTINUOUS, "pair", "lost")
    released = asyncio.Event()

    async def execute(ctx: ContinuousContext[Counter]) -> Result[None, str]:
        if ctx.id == "lost" and not released.is_set():
            record = await storage.read(lost)
            assert record is not None
            assert record.lease is not None
            await storage.release([record.lease.token])
            released.set()
        ctx.set_state(Counter(ctx.state.n + 1))
        return Ok(None)

    job = Continuous(name="pair", state=Counter, schedule=every("1 hour"), execute=execute)
    events: list[JobEvent] = []
    engine = Engine(jobs=[job], storage=storage, clock=clock, observers=[events.append])
    client = engine.client.continuous(job)
    await client.start("kept", Counter(0))
    await client.start("lost", Counter(0))

    await clock.run_due()

    assert [e.id for e in of_type(events, "job.lease_lost")] == ["lost"]
    assert sorted(e.id for e in of_type(events, "job.executed")) == ["kept", "lost"]
    assert await client.get_state("kept") == Counter(1)
    assert await client.get_state("lost") == Counter(1)


# -- a running worker picks up what client calls make due --------------------------------


async def test_a_serving_worker_runs_each_flush_its_client_makes_due(clock: TestClock) -> None:
    """
    With `async with engine:` the worker runs every batch a client call makes due, as soon
    as the call returns, without the clock moving: not only the first one.

    The clock stays put, so only the client calls' wake-ups can start these flushes. On the
    old release `add` reaching `max_events` ran the flush itself (inside the call).
    """
    flushed: list[int] = []
    done = asyncio.Event()

    async def execute(ctx: DebounceExecuteContext[Ping]) -> Result[None, str]:
        flushed.append(ctx.state.n)
        done.set()
        return Ok(None)

    job = Debounce(name="now", event=Ping, flush_after="1 hour", max_events=1, execute=execute)
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.debounce(job)
    async with engine:
        for n in range(3):
            clock.set(clock.now() + timedelta(seconds=1))  # each call at a later instant
            done.clear()
            await client.add("id", Ping(n))
            await asyncio.wait_for(done.wait(), GUARD)
            await settle()  # the worker finishes the flush and goes back to sleep
    assert flushed == [0, 1, 2]
