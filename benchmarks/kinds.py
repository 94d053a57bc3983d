"""
Executions per second of each kind through the real worker, on any storage.

Each measurement queues `items` pieces of work that are due at once while no worker runs
(untimed): `items` Continuous instances started with `start_immediately`, `items` Debounce
ids with one event each (the window is 1 ms, so every batch is due), `items` Task ids whose
`on_event` schedules `execute` now, or `items` WorkerPool events. Then `async with engine:`
starts the worker (SystemClock, `concurrency` slots) and the clock runs until an observer
has seen `items` `job.executed` events: each is emitted after the run's fenced finish
committed, so the rate counts complete claim -> run -> finish cycles. Callbacks are async
no-ops unless `sync=True` (then they run in the engine's thread pool).
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Literal

import attrs

from durable_jobs import (
    Continuous,
    ContinuousContext,
    Debounce,
    DebounceEventContext,
    DebounceExecuteContext,
    Engine,
    JobEvent,
    Ok,
    Result,
    Storage,
    Task,
    TaskEventContext,
    TaskExecuteContext,
    WorkerPool,
    WorkerPoolContext,
    every,
)

from ._harness import quiet


Kind = Literal["continuous", "debounce", "task", "pool"]
KINDS: tuple[Kind, ...] = ("continuous", "debounce", "task", "pool")
LABELS: dict[Kind, str] = {
    "continuous": "Continuous runs (one per instance)",
    "debounce": "Debounce flushes (one batch per id)",
    "task": "Task executes (one per id)",
    "pool": "WorkerPool events",
}
CONCURRENCY = 16
"""The worker's slots (the engine's default) and the pool's concurrency."""
DRAIN_TIMEOUT = 180.0
"""Seconds one drain may take before it is given up."""
LOAD_CHUNK = 500
"""Pool events per `enqueue_many` while loading."""


@attrs.frozen
class Item:
    """The state, event or input of every benchmark job: one small record."""

    n: int


async def _noop_continuous(ctx: ContinuousContext[Item]) -> Result[None, Exception]:
    return Ok(None)


def _noop_continuous_sync(ctx: ContinuousContext[Item]) -> Result[None, Exception]:
    return Ok(None)


def _fold(ctx: DebounceEventContext[Item, Item]) -> Item:
    return ctx.event


async def _noop_flush(ctx: DebounceExecuteContext[Item]) -> Result[None, Exception]:
    return Ok(None)


def _schedule_now(ctx: TaskEventContext[Item, Item]) -> None:
    ctx.set_state(ctx.event)
    ctx.schedule(0)


async def _noop_task(ctx: TaskExecuteContext[Item]) -> Result[None, Exception]:
    return Ok(None)


async def _noop_event(ctx: WorkerPoolContext[Item]) -> Result[None, Exception]:
    return Ok(None)


CONTINUOUS = Continuous(
    name="k_continuous",
    state=Item,
    schedule=every("1 hour"),
    execute=_noop_continuous,
    start_immediately=True,
)
CONTINUOUS_SYNC = Continuous(
    name="k_continuous",
    state=Item,
    schedule=every("1 hour"),
    execute=_noop_continuous_sync,
    start_immediately=True,
)
DEBOUNCE = Debounce(
    name="k_debounce",
    event=Item,
    state=Item,
    flush_after="1 ms",
    on_event=_fold,
    execute=_noop_flush,
)
TASK = Task(name="k_task", event=Item, state=Item, on_event=_schedule_now, execute=_noop_task)
POOL = WorkerPool(name="k_pool", event=Item, concurrency=CONCURRENCY, execute=_noop_event)


class Done:
    """
    An observer counting ended runs; `reached` is set at the target.

    A run ends with `job.executed` (its fenced finish committed) or with `job.lease_lost`
    (its result was discarded). No lease expires in these drains; before 77a89ed a run on
    PostgreSQL was now and then reported lost although its finish had committed (see the
    README). A lost run is counted as ended, so a drain never waits for an event that
    will not come, and `lost` says how often it happened.
    """

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.lost = 0
        self.reached = asyncio.Event()

    def __call__(self, event: JobEvent, /) -> None:
        if event.type == "job.lease_lost":
            self.lost += 1
        elif event.type != "job.executed":
            return
        self.count += 1
        if self.count >= self.target:
            self.reached.set()


@attrs.frozen
class Drained:
    """The rates of a drain's repetitions, and the runs reported lost on the way."""

    rates: tuple[float, ...]
    lost: int


def lost_note(drained: Drained) -> str:
    """A suffix for the row's last column when runs were reported lost (else empty)."""
    if not drained.lost:
        return ""
    return f"; {drained.lost} run(s) reported `job.lease_lost` (see README)"


async def _load(kind: Kind, engine: Engine[None], sync: bool, items: int) -> None:
    client = engine.client
    if kind == "continuous":
        continuous = client.continuous(CONTINUOUS_SYNC if sync else CONTINUOUS)
        for n in range(items):
            await continuous.start(f"c-{n:06d}", Item(n))
    elif kind == "debounce":
        debounce = client.debounce(DEBOUNCE)
        for n in range(items):
            await debounce.add(f"d-{n:06d}", Item(n))
        await asyncio.sleep(0.002)  # every window (1 ms) has ended: all batches are due
    elif kind == "task":
        task = client.task(TASK)
        for n in range(items):
            await task.send(f"t-{n:06d}", Item(n))
    else:
        pool = client.worker_pool(POOL)
        for start in range(0, items, LOAD_CHUNK):
            await pool.enqueue_many([Item(n) for n in range(start, min(items, start + LOAD_CHUNK))])


async def drain(
    kind: Kind,
    storage: Storage,
    items: int,
    *,
    sync: bool = False,
    opened: Callable[[], Awaitable[None]] | None = None,
) -> tuple[float, int]:
    """
    Executions per second of one drain of `items` due pieces of `kind` on a fresh `storage`,
    and how many runs were reported lost (`job.lease_lost`) on the way.

    `opened` (if given) is awaited before loading: it opens the storage (file, schema), so
    that is not timed. The storage is closed at the end.
    """
    done = Done(items)
    jobs = {
        "continuous": [CONTINUOUS_SYNC if sync else CONTINUOUS],
        "debounce": [DEBOUNCE],
        "task": [TASK],
        "pool": [POOL],
    }[kind]
    engine = Engine(jobs=jobs, storage=storage, observers=[done], concurrency=CONCURRENCY)
    try:
        if opened is not None:
            await opened()
        await _load(kind, engine, sync, items)
        quiet()
        started = time.perf_counter()
        async with engine:
            try:
                await asyncio.wait_for(done.reached.wait(), DRAIN_TIMEOUT)
            except TimeoutError:
                msg = f"{kind}: {done.count} of {items} executions after {DRAIN_TIMEOUT:g} s"
                raise TimeoutError(msg) from None
            elapsed = time.perf_counter() - started
    finally:
        await storage.close()
    return items / elapsed, done.lost


async def repeat(
    kind: Kind,
    fresh: Callable[[], AbstractAsyncContextManager[Storage]],
    items: int,
    reps: int,
    *,
    sync: bool = False,
) -> Drained:
    """`reps` drains, each on a storage `fresh()` opens (a new file or schema)."""
    rates: list[float] = []
    lost = 0
    for _ in range(reps):
        async with fresh() as storage:
            opener = getattr(storage, "open", None)
            rate, lost_here = await drain(kind, storage, items, sync=sync, opened=opener)
        rates.append(rate)
        lost += lost_here
    return Drained(tuple(rates), lost)
