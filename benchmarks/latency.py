"""
Alarm latency: how late `execute` starts after its alarm's due time, on the real clock.

A `Task` whose `on_event` schedules its alarm `LEAD` ahead is sent one event at a time,
`SPACING` apart, to a running worker on `SqliteStorage`; `execute` notes the wall time it
starts at. Measured with the worker otherwise idle, and under load: `LOAD_ADDERS` coroutines
adding debounce events through the same engine (and so the same storage thread) the whole
time. The baseline is the event loop's own timer: how late `asyncio.sleep(LEAD)` wakes,
idle and under the same load.
"""

import asyncio
import itertools
import tempfile
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import attrs

from durable_jobs import (
    DebounceClient,
    Engine,
    Ok,
    Result,
    SqliteStorage,
    Task,
    TaskEventContext,
    TaskExecuteContext,
)

from ._harness import Settings, percentile, quiet
from ._workloads import Batch, Click, debounce_job, id_of


LEAD = 0.005
"""Seconds ahead of `send` the alarm is scheduled."""
SPACING = 0.015
"""Seconds between two sends (so the idle worker is idle between alarms)."""
LOAD_ADDERS = 4
"""Concurrent debounce adders of the load."""
LOAD_IDS = 100
"""Debounce ids the load cycles through."""


@attrs.frozen
class Ping:
    """The latency task's event and state."""

    seq: int


@attrs.frozen
class Latency:
    """One repetition's alarm lateness, in milliseconds."""

    samples: tuple[float, ...]
    load_rate: float = 0.0
    """Debounce adds per second the load achieved meanwhile (0 when idle)."""

    @property
    def p50(self) -> float:
        return percentile(self.samples, 0.50)

    @property
    def p99(self) -> float:
        return percentile(self.samples, 0.99)

    @property
    def worst(self) -> float:
        return max(self.samples)


class Starts:
    """Schedules each task's alarm `lead` seconds ahead; notes when its `execute` started."""

    def __init__(self, lead: float) -> None:
        self.lead = lead
        self.at: dict[str, datetime] = {}

    def on_event(self, ctx: TaskEventContext[Ping, Ping]) -> None:
        ctx.set_state(ctx.event)
        ctx.schedule(self.lead)

    def execute(self, ctx: TaskExecuteContext[Ping]) -> Result[None, Exception]:
        self.at[ctx.id] = datetime.now(UTC)
        return Ok(None)


@asynccontextmanager
async def _load(client: DebounceClient[Click, Batch], adders: int) -> AsyncGenerator[list[int]]:
    """Debounce adds from `adders` coroutines until the block ends; yields the add count."""
    done = [0]
    stop = asyncio.Event()

    async def adder(index: int) -> None:
        for n in itertools.count():
            if stop.is_set():
                return
            id = id_of((index + n * adders) % LOAD_IDS)
            await client.add(id, Click(user=id, n=n))
            done[0] += 1

    tasks = [asyncio.create_task(adder(index)) for index in range(adders)]
    try:
        await asyncio.sleep(0.05)  # let the load reach its pace
        yield done
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def _ours_once(settings: Settings, *, loaded: bool, lead: float) -> Latency:
    starts = Starts(lead)
    task_job = Task(
        name="pings", event=Ping, state=Ping, on_event=starts.on_event, execute=starts.execute
    )
    # batches flush inline every 20 events, so the load's state stays small
    load_job = debounce_job(max_events=20)
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as folder:
        storage = SqliteStorage(Path(folder) / "jobs.db")
        engine = Engine(jobs=[task_job, load_job], storage=storage)
        pings = engine.client.task(task_job)
        due: dict[str, datetime] = {}
        async with (
            engine,
            _load(engine.client.debounce(load_job), LOAD_ADDERS if loaded else 0) as adds,
        ):
            quiet()
            loop = asyncio.get_running_loop()
            begin, first = loop.time(), adds[0]
            for n in range(settings.latency_samples):
                id = f"ping-{n:04d}"
                sent = await pings.send(id, Ping(n))
                if sent.scheduled_at is None:
                    msg = f"task {id} has no alarm after send"
                    raise RuntimeError(msg)
                due[id] = sent.scheduled_at
                await asyncio.sleep(SPACING)
            rate = (adds[0] - first) / (loop.time() - begin)
            for _ in range(200):  # the last alarms: at most 2 s more
                if len(starts.at) == len(due):
                    break
                await asyncio.sleep(0.01)
        await storage.close()
    late = [
        (starts.at[id] - at).total_seconds() * 1000 for id, at in due.items() if id in starts.at
    ]
    missed = len(due) - len(late)
    if missed:
        late.extend([float("inf")] * missed)  # an alarm that never ran is infinitely late
    return Latency(tuple(late), rate if loaded else 0.0)


async def ours(settings: Settings, *, loaded: bool, lead: float = LEAD) -> list[Latency]:
    """One `Latency` per repetition, alarms scheduled `lead` seconds ahead."""
    return [
        await _ours_once(settings, loaded=loaded, lead=lead) for _ in range(settings.timed_reps)
    ]


async def _timer_once(settings: Settings, *, loaded: bool) -> Latency:
    job = debounce_job(max_events=20)
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as folder:
        storage = SqliteStorage(Path(folder) / "jobs.db")
        engine = Engine(jobs=[job], storage=storage)
        late: list[float] = []
        loop = asyncio.get_running_loop()
        async with engine, _load(engine.client.debounce(job), LOAD_ADDERS if loaded else 0) as adds:
            quiet()
            begin, first = loop.time(), adds[0]
            for _ in range(settings.latency_samples):
                target = loop.time() + LEAD
                await asyncio.sleep(LEAD)
                late.append((loop.time() - target) * 1000)
                await asyncio.sleep(SPACING)
            rate = (adds[0] - first) / (loop.time() - begin)
        await storage.close()
    return Latency(tuple(late), rate if loaded else 0.0)


async def timer(settings: Settings, *, loaded: bool) -> list[Latency]:
    """The event loop's own timer lateness, one `Latency` per repetition."""
    return [await _timer_once(settings, loaded=loaded) for _ in range(settings.timed_reps)]
