"""WorkerPool through the public client, driven by TestClock."""

import asyncio
from collections.abc import Awaitable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import attrs
import pytest

from durable_jobs import (
    Backoff,
    Client,
    DefectPolicy,
    Engine,
    Err,
    ErrorContext,
    JobEvent,
    MemoryStorage,
    Ok,
    Result,
    Retry,
    SqliteStorage,
    Storage,
    ValidationError,
    WorkerPool,
    WorkerPoolContext,
)
from durable_jobs.testing import TestClock


T = TypeVar("T")

HANG_GUARD = 10.0
"""
Seconds before a blocked await fails the test instead of hanging it. Never reached when the
behaviour is right; 0.1.0 held a partition for a whole run, so calls on it waited for the
gated `execute`, which waits for the test: a deadlock.
"""


async def promptly(awaitable: Awaitable[T]) -> T:
    async with asyncio.timeout(HANG_GUARD):
        return await awaitable


@attrs.frozen
class Order:
    label: str
    amount: int = 0


class ShipError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@attrs.frozen
class Run:
    """One execution as `execute` saw it."""

    label: str
    attempt: int


@attrs.frozen
class Handled:
    """One `on_error` call."""

    error: ShipError
    reason: str
    attempts: int
    state: Order


Pool = WorkerPool[Order, None, ShipError, object]


@attrs.define
class Harness:
    """A pool whose `execute` records runs and fails for the labels it is told to."""

    concurrency: int = 1
    retry: Retry[ShipError] | None = None
    with_on_error: bool = True
    fail_until: dict[str, int] = attrs.field(factory=dict[str, int])
    """label -> fail (return Err) while attempt <= this value."""
    raise_until: dict[str, int] = attrs.field(factory=dict[str, int])
    """label -> raise (a defect) on this many runs."""
    code: int = 503
    runs: list[Run] = attrs.field(factory=list[Run])
    errors: list[ShipError] = attrs.field(factory=list[ShipError])
    handled: list[Handled] = attrs.field(factory=list[Handled])
    raised: dict[str, int] = attrs.field(factory=dict[str, int])

    def execute(self, ctx: WorkerPoolContext[Order]) -> Result[None, ShipError]:
        label = ctx.event.label
        self.runs.append(Run(label, ctx.attempt))
        if self.raised.get(label, 0) < self.raise_until.get(label, 0):
            self.raised[label] = self.raised.get(label, 0) + 1
            msg = f"boom {label}"
            raise RuntimeError(msg)
        if ctx.attempt <= self.fail_until.get(label, 0):
            error = ShipError(self.code)
            self.errors.append(error)
            return Err(error)
        return Ok(None)

    def on_error(self, e: ShipError, ctx: ErrorContext[Order]) -> None:
        self.handled.append(Handled(e, ctx.reason, ctx.attempts, ctx.state))

    def job(self, name: str = "orders") -> Pool:
        return WorkerPool(
            name=name,
            event=Order,
            concurrency=self.concurrency,
            execute=self.execute,
            retry=self.retry,
            on_error=self.on_error if self.with_on_error else None,
        )

    def labels(self) -> list[str]:
        return [run.label for run in self.runs]


def engine_for(
    job: Pool,
    clock: TestClock,
    *,
    storage: Storage | None = None,
    observers: list[JobEvent] | None = None,
    defect_policy: DefectPolicy | None = None,
) -> Engine[None]:
    sink: list[JobEvent] = observers if observers is not None else []
    return Engine(
        jobs=[job],
        storage=storage if storage is not None else MemoryStorage(),
        clock=clock,
        observers=[sink.append],
        defect_policy=defect_policy,
    )


# --- enqueue, routing, ordering ---------------------------------------------------------


async def test_enqueue_queues_without_running_until_due_then_runs_once(clock: TestClock) -> None:
    harness = Harness()
    job = harness.job()
    engine = engine_for(job, clock)
    pool = engine.client.worker_pool(job)
    result = await pool.enqueue(Order("a"))
    assert not result.duplicate
    assert result.event_id
    assert harness.runs == []
    assert (await pool.status()).pending == 1
    await clock.run_due()
    assert harness.runs == [Run("a", 1)]
    await clock.advance("1 hour")
    assert harness.runs == [Run("a", 1)]
    status = await pool.status()
    assert (status.pending, status.processed) == (0, 1)


async def test_generated_event_ids_are_distinct(clock: TestClock) -> None:
    job = Harness().job()
    pool = engine_for(job, clock).client.worker_pool(job)
    ids = {(await pool.enqueue(Order(str(n)))).event_id for n in range(5)}
    assert len(ids) == 5


async def test_context_fields(clock: TestClock) -> None:
    seen: list[tuple[Order, str, str | None, int, int, bool, str, str]] = []

    def execute(ctx: WorkerPoolContext[Order]) -> Result[None, ShipError]:
        seen.append(
            (
                ctx.event,
                ctx.event_id,
                ctx.partition_key,
                ctx.priority,
                ctx.attempt,
                ctx.is_retry,
                ctx.job_name,
                ctx.id,
            )
        )
        return Ok(None)

    job = WorkerPool(name="ctx", event=Order, concurrency=4, execute=execute)
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    pool = engine.client.worker_pool(job)
    await pool.enqueue(Order("a", 7), partition_key="cust-9", priority=3, event_id="e-1")
    plain = await pool.enqueue(Order("b"))
    await clock.run_due()
    assert sorted(seen, key=lambda s: s[1]) == sorted(
        [
            (Order("a", 7), "e-1", "cust-9", 3, 1, False, "ctx", "pool"),
            (Order("b"), plain.event_id, None, 0, 1, False, "ctx", "pool"),
        ],
        key=lambda s: s[1],
    )


async def test_concurrency_bounds_the_executions_running_at_once(clock: TestClock) -> None:
    started: list[str] = []
    three_in = asyncio.Event()
    release = asyncio.Event()

    async def execute(ctx: WorkerPoolContext[Order]) -> Result[None, ShipError]:
        started.append(ctx.event.label)
        if len(started) == 3:
            three_in.set()
        await release.wait()
        return Ok(None)

    job = WorkerPool(name="bounded", event=Order, concurrency=3, execute=execute)
    pool = Engine(jobs=[job], storage=MemoryStorage(), clock=clock).client.worker_pool(job)
    for n in range(6):
        await pool.enqueue(Order(f"e{n}"))
    worker = asyncio.create_task(clock.run_due())
    await promptly(three_in.wait())

    status = await pool.status()
    assert (status.running, status.queued, status.concurrency) == (3, 3, 3)
    assert sorted(started) == ["e0", "e1", "e2"]  # the first three: FIFO among equals
    release.set()
    await promptly(worker)
    assert started == [f"e{n}" for n in range(6)]
    status = await pool.status()
    assert (status.pending, status.processed) == (0, 6)


async def test_partition_keys_keep_fifo_order_amid_other_traffic(clock: TestClock) -> None:
    harness = Harness(concurrency=5)
    job = harness.job()
    pool = engine_for(job, clock).client.worker_pool(job)
    keys = [f"customer-{n}" for n in range(30)]
    for key in keys:
        await pool.enqueue(Order(f"{key}/1"), partition_key=key)
    # interleaved traffic without a key, and a second event per key
    for n in range(7):
        await pool.enqueue(Order(f"rr{n}"))
    for key in keys:
        await pool.enqueue(Order(f"{key}/2"), partition_key=key)
    await clock.run_due()
    labels = harness.labels()
    assert sorted(labels) == sorted(
        [f"{key}/{n}" for key in keys for n in (1, 2)] + [f"rr{n}" for n in range(7)]
    )
    for key in keys:
        assert labels.index(f"{key}/1") < labels.index(f"{key}/2")


async def test_fifo_within_a_partition_key(clock: TestClock) -> None:
    harness = Harness(concurrency=4)
    job = harness.job()
    pool = engine_for(job, clock).client.worker_pool(job)
    for n in range(8):
        await pool.enqueue(Order(f"k{n}"), partition_key="same")
    await clock.run_due()
    assert harness.labels() == [f"k{n}" for n in range(8)]


async def test_priority_higher_first_fifo_among_equal(clock: TestClock) -> None:
    harness = Harness()
    job = harness.job()
    pool = engine_for(job, clock).client.worker_pool(job)
    for label, priority in [("a", 0), ("b", 1), ("c", 5), ("d", 1), ("e", 0), ("f", -2)]:
        await pool.enqueue(Order(label), priority=priority)
    await clock.run_due()
    assert harness.labels() == ["c", "b", "d", "a", "e", "f"]


async def test_enqueue_many_keeps_order_and_options(clock: TestClock) -> None:
    priorities: list[tuple[str, int, str | None]] = []

    def execute(ctx: WorkerPoolContext[Order]) -> Result[None, ShipError]:
        priorities.append((ctx.event.label, ctx.priority, ctx.partition_key))
        return Ok(None)

    job = WorkerPool(name="many", event=Order, concurrency=3, execute=execute)
    pool = Engine(jobs=[job], storage=MemoryStorage(), clock=clock).client.worker_pool(job)
    results = await pool.enqueue_many([Order("a"), Order("b"), Order("c")], partition_key="k")
    assert len(results) == 3
    assert len({r.event_id for r in results}) == 3
    assert not any(r.duplicate for r in results)
    spread = await pool.enqueue_many([Order("x"), Order("y"), Order("z")], priority=2)
    assert len({r.event_id for r in spread}) == 3
    assert (await pool.status()).queued == 6
    await clock.run_due()
    keyed = [p for p in priorities if p[2] == "k"]
    assert keyed == [("a", 0, "k"), ("b", 0, "k"), ("c", 0, "k")]
    assert sorted(p for p in priorities if p[2] is None) == [
        ("x", 2, None),
        ("y", 2, None),
        ("z", 2, None),
    ]


async def test_enqueue_json_validates_and_queues(clock: TestClock) -> None:
    harness = Harness()
    job = harness.job()
    pool = engine_for(job, clock).client.worker_pool(job)
    await pool.enqueue_json('{"label": "a", "amount": 3}', event_id="j1")
    await pool.enqueue_json({"label": "b"}, priority=1)
    await clock.run_due()
    assert harness.labels() == ["b", "a"]


async def test_enqueue_json_bad_field_raises_and_stores_nothing(clock: TestClock) -> None:
    harness = Harness()
    job = harness.job()
    storage = MemoryStorage()
    observed: list[JobEvent] = []
    pool = engine_for(job, clock, storage=storage, observers=observed).client.worker_pool(job)
    with pytest.raises(ValidationError) as info:
        await pool.enqueue_json('{"label": "a", "amount": "lots"}')
    assert "amount" in info.value.path
    with pytest.raises(ValidationError) as missing:
        await pool.enqueue_json("{}")
    assert "label" in missing.value.path or "label" in missing.value.message
    with pytest.raises(ValidationError):
        await pool.enqueue_json("not json")
    assert await storage.list_instances() == []
    assert (await pool.status()).pending == 0
    assert observed == []
    await clock.run_due()
    assert harness.runs == []


async def test_duplicate_event_id_is_not_enqueued_twice(clock: TestClock) -> None:
    harness = Harness()
    job = harness.job()
    pool = engine_for(job, clock).client.worker_pool(job)
    first = await pool.enqueue(Order("a"), event_id="once")
    again = await pool.enqueue(Order("a-again"), event_id="once")
    assert not first.duplicate
    assert again.duplicate
    assert again.event_id == "once"
    assert (await pool.status()).pending == 1
    await clock.run_due()
    assert harness.labels() == ["a"]
    # still recognised after the event was processed
    late = await pool.enqueue(Order("a-late"), event_id="once")
    assert late.duplicate
    await clock.run_due()
    assert harness.labels() == ["a"]


async def test_duplicate_event_id_detected_with_any_concurrency_and_key(
    clock: TestClock,
) -> None:
    harness = Harness(concurrency=3)
    job = harness.job()
    pool = engine_for(job, clock).client.worker_pool(job)
    results = [await pool.enqueue(Order(f"try{n}"), event_id="webhook-1") for n in range(2)]
    results.append(await pool.enqueue(Order("try2"), event_id="webhook-1", partition_key="k"))
    assert [r.duplicate for r in results] == [False, True, True]
    assert (await pool.status()).pending == 1
    await clock.run_due()
    assert harness.labels() == ["try0"]


# --- cancel, pause, resume, status --------------------------------------------------------


async def test_cancel_removes_a_queued_event(clock: TestClock) -> None:
    harness = Harness(concurrency=2)
    job = harness.job()
    pool = engine_for(job, clock).client.worker_pool(job)
    await pool.enqueue(Order("a"), event_id="a", partition_key="k")
    await pool.enqueue(Order("b"), event_id="b", partition_key="k")
    await pool.enqueue(Order("c"), event_id="c", partition_key="k")
    cancelled = await pool.cancel("b")
    assert (cancelled.cancelled, cancelled.status) == (True, "cancelled")
    assert (await pool.status()).pending == 2
    again = await pool.cancel("b")
    assert (again.cancelled, again.status) == (False, "not_found")
    await clock.run_due()
    assert harness.labels() == ["a", "c"]
    done = await pool.cancel("a")  # already processed
    assert (done.cancelled, done.status) == (False, "not_found")


async def test_cancel_unknown_event_id(clock: TestClock) -> None:
    job = Harness(concurrency=3).job()
    pool = engine_for(job, clock).client.worker_pool(job)
    await pool.enqueue(Order("a"))
    result = await pool.cancel("never-enqueued")
    assert (result.cancelled, result.status) == (False, "not_found")
    assert (await pool.status()).pending == 1


async def test_pause_keeps_events_and_resume_continues_in_order(clock: TestClock) -> None:
    harness = Harness(concurrency=2)
    job = harness.job()
    pool = engine_for(job, clock).client.worker_pool(job)
    await pool.enqueue(Order("a"), partition_key="k")
    await pool.pause()
    await pool.enqueue(Order("b"), partition_key="k")
    await pool.enqueue(Order("c"), partition_key="k")
    await pool.enqueue(Order("x"))
    await clock.advance("1 hour")
    assert harness.runs == []
    status = await pool.status()
    assert (status.paused, status.queued, status.running, status.processed) == (True, 4, 0, 0)
    await pool.resume()
    assert not (await pool.status()).paused
    await clock.run_due()
    assert [label for label in harness.labels() if label != "x"] == ["a", "b", "c"]
    assert sorted(harness.labels()) == ["a", "b", "c", "x"]
    status = await pool.status()
    assert (status.pending, status.processed) == (0, 4)


async def test_pause_between_events_stops_the_rest(clock: TestClock) -> None:
    harness = Harness()
    job = harness.job()
    pool = engine_for(job, clock).client.worker_pool(job)
    await pool.enqueue(Order("a"))
    await clock.run_due()
    await pool.pause()
    await pool.enqueue(Order("b"))
    await clock.advance("1 minute")
    assert harness.labels() == ["a"]
    await pool.resume()
    await clock.run_due()
    assert harness.labels() == ["a", "b"]


async def test_status_counts_queued_running_retrying_and_processed(clock: TestClock) -> None:
    retry: Retry[ShipError] = Retry(max_attempts=3, delay="1 minute", jitter=False)
    harness = Harness(concurrency=3, retry=retry, fail_until={"e0": 1})
    job = harness.job()
    pool = engine_for(job, clock).client.worker_pool(job)
    empty = await pool.status()
    assert (empty.queued, empty.running, empty.retrying, empty.processed) == (0, 0, 0, 0)
    assert (empty.pending, empty.paused, empty.concurrency) == (0, False, 3)
    for n in range(4):
        await pool.enqueue(Order(f"e{n}"))
    queued = await pool.status()
    assert (queued.queued, queued.running, queued.retrying, queued.pending) == (4, 0, 0, 4)
    await clock.run_due()
    retrying = await pool.status()
    assert (retrying.queued, retrying.retrying, retrying.pending, retrying.processed) == (
        0,
        1,
        1,
        3,
    )
    await clock.advance("1 minute")
    done = await pool.status()
    assert (done.pending, done.processed, done.paused) == (0, 4, False)


# --- SPEC §5 rows for the pool ------------------------------------------------------------


async def test_retry_exact_delay_attempts_and_partition_key_blocked(clock: TestClock) -> None:
    retry: Retry[ShipError] = Retry(max_attempts=3, delay=Backoff.fixed("10 seconds"), jitter=False)
    harness = Harness(retry=retry, fail_until={"a": 2})
    job = harness.job()
    observed: list[JobEvent] = []
    pool = engine_for(job, clock, observers=observed).client.worker_pool(job)
    start = clock.now()
    await pool.enqueue(Order("a"), partition_key="k")
    await pool.enqueue(Order("b"), partition_key="k")
    await clock.run_due()
    assert harness.runs == [Run("a", 1)]
    failed = [e for e in observed if e.type == "job.failed"]
    assert [(e.will_retry, e.retry_at, e.attempt) for e in failed] == [
        (True, start + timedelta(seconds=10), 1)
    ]
    assert (await pool.status()).pending == 2
    await clock.advance("9.999 seconds")
    assert harness.runs == [Run("a", 1)]  # b waits behind the retrying a: same key
    await clock.advance("1 ms")
    assert harness.runs == [Run("a", 1), Run("a", 2)]
    await clock.advance("10 seconds")
    assert harness.runs == [Run("a", 1), Run("a", 2), Run("a", 3), Run("b", 1)]
    assert harness.handled == []
    status = await pool.status()
    assert (status.pending, status.processed) == (0, 2)


async def test_exponential_backoff_delays_per_attempt(clock: TestClock) -> None:
    retry: Retry[ShipError] = Retry(
        max_attempts=4, delay=Backoff.exponential("1 second"), jitter=False
    )
    harness = Harness(retry=retry, fail_until={"a": 3})
    job = harness.job()
    observed: list[JobEvent] = []
    pool = engine_for(job, clock, observers=observed).client.worker_pool(job)
    start = clock.now()
    await pool.enqueue(Order("a"))
    await clock.advance("1 minute")
    assert [run.attempt for run in harness.runs] == [1, 2, 3, 4]
    retry_ats = [e.retry_at for e in observed if e.type == "job.failed"]
    assert retry_ats == [
        start + timedelta(seconds=1),
        start + timedelta(seconds=3),
        start + timedelta(seconds=7),
    ]


async def test_success_after_retry_resets_attempt_for_next_event(clock: TestClock) -> None:
    retry: Retry[ShipError] = Retry(max_attempts=3, delay="1 second", jitter=False)
    harness = Harness(retry=retry, fail_until={"a": 1, "b": 1})
    job = harness.job()
    pool = engine_for(job, clock).client.worker_pool(job)
    await pool.enqueue(Order("a"), partition_key="k")
    await pool.enqueue(Order("b"), partition_key="k")
    await clock.advance("1 minute")
    assert [(r.label, r.attempt) for r in harness.runs] == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]


async def test_higher_priority_arrival_waits_for_the_retrying_event_of_its_key(
    clock: TestClock,
) -> None:
    retry: Retry[ShipError] = Retry(max_attempts=3, delay="10 seconds", jitter=False)
    harness = Harness(retry=retry, fail_until={"a": 1})
    job = harness.job()
    pool = engine_for(job, clock).client.worker_pool(job)
    await pool.enqueue(Order("a"), partition_key="k")
    await clock.run_due()
    await pool.enqueue(Order("urgent"), priority=10, partition_key="k")
    await clock.run_due()
    assert [(r.label, r.attempt) for r in harness.runs] == [("a", 1)]
    await clock.advance("10 seconds")
    assert [(r.label, r.attempt) for r in harness.runs] == [("a", 1), ("a", 2), ("urgent", 1)]


async def test_an_event_without_a_key_does_not_wait_for_a_retrying_one(clock: TestClock) -> None:
    retry: Retry[ShipError] = Retry(max_attempts=3, delay="10 seconds", jitter=False)
    harness = Harness(retry=retry, fail_until={"a": 1})
    job = harness.job()
    pool = engine_for(job, clock).client.worker_pool(job)
    await pool.enqueue(Order("a"))
    await clock.run_due()
    await pool.enqueue(Order("urgent"), priority=10)
    await clock.run_due()
    # a waiting retry holds no slot: the only slot runs the next ready event
    assert [(r.label, r.attempt) for r in harness.runs] == [("a", 1), ("urgent", 1)]
    await clock.advance("10 seconds")
    assert [(r.label, r.attempt) for r in harness.runs] == [("a", 1), ("urgent", 1), ("a", 2)]


async def test_attempts_exhausted_on_error_gets_same_error_then_next_runs(
    clock: TestClock,
) -> None:
    retry: Retry[ShipError] = Retry(max_attempts=3, delay="1 second", jitter=False)
    harness = Harness(retry=retry, fail_until={"a": 99})
    job = harness.job()
    storage = MemoryStorage()
    observed: list[JobEvent] = []
    pool = engine_for(job, clock, storage=storage, observers=observed).client.worker_pool(job)
    await pool.enqueue(Order("a", 5), partition_key="k")
    await pool.enqueue(Order("b"), partition_key="k")
    await clock.advance("1 minute")
    assert [(r.label, r.attempt) for r in harness.runs] == [("a", 1), ("a", 2), ("a", 3), ("b", 1)]
    assert len(harness.handled) == 1
    handled = harness.handled[0]
    assert handled.error is harness.errors[-1]
    assert (handled.reason, handled.attempts, handled.state) == ("max_attempts", 3, Order("a", 5))
    assert await storage.dead_letters() == []
    exhausted = [e for e in observed if e.type == "job.retry_exhausted"]
    assert [(e.attempt, e.reason) for e in exhausted] == [(3, "max_attempts")]
    assert (await pool.status()).pending == 0


async def test_no_retry_final_failure_goes_to_on_error(clock: TestClock) -> None:
    harness = Harness(fail_until={"a": 99})
    job = harness.job()
    pool = engine_for(job, clock).client.worker_pool(job)
    await pool.enqueue(Order("a"))
    await pool.enqueue(Order("b"))
    await clock.run_due()
    assert harness.labels() == ["a", "b"]
    assert [(h.error, h.reason, h.attempts, h.state) for h in harness.handled] == [
        (harness.errors[0], "no_retry", 1, Order("a"))
    ]
    assert harness.handled[0].error is harness.errors[0]


async def test_should_retry_false_is_final_after_one_run(clock: TestClock) -> None:
    asked: list[ShipError] = []

    def should_retry(e: ShipError) -> bool:
        asked.append(e)
        return e.code >= 500

    retry: Retry[ShipError] = Retry(max_attempts=5, delay="1 second", should_retry=should_retry)
    harness = Harness(retry=retry, fail_until={"a": 99}, code=400)
    job = harness.job()
    pool = engine_for(job, clock).client.worker_pool(job)
    await pool.enqueue(Order("a"))
    await pool.enqueue(Order("b"))
    await clock.advance("1 minute")
    assert harness.labels() == ["a", "b"]
    assert len(asked) == 1
    assert asked[0] is harness.errors[0]
    assert [(h.reason, h.attempts) for h in harness.handled] == [("not_retryable", 1)]
    assert harness.handled[0].error is harness.errors[0]


async def test_no_on_error_writes_dead_letter_and_moves_on(clock: TestClock) -> None:
    retry: Retry[ShipError] = Retry(max_attempts=2, delay="1 second", jitter=False)
    harness = Harness(retry=retry, fail_until={"a": 99}, with_on_error=False)
    job = harness.job()
    storage = MemoryStorage()
    observed: list[JobEvent] = []
    engine = engine_for(job, clock, storage=storage, observers=observed)
    pool = engine.client.worker_pool(job)
    await pool.enqueue(Order("a", 4), partition_key="k")
    await pool.enqueue(Order("b"), partition_key="k")
    await clock.advance("1 minute")
    assert [(r.label, r.attempt) for r in harness.runs] == [("a", 1), ("a", 2), ("b", 1)]
    letters = await engine.storage.dead_letters()
    assert [(d.key.job, d.key.id, d.reason, d.attempts, d.error, d.event) for d in letters] == [
        (
            "orders",
            "pool",
            "max_attempts",
            2,
            "ShipError: 503",
            {"label": "a", "amount": 4},
        )
    ]
    assert [e.type for e in observed].count("job.dead_lettered") == 1
    assert (await pool.status()).pending == 0


async def test_defect_retried_by_policy_then_dead_lettered_and_next_runs(
    clock: TestClock,
) -> None:
    retry: Retry[ShipError] = Retry(max_attempts=5, delay="1 second")
    harness = Harness(retry=retry, raise_until={"a": 99})
    job = harness.job()
    storage = MemoryStorage()
    observed: list[JobEvent] = []
    engine = engine_for(
        job,
        clock,
        storage=storage,
        observers=observed,
        defect_policy=DefectPolicy(max_retries=2, backoff=Backoff.fixed("5 seconds")),
    )
    pool = engine.client.worker_pool(job)
    await pool.enqueue(Order("a"), partition_key="k")
    await pool.enqueue(Order("b"), partition_key="k")
    await clock.run_due()
    assert harness.labels() == ["a"]
    await clock.advance("4 seconds")
    assert harness.labels() == ["a"]
    await clock.advance("1 second")
    assert harness.labels() == ["a", "a"]
    await clock.advance("5 seconds")
    assert harness.labels() == ["a", "a", "a", "b"]
    assert harness.handled == []  # a defect never reaches on_error
    defects = [e for e in observed if e.type == "job.failed"]
    assert [(e.defect, e.will_retry) for e in defects] == [
        (True, True),
        (True, True),
        (True, False),
    ]
    letters = await storage.dead_letters()
    assert len(letters) == 1
    assert letters[0].reason == "defect"
    assert letters[0].event == {"label": "a", "amount": 0}
    assert "RuntimeError: boom a" in letters[0].error
    status = await pool.status()
    assert (status.pending, status.processed) == (0, 1)
    # the parked event can be resumed: it is queued again and runs
    harness.raise_until.clear()
    resumed = await engine.resume(letters[0].id)
    assert resumed.action == "requeued"
    await clock.run_due()
    assert harness.labels() == ["a", "a", "a", "b", "a"]
    assert await storage.dead_letters() == []


async def test_on_error_raising_is_recorded_not_lost(clock: TestClock) -> None:
    def execute(ctx: WorkerPoolContext[Order]) -> Result[None, ShipError]:
        return Err(ShipError(500)) if ctx.event.label == "a" else Ok(None)

    ran: list[str] = []

    def on_error(e: ShipError, ctx: ErrorContext[Order]) -> None:
        ran.append(ctx.state.label)
        msg = "handler broke"
        raise ValueError(msg)

    job = WorkerPool(name="p", event=Order, concurrency=1, execute=execute, on_error=on_error)
    storage = MemoryStorage()
    pool = Engine(jobs=[job], storage=storage, clock=clock).client.worker_pool(job)
    await pool.enqueue(Order("a"))
    await pool.enqueue(Order("b"))
    await clock.advance("1 minute")
    assert ran == ["a"]
    letters = await storage.dead_letters()
    assert [(d.reason, d.event) for d in letters] == [("defect", {"label": "a", "amount": 0})]
    assert "handler broke" in letters[0].error
    status = await pool.status()
    assert (status.pending, status.processed) == (0, 1)


async def test_on_error_terminate_drops_only_the_failed_event(clock: TestClock) -> None:
    runs: list[str] = []

    def execute(ctx: WorkerPoolContext[Order]) -> Result[None, ShipError]:
        runs.append(ctx.event.label)
        return Err(ShipError(500)) if ctx.event.label == "a" else Ok(None)

    def on_error(e: ShipError, ctx: ErrorContext[Order]) -> None:
        ctx.terminate("give up")

    job = WorkerPool(name="p", event=Order, concurrency=1, execute=execute, on_error=on_error)
    storage = MemoryStorage()
    pool = Engine(jobs=[job], storage=storage, clock=clock).client.worker_pool(job)
    await pool.enqueue(Order("a"))
    await pool.enqueue(Order("b"))
    await pool.enqueue(Order("c"))
    await clock.advance("1 minute")
    assert runs == ["a", "b", "c"]
    assert (await pool.status()).pending == 0


async def test_on_error_reschedule_runs_the_event_again(clock: TestClock) -> None:
    runs: list[tuple[str, int]] = []

    def execute(ctx: WorkerPoolContext[Order]) -> Result[None, ShipError]:
        runs.append((ctx.event.label, ctx.attempt))
        return Err(ShipError(500)) if len(runs) == 1 else Ok(None)

    def on_error(e: ShipError, ctx: ErrorContext[Order]) -> None:
        ctx.reschedule("30 seconds")

    job = WorkerPool(name="p", event=Order, concurrency=1, execute=execute, on_error=on_error)
    pool = Engine(jobs=[job], storage=MemoryStorage(), clock=clock).client.worker_pool(job)
    await pool.enqueue(Order("a"), partition_key="k")
    await pool.enqueue(Order("b"), partition_key="k")
    await clock.run_due()
    assert runs == [("a", 1)]
    await clock.advance("29 seconds")
    assert runs == [("a", 1)]
    await clock.advance("1 second")
    assert runs == [("a", 1), ("a", 1), ("b", 1)]


async def test_observer_events(clock: TestClock) -> None:
    harness = Harness(concurrency=2, fail_until={"bad": 99})
    job = harness.job()
    observed: list[JobEvent] = []
    pool = engine_for(job, clock, observers=observed).client.worker_pool(job)
    await pool.enqueue(Order("ok"), event_id="ev-ok")
    await pool.enqueue(Order("bad"), event_id="ev-bad")
    enqueued = [e for e in observed if e.type == "pool.enqueued"]
    assert [(e.job, e.id, e.event_id, e.kind.value) for e in enqueued] == [
        ("orders", "pool", "ev-ok", "worker_pool"),
        ("orders", "pool", "ev-bad", "worker_pool"),
    ]
    assert all(e.at == clock.now() for e in enqueued)
    await pool.enqueue(Order("dup"), event_id="ev-ok")
    assert len([e for e in observed if e.type == "pool.enqueued"]) == 2  # a duplicate is silent
    await clock.run_due()
    executed = [e for e in observed if e.type == "job.executed"]
    assert [(e.id, e.event_id, e.attempt) for e in executed] == [("pool", "ev-ok", 1)]
    failed = [e for e in observed if e.type == "job.failed"]
    assert [(e.id, e.event_id, e.attempt, e.will_retry, e.reason, e.error) for e in failed] == [
        ("pool", "ev-bad", 1, False, "no_retry", "ShipError: 503")
    ]


async def test_cancel_a_retrying_event_lets_its_partition_key_move_on(clock: TestClock) -> None:
    retry: Retry[ShipError] = Retry(max_attempts=5, delay="1 hour", jitter=False)
    harness = Harness(retry=retry, fail_until={"a": 99})
    job = harness.job()
    pool = engine_for(job, clock).client.worker_pool(job)
    await pool.enqueue(Order("a"), event_id="a", partition_key="k")
    await pool.enqueue(Order("b"), event_id="b", partition_key="k")
    await clock.run_due()
    assert harness.labels() == ["a"]
    assert (await pool.status()).retrying == 1
    cancelled = await pool.cancel("a")
    assert (cancelled.cancelled, cancelled.status) == (True, "cancelled")
    await clock.run_due()  # b runs now, not an hour later, and starts at attempt 1
    assert [(r.label, r.attempt) for r in harness.runs] == [("a", 1), ("b", 1)]
    await clock.advance("2 hours")
    assert [(r.label, r.attempt) for r in harness.runs] == [("a", 1), ("b", 1)]
    assert harness.handled == []


async def test_defect_retry_keeps_its_partition_key_blocked(clock: TestClock) -> None:
    harness = Harness(raise_until={"a": 1})
    job = harness.job()
    engine = engine_for(
        job, clock, defect_policy=DefectPolicy(max_retries=3, backoff=Backoff.fixed("5 seconds"))
    )
    pool = engine.client.worker_pool(job)
    await pool.enqueue(Order("a"), partition_key="k")
    await clock.run_due()
    await pool.enqueue(Order("urgent"), priority=100, partition_key="k")
    await clock.run_due()
    assert harness.labels() == ["a"]
    await clock.advance("5 seconds")
    assert [(r.label, r.attempt) for r in harness.runs] == [("a", 1), ("a", 1), ("urgent", 1)]
    assert await engine.storage.dead_letters() == []
    assert (await pool.status()).processed == 2


async def test_on_error_terminate_emits_terminated_without_dead_letter(clock: TestClock) -> None:
    def execute(ctx: WorkerPoolContext[Order]) -> Result[None, ShipError]:
        return Err(ShipError(500))

    def on_error(e: ShipError, ctx: ErrorContext[Order]) -> None:
        ctx.reschedule("1 minute")  # terminate wins over an earlier reschedule
        ctx.terminate("give up")

    job = WorkerPool(name="p", event=Order, concurrency=1, execute=execute, on_error=on_error)
    storage = MemoryStorage()
    observed: list[JobEvent] = []
    pool = Engine(
        jobs=[job], storage=storage, clock=clock, observers=[observed.append]
    ).client.worker_pool(job)
    await pool.enqueue(Order("a"))
    await clock.advance("1 hour")
    assert [(e.type, e.reason) for e in observed if e.type == "job.terminated"] == [
        ("job.terminated", "give up")
    ]
    assert [e.type for e in observed].count("job.executed") == 0
    assert await storage.dead_letters() == []
    assert (await pool.status()).pending == 0


async def test_client_without_worker_and_sqlite_storage(tmp_path: Path, clock: TestClock) -> None:
    retry: Retry[ShipError] = Retry(max_attempts=3, delay="10 seconds", jitter=False)
    harness = Harness(retry=retry, fail_until={"a": 1})
    job = harness.job()
    web = SqliteStorage(tmp_path / "jobs.db")
    worker = SqliteStorage(tmp_path / "jobs.db")
    try:
        # a web process: a client on the same file without an engine (no worker, no deps)
        # and with its own, never advanced, clock: it only enqueues
        client = Client(jobs=[job], storage=web, clock=TestClock()).worker_pool(job)
        engine_for(job, clock, storage=worker)
        await client.enqueue(Order("a"), partition_key="k")
        await clock.run_due()
        await client.enqueue(Order("urgent"), priority=10)
        await client.enqueue(Order("b"), partition_key="k")
        await clock.run_due()
        # the free slot runs the unkeyed event; b waits behind a's retry (same key)
        assert [(r.label, r.attempt) for r in harness.runs] == [("a", 1), ("urgent", 1)]
        await clock.advance("10 seconds")
        assert [(r.label, r.attempt) for r in harness.runs] == [
            ("a", 1),
            ("urgent", 1),
            ("a", 2),
            ("b", 1),
        ]
        status = await client.status()
        assert (status.pending, status.processed) == (0, 3)
    finally:
        await web.close()
        await worker.close()


# --- concurrency is executions across the pool, serialized per partition key -------------


async def test_concurrency_counts_executions_not_hash_partitions(clock: TestClock) -> None:
    """
    concurrency=2 runs two events at once whatever their keys: each run waits on a barrier
    of two, so the pool only gets through its events if two run at the same time.

    Fails on 0.1.0 (hangs, stopped by the guard): concurrency=2 meant two hash partitions
    (crc32 % 2), and "beach", "city", "forest" and "acme" all landed on partition 0, so the
    four ran one at a time and the first one waited on the barrier forever.
    """
    barrier = asyncio.Barrier(2)
    started: list[str] = []

    async def execute(ctx: WorkerPoolContext[Order]) -> Result[None, ShipError]:
        started.append(ctx.event.label)
        await barrier.wait()
        return Ok(None)

    job = WorkerPool(name="places", event=Order, concurrency=2, execute=execute)
    pool = Engine(jobs=[job], storage=MemoryStorage(), clock=clock).client.worker_pool(job)
    keys = ("beach", "city", "forest", "acme")
    for key in keys:
        await pool.enqueue(Order(key), partition_key=key)

    await promptly(clock.run_due())

    assert sorted(started) == sorted(keys)
    status = await pool.status()
    assert (status.pending, status.processed) == (0, 4)


async def test_one_key_runs_one_at_a_time_in_order_and_its_retry_holds_it(
    clock: TestClock,
) -> None:
    """
    Events of one key run one at a time, in FIFO order; one waiting for its retry holds
    its key, while another key's events go on in the free slot.

    Fails on 0.1.0: with concurrency=2, "beach" and "city" hashed to the same partition,
    so city's events waited behind beach's retry.
    """
    runs: list[tuple[str, int]] = []
    in_flight: dict[str, int] = {}
    peak: dict[str, int] = {}

    async def execute(ctx: WorkerPoolContext[Order]) -> Result[None, ShipError]:
        key = ctx.partition_key or ""
        runs.append((ctx.event.label, ctx.attempt))
        in_flight[key] = in_flight.get(key, 0) + 1
        peak[key] = max(peak.get(key, 0), in_flight[key])
        peak["*"] = max(peak.get("*", 0), sum(in_flight.values()))
        await asyncio.sleep(0)  # a yield: any other run of the pool may start meanwhile
        in_flight[key] -= 1
        if ctx.event.label == "beach/1" and ctx.attempt == 1:
            return Err(ShipError(503))
        return Ok(None)

    retry: Retry[ShipError] = Retry(max_attempts=2, delay="10 seconds", jitter=False)
    job = WorkerPool(name="trips", event=Order, concurrency=2, execute=execute, retry=retry)
    pool = Engine(jobs=[job], storage=MemoryStorage(), clock=clock).client.worker_pool(job)
    for n in (1, 2, 3):
        await pool.enqueue(Order(f"beach/{n}"), partition_key="beach")
    for n in (1, 2):
        await pool.enqueue(Order(f"city/{n}"), partition_key="city")

    await clock.run_due()

    assert [r for r in runs if r[0].startswith("city")] == [("city/1", 1), ("city/2", 1)]
    assert [r for r in runs if r[0].startswith("beach")] == [("beach/1", 1)]
    status = await pool.status()
    assert (status.retrying, status.queued, status.processed) == (1, 2, 2)

    await clock.advance("10 seconds")

    assert [r for r in runs if r[0].startswith("beach")] == [
        ("beach/1", 1),
        ("beach/1", 2),
        ("beach/2", 1),
        ("beach/3", 1),
    ]
    assert (peak["beach"], peak["city"], peak["*"]) == (1, 1, 2)
    assert (await pool.status()).processed == 5


async def test_an_event_without_a_key_takes_any_free_slot(clock: TestClock) -> None:
    """
    While one event runs long, the other slot runs every other unkeyed event, one after
    the other, on a running worker.

    Fails on 0.1.0 (hangs, stopped by the guard): unkeyed events were dealt round-robin to
    partitions (e0, e2 -> 0; e1, e3 -> 1), so e2 waited behind the long e0.
    """
    release = asyncio.Event()
    others_done = asyncio.Event()
    ran: list[str] = []

    async def execute(ctx: WorkerPoolContext[Order]) -> Result[None, ShipError]:
        ran.append(ctx.event.label)
        if ctx.event.label == "e0":
            await release.wait()
        elif len(ran) == 4:
            others_done.set()
        return Ok(None)

    job = WorkerPool(name="slots", event=Order, concurrency=2, execute=execute)
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    pool = engine.client.worker_pool(job)
    first = await pool.enqueue(Order("e0"))
    for n in (1, 2, 3):
        await pool.enqueue(Order(f"e{n}"))

    async with engine:
        await promptly(others_done.wait())
        assert ran == ["e0", "e1", "e2", "e3"]
        status = await pool.status()
        assert (status.running, status.processed) == (1, 3)  # e0 still runs
        release.set()
        await promptly(pool.wait(first.event_id))

    status = await pool.status()
    assert (status.pending, status.processed) == (0, 4)


async def test_priority_first_among_ready_events_never_past_a_key_s_head(
    clock: TestClock,
) -> None:
    """
    The free slot takes the highest priority among the events ready to run; an event
    whose key has an earlier event waiting is not ready, whatever its priority.

    Fails on 0.1.0: a partition ordered its queue by priority alone, so "k-high" ran first,
    ahead of the earlier "k-low" of its own key.
    """
    harness = Harness(concurrency=1)
    job = harness.job()
    pool = engine_for(job, clock).client.worker_pool(job)
    await pool.enqueue(Order("k-low"), partition_key="k", priority=0)
    await pool.enqueue(Order("o-mid"), partition_key="o", priority=5)
    await pool.enqueue(Order("urgent"), priority=7)
    await pool.enqueue(Order("k-high"), partition_key="k", priority=9)

    await clock.run_due()

    assert harness.labels() == ["urgent", "o-mid", "k-low", "k-high"]


async def test_cancel_a_queued_a_retrying_and_a_running_event(clock: TestClock) -> None:
    """
    cancel removes an event that waits (to start, or for its retry) and asks a running one
    to stop ("running"): its async execute is cancelled, and it is recorded as cancelled.

    Fails on 0.1.0 (hangs, stopped by the guard): cancel took the partition, which the
    running event held for its whole run, so it waited for that run; and a running event
    had no answer of its own.
    """
    started = asyncio.Event()
    release = asyncio.Event()
    runs: list[tuple[str, int]] = []

    async def execute(ctx: WorkerPoolContext[Order]) -> Result[None, ShipError]:
        runs.append((ctx.event.label, ctx.attempt))
        if ctx.event.label == "retry":
            return Err(ShipError(503))
        if ctx.event.label == "k1":
            started.set()
            await release.wait()  # never set: the cancel stops it
        return Ok(None)

    retry: Retry[ShipError] = Retry(max_attempts=3, delay="1 hour", jitter=False)
    job = WorkerPool(name="c", event=Order, concurrency=2, execute=execute, retry=retry)
    pool = Engine(jobs=[job], storage=MemoryStorage(), clock=clock).client.worker_pool(job)
    await pool.enqueue(Order("retry"), event_id="retry")
    await clock.run_due()
    await pool.enqueue(Order("k1"), event_id="k1", partition_key="k")
    await pool.enqueue(Order("k2"), event_id="k2", partition_key="k")
    worker = asyncio.create_task(clock.run_due())
    await promptly(started.wait())
    status = await pool.status()
    assert (status.running, status.queued, status.retrying) == (1, 1, 1)

    queued = await promptly(pool.cancel("k2"))
    retrying = await promptly(pool.cancel("retry"))
    running = await promptly(pool.cancel("k1"))

    assert (queued.cancelled, queued.status) == (True, "cancelled")
    assert (retrying.cancelled, retrying.status) == (True, "cancelled")
    assert (running.cancelled, running.status) == (False, "running")
    await promptly(worker)
    await clock.advance("1 day")
    assert runs == [("retry", 1), ("k1", 1)]
    status = await pool.status()
    assert (status.pending, status.processed, status.cancelled) == (0, 0, 3)


async def test_pause_stops_starting_events_and_the_running_one_finishes(clock: TestClock) -> None:
    """
    pause during a run returns at once; the running event finishes and counts, the
    queued ones do not start until resume.

    Fails on 0.1.0 (hangs, stopped by the guard): pause wrote every partition, one of which
    the running event held for its whole run, so pause waited for the run to end.
    """
    started = asyncio.Event()
    release = asyncio.Event()
    ran: list[str] = []

    async def execute(ctx: WorkerPoolContext[Order]) -> Result[None, ShipError]:
        ran.append(ctx.event.label)
        if ctx.event.label == "a":
            started.set()
            await release.wait()
        return Ok(None)

    job = WorkerPool(name="paused", event=Order, concurrency=1, execute=execute)
    pool = Engine(jobs=[job], storage=MemoryStorage(), clock=clock).client.worker_pool(job)
    for label in ("a", "b", "c"):
        await pool.enqueue(Order(label))
    worker = asyncio.create_task(clock.run_due())
    await promptly(started.wait())

    await promptly(pool.pause())

    status = await pool.status()
    assert (status.paused, status.running, status.queued) == (True, 1, 2)
    release.set()
    await promptly(worker)
    await clock.advance("1 hour")
    assert ran == ["a"]
    status = await pool.status()
    assert (status.paused, status.running, status.queued, status.processed) == (True, 0, 2, 1)

    await pool.resume()
    await clock.run_due()
    assert ran == ["a", "b", "c"]
    assert (await pool.status()).processed == 3


async def test_wait_returns_once_the_event_is_done(clock: TestClock) -> None:
    """
    `wait(event_id)` returns once the event is done (here: run by the worker, or
    cancelled); for an id the pool does not hold it returns at once.

    Fails on 0.1.0: there was no way to wait for an enqueued event.
    """
    harness = Harness()
    job = harness.job()
    pool = engine_for(job, clock).client.worker_pool(job)
    done = await pool.enqueue(Order("a"))
    dropped = await pool.enqueue(Order("b"))
    waiter = asyncio.create_task(pool.wait(done.event_id))
    await asyncio.sleep(0)  # a yield: it looks once and finds the event still queued
    assert not waiter.done()

    await pool.cancel(dropped.event_id)
    await promptly(pool.wait(dropped.event_id))
    assert not waiter.done()
    await clock.run_due()
    await promptly(waiter)

    assert harness.labels() == ["a"]
    await promptly(pool.wait("never-enqueued"))


async def test_a_running_worker_is_woken_by_every_enqueue(clock: TestClock) -> None:
    """
    With the worker running (`async with engine`), every enqueue wakes it, not only the
    first: each event runs while the clock stands still.

    A regression test of the new model (0.1.0 passes it): the engine remembered the earliest
    alarm it had woken the worker for and never forgot it, so later enqueues (due at or
    after that time) did not wake the worker, which slept until its poll (never, here).
    """
    harness = Harness()
    job = harness.job()
    engine = engine_for(job, clock)
    pool = engine.client.worker_pool(job)

    async with engine:
        for label in ("a", "b", "c"):
            queued = await pool.enqueue(Order(label))
            await promptly(pool.wait(queued.event_id))

    assert harness.labels() == ["a", "b", "c"]
