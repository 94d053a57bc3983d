"""The timing and worker fields of `JobEvent`: duration, queue latency, run count, worker id."""

from datetime import timedelta

import attrs

from durable_jobs import (
    Backoff,
    Debounce,
    DebounceExecuteContext,
    Engine,
    Err,
    JobEvent,
    MemoryStorage,
    Ok,
    Result,
    Retry,
    WorkerPool,
    WorkerPoolContext,
)
from durable_jobs.testing import TestClock


@attrs.frozen
class Busy:
    pass


async def test_a_run_s_events_carry_its_timing_and_worker() -> None:
    clock = TestClock()
    events: list[JobEvent] = []
    calls = 0

    def flush(ctx: DebounceExecuteContext[int]) -> Result[None, Busy]:
        nonlocal calls
        calls += 1
        clock.set(clock.now() + timedelta(seconds=3))  # the run takes 3 s of engine time
        return Err(Busy()) if calls == 1 else Ok(None)

    digest = Debounce(
        name="digest",
        event=int,
        flush_after="1 minute",
        execute=flush,
        retry=Retry(max_attempts=3, delay=Backoff.fixed("10 seconds")),
    )
    engine = Engine(
        jobs=[digest],
        storage=MemoryStorage(),
        clock=clock,
        observers=[events.append],
        random=lambda: 0.5,
    )
    added = await engine.client.debounce(digest).add("team", 1)
    await clock.advance("1 minute")  # due now, and run now: no latency; attempt 1 fails
    (failed,) = [event for event in events if event.type == "job.failed"]
    assert failed.duration == timedelta(seconds=3)
    assert failed.queue_latency == timedelta(0)
    assert (failed.run_count, failed.worker_id) == (1, engine.worker_id)

    assert failed.retry_at is not None
    clock.set(failed.retry_at + timedelta(seconds=5))  # the worker comes 5 s late
    await clock.run_due()
    (executed,) = [event for event in events if event.type == "job.executed"]
    assert executed.duration == timedelta(seconds=3)
    assert executed.queue_latency == timedelta(seconds=5)
    assert executed.run_count == 2
    assert executed.worker_id == engine.worker_id

    # an event of a client call belongs to no run
    (started,) = [event for event in events if event.type == "debounce.started"]
    assert started.batch_id == added.batch_id
    assert (started.duration, started.queue_latency, started.run_count, started.worker_id) == (
        None,
        None,
        None,
        None,
    )


async def test_a_pool_event_s_latency_counts_from_its_enqueue() -> None:
    clock = TestClock()
    events: list[JobEvent] = []

    def work(ctx: WorkerPoolContext[str]) -> Ok[None]:
        return Ok(None)

    pool = WorkerPool(name="uploads", event=str, concurrency=1, execute=work)
    engine = Engine(jobs=[pool], storage=MemoryStorage(), clock=clock, observers=[events.append])
    await engine.client.worker_pool(pool).enqueue("a.png")
    clock.set(clock.now() + timedelta(seconds=2))  # no worker looked for 2 s
    await clock.run_due()
    (executed,) = [event for event in events if event.type == "job.executed"]
    assert executed.queue_latency == timedelta(seconds=2)
    assert executed.duration == timedelta(0)
    assert executed.run_count == 1
    assert executed.worker_id == engine.worker_id


def test_engines_of_one_process_have_distinct_worker_ids() -> None:
    def work(ctx: WorkerPoolContext[str]) -> Ok[None]:
        return Ok(None)

    pool = WorkerPool(name="uploads", event=str, concurrency=1, execute=work)
    first = Engine(jobs=[pool], storage=MemoryStorage())
    second = Engine(jobs=[pool], storage=MemoryStorage())
    assert first.worker_id != second.worker_id
