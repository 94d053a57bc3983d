"""Tasks through the public client, driven by TestClock (SPEC §4 and §5)."""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

import attrs
import pytest

from durable_jobs import (
    Backoff,
    Client,
    DefectPolicy,
    Engine,
    Err,
    ErrorContext,
    ExecutionError,
    FailureReason,
    IdleReason,
    InstanceKey,
    JobEvent,
    JobKind,
    MemoryStorage,
    Ok,
    Result,
    Retry,
    Task,
    TaskEventContext,
    TaskExecuteContext,
    TaskIdleContext,
    ValidationError,
)
from durable_jobs.testing import TestClock


T0 = datetime(2026, 1, 1, tzinfo=UTC)


@attrs.frozen
class Command:
    action: str
    seconds: int = 0


@attrs.frozen
class Flow:
    log: tuple[str, ...]


class StepError(Exception):
    def __init__(self, status: int, retry_after: int = 1) -> None:
        super().__init__(status)
        self.status = status
        self.retry_after = retry_after


Step = Literal["ok", "err", "err400", "raise", "terminate", "again"]


@attrs.frozen
class ExecCall:
    at: datetime
    attempt: int
    is_retry: bool
    execute_count: int
    state: Flow | None


@attrs.frozen
class Handled:
    error: StepError
    reason: FailureReason
    attempts: int
    state: Flow | None


@attrs.define
class Recorder:
    """What the callbacks saw; `plan[i]` is what execute call `i` does (the last one repeats)."""

    plan: list[Step]
    events: list[tuple[str, int, Flow | None, datetime | None]] = attrs.field(factory=list)
    calls: list[ExecCall] = attrs.field(factory=list)
    idle: list[tuple[IdleReason, Flow | None]] = attrs.field(factory=list)
    returned: list[StepError] = attrs.field(factory=list)
    handled: list[Handled] = attrs.field(factory=list)

    def step(self) -> Step:
        return self.plan[min(len(self.calls), len(self.plan)) - 1]


def append(state: Flow | None, entry: str) -> Flow:
    return Flow((*(state.log if state else ()), entry))


OnError = Callable[[StepError, ErrorContext[Flow | None]], None]
OnIdle = Callable[[TaskIdleContext[Flow]], None]


def make(
    plan: list[Step] | None = None,
    *,
    retry: Retry[StepError] | None = None,
    on_error: Literal["record", "none"] | OnError = "record",
    on_idle: OnIdle | None = None,
) -> tuple[Task[Command, Flow, StepError], Recorder]:
    rec = Recorder(plan if plan is not None else ["ok"])

    def on_event(ctx: TaskEventContext[Command, Flow]) -> None:
        command = ctx.event
        rec.events.append((command.action, ctx.event_count, ctx.state, ctx.scheduled_at))
        ctx.update_state(lambda s: append(s, command.action))
        if command.action == "schedule":
            ctx.schedule(command.seconds)
        elif command.action == "cancel":
            ctx.cancel_schedule()
        elif command.action == "stop":
            ctx.terminate("stopped")
        elif command.action == "explode":
            msg = "on_event broke"
            raise RuntimeError(msg)

    def execute(ctx: TaskExecuteContext[Flow]) -> Result[None, StepError]:
        rec.calls.append(ExecCall(ctx.now, ctx.attempt, ctx.is_retry, ctx.execute_count, ctx.state))
        # every attempt changes the state and the alarm first: only a success commits them
        ctx.update_state(lambda s: append(s, f"exec{len(rec.calls)}"))
        step = rec.step()
        if step == "again":
            ctx.schedule("1 minute")
        elif step in ("err", "err400"):
            ctx.schedule("1 hour")
            error = StepError(503 if step == "err" else 400)
            rec.returned.append(error)
            return Err(error)
        elif step == "raise":
            msg = "boom"
            raise RuntimeError(msg)
        elif step == "terminate":
            ctx.terminate("finished")
        return Ok(None)

    def record_idle(ctx: TaskIdleContext[Flow]) -> None:
        rec.idle.append((ctx.idle_reason, ctx.state))

    def record_error(e: StepError, ctx: ErrorContext[Flow | None]) -> None:
        rec.handled.append(Handled(e, ctx.reason, ctx.attempts, ctx.state))

    handler: OnError | None = (
        record_error if on_error == "record" else None if on_error == "none" else on_error
    )
    job = Task(
        name="flow",
        event=Command,
        state=Flow,
        on_event=on_event,
        execute=execute,
        on_idle=on_idle if on_idle is not None else record_idle,
        retry=retry,
        on_error=handler,
    )
    return job, rec


def fixed(seconds: int, max_attempts: int = 3) -> Retry[StepError]:
    return Retry(max_attempts=max_attempts, delay=Backoff.fixed(seconds), jitter=False)


# --- happy path -------------------------------------------------------------------------


async def test_send_runs_on_event_and_stores_state(clock: TestClock) -> None:
    job, rec = make()
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.task(job)

    first = await client.send("t", Command("a"))
    assert rec.idle == []  # on_idle is owed to the worker, never run by send
    await clock.run_due()
    second = await client.send("t", Command("b"))
    await clock.run_due()

    assert (first.status, first.created, first.scheduled_at) == ("applied", True, None)
    assert (second.status, second.created, second.scheduled_at) == ("applied", False, None)
    assert rec.events == [("a", 1, None, None), ("b", 2, Flow(("a",)), None)]
    assert await client.get_state("t") == Flow(("a", "b"))
    status = await client.status("t")
    assert (status.status, status.event_count, status.execute_count, status.scheduled_at) == (
        "idle",
        2,
        0,
        None,
    )
    assert rec.calls == []
    # no alarm after on_event: on_idle ran on the worker each time, seeing the new state
    assert rec.idle == [("on_event", Flow(("a",))), ("on_event", Flow(("a", "b")))]


async def test_schedule_runs_execute_at_that_time_then_on_idle(clock: TestClock) -> None:
    job, rec = make()
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.task(job)

    sent = await client.send("t", Command("schedule", 30))

    assert sent.scheduled_at == T0 + timedelta(seconds=30)
    status = await client.status("t")
    assert (status.status, status.scheduled_at) == ("scheduled", T0 + timedelta(seconds=30))
    assert rec.idle == []  # an alarm is set: no on_idle
    await clock.advance(29)
    assert rec.calls == []
    await clock.advance(1)
    assert rec.calls == [ExecCall(T0 + timedelta(seconds=30), 1, False, 1, Flow(("schedule",)))]
    # the alarm that fired is consumed, so on_idle runs after the alarm-driven execute
    assert rec.idle == [("execute", Flow(("schedule", "exec1")))]
    status = await client.status("t")
    assert (status.status, status.scheduled_at, status.execute_count) == ("idle", None, 1)
    assert await client.get_state("t") == Flow(("schedule", "exec1"))
    await clock.advance("1 day")
    assert len(rec.calls) == 1


async def test_schedule_accepts_an_aware_datetime(clock: TestClock) -> None:
    at = datetime(2026, 1, 1, 3, 30, tzinfo=UTC)

    def on_event(ctx: TaskEventContext[Command, Flow]) -> None:
        assert ctx.schedule(at) == at

    ran: list[datetime] = []

    def execute(ctx: TaskExecuteContext[Flow]) -> Result[None, StepError]:
        ran.append(ctx.now)
        return Ok(None)

    job = Task(name="dt", event=Command, state=Flow, on_event=on_event, execute=execute)
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    sent = await engine.client.task(job).send("t", Command("x"))
    assert sent.scheduled_at == at
    await clock.advance("1 day")
    assert ran == [at]


async def test_execute_can_schedule_itself_again(clock: TestClock) -> None:
    job, rec = make(["again", "again", "ok"])
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.task(job)
    await client.send("t", Command("schedule", 10))

    await clock.advance("1 hour")

    assert [(c.at - T0, c.execute_count, c.attempt) for c in rec.calls] == [
        (timedelta(seconds=10), 1, 1),
        (timedelta(seconds=70), 2, 1),
        (timedelta(seconds=130), 3, 1),
    ]
    assert rec.idle == [("execute", Flow(("schedule", "exec1", "exec2", "exec3")))]
    assert (await client.status("t")).execute_count == 3


async def test_cancel_schedule_clears_the_alarm(clock: TestClock) -> None:
    job, rec = make()
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.task(job)
    await client.send("t", Command("schedule", 30))

    cancelled = await client.send("t", Command("cancel"))

    # on_event saw the existing alarm, then cancelled it
    assert rec.events[-1] == ("cancel", 2, Flow(("schedule",)), T0 + timedelta(seconds=30))
    assert cancelled.scheduled_at is None
    status = await client.status("t")
    assert (status.status, status.scheduled_at) == ("idle", None)
    await clock.run_due()
    assert rec.idle == [("on_event", Flow(("schedule", "cancel")))]
    await clock.advance("1 hour")
    assert rec.calls == []


async def test_on_idle_can_schedule(clock: TestClock) -> None:
    def wake_later(ctx: TaskIdleContext[Flow]) -> None:
        if ctx.idle_reason == "on_event":
            ctx.schedule("5 minutes")

    job, rec = make(on_idle=wake_later)
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.task(job)

    sent = await client.send("t", Command("a"))
    assert sent.scheduled_at is None  # on_idle has not run yet: the worker runs it
    await clock.run_due()

    status = await client.status("t")
    assert (status.status, status.scheduled_at) == ("scheduled", T0 + timedelta(minutes=5))
    await clock.advance("5 minutes")
    assert [c.at for c in rec.calls] == [T0 + timedelta(minutes=5)]
    assert (await client.status("t")).status == "idle"


async def test_on_idle_can_terminate(clock: TestClock) -> None:
    def finish(ctx: TaskIdleContext[Flow]) -> None:
        if ctx.idle_reason == "execute":
            ctx.terminate("done")

    job, rec = make(on_idle=finish)
    storage = MemoryStorage()
    engine = Engine(jobs=[job], storage=storage, clock=clock)
    client = engine.client.task(job)
    await client.send("t", Command("schedule", 5))
    await clock.advance(5)
    assert len(rec.calls) == 1
    assert (await client.status("t")).status == "not_found"
    assert await storage.list_instances() == []


async def test_async_callbacks_are_awaited(clock: TestClock) -> None:
    seen: list[str] = []

    async def on_event(ctx: TaskEventContext[Command, Flow]) -> None:
        ctx.set_state(append(ctx.state, ctx.event.action))
        ctx.schedule(1)

    async def execute(ctx: TaskExecuteContext[Flow]) -> Result[None, StepError]:
        seen.append(f"{ctx.job_name}/{ctx.id}/{ctx.instance_id}")
        ctx.update_state(lambda s: append(s, "ran"))
        return Ok(None)

    async def on_idle(ctx: TaskIdleContext[Flow]) -> None:
        ctx.update_state(lambda s: append(s, f"idle:{ctx.idle_reason}"))

    job = Task(
        name="async-flow",
        event=Command,
        state=Flow,
        on_event=on_event,
        execute=execute,
        on_idle=on_idle,
    )
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.task(job)
    await client.send("t", Command("go"))
    await clock.advance(1)
    assert seen == ["async-flow/t/task:async-flow:t"]
    assert await client.get_state("t") == Flow(("go", "ran", "idle:execute"))


async def test_trigger_runs_execute_now(clock: TestClock) -> None:
    job, rec = make()
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.task(job)
    await client.send("t", Command("schedule", 3600))
    await clock.advance("1 minute")

    triggered = await client.trigger("t")

    assert (triggered.triggered, triggered.after_current_run) == (True, False)
    assert rec.calls == []  # due now: the worker runs it
    await clock.run_due()
    assert rec.calls == [ExecCall(T0 + timedelta(minutes=1), 1, False, 1, Flow(("schedule",)))]
    assert await client.get_state("t") == Flow(("schedule", "exec1"))
    assert (await client.status("t")).status == "idle"


async def test_trigger_and_terminate_never_create_a_task(clock: TestClock) -> None:
    job, rec = make()
    storage = MemoryStorage()
    engine = Engine(jobs=[job], storage=storage, clock=clock)
    client = engine.client.task(job)

    triggered = await client.trigger("missing")
    terminated = await client.terminate("missing")

    assert (triggered.triggered, triggered.after_current_run) == (False, False)
    assert not terminated.terminated
    await clock.advance("1 hour")
    assert rec.calls == []
    assert await storage.list_instances() == []
    assert (await client.status("missing")).status == "not_found"
    assert await client.get_state("missing") is None


async def test_terminate_through_the_client_purges(clock: TestClock) -> None:
    events: list[JobEvent] = []
    job, rec = make()
    storage = MemoryStorage()
    engine = Engine(jobs=[job], storage=storage, clock=clock, observers=[events.append])
    client = engine.client.task(job)
    await client.send("t", Command("schedule", 30))

    result = await client.terminate("t")

    assert result.terminated
    assert (await client.status("t")).status == "not_found"
    assert await client.get_state("t") is None
    assert await storage.list_instances() == []
    assert [(e.type, e.id) for e in events if e.type == "job.terminated"] == [
        ("job.terminated", "t")
    ]
    await clock.advance("1 hour")
    assert rec.calls == []


async def test_terminate_from_on_event(clock: TestClock) -> None:
    job, rec = make()
    storage = MemoryStorage()
    engine = Engine(jobs=[job], storage=storage, clock=clock)
    client = engine.client.task(job)
    await client.send("t", Command("schedule", 30))

    sent = await client.send("t", Command("stop"))

    assert (sent.status, sent.created, sent.scheduled_at) == ("terminated", False, None)
    assert (await client.status("t")).status == "not_found"
    assert await storage.list_instances() == []
    await clock.advance("1 hour")
    assert rec.calls == []


async def test_terminate_from_execute_purges_without_on_error(clock: TestClock) -> None:
    events: list[JobEvent] = []
    job, rec = make(["terminate"], retry=fixed(1))
    storage = MemoryStorage()
    engine = Engine(jobs=[job], storage=storage, clock=clock, observers=[events.append])
    client = engine.client.task(job)
    await client.send("t", Command("a"))
    await clock.run_due()  # the on_idle owed after on_event

    await client.trigger("t")
    await clock.run_due()

    assert len(rec.calls) == 1
    assert [(e.type, e.reason) for e in events if e.type.startswith("job.")] == [
        ("job.terminated", "finished")
    ]
    assert (await client.status("t")).status == "not_found"
    assert await storage.list_instances() == []
    assert await storage.dead_letters() == []
    assert rec.handled == []
    assert [r for r, _ in rec.idle] == ["on_event"]


async def test_event_id_makes_send_idempotent(clock: TestClock) -> None:
    job, rec = make()
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.task(job)

    first = await client.send("t", Command("a"), event_id="e1")
    again = await client.send("t", Command("a"), event_id="e1")
    other = await client.send("t", Command("b"), event_id="e2")

    assert first.status == "applied"
    assert (again.status, again.created) == ("duplicate", False)
    assert other.status == "applied"
    assert [e[0] for e in rec.events] == ["a", "b"]
    assert await client.get_state("t") == Flow(("a", "b"))
    assert (await client.status("t")).event_count == 2


async def test_event_id_of_a_terminating_event_is_remembered(clock: TestClock) -> None:
    job, rec = make()
    storage = MemoryStorage()
    engine = Engine(jobs=[job], storage=storage, clock=clock)
    client = engine.client.task(job)
    await client.send("t", Command("a"), event_id="e1")

    stopped = await client.send("t", Command("stop"), event_id="e2")
    redelivered = await client.send("t", Command("stop"), event_id="e2")

    assert stopped.status == "terminated"
    assert (redelivered.status, redelivered.created) == ("duplicate", False)
    assert [e[0] for e in rec.events] == ["a", "stop"]
    assert await storage.list_instances() == []


async def test_on_event_raising_is_an_execution_error_and_stores_nothing(
    clock: TestClock,
) -> None:
    job, rec = make()
    storage = MemoryStorage()
    engine = Engine(jobs=[job], storage=storage, clock=clock)
    client = engine.client.task(job)

    with pytest.raises(ExecutionError) as info:
        await client.send("new", Command("explode"), event_id="x1")

    assert (info.value.job, info.value.id) == ("flow", "new")
    assert isinstance(info.value.__cause__, RuntimeError)
    assert await storage.list_instances() == []
    assert (await client.status("new")).status == "not_found"

    # an existing task keeps its state, counters and alarm
    await client.send("t", Command("schedule", 30))
    with pytest.raises(ExecutionError):
        await client.send("t", Command("explode"), event_id="x2")
    assert await client.get_state("t") == Flow(("schedule",))
    status = await client.status("t")
    assert (status.event_count, status.scheduled_at) == (1, T0 + timedelta(seconds=30))
    # the failed event id was not remembered: sending it again is not a duplicate
    with pytest.raises(ExecutionError):
        await client.send("t", Command("explode"), event_id="x2")
    assert [e[0] for e in rec.events] == ["explode", "schedule", "explode", "explode"]


async def test_send_json_validates_and_names_the_field(clock: TestClock) -> None:
    job, rec = make()
    storage = MemoryStorage()
    engine = Engine(jobs=[job], storage=storage, clock=clock)
    client = engine.client.task(job)

    with pytest.raises(ValidationError) as info:
        await client.send_json("t", '{"action": "a", "seconds": "soon"}')
    assert "seconds" in info.value.path
    with pytest.raises(ValidationError) as missing:
        await client.send_json("t", '{"seconds": 5}')
    assert "action" in missing.value.path
    with pytest.raises(ValidationError):
        await client.send_json("t", "{not json")
    assert rec.events == []
    assert await storage.list_instances() == []

    sent = await client.send_json("t", '{"action": "schedule", "seconds": 5}')
    assert sent.scheduled_at == T0 + timedelta(seconds=5)
    assert await client.get_state("t") == Flow(("schedule",))


# --- SPEC §5: Ok ------------------------------------------------------------------------


async def test_ok_after_a_retry_commits_state_and_resets_the_attempt(clock: TestClock) -> None:
    job, rec = make(["err", "ok"], retry=fixed(5))
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.task(job)
    await client.send("t", Command("schedule", 10))
    await clock.advance(10)
    assert (await client.status("t")).attempt == 2

    await clock.advance(5)

    assert [(c.attempt, c.is_retry, c.state) for c in rec.calls] == [
        (1, False, Flow(("schedule",))),
        (2, True, Flow(("schedule",))),
    ]
    status = await client.status("t")
    assert (status.status, status.attempt, status.last_error) == ("idle", 1, None)
    assert await client.get_state("t") == Flow(("schedule", "exec2"))
    # a later execute is a fresh attempt 1
    await client.trigger("t")
    await clock.run_due()
    assert len(rec.calls) == 3
    assert rec.calls[-1].attempt == 1


# --- SPEC §5: Err with retry ------------------------------------------------------------


async def test_err_with_retry_discards_changes_and_sets_the_exact_alarm(
    clock: TestClock,
) -> None:
    events: list[JobEvent] = []
    job, rec = make(["err"], retry=fixed(7, max_attempts=5))
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock, observers=[events.append])
    client = engine.client.task(job)
    await client.send("t", Command("a"))
    await clock.run_due()  # the on_idle owed after on_event

    await client.trigger("t")
    await clock.run_due()

    assert [(e.type, e.attempt, e.will_retry, e.retry_at, e.error) for e in events] == [
        ("job.failed", 1, True, T0 + timedelta(seconds=7), "StepError: 503")
    ]
    # execute's state change and its schedule("1 hour") were both discarded
    assert await client.get_state("t") == Flow(("a",))
    status = await client.status("t")
    assert (status.status, status.attempt, status.scheduled_at, status.last_error) == (
        "retrying",
        2,
        T0 + timedelta(seconds=7),
        "StepError: 503",
    )
    assert [r for r, _ in rec.idle] == ["on_event"]  # a pending retry is an alarm
    await clock.advance(6)
    assert len(rec.calls) == 1
    await clock.advance(1)
    assert [(c.at - T0, c.attempt, c.state) for c in rec.calls] == [
        (timedelta(0), 1, Flow(("a",))),
        (timedelta(seconds=7), 2, Flow(("a",))),
    ]
    assert (await client.status("t")).attempt == 3


async def test_retry_after_callable_uses_the_error(clock: TestClock) -> None:
    retry: Retry[StepError] = Retry(
        max_attempts=3, delay=lambda e, n: e.retry_after * 10 * n, jitter=False
    )
    job, rec = make(["err"], retry=retry)
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.task(job)
    await client.send("t", Command("schedule", 0))
    await clock.advance("1 hour")
    assert [c.at - T0 for c in rec.calls] == [timedelta(seconds=s) for s in (0, 10, 30)]


async def test_max_attempts_three_means_exactly_three_runs(clock: TestClock) -> None:
    job, rec = make(["err"], retry=fixed(1))
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.task(job)
    await client.send("t", Command("schedule", 1))

    await clock.advance("1 day")

    assert [c.attempt for c in rec.calls] == [1, 2, 3]
    assert [c.execute_count for c in rec.calls] == [1, 2, 3]
    assert len(rec.handled) == 1


async def test_trigger_before_the_owed_on_idle_ran_keeps_the_attempt_count(
    clock: TestClock,
) -> None:
    """
    A trigger that beats the worker to the on_idle owed after a send: execute runs first,
    fails and waits for its retry; the owed on_idle must not restart its attempts.

    (On 0.1.0 on_idle ran inside send, so nothing was owed; this is a new-model case.)
    """
    job, rec = make(["err"], retry=fixed(4, max_attempts=2))
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.task(job)
    await client.send("t", Command("a"))
    await client.trigger("t")

    await clock.advance("1 day")

    assert [(c.at - T0, c.attempt) for c in rec.calls] == [
        (timedelta(0), 1),
        (timedelta(seconds=4), 2),
    ]
    assert [(h.reason, h.attempts) for h in rec.handled] == [("max_attempts", 2)]
    status = await client.status("t")
    assert (status.status, status.attempt, status.scheduled_at) == ("idle", 1, None)


# --- SPEC §5: final failure -------------------------------------------------------------


async def test_final_failure_gives_on_error_the_same_error_and_keeps_state(
    clock: TestClock,
) -> None:
    job, rec = make(["err"], retry=fixed(1))
    storage = MemoryStorage()
    engine = Engine(jobs=[job], storage=storage, clock=clock)
    client = engine.client.task(job)
    await client.send("t", Command("schedule", 1))

    await clock.advance(3)

    assert len(rec.handled) == 1
    handled = rec.handled[0]
    assert handled.error is rec.returned[-1]
    assert (handled.reason, handled.attempts, handled.state) == (
        "max_attempts",
        3,
        Flow(("schedule",)),
    )
    # a task keeps its state after a final failure; on_idle runs with reason "on_error"
    assert await client.get_state("t") == Flow(("schedule",))
    status = await client.status("t")
    assert (status.status, status.attempt, status.scheduled_at) == ("idle", 1, None)
    assert rec.idle[-1] == ("on_error", Flow(("schedule",)))
    assert await storage.dead_letters() == []
    await clock.advance("1 day")
    assert len(rec.calls) == 3


async def test_no_retry_is_final_after_one_run(clock: TestClock) -> None:
    events: list[JobEvent] = []
    job, rec = make(["err"])
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock, observers=[events.append])
    client = engine.client.task(job)
    await client.send("t", Command("a"))
    await client.trigger("t")
    await clock.run_due()
    assert len(rec.calls) == 1
    assert [(e.type, e.attempt, e.will_retry, e.reason, e.error) for e in events] == [
        ("job.failed", 1, False, "no_retry", "StepError: 503")
    ]
    assert [(h.error, h.reason, h.attempts) for h in rec.handled] == [
        (rec.returned[0], "no_retry", 1)
    ]
    assert await client.get_state("t") == Flow(("a",))


async def test_should_retry_false_is_final(clock: TestClock) -> None:
    retry: Retry[StepError] = Retry(
        max_attempts=5, delay=1, jitter=False, should_retry=lambda e: e.status >= 500
    )
    job, rec = make(["err", "err400"], retry=retry)
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.task(job)
    await client.send("t", Command("schedule", 0))
    await clock.advance("1 minute")
    assert [c.attempt for c in rec.calls] == [1, 2]
    assert [(h.error.status, h.reason, h.attempts) for h in rec.handled] == [
        (400, "not_retryable", 2)
    ]


async def test_no_on_error_writes_a_dead_letter_and_keeps_the_task(clock: TestClock) -> None:
    events: list[JobEvent] = []
    job, rec = make(["err"], retry=fixed(1, max_attempts=2), on_error="none")
    storage = MemoryStorage()
    engine = Engine(jobs=[job], storage=storage, clock=clock, observers=[events.append])
    client = engine.client.task(job)
    await client.send("t", Command("schedule", 1))

    await clock.advance(2)

    assert len(rec.calls) == 2
    letters = await engine.storage.dead_letters()
    assert len(letters) == 1
    letter = letters[0]
    assert letter.key == InstanceKey(JobKind.TASK, "flow", "t")
    assert (letter.reason, letter.attempts, letter.error, letter.at) == (
        "max_attempts",
        2,
        "StepError: 503",
        T0 + timedelta(seconds=2),
    )
    assert letter.state == {"log": ["schedule"]}
    assert await client.get_state("t") == Flow(("schedule",))
    assert (await client.status("t")).status == "idle"
    assert [e.type for e in events if e.type == "job.dead_lettered"] == ["job.dead_lettered"]


async def test_on_error_reschedule_runs_execute_again(clock: TestClock) -> None:
    def reschedule(e: StepError, ctx: ErrorContext[Flow | None]) -> None:
        ctx.reschedule("10 minutes")

    job, rec = make(["err", "ok"], on_error=reschedule)
    storage = MemoryStorage()
    engine = Engine(jobs=[job], storage=storage, clock=clock)
    client = engine.client.task(job)
    await client.send("t", Command("a"))
    await clock.run_due()  # the on_idle owed after on_event

    await client.trigger("t")
    await clock.run_due()

    assert len(rec.calls) == 1
    status = await client.status("t")
    assert (status.status, status.scheduled_at, status.attempt) == (
        "scheduled",
        T0 + timedelta(minutes=10),
        1,
    )
    assert [r for r, _ in rec.idle] == ["on_event"]  # rescheduled: not idle
    await clock.advance("10 minutes")
    assert [(c.at - T0, c.attempt) for c in rec.calls] == [
        (timedelta(0), 1),
        (timedelta(minutes=10), 1),
    ]
    assert await client.get_state("t") == Flow(("a", "exec2"))
    assert await storage.dead_letters() == []


async def test_on_error_terminate_purges_without_dead_letter(clock: TestClock) -> None:
    def give_up(e: StepError, ctx: ErrorContext[Flow | None]) -> None:
        ctx.terminate("gave up")

    events: list[JobEvent] = []
    job, rec = make(["err"], on_error=give_up)
    storage = MemoryStorage()
    engine = Engine(jobs=[job], storage=storage, clock=clock, observers=[events.append])
    client = engine.client.task(job)
    await client.send("t", Command("a"))
    await clock.run_due()  # the on_idle owed after on_event
    await client.trigger("t")
    await clock.run_due()
    assert len(rec.calls) == 1
    assert [(e.type, e.reason) for e in events if e.type == "job.terminated"] == [
        ("job.terminated", "gave up")
    ]
    assert (await client.status("t")).status == "not_found"
    assert await storage.list_instances() == []
    assert await storage.dead_letters() == []
    assert [r for r, _ in rec.idle] == ["on_event"]


# --- SPEC §5: defects -------------------------------------------------------------------


async def test_defect_is_retried_by_the_policy_then_parked(clock: TestClock) -> None:
    job, rec = make(["raise"], retry=fixed(1, max_attempts=10))
    storage = MemoryStorage()
    policy = DefectPolicy(max_retries=2, backoff=Backoff.fixed("5 seconds"))
    events: list[JobEvent] = []
    engine = Engine(
        jobs=[job], storage=storage, clock=clock, defect_policy=policy, observers=[events.append]
    )
    client = engine.client.task(job)
    await client.send("t", Command("a"))
    await clock.run_due()  # the on_idle owed after on_event

    await client.trigger("t")
    await clock.run_due()

    assert [(e.type, e.defect, e.will_retry, e.retry_at) for e in events] == [
        ("job.failed", True, True, T0 + timedelta(seconds=5))
    ]
    status = await client.status("t")
    assert (status.status, status.scheduled_at) == ("retrying", T0 + timedelta(seconds=5))
    await clock.advance(10)
    assert [(c.at - T0, c.state) for c in rec.calls] == [
        (timedelta(seconds=s), Flow(("a",))) for s in (0, 5, 10)
    ]
    assert rec.handled == []  # a defect is never an E

    status = await client.status("t")
    assert (status.status, status.scheduled_at) == ("failed", None)
    assert status.last_error is not None
    assert "RuntimeError: boom" in status.last_error
    assert await client.get_state("t") == Flow(("a",))
    letters = await storage.dead_letters()
    assert [(d.key.id, d.reason, d.state) for d in letters] == [("t", "defect", {"log": ["a"]})]
    await clock.advance("1 day")
    assert len(rec.calls) == 3
    assert not (await client.trigger("t")).triggered
    assert len(rec.calls) == 3


async def test_on_error_raising_parks_the_task(clock: TestClock) -> None:
    def broken(e: StepError, ctx: ErrorContext[Flow | None]) -> None:
        msg = "handler broke"
        raise ValueError(msg)

    job, rec = make(["err"], on_error=broken)
    storage = MemoryStorage()
    engine = Engine(jobs=[job], storage=storage, clock=clock)
    client = engine.client.task(job)
    await client.send("t", Command("schedule", 5))

    await clock.advance(5)

    assert len(rec.calls) == 1
    status = await client.status("t")
    assert status.status == "failed"
    assert status.last_error is not None
    assert "ValueError: handler broke" in status.last_error
    assert await client.get_state("t") == Flow(("schedule",))
    letters = await storage.dead_letters()
    assert [(d.reason, d.state) for d in letters] == [("defect", {"log": ["schedule"]})]


async def test_on_idle_raising_after_execute_is_a_defect(clock: TestClock) -> None:
    def broken(ctx: TaskIdleContext[Flow]) -> None:
        if ctx.idle_reason == "execute":
            msg = "idle broke"
            raise RuntimeError(msg)

    job, rec = make(on_idle=broken)
    storage = MemoryStorage()
    policy = DefectPolicy(max_retries=1, backoff=Backoff.fixed("5 seconds"))
    engine = Engine(jobs=[job], storage=storage, clock=clock, defect_policy=policy)
    client = engine.client.task(job)
    await client.send("t", Command("schedule", 1))

    await clock.advance("1 hour")

    # retried once by the defect policy, then parked; execute's changes were discarded
    assert [c.at - T0 for c in rec.calls] == [timedelta(seconds=1), timedelta(seconds=6)]
    status = await client.status("t")
    assert (status.status, status.scheduled_at) == ("failed", None)
    assert status.last_error is not None
    assert "RuntimeError: idle broke" in status.last_error
    assert await client.get_state("t") == Flow(("schedule",))
    letters = await storage.dead_letters()
    assert [(d.reason, d.state) for d in letters] == [("defect", {"log": ["schedule"]})]
    # trigger reports the parked task instead of raising
    assert not (await client.trigger("t")).triggered


async def test_on_idle_raising_after_send_is_a_defect_on_the_worker(clock: TestClock) -> None:
    raised: list[IdleReason] = []

    def broken(ctx: TaskIdleContext[Flow]) -> None:
        raised.append(ctx.idle_reason)
        msg = "idle broke"
        raise RuntimeError(msg)

    job, rec = make(on_idle=broken)
    storage = MemoryStorage()
    policy = DefectPolicy(max_retries=1, backoff=Backoff.fixed("5 seconds"))
    engine = Engine(jobs=[job], storage=storage, clock=clock, defect_policy=policy)
    client = engine.client.task(job)

    # on_idle runs on the worker: the send is applied and cannot fail because of it
    sent = await client.send("t", Command("a"))
    assert sent.status == "applied"
    assert raised == []

    await clock.run_due()
    assert raised == ["on_event"]
    assert (await client.status("t")).status == "retrying"  # by the defect policy
    await clock.advance("5 seconds")
    assert raised == ["on_event", "on_event"]

    status = await client.status("t")
    assert status.status == "failed"
    assert status.last_error is not None
    assert "RuntimeError: idle broke" in status.last_error
    assert await client.get_state("t") == Flow(("a",))  # the event's fold is kept
    assert [(d.reason, d.state) for d in await storage.dead_letters()] == [
        ("defect", {"log": ["a"]})
    ]
    await clock.advance("1 day")
    assert raised == ["on_event", "on_event"]
    assert rec.calls == []


async def test_on_idle_raising_after_a_final_failure_parks_the_task(clock: TestClock) -> None:
    def broken(ctx: TaskIdleContext[Flow]) -> None:
        if ctx.idle_reason == "on_error":
            msg = "idle broke"
            raise RuntimeError(msg)

    job, rec = make(["err"], on_idle=broken)
    storage = MemoryStorage()
    engine = Engine(jobs=[job], storage=storage, clock=clock)
    client = engine.client.task(job)
    await client.send("t", Command("schedule", 1))

    await clock.advance("1 hour")

    assert len(rec.calls) == 1
    assert len(rec.handled) == 1
    assert (await client.status("t")).status == "failed"
    assert [d.reason for d in await storage.dead_letters()] == ["defect"]


# --- observers --------------------------------------------------------------------------


async def test_observer_sees_schedule_and_success(clock: TestClock) -> None:
    events: list[JobEvent] = []
    job, _ = make(["again", "ok"])
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock, observers=[events.append])
    await engine.client.task(job).send("t", Command("schedule", 30))
    await clock.advance("2 minutes")
    assert [(e.type, e.kind, e.id, e.at, e.scheduled_at, e.reason, e.attempt) for e in events] == [
        ("task.scheduled", JobKind.TASK, "t", T0, T0 + timedelta(seconds=30), "event", None),
        ("job.executed", JobKind.TASK, "t", T0 + timedelta(seconds=30), None, None, 1),
        (
            "task.scheduled",
            JobKind.TASK,
            "t",
            T0 + timedelta(seconds=30),
            T0 + timedelta(seconds=90),
            "execute",
            None,
        ),
        ("job.executed", JobKind.TASK, "t", T0 + timedelta(seconds=90), None, None, 1),
    ]


async def test_observer_sees_retries_and_exhaustion(clock: TestClock) -> None:
    events: list[JobEvent] = []
    job, _ = make(["err"], retry=fixed(4, max_attempts=2))
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock, observers=[events.append])
    client = engine.client.task(job)
    await client.send("t", Command("a"))
    await clock.run_due()  # the on_idle owed after on_event
    await client.trigger("t")
    await clock.advance(4)
    failures = [
        (e.type, e.attempt, e.error, e.will_retry, e.retry_at, e.reason)
        for e in events
        if e.type in ("job.failed", "job.retry_exhausted")
    ]
    assert failures == [
        ("job.failed", 1, "StepError: 503", True, T0 + timedelta(seconds=4), None),
        ("job.retry_exhausted", 2, "StepError: 503", None, None, "max_attempts"),
    ]
    # nothing else: the failed attempts' schedule("1 hour") is not reported as scheduled,
    # and the on_idle run after the send is not an execution
    assert [e.type for e in events] == ["job.failed", "job.retry_exhausted"]


# --- the worker runs execute; a send or trigger during a run never waits for it ---------

HANG_GUARD = 10.0
"""
Seconds before a blocked await fails the test instead of hanging it. Never reached when the
behaviour is right: these calls do not wait for user code (0.1.0 held the instance for the
whole run, so they waited for the gated `execute`, which waits for the test: a deadlock).
"""


T = TypeVar("T")


async def promptly(awaitable: Awaitable[T]) -> T:
    async with asyncio.timeout(HANG_GUARD):
        return await awaitable


@attrs.define
class Gated:
    """A task whose async `execute` blocks, on its first call, until the test releases it."""

    started: asyncio.Event = attrs.field(factory=asyncio.Event)
    release: asyncio.Event = attrs.field(factory=asyncio.Event)
    folded: list[tuple[str, int]] = attrs.field(factory=list[tuple[str, int]])
    runs: list[tuple[datetime, Flow | None]] = attrs.field(
        factory=list[tuple[datetime, Flow | None]]
    )

    def job(self) -> Task[Command, Flow, StepError]:
        def on_event(ctx: TaskEventContext[Command, Flow]) -> None:
            self.folded.append((ctx.event.action, ctx.event_count))
            if ctx.event.action == "explode":
                msg = "on_event broke"
                raise RuntimeError(msg)
            ctx.update_state(lambda s: append(s, ctx.event.action))
            if ctx.event.action == "go":
                ctx.schedule(0)

        async def execute(ctx: TaskExecuteContext[Flow]) -> Result[None, StepError]:
            self.runs.append((ctx.now, ctx.state))
            if len(self.runs) == 1:
                self.started.set()
                await self.release.wait()
            ctx.update_state(lambda s: append(s, f"exec{len(self.runs)}"))
            return Ok(None)

        return Task(name="gated", event=Command, state=Flow, on_event=on_event, execute=execute)


async def test_send_during_a_running_execute_is_queued_then_folded_in_order(
    clock: TestClock,
) -> None:
    """
    Sends while `execute` runs return "queued" at once; the worker folds them, in order,
    right after the run (after execute's own state change).

    Fails on 0.1.0: `execute` ran holding the instance, so `send` waited for the whole run
    (issue 11 measured 2.4-3.0 s per `add` on SQLite), and it had no "queued" status.
    """
    gated = Gated()
    job = gated.job()
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.task(job)
    await client.send("t", Command("go"))
    worker = asyncio.create_task(clock.run_due())
    await promptly(gated.started.wait())

    sent = [await promptly(client.send("t", Command(action))) for action in ("b", "c")]

    assert [(s.status, s.created) for s in sent] == [("queued", False), ("queued", False)]
    assert gated.folded == [("go", 1)]  # not folded yet
    status = await client.status("t")
    assert (status.status, status.queued_events, status.event_count) == ("running", 2, 1)
    assert await client.get_state("t") == Flow(("go",))

    gated.release.set()
    await promptly(worker)

    assert gated.folded == [("go", 1), ("b", 2), ("c", 3)]
    assert await client.get_state("t") == Flow(("go", "exec1", "b", "c"))
    status = await client.status("t")
    assert (status.status, status.queued_events, status.event_count, status.execute_count) == (
        "idle",
        0,
        3,
        1,
    )
    assert len(gated.runs) == 1


async def test_a_queued_event_whose_on_event_raises_gets_its_own_dead_letter(
    clock: TestClock,
) -> None:
    """
    A queued event that cannot be folded is dead-lettered (reason "on_event") on its own;
    the events queued after it are still folded and the task carries on.

    Fails on 0.1.0: there was no queue of sends. A send waited for the running `execute`
    and then raised `ExecutionError` to its caller: nothing was kept of that event.
    """
    gated = Gated()
    job = gated.job()
    storage = MemoryStorage()
    engine = Engine(jobs=[job], storage=storage, clock=clock)
    client = engine.client.task(job)
    await client.send("t", Command("go"))
    worker = asyncio.create_task(clock.run_due())
    await promptly(gated.started.wait())

    sent = [await promptly(client.send("t", Command(a))) for a in ("b", "explode", "c")]
    assert [s.status for s in sent] == ["queued", "queued", "queued"]
    gated.release.set()
    await promptly(worker)

    assert gated.folded == [("go", 1), ("b", 2), ("explode", 3), ("c", 3)]
    assert await client.get_state("t") == Flow(("go", "exec1", "b", "c"))
    letters = await storage.dead_letters()
    assert [(d.key, d.reason, d.attempts, d.event) for d in letters] == [
        (
            InstanceKey(JobKind.TASK, "gated", "t"),
            "on_event",
            1,
            {"action": "explode", "seconds": 0},
        )
    ]
    assert "on_event broke" in letters[0].error
    assert letters[0].state == {"log": ["go", "exec1", "b"]}  # as the event found it
    status = await client.status("t")
    assert (status.status, status.event_count, status.queued_events) == ("idle", 3, 0)


async def test_trigger_during_a_run_runs_execute_again_right_after_it(clock: TestClock) -> None:
    """
    A trigger while `execute` runs reports `after_current_run` and execute runs once more
    right after the run ends, on the worker (with what the first run committed).

    Fails on 0.1.0: trigger ran `execute` itself, in the caller, after waiting for the
    instance held by the running one.
    """
    gated = Gated()
    job = gated.job()
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.task(job)
    await client.send("t", Command("go"))
    worker = asyncio.create_task(clock.run_due())
    await promptly(gated.started.wait())

    triggered = await promptly(client.trigger("t"))

    assert (triggered.triggered, triggered.after_current_run) == (True, True)
    assert len(gated.runs) == 1
    gated.release.set()
    await promptly(worker)

    assert gated.runs == [(T0, Flow(("go",))), (T0, Flow(("go", "exec1")))]
    status = await client.status("t")
    assert (status.status, status.execute_count) == ("idle", 2)
    await clock.advance("1 day")
    assert len(gated.runs) == 2


@attrs.frozen
class Mailer:
    sender: str


async def test_on_idle_after_a_send_runs_on_the_worker_with_its_deps(clock: TestClock) -> None:
    """
    A send that leaves no alarm owes `on_idle`: a worker runs it shortly after, with the
    engine's deps; a client without deps can send.

    Fails on 0.1.0: on_idle ran inside `send` (the caller's process, before send returned),
    so whoever sent needed the jobs' deps.
    """
    idle: list[tuple[IdleReason, Flow | None, str]] = []

    def on_event(ctx: TaskEventContext[Command, Flow]) -> None:
        ctx.update_state(lambda s: append(s, ctx.event.action))

    def execute(ctx: TaskExecuteContext[Flow, Mailer]) -> Result[None, StepError]:
        return Ok(None)

    def on_idle(ctx: TaskIdleContext[Flow, Mailer]) -> None:
        idle.append((ctx.idle_reason, ctx.state, ctx.deps.sender))

    job = Task(
        name="idle", event=Command, state=Flow, on_event=on_event, execute=execute, on_idle=on_idle
    )
    storage = MemoryStorage()
    engine = Engine(jobs=[job], deps=Mailer("ops@example.com"), storage=storage, clock=clock)
    web = Client(jobs=[job], storage=storage, clock=clock)  # a web process: no deps

    sent = await web.task(job).send("t", Command("a"))

    assert (sent.status, sent.scheduled_at) == ("applied", None)
    assert idle == []
    await clock.run_due()
    assert idle == [("on_event", Flow(("a",)), "ops@example.com")]
    assert (await engine.client.task(job).status("t")).status == "idle"
    await clock.advance("1 day")
    assert len(idle) == 1
