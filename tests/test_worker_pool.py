"""WorkerPool through the public client, driven by TestClock."""

from datetime import timedelta
from pathlib import Path

import attrs
import pytest

from durable_jobs import (
    Backoff,
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
    partition: int


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
        self.runs.append(Run(label, ctx.attempt, ctx.partition))
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
    assert result.partition == 0
    assert not result.duplicate
    assert result.event_id
    assert harness.runs == []
    assert (await pool.status()).pending == 1
    await clock.run_due()
    assert harness.runs == [Run("a", 1, 0)]
    await clock.advance("1 hour")
    assert harness.runs == [Run("a", 1, 0)]
    status = await pool.status()
    assert (status.pending, status.processed) == (0, 1)


async def test_generated_event_ids_are_distinct(clock: TestClock) -> None:
    job = Harness().job()
    pool = engine_for(job, clock).client.worker_pool(job)
    ids = {(await pool.enqueue(Order(str(n)))).event_id for n in range(5)}
    assert len(ids) == 5


async def test_context_fields(clock: TestClock) -> None:
    seen: list[tuple[Order, str, int, str | None, int, int, bool, str, str]] = []

    def execute(ctx: WorkerPoolContext[Order]) -> Result[None, ShipError]:
        seen.append(
            (
                ctx.event,
                ctx.event_id,
                ctx.partition,
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
    keyed = await pool.enqueue(Order("a", 7), partition_key="cust-9", priority=3, event_id="e-1")
    plain = await pool.enqueue(Order("b"))
    await clock.run_due()
    assert sorted(seen, key=lambda s: s[1]) == sorted(
        [
            (
                Order("a", 7),
                "e-1",
                keyed.partition,
                "cust-9",
                3,
                1,
                False,
                "ctx",
                str(keyed.partition),
            ),
            (
                Order("b"),
                plain.event_id,
                plain.partition,
                None,
                0,
                1,
                False,
                "ctx",
                str(plain.partition),
            ),
        ],
        key=lambda s: s[1],
    )


async def test_concurrency_gives_n_partitions_fed_round_robin(clock: TestClock) -> None:
    harness = Harness(concurrency=3)
    job = harness.job()
    engine = engine_for(job, clock)
    first_client = engine.client.worker_pool(job)
    parts = [(await first_client.enqueue(Order(f"e{n}"))).partition for n in range(4)]
    # a second client object carries on with the same rotation
    second_client = engine.client.worker_pool(job)
    parts += [(await second_client.enqueue(Order(f"e{n}"))).partition for n in range(4, 6)]
    assert parts == [0, 1, 2, 0, 1, 2]
    status = await first_client.status()
    assert [p.partition for p in status.partitions] == [0, 1, 2]
    assert [p.pending for p in status.partitions] == [2, 2, 2]
    await clock.run_due()
    assert sorted((run.label, run.partition) for run in harness.runs) == [
        (f"e{n}", n % 3) for n in range(6)
    ]


async def test_partition_key_routes_stably(clock: TestClock) -> None:
    harness = Harness(concurrency=5)
    job = harness.job()
    pool = engine_for(job, clock).client.worker_pool(job)
    keys = [f"customer-{n}" for n in range(30)]
    first = {key: (await pool.enqueue(Order(key), partition_key=key)).partition for key in keys}
    # interleaved round-robin traffic does not move keyed events
    for n in range(7):
        await pool.enqueue(Order(f"rr{n}"))
    again = {key: (await pool.enqueue(Order(key), partition_key=key)).partition for key in keys}
    assert again == first
    assert len(set(first.values())) > 1  # keys are spread, not all sent to one partition
    assert all(0 <= p < 5 for p in first.values())
    # a different engine (another process) over other storage routes the same way
    other_job = Harness(concurrency=5).job()
    other = engine_for(other_job, TestClock()).client.worker_pool(other_job)
    third = {key: (await other.enqueue(Order(key), partition_key=key)).partition for key in keys}
    assert third == first
    await clock.run_due()
    for run in harness.runs:
        if run.label.startswith("customer-"):
            assert run.partition == first[run.label]


async def test_fifo_within_a_partition(clock: TestClock) -> None:
    harness = Harness(concurrency=4)
    job = harness.job()
    pool = engine_for(job, clock).client.worker_pool(job)
    for n in range(8):
        await pool.enqueue(Order(f"k{n}"), partition_key="same")
    await clock.run_due()
    assert harness.labels() == [f"k{n}" for n in range(8)]
    assert len({run.partition for run in harness.runs}) == 1


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
    assert len({r.partition for r in results}) == 1
    assert len({r.event_id for r in results}) == 3
    assert not any(r.duplicate for r in results)
    spread = await pool.enqueue_many([Order("x"), Order("y"), Order("z")], priority=2)
    assert sorted(r.partition for r in spread) == [0, 1, 2]
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
    assert (again.event_id, again.partition) == ("once", first.partition)
    assert (await pool.status()).pending == 1
    await clock.run_due()
    assert harness.labels() == ["a"]
    # still recognised after the event was processed
    late = await pool.enqueue(Order("a-late"), event_id="once")
    assert late.duplicate
    await clock.run_due()
    assert harness.labels() == ["a"]


async def test_duplicate_event_id_detected_across_round_robin_partitions(
    clock: TestClock,
) -> None:
    harness = Harness(concurrency=3)
    job = harness.job()
    pool = engine_for(job, clock).client.worker_pool(job)
    results = [await pool.enqueue(Order(f"try{n}"), event_id="webhook-1") for n in range(3)]
    assert [r.duplicate for r in results] == [False, True, True]
    assert len({r.partition for r in results}) == 1
    assert (await pool.status()).pending == 1
    await clock.run_due()
    assert harness.labels() == ["try0"]


# --- cancel, pause, resume, status --------------------------------------------------------


async def test_cancel_removes_a_queued_event(clock: TestClock) -> None:
    harness = Harness(concurrency=2)
    job = harness.job()
    pool = engine_for(job, clock).client.worker_pool(job)
    await pool.enqueue(Order("a"), event_id="a", partition_key="k")
    b = await pool.enqueue(Order("b"), event_id="b", partition_key="k")
    await pool.enqueue(Order("c"), event_id="c", partition_key="k")
    cancelled = await pool.cancel("b")
    assert cancelled.cancelled
    assert cancelled.partition == b.partition
    assert (await pool.status()).pending == 2
    again = await pool.cancel("b")
    assert not again.cancelled
    assert again.partition is None
    await clock.run_due()
    assert harness.labels() == ["a", "c"]
    assert not (await pool.cancel("a")).cancelled  # already processed


async def test_cancel_unknown_event_id(clock: TestClock) -> None:
    job = Harness(concurrency=3).job()
    pool = engine_for(job, clock).client.worker_pool(job)
    await pool.enqueue(Order("a"))
    result = await pool.cancel("never-enqueued")
    assert not result.cancelled
    assert result.partition is None
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
    assert status.paused
    assert [p.status for p in status.partitions] == ["paused", "paused"]
    assert status.pending == 4
    assert status.processed == 0
    await pool.resume()
    status = await pool.status()
    assert not status.paused
    assert all(p.status != "paused" for p in status.partitions)
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


async def test_status_reports_every_partition(clock: TestClock) -> None:
    harness = Harness(concurrency=3)
    job = harness.job()
    pool = engine_for(job, clock).client.worker_pool(job)
    empty = await pool.status()
    assert [(p.partition, p.status, p.pending, p.processed) for p in empty.partitions] == [
        (0, "idle", 0, 0),
        (1, "idle", 0, 0),
        (2, "idle", 0, 0),
    ]
    assert (empty.pending, empty.processed, empty.paused) == (0, 0, False)
    for n in range(4):
        await pool.enqueue(Order(f"e{n}"))
    queued = await pool.status()
    assert [(p.partition, p.status, p.pending) for p in queued.partitions] == [
        (0, "processing", 2),
        (1, "processing", 1),
        (2, "processing", 1),
    ]
    assert queued.pending == 4
    await clock.run_due()
    done = await pool.status()
    assert [(p.status, p.pending, p.processed) for p in done.partitions] == [
        ("idle", 0, 2),
        ("idle", 0, 1),
        ("idle", 0, 1),
    ]
    assert (done.pending, done.processed, done.paused) == (0, 4, False)


# --- SPEC §5 rows for the pool ------------------------------------------------------------


async def test_retry_exact_delay_attempts_and_partition_blocked(clock: TestClock) -> None:
    retry: Retry[ShipError] = Retry(max_attempts=3, delay=Backoff.fixed("10 seconds"), jitter=False)
    harness = Harness(retry=retry, fail_until={"a": 2})
    job = harness.job()
    observed: list[JobEvent] = []
    pool = engine_for(job, clock, observers=observed).client.worker_pool(job)
    start = clock.now()
    await pool.enqueue(Order("a"))
    await pool.enqueue(Order("b"))
    await clock.run_due()
    assert harness.runs == [Run("a", 1, 0)]
    failed = [e for e in observed if e.type == "job.failed"]
    assert [(e.will_retry, e.retry_at, e.attempt) for e in failed] == [
        (True, start + timedelta(seconds=10), 1)
    ]
    assert (await pool.status()).pending == 2
    await clock.advance("9.999 seconds")
    assert harness.runs == [Run("a", 1, 0)]  # b waits behind the retrying a
    await clock.advance("1 ms")
    assert harness.runs == [Run("a", 1, 0), Run("a", 2, 0)]
    await clock.advance("10 seconds")
    assert harness.runs == [Run("a", 1, 0), Run("a", 2, 0), Run("a", 3, 0), Run("b", 1, 0)]
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
    await pool.enqueue(Order("a"))
    await pool.enqueue(Order("b"))
    await clock.advance("1 minute")
    assert [(r.label, r.attempt) for r in harness.runs] == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]


async def test_higher_priority_arrival_waits_for_the_retrying_event(clock: TestClock) -> None:
    retry: Retry[ShipError] = Retry(max_attempts=3, delay="10 seconds", jitter=False)
    harness = Harness(retry=retry, fail_until={"a": 1})
    job = harness.job()
    pool = engine_for(job, clock).client.worker_pool(job)
    await pool.enqueue(Order("a"))
    await clock.run_due()
    await pool.enqueue(Order("urgent"), priority=10)
    await clock.run_due()
    assert [(r.label, r.attempt) for r in harness.runs] == [("a", 1)]
    await clock.advance("10 seconds")
    assert [(r.label, r.attempt) for r in harness.runs] == [("a", 1), ("a", 2), ("urgent", 1)]


async def test_attempts_exhausted_on_error_gets_same_error_then_next_runs(
    clock: TestClock,
) -> None:
    retry: Retry[ShipError] = Retry(max_attempts=3, delay="1 second", jitter=False)
    harness = Harness(retry=retry, fail_until={"a": 99})
    job = harness.job()
    storage = MemoryStorage()
    observed: list[JobEvent] = []
    pool = engine_for(job, clock, storage=storage, observers=observed).client.worker_pool(job)
    await pool.enqueue(Order("a", 5))
    await pool.enqueue(Order("b"))
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
    queued = await pool.enqueue(Order("a", 4), partition_key="k")
    await pool.enqueue(Order("b"), partition_key="k")
    await clock.advance("1 minute")
    assert [(r.label, r.attempt) for r in harness.runs] == [("a", 1), ("a", 2), ("b", 1)]
    letters = await engine.storage.dead_letters()
    assert [(d.key.job, d.key.id, d.reason, d.attempts, d.error, d.event) for d in letters] == [
        (
            "orders",
            str(queued.partition),
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
    await pool.enqueue(Order("a"))
    await pool.enqueue(Order("b"))
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
    assert (status.pending, status.partitions[0].status) == (0, "idle")
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
    await pool.enqueue(Order("a"))
    await pool.enqueue(Order("b"))
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
    ok = await pool.enqueue(Order("ok"), event_id="ev-ok")
    bad = await pool.enqueue(Order("bad"), event_id="ev-bad")
    enqueued = [e for e in observed if e.type == "pool.enqueued"]
    assert [(e.job, e.id, e.event_id, e.kind.value) for e in enqueued] == [
        ("orders", str(ok.partition), "ev-ok", "worker_pool"),
        ("orders", str(bad.partition), "ev-bad", "worker_pool"),
    ]
    assert all(e.at == clock.now() for e in enqueued)
    await pool.enqueue(Order("dup"), event_id="ev-ok")
    assert len([e for e in observed if e.type == "pool.enqueued"]) == 2  # a duplicate is silent
    await clock.run_due()
    executed = [e for e in observed if e.type == "job.executed"]
    assert [(e.id, e.attempt) for e in executed] == [(str(ok.partition), 1)]
    failed = [e for e in observed if e.type == "job.failed"]
    assert [(e.id, e.attempt, e.will_retry, e.reason, e.error) for e in failed] == [
        (str(bad.partition), 1, False, "no_retry", "ShipError: 503")
    ]


async def test_cancel_a_retrying_event_lets_the_partition_move_on(clock: TestClock) -> None:
    retry: Retry[ShipError] = Retry(max_attempts=5, delay="1 hour", jitter=False)
    harness = Harness(retry=retry, fail_until={"a": 99})
    job = harness.job()
    pool = engine_for(job, clock).client.worker_pool(job)
    await pool.enqueue(Order("a"), event_id="a", partition_key="k")
    await pool.enqueue(Order("b"), event_id="b", partition_key="k")
    await clock.run_due()
    assert harness.labels() == ["a"]
    cancelled = await pool.cancel("a")
    assert cancelled.cancelled
    await clock.run_due()  # b runs now, not an hour later, and starts at attempt 1
    assert [(r.label, r.attempt) for r in harness.runs] == [("a", 1), ("b", 1)]
    await clock.advance("2 hours")
    assert [(r.label, r.attempt) for r in harness.runs] == [("a", 1), ("b", 1)]
    assert harness.handled == []


async def test_defect_retry_keeps_the_partition_blocked(clock: TestClock) -> None:
    harness = Harness(raise_until={"a": 1})
    job = harness.job()
    engine = engine_for(
        job, clock, defect_policy=DefectPolicy(max_retries=3, backoff=Backoff.fixed("5 seconds"))
    )
    pool = engine.client.worker_pool(job)
    await pool.enqueue(Order("a"))
    await clock.run_due()
    await pool.enqueue(Order("urgent"), priority=100)
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
        # the web process has its own (never advanced) clock: it only enqueues
        client = Engine(jobs=[job], storage=web, clock=TestClock()).client.worker_pool(job)
        engine_for(job, clock, storage=worker)
        await client.enqueue(Order("a"))
        await clock.run_due()
        await client.enqueue(Order("urgent"), priority=10)
        await client.enqueue(Order("b"))
        await clock.advance("10 seconds")
        assert [(r.label, r.attempt) for r in harness.runs] == [
            ("a", 1),
            ("a", 2),
            ("urgent", 1),
            ("b", 1),
        ]
        status = await client.status()
        assert (status.pending, status.processed) == (0, 3)
    finally:
        await web.close()
        await worker.close()
