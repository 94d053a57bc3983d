"""
Continuous jobs through the public client, driven by TestClock (SPEC §4 and §5).

Client calls (`start`, `trigger`, `terminate`) only store what they ask for; a worker runs
`execute`. Here the worker is the engine's own, driven by `clock.run_due()` /
`clock.advance(...)`, and what a run came to is read from observer events and `status`.
"""

import asyncio
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import attrs
import pytest

from durable_jobs import (
    Backoff,
    Continuous,
    ContinuousContext,
    DefectPolicy,
    Engine,
    Err,
    ErrorContext,
    FailureReason,
    InstanceKey,
    JobEvent,
    JobKind,
    MemoryStorage,
    Ok,
    Result,
    Retry,
    Schedule,
    ValidationError,
    cron,
    every,
)
from durable_jobs.testing import TestClock


T0 = datetime(2026, 1, 1, tzinfo=UTC)
GUARD = 10.0
"""Seconds a test waits at most for a run it expects (a hang guard, not a timing check)."""


@attrs.frozen
class Counter:
    n: int


class SyncError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


Step = Literal["ok", "err", "err400", "raise", "terminate"]


@attrs.frozen
class Call:
    at: datetime
    attempt: int
    is_retry: bool
    run_count: int
    state: Counter


@attrs.frozen
class Handled:
    error: SyncError
    reason: FailureReason
    attempts: int
    state: Counter
    attempt: int


@attrs.define
class Recorder:
    """What the job's callbacks saw; `plan[i]` is what call `i` does (the last one repeats)."""

    plan: list[Step]
    calls: list[Call] = attrs.field(factory=list)
    returned: list[SyncError] = attrs.field(factory=list)
    handled: list[Handled] = attrs.field(factory=list)

    def step(self) -> Step:
        return self.plan[min(len(self.calls), len(self.plan)) - 1]


OnError = Callable[[SyncError, ErrorContext[Counter]], None]


def make(
    plan: list[Step],
    *,
    schedule: Schedule | None = None,
    retry: Retry[SyncError] | None = None,
    start_immediately: bool = True,
    on_error: Literal["record", "none"] | OnError = "record",
) -> tuple[Continuous[Counter, Counter, SyncError], Recorder]:
    rec = Recorder(plan)

    def execute(ctx: ContinuousContext[Counter]) -> Result[None, SyncError]:
        rec.calls.append(Call(ctx.now, ctx.attempt, ctx.is_retry, ctx.run_count, ctx.state))
        # every attempt changes the state first: only a success may commit it
        ctx.update_state(lambda s: Counter(s.n + 1))
        step = rec.step()
        if step in ("err", "err400"):
            error = SyncError(503 if step == "err" else 400)
            rec.returned.append(error)
            return Err(error)
        if step == "raise":
            msg = "boom"
            raise RuntimeError(msg)
        if step == "terminate":
            ctx.terminate("enough")
        return Ok(None)

    def record(e: SyncError, ctx: ErrorContext[Counter]) -> None:
        rec.handled.append(Handled(e, ctx.reason, ctx.attempts, ctx.state, ctx.attempt))

    handler: OnError | None = (
        record if on_error == "record" else None if on_error == "none" else on_error
    )
    job = Continuous(
        name="sync",
        state=Counter,
        schedule=schedule if schedule is not None else every("10 minutes"),
        execute=execute,
        start_immediately=start_immediately,
        retry=retry,
        on_error=handler,
    )
    return job, rec


def fixed(seconds: int, max_attempts: int = 3) -> Retry[SyncError]:
    return Retry(max_attempts=max_attempts, delay=Backoff.fixed(seconds), jitter=False)


def failures(events: list[JobEvent]) -> list[JobEvent]:
    """The `job.failed` events: each failed execution, whether and when it is retried."""
    return [e for e in events if e.type == "job.failed"]


# --- happy path -------------------------------------------------------------------------


async def test_start_runs_at_once_then_every_interval(clock: TestClock) -> None:
    job, rec = make(["ok"])
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.continuous(job)

    started = await client.start("a", Counter(0))

    assert started.created
    assert started.next_run_at == T0  # due now: a worker runs it, not the caller
    assert rec.calls == []
    await clock.run_due()
    assert rec.calls == [Call(T0, 1, False, 1, Counter(0))]
    assert await client.get_state("a") == Counter(1)
    status = await client.status("a")
    assert (status.status, status.run_count, status.next_run_at, status.attempt) == (
        "scheduled",
        1,
        T0 + timedelta(minutes=10),
        1,
    )

    await clock.advance("9 minutes")
    assert len(rec.calls) == 1
    await clock.advance("1 minute")
    await clock.advance("10 minutes")
    assert [(c.at, c.run_count, c.state.n) for c in rec.calls] == [
        (T0, 1, 0),
        (T0 + timedelta(minutes=10), 2, 1),
        (T0 + timedelta(minutes=20), 3, 2),
    ]
    status = await client.status("a")
    assert (status.run_count, status.next_run_at) == (3, T0 + timedelta(minutes=30))
    assert await client.get_state("a") == Counter(3)


async def test_start_not_immediately_waits_for_the_schedule(clock: TestClock) -> None:
    job, rec = make(["ok"], schedule=every("1 hour"), start_immediately=False)
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.continuous(job)

    started = await client.start("a", Counter(5))

    assert started.created
    assert started.next_run_at == T0 + timedelta(hours=1)
    await clock.run_due()
    assert rec.calls == []
    assert await client.get_state("a") == Counter(5)
    status = await client.status("a")
    assert (status.status, status.run_count, status.next_run_at) == (
        "scheduled",
        0,
        T0 + timedelta(hours=1),
    )

    await clock.advance("59 minutes")
    assert rec.calls == []
    await clock.advance("1 minute")
    assert rec.calls == [Call(T0 + timedelta(hours=1), 1, False, 1, Counter(5))]
    assert (await client.status("a")).next_run_at == T0 + timedelta(hours=2)


async def test_cron_schedule_runs_at_matching_times() -> None:
    clock = TestClock(datetime(2026, 1, 1, 0, 7, tzinfo=UTC))
    job, rec = make(["ok"], schedule=cron("*/15 * * * *"))
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.continuous(job)

    started = await client.start("a", Counter(0))

    assert started.next_run_at == datetime(2026, 1, 1, 0, 7, tzinfo=UTC)  # due now
    await clock.run_due()
    assert (await client.status("a")).next_run_at == datetime(2026, 1, 1, 0, 15, tzinfo=UTC)
    await clock.advance("30 minutes")  # to 00:37
    assert [c.at for c in rec.calls] == [
        datetime(2026, 1, 1, 0, 7, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 15, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 30, tzinfo=UTC),
    ]
    assert [c.run_count for c in rec.calls] == [1, 2, 3]
    assert (await client.status("a")).next_run_at == datetime(2026, 1, 1, 0, 45, tzinfo=UTC)


async def test_cron_schedule_honours_its_time_zone(clock: TestClock) -> None:
    # 09:00 in Paris is 08:00 UTC in January
    job, rec = make(["ok"], schedule=cron("0 9 * * *", tz="Europe/Paris"), start_immediately=False)
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.continuous(job)

    started = await client.start("a", Counter(0))

    assert started.next_run_at == datetime(2026, 1, 1, 8, tzinfo=UTC)
    await clock.advance("1 day")
    assert [c.at for c in rec.calls] == [datetime(2026, 1, 1, 8, tzinfo=UTC)]
    assert (await client.status("a")).next_run_at == datetime(2026, 1, 2, 8, tzinfo=UTC)


async def test_async_execute_is_awaited(clock: TestClock) -> None:
    seen: list[tuple[str, str, str, int]] = []

    async def execute(ctx: ContinuousContext[Counter]) -> Result[None, SyncError]:
        seen.append((ctx.job_name, ctx.id, ctx.instance_id, ctx.run_count))
        ctx.set_state(Counter(ctx.state.n + 10))
        return Ok(None)

    job = Continuous(name="async-sync", state=Counter, schedule=every(60), execute=execute)
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.continuous(job)
    await client.start("x", Counter(1))
    await clock.advance(60)
    assert seen == [
        ("async-sync", "x", "continuous:async-sync:x", 1),
        ("async-sync", "x", "continuous:async-sync:x", 2),
    ]
    assert await client.get_state("x") == Counter(21)


async def test_starting_an_existing_id_changes_nothing(clock: TestClock) -> None:
    job, rec = make(["ok"])
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.continuous(job)
    await client.start("a", Counter(0))
    await clock.advance("1 minute")

    again = await client.start("a", Counter(100))

    assert not again.created
    assert again.next_run_at == T0 + timedelta(minutes=10)
    assert len(rec.calls) == 1
    assert await client.get_state("a") == Counter(1)
    assert (await client.status("a")).run_count == 1


async def test_start_with_wrong_input_type_stores_nothing(clock: TestClock) -> None:
    job, rec = make(["ok"])
    storage = MemoryStorage()
    engine = Engine(jobs=[job], storage=storage, clock=clock)
    bypassed_the_checker: Any = {"n": 1}
    with pytest.raises(ValidationError) as info:
        await engine.client.continuous(job).start("a", bypassed_the_checker)
    assert info.value.path == "input"
    assert rec.calls == []
    assert await storage.list_instances() == []


async def test_trigger_runs_now_without_moving_the_schedule(clock: TestClock) -> None:
    job, rec = make(["ok"])
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.continuous(job)
    await client.start("a", Counter(0))
    await clock.advance("3 minutes")

    triggered = await client.trigger("a")

    assert triggered.triggered
    assert not triggered.after_current_run
    assert len(rec.calls) == 1  # the trigger made a run due; the worker runs it
    await clock.run_due()
    assert rec.calls[-1] == Call(T0 + timedelta(minutes=3), 1, False, 2, Counter(1))
    assert (await client.status("a")).next_run_at == T0 + timedelta(minutes=10)
    await clock.advance("7 minutes")
    assert [c.at for c in rec.calls] == [
        T0,
        T0 + timedelta(minutes=3),
        T0 + timedelta(minutes=10),
    ]
    assert await client.get_state("a") == Counter(3)


async def test_trigger_and_terminate_never_create_an_instance(clock: TestClock) -> None:
    job, rec = make(["ok"])
    storage = MemoryStorage()
    engine = Engine(jobs=[job], storage=storage, clock=clock)
    client = engine.client.continuous(job)

    triggered = await client.trigger("missing")
    terminated = await client.terminate("missing")

    assert not triggered.triggered
    assert not terminated.terminated
    await clock.run_due()
    assert rec.calls == []
    assert await storage.list_instances() == []
    assert (await client.status("missing")).status == "not_found"
    assert await client.get_state("missing") is None


async def test_terminate_through_the_client_purges(clock: TestClock) -> None:
    events: list[JobEvent] = []
    job, rec = make(["ok"])
    storage = MemoryStorage()
    engine = Engine(jobs=[job], storage=storage, clock=clock, observers=[events.append])
    client = engine.client.continuous(job)
    await client.start("a", Counter(0))
    await clock.run_due()

    result = await client.terminate("a", reason="retired")

    assert result.terminated
    assert result.reason == "retired"
    assert (await client.status("a")).status == "not_found"
    assert await client.get_state("a") is None
    assert await storage.list_instances() == []
    assert events[-1].type == "job.terminated"
    assert events[-1].reason == "retired"
    await clock.advance("1 hour")
    assert len(rec.calls) == 1
    assert not (await client.trigger("a")).triggered
    assert not (await client.terminate("a")).terminated


async def test_ctx_terminate_in_execute_purges_without_on_error(clock: TestClock) -> None:
    events: list[JobEvent] = []
    job, rec = make(["ok", "terminate"], retry=fixed(5))
    storage = MemoryStorage()
    engine = Engine(jobs=[job], storage=storage, clock=clock, observers=[events.append])
    client = engine.client.continuous(job)
    await client.start("a", Counter(0))

    await clock.advance("1 hour")

    assert len(rec.calls) == 2
    assert rec.handled == []
    assert (await client.status("a")).status == "not_found"
    assert await client.get_state("a") is None
    assert await storage.list_instances() == []
    assert await storage.dead_letters() == []
    terminated = [e for e in events if e.type == "job.terminated"]
    assert [(e.id, e.reason) for e in terminated] == [("a", "enough")]


async def test_ctx_terminate_in_a_triggered_run_is_reported(clock: TestClock) -> None:
    events: list[JobEvent] = []
    job, _ = make(["ok", "terminate"])
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock, observers=[events.append])
    client = engine.client.continuous(job)
    await client.start("a", Counter(0))
    await clock.run_due()
    assert (await client.trigger("a")).triggered
    await clock.run_due()
    assert [(e.type, e.reason) for e in events if e.type == "job.terminated"] == [
        ("job.terminated", "enough")
    ]
    assert (await client.status("a")).status == "not_found"


# --- SPEC §5: Ok ------------------------------------------------------------------------


async def test_ok_after_a_retry_commits_state_and_resets_the_attempt(clock: TestClock) -> None:
    job, rec = make(["err", "ok"], retry=fixed(5))
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.continuous(job)
    await client.start("a", Counter(0))
    await clock.run_due()
    assert (await client.status("a")).attempt == 2

    await clock.advance(5)

    assert [(c.attempt, c.is_retry, c.run_count, c.state) for c in rec.calls] == [
        (1, False, 1, Counter(0)),
        (2, True, 1, Counter(0)),
    ]
    status = await client.status("a")
    assert (status.status, status.attempt, status.last_error, status.run_count) == (
        "scheduled",
        1,
        None,
        1,
    )
    assert status.next_run_at == T0 + timedelta(seconds=5, minutes=10)
    assert await client.get_state("a") == Counter(1)
    # the next scheduled run is a fresh attempt 1
    await clock.advance("10 minutes")
    assert (rec.calls[-1].attempt, rec.calls[-1].run_count) == (1, 2)


# --- SPEC §5: Err with retry ------------------------------------------------------------


async def test_err_with_retry_discards_state_and_sets_the_exact_alarm(clock: TestClock) -> None:
    events: list[JobEvent] = []
    job, rec = make(["err"], retry=fixed(7, max_attempts=5))
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock, observers=[events.append])
    client = engine.client.continuous(job)

    await client.start("a", Counter(0))
    await clock.run_due()

    assert [(e.type, e.attempt, e.will_retry, e.retry_at, e.error) for e in failures(events)] == [
        ("job.failed", 1, True, T0 + timedelta(seconds=7), "SyncError: 503")
    ]
    assert await client.get_state("a") == Counter(0)
    status = await client.status("a")
    assert (status.status, status.attempt, status.next_run_at, status.last_error) == (
        "retrying",
        2,
        T0 + timedelta(seconds=7),
        "SyncError: 503",
    )
    await clock.advance(6)
    assert len(rec.calls) == 1
    await clock.advance(1)
    assert [(c.at, c.attempt, c.state) for c in rec.calls] == [
        (T0, 1, Counter(0)),
        (T0 + timedelta(seconds=7), 2, Counter(0)),
    ]
    assert (await client.status("a")).attempt == 3
    assert rec.handled == []


async def test_exponential_backoff_delays(clock: TestClock) -> None:
    retry: Retry[SyncError] = Retry(
        max_attempts=4, delay=Backoff.exponential("1 second"), jitter=False
    )
    job, rec = make(["err"], retry=retry)
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    await engine.client.continuous(job).start("a", Counter(0))
    await clock.advance("1 minute")
    assert [c.at - T0 for c in rec.calls] == [
        timedelta(0),
        timedelta(seconds=1),
        timedelta(seconds=3),
        timedelta(seconds=7),
    ]


@pytest.mark.parametrize(("random", "seconds"), [(0.0, 9.0), (0.5, 10.0), (1.0, 11.0)])
async def test_default_jitter_spreads_the_delay_by_ten_percent(
    clock: TestClock, random: float, seconds: float
) -> None:
    retry: Retry[SyncError] = Retry(max_attempts=2, delay=Backoff.fixed(10))
    job, _ = make(["err"], retry=retry)
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock, random=lambda: random)
    client = engine.client.continuous(job)
    await client.start("a", Counter(0))
    await clock.run_due()
    assert (await client.status("a")).next_run_at == T0 + timedelta(seconds=seconds)


async def test_max_attempts_three_means_exactly_three_runs(clock: TestClock) -> None:
    job, rec = make(["err"], retry=fixed(1))
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.continuous(job)
    await client.start("a", Counter(0))

    await clock.advance("1 day")

    assert [c.attempt for c in rec.calls] == [1, 2, 3]
    assert {c.run_count for c in rec.calls} == {1}
    assert len(rec.handled) == 1


async def test_max_duration_ends_retries(clock: TestClock) -> None:
    retry: Retry[SyncError] = Retry(
        max_attempts=10, delay=Backoff.fixed(10), jitter=False, max_duration="25 seconds"
    )
    job, rec = make(["err"], retry=retry)
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    await engine.client.continuous(job).start("a", Counter(0))
    await clock.advance("1 hour")
    assert [c.at - T0 for c in rec.calls] == [timedelta(seconds=s) for s in (0, 10, 20, 30)]
    assert [(h.reason, h.attempts) for h in rec.handled] == [("max_duration", 4)]


# --- SPEC §5: final failure -------------------------------------------------------------


async def test_final_failure_gives_on_error_the_same_error_then_purges(clock: TestClock) -> None:
    job, rec = make(["err"], retry=fixed(1))
    storage = MemoryStorage()
    engine = Engine(jobs=[job], storage=storage, clock=clock)
    client = engine.client.continuous(job)
    await client.start("a", Counter(4))

    await clock.advance(2)

    assert len(rec.handled) == 1
    handled = rec.handled[0]
    assert handled.error is rec.returned[-1]
    assert (handled.reason, handled.attempts, handled.state, handled.attempt) == (
        "max_attempts",
        3,
        Counter(4),
        3,
    )
    assert (await client.status("a")).status == "not_found"
    assert await client.get_state("a") is None
    assert await storage.list_instances() == []
    assert await storage.dead_letters() == []


async def test_no_retry_is_final_after_one_run(clock: TestClock) -> None:
    events: list[JobEvent] = []
    job, rec = make(["err"])
    storage = MemoryStorage()
    engine = Engine(jobs=[job], storage=storage, clock=clock, observers=[events.append])
    client = engine.client.continuous(job)
    await client.start("a", Counter(0))
    await clock.advance("1 day")
    assert [(e.type, e.attempt, e.will_retry, e.reason, e.error) for e in failures(events)] == [
        ("job.failed", 1, False, "no_retry", "SyncError: 503")
    ]
    assert await storage.dead_letters() == []  # on_error handled it
    assert len(rec.calls) == 1
    assert [(h.error, h.reason, h.attempts) for h in rec.handled] == [
        (rec.returned[0], "no_retry", 1)
    ]
    assert (await client.status("a")).status == "not_found"


async def test_should_retry_false_is_final(clock: TestClock) -> None:
    retry: Retry[SyncError] = Retry(
        max_attempts=5, delay=1, jitter=False, should_retry=lambda e: e.status >= 500
    )
    job, rec = make(["err", "err400"], retry=retry)
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.continuous(job)
    await client.start("a", Counter(0))
    await clock.advance("1 minute")
    assert [c.attempt for c in rec.calls] == [1, 2]
    assert [(h.error.status, h.reason, h.attempts) for h in rec.handled] == [
        (400, "not_retryable", 2)
    ]
    assert (await client.status("a")).status == "not_found"


async def test_no_on_error_writes_a_dead_letter_before_the_purge(clock: TestClock) -> None:
    events: list[JobEvent] = []
    job, rec = make(["err"], retry=fixed(1, max_attempts=2), on_error="none")
    storage = MemoryStorage()
    engine = Engine(jobs=[job], storage=storage, clock=clock, observers=[events.append])
    client = engine.client.continuous(job)
    await client.start("a", Counter(9))

    await clock.advance(1)

    assert len(rec.calls) == 2
    letters = await engine.storage.dead_letters()
    assert len(letters) == 1
    letter = letters[0]
    assert letter.key == InstanceKey(JobKind.CONTINUOUS, "sync", "a")
    assert (letter.reason, letter.attempts, letter.error, letter.at) == (
        "max_attempts",
        2,
        "SyncError: 503",
        T0 + timedelta(seconds=1),
    )
    assert letter.state == {"n": 9}
    assert (await client.status("a")).status == "not_found"
    assert await storage.list_instances() == []
    assert [e.type for e in events if e.type == "job.dead_lettered"] == ["job.dead_lettered"]


async def test_on_error_reschedule_keeps_the_instance(clock: TestClock) -> None:
    def reschedule(e: SyncError, ctx: ErrorContext[Counter]) -> None:
        ctx.reschedule("1 hour")

    job, rec = make(["err", "ok"], on_error=reschedule)
    storage = MemoryStorage()
    engine = Engine(jobs=[job], storage=storage, clock=clock)
    client = engine.client.continuous(job)

    await client.start("a", Counter(3))
    await clock.run_due()

    status = await client.status("a")
    assert (status.status, status.next_run_at, status.attempt) == (
        "scheduled",
        T0 + timedelta(hours=1),
        1,
    )
    assert await client.get_state("a") == Counter(3)
    assert await storage.dead_letters() == []

    await clock.advance("1 hour")
    assert [(c.at, c.attempt) for c in rec.calls] == [(T0, 1), (T0 + timedelta(hours=1), 1)]
    assert await client.get_state("a") == Counter(4)
    assert (await client.status("a")).next_run_at == T0 + timedelta(hours=1, minutes=10)


async def test_on_error_terminate_purges_without_dead_letter(clock: TestClock) -> None:
    def give_up(e: SyncError, ctx: ErrorContext[Counter]) -> None:
        ctx.terminate("gave up")

    events: list[JobEvent] = []
    job, _ = make(["err"], on_error=give_up)
    storage = MemoryStorage()
    engine = Engine(jobs=[job], storage=storage, clock=clock, observers=[events.append])
    client = engine.client.continuous(job)
    await client.start("a", Counter(0))
    await clock.run_due()
    assert [(e.type, e.reason) for e in events if e.type == "job.terminated"] == [
        ("job.terminated", "gave up")
    ]
    assert (await client.status("a")).status == "not_found"
    assert await storage.list_instances() == []
    assert await storage.dead_letters() == []


# --- SPEC §5: defects -------------------------------------------------------------------


async def test_defect_is_retried_by_the_policy_then_parked(clock: TestClock) -> None:
    events: list[JobEvent] = []
    job, rec = make(["raise"], retry=fixed(1, max_attempts=10))
    storage = MemoryStorage()
    policy = DefectPolicy(max_retries=2, backoff=Backoff.fixed("5 seconds"))
    engine = Engine(
        jobs=[job], storage=storage, clock=clock, defect_policy=policy, observers=[events.append]
    )
    client = engine.client.continuous(job)

    await client.start("a", Counter(2))
    await clock.run_due()

    assert [(e.defect, e.will_retry, e.retry_at) for e in failures(events)] == [
        (True, True, T0 + timedelta(seconds=5))
    ]
    assert (await client.status("a")).status == "retrying"
    await clock.advance(5)
    assert len(rec.calls) == 2
    await clock.advance(5)
    assert [c.at - T0 for c in rec.calls] == [timedelta(seconds=s) for s in (0, 5, 10)]
    # a defect is never an E: should_retry / on_error never see it
    assert rec.handled == []

    status = await client.status("a")
    assert status.status == "failed"
    assert status.next_run_at is None
    assert status.last_error is not None
    assert "RuntimeError: boom" in status.last_error
    assert await client.get_state("a") == Counter(2)
    letters = await storage.dead_letters()
    assert [(d.key.id, d.reason, d.state) for d in letters] == [("a", "defect", {"n": 2})]
    assert "RuntimeError: boom" in letters[0].error
    failed = [(e.type, e.defect, e.will_retry) for e in events if e.type != "job.started"]
    assert failed == [
        ("job.failed", True, True),
        ("job.failed", True, True),
        ("job.failed", True, False),
        ("job.dead_lettered", False, None),
    ]

    # parked: no more runs, trigger does nothing
    await clock.advance("1 day")
    assert len(rec.calls) == 3
    assert not (await client.trigger("a")).triggered
    assert len(rec.calls) == 3


async def test_defect_retry_keeps_the_run_number_and_recovers(clock: TestClock) -> None:
    job, rec = make(["raise", "ok"])
    policy = DefectPolicy(max_retries=3, backoff=Backoff.fixed("5 seconds"))
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock, defect_policy=policy)
    client = engine.client.continuous(job)
    await client.start("a", Counter(0))

    await clock.advance(5)

    assert [(c.at - T0, c.run_count, c.state) for c in rec.calls] == [
        (timedelta(0), 1, Counter(0)),
        (timedelta(seconds=5), 1, Counter(0)),
    ]
    status = await client.status("a")
    assert (status.status, status.run_count, status.last_error) == ("scheduled", 1, None)
    assert await client.get_state("a") == Counter(1)


async def test_on_error_raising_parks_the_instance(clock: TestClock) -> None:
    def broken(e: SyncError, ctx: ErrorContext[Counter]) -> None:
        msg = "handler broke"
        raise ValueError(msg)

    events: list[JobEvent] = []
    job, _ = make(["err"], on_error=broken)
    storage = MemoryStorage()
    engine = Engine(jobs=[job], storage=storage, clock=clock, observers=[events.append])
    client = engine.client.continuous(job)

    await client.start("a", Counter(1))
    await clock.run_due()

    # the E failure goes to on_error, whose exception parks the instance (no retry)
    assert [(e.type, e.reason) for e in events if e.type != "job.started"] == [
        ("job.failed", "no_retry"),
        ("job.dead_lettered", "defect"),
    ]
    status = await client.status("a")
    assert status.status == "failed"
    assert status.last_error is not None
    assert "handler broke" in status.last_error
    assert await client.get_state("a") == Counter(1)
    letters = await storage.dead_letters()
    assert [(d.reason, d.state) for d in letters] == [("defect", {"n": 1})]
    assert "ValueError: handler broke" in letters[0].error


# --- observers --------------------------------------------------------------------------


async def test_observer_sees_start_and_success(clock: TestClock) -> None:
    events: list[JobEvent] = []
    job, _ = make(["ok"])
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock, observers=[events.append])
    await engine.client.continuous(job).start("a", Counter(0))
    await clock.advance("10 minutes")
    assert [(e.type, e.kind, e.job, e.id, e.at, e.attempt) for e in events] == [
        ("job.started", JobKind.CONTINUOUS, "sync", "a", T0, None),
        ("job.executed", JobKind.CONTINUOUS, "sync", "a", T0, 1),
        ("job.executed", JobKind.CONTINUOUS, "sync", "a", T0 + timedelta(minutes=10), 1),
    ]


async def test_observer_sees_retries_and_exhaustion(clock: TestClock) -> None:
    events: list[JobEvent] = []
    job, _ = make(["err"], retry=fixed(4, max_attempts=2))
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock, observers=[events.append])
    await engine.client.continuous(job).start("a", Counter(0))
    await clock.advance(4)
    failures = [
        (e.type, e.attempt, e.error, e.will_retry, e.retry_at, e.reason)
        for e in events
        if e.type in ("job.failed", "job.retry_exhausted")
    ]
    assert failures == [
        ("job.failed", 1, "SyncError: 503", True, T0 + timedelta(seconds=4), None),
        ("job.retry_exhausted", 2, "SyncError: 503", None, None, "max_attempts"),
    ]
    assert "job.executed" not in [e.type for e in events]


# --- client calls during a run ----------------------------------------------------------


@attrs.define
class Gate:
    """An async `execute` that waits until the test lets it finish (or cancels it)."""

    entered: asyncio.Event = attrs.field(factory=asyncio.Event)
    release: asyncio.Event = attrs.field(factory=asyncio.Event)
    calls: list[tuple[datetime, int]] = attrs.field(factory=list[tuple[datetime, int]])
    cancelled: list[int] = attrs.field(factory=list[int])

    async def execute(self, ctx: ContinuousContext[Counter]) -> Result[None, SyncError]:
        self.calls.append((ctx.now, ctx.run_count))
        self.entered.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.append(ctx.run_count)
            raise
        ctx.update_state(lambda s: Counter(s.n + 1))
        return Ok(None)


async def test_trigger_during_a_run_queues_exactly_one_run_right_after_it(
    clock: TestClock,
) -> None:
    """
    Triggers while a run is in progress return at once and queue one more run (however
    many arrive), which starts right after the run ends; the schedule is not moved.

    On the old release `start` ran the first run itself, inside the call, and a run held the
    instance, so `trigger` waited for it and then ran `execute` in the caller: here `start`
    never returns (the guard fails it).
    """
    gate = Gate()
    job = Continuous(
        name="gated", state=Counter, schedule=every("10 minutes"), execute=gate.execute
    )
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.continuous(job)
    await asyncio.wait_for(client.start("a", Counter(0)), GUARD)  # it never runs execute
    worker = asyncio.create_task(clock.run_due())
    await asyncio.wait_for(gate.entered.wait(), GUARD)
    assert (await client.status("a")).status == "running"

    # the calls return while the run waits (the guard turns a call that waits into a failure)
    first = await asyncio.wait_for(client.trigger("a"), GUARD)
    second = await asyncio.wait_for(client.trigger("a"), GUARD)

    assert (first.triggered, first.after_current_run) == (True, True)
    assert (second.triggered, second.after_current_run) == (True, True)
    assert gate.calls == [(T0, 1)]
    gate.release.set()
    await asyncio.wait_for(worker, GUARD)
    assert gate.calls == [(T0, 1), (T0, 2)]
    assert await client.get_state("a") == Counter(2)
    status = await client.status("a")
    assert (status.status, status.run_count, status.next_run_at) == (
        "scheduled",
        2,
        T0 + timedelta(minutes=10),
    )
    await clock.run_due()
    assert len(gate.calls) == 2


async def test_terminate_during_an_async_run_cancels_it_and_discards_it(clock: TestClock) -> None:
    """
    `terminate` during an async run purges the instance at once; the run is cancelled, its
    result never written, and `job.lease_lost` reports it.

    The lease is an hour, so the worker learns of the terminate from the call itself, not
    from a renewal. On the old release `start` ran the run inside the call (here: it never
    returns), a run held the instance so `terminate` waited for it, and there was no
    `job.lease_lost`.
    """
    events: list[JobEvent] = []
    gate = Gate()
    job = Continuous(
        name="gated", state=Counter, schedule=every("10 minutes"), execute=gate.execute
    )
    storage = MemoryStorage()
    engine = Engine(
        jobs=[job], storage=storage, clock=clock, observers=[events.append], lease="1 hour"
    )
    client = engine.client.continuous(job)
    await asyncio.wait_for(client.start("a", Counter(0)), GUARD)  # it never runs execute
    worker = asyncio.create_task(clock.run_due())
    await asyncio.wait_for(gate.entered.wait(), GUARD)
    assert (await client.status("a")).status == "running"

    terminated = await asyncio.wait_for(client.terminate("a", reason="retired"), GUARD)

    assert terminated.terminated
    assert (await client.status("a")).status == "not_found"
    await asyncio.wait_for(worker, GUARD)  # the run ends without being released: cancelled
    assert gate.cancelled == [1]
    assert [e.type for e in events if e.type != "job.started"] == [
        "job.terminated",
        "job.lease_lost",
    ]
    assert await storage.list_instances() == []
    assert await client.get_state("a") is None
    await clock.advance("1 hour")
    assert len(gate.calls) == 1


async def test_terminate_during_a_sync_run_refuses_its_result(clock: TestClock) -> None:
    """
    A sync run cannot be stopped: it goes on after `terminate`, and its finish is refused
    (`job.lease_lost`); the purged instance is not brought back by its result.

    On the old release the run happened inside `start`, on the loop, and its result was
    applied (`job.executed`) before `terminate` could even be called.
    """
    events: list[JobEvent] = []
    entered = threading.Event()
    release = threading.Event()
    calls: list[int] = []

    def execute(ctx: ContinuousContext[Counter]) -> Result[None, SyncError]:
        calls.append(ctx.run_count)
        entered.set()
        release.wait(GUARD)
        ctx.set_state(Counter(99))
        return Ok(None)

    job = Continuous(name="blocking", state=Counter, schedule=every("10 minutes"), execute=execute)
    storage = MemoryStorage()
    engine = Engine(jobs=[job], storage=storage, clock=clock, observers=[events.append])
    client = engine.client.continuous(job)
    await asyncio.wait_for(client.start("a", Counter(0)), GUARD)  # it never runs execute
    worker = asyncio.create_task(clock.run_due())
    assert await asyncio.to_thread(entered.wait, GUARD)
    assert (await client.status("a")).status == "running"

    assert (await asyncio.wait_for(client.terminate("a"), GUARD)).terminated

    assert (await client.status("a")).status == "not_found"
    release.set()
    await asyncio.wait_for(worker, GUARD)
    assert calls == [1]
    assert [e.type for e in events if e.type != "job.started"] == [
        "job.terminated",
        "job.lease_lost",
    ]
    assert await storage.list_instances() == []
    assert await client.get_state("a") is None
