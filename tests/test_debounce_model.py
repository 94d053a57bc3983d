"""
Debounce against a model: random adds, flushes, clears and clock advances.

The model is a plain dictionary of batches with the SPEC §4/§5 rules written out
directly (fixed window from the first event, `max_events`, idempotent event ids, a
retry 10 s after a failed first attempt, a final failure on the second). Hypothesis
drives the real engine and the model side by side and compares, after every step,
every batch delivered to `execute`, every final failure and every instance's status.
"""

import asyncio
from datetime import datetime, timedelta

import attrs
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from durable_jobs import (
    Backoff,
    Debounce,
    DebounceClient,
    DebounceEventContext,
    DebounceExecuteContext,
    Engine,
    Err,
    ErrorContext,
    MemoryStorage,
    Ok,
    Result,
    Retry,
)
from durable_jobs.testing import TestClock


WINDOW = timedelta(seconds=60)
RETRY_DELAY = timedelta(seconds=10)
MAX_EVENTS = 4
IDS = ("a", "b", "c")


@attrs.frozen
class Event:
    value: int


@attrs.frozen
class Batch:
    values: tuple[int, ...]


class Flaky(Exception):
    pass


def fails(values: tuple[int, ...], attempt: int) -> bool:
    """Even first values fail once; a first value of 0 fails every time."""
    return values[0] == 0 or (attempt == 1 and values[0] % 2 == 0)


@attrs.define
class ModelBatch:
    values: list[int]
    alarm_at: datetime
    attempt: int = 1
    reason: str | None = None


Delivery = tuple[str, tuple[int, ...], str, int, datetime]


class DebounceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = TestClock()
        self.delivered: list[Delivery] = []
        self.failed: list[tuple[str, tuple[int, ...], int, str]] = []
        self.expected_delivered: list[Delivery] = []
        self.expected_failed: list[tuple[str, tuple[int, ...], int, str]] = []
        self.batches: dict[str, ModelBatch] = {}
        self.seen: dict[str, set[str]] = {id: set() for id in IDS}

        def on_event(ctx: DebounceEventContext[Event, Batch]) -> Batch:
            previous = ctx.state.values if ctx.state is not None else ()
            return Batch((*previous, ctx.event.value))

        def execute(ctx: DebounceExecuteContext[Batch]) -> Result[None, Flaky]:
            values = ctx.state.values
            self.delivered.append((ctx.id, values, ctx.flush_reason, ctx.attempt, self.clock.now()))
            return Err(Flaky()) if fails(values, ctx.attempt) else Ok(None)

        def on_error(e: Flaky, ctx: ErrorContext[Batch]) -> None:
            self.failed.append((ctx.id, ctx.state.values, ctx.attempts, ctx.reason))

        job = Debounce(
            name="model",
            event=Event,
            state=Batch,
            flush_after=WINDOW,
            max_events=MAX_EVENTS,
            on_event=on_event,
            execute=execute,
            retry=Retry(max_attempts=2, delay=Backoff.fixed(RETRY_DELAY), jitter=False),
            on_error=on_error,
        )
        self.engine = Engine(jobs=[job], storage=MemoryStorage(), clock=self.clock)
        self.client: DebounceClient[Event, Batch] = self.engine.client.debounce(job)

    def teardown(self) -> None:
        self.loop.close()

    # -- the model's flush: what the engine must do when a batch flushes ----------------

    def model_flush(self, id: str, reason: str, now: datetime) -> None:
        batch = self.batches[id]
        batch.reason = batch.reason or reason  # a retry keeps the first reason
        values = tuple(batch.values)
        self.expected_delivered.append((id, values, batch.reason, batch.attempt, now))
        if not fails(values, batch.attempt):
            del self.batches[id]
        elif batch.attempt < 2:
            batch.attempt += 1
            batch.alarm_at = now + RETRY_DELAY
        else:
            self.expected_failed.append((id, values, batch.attempt, "max_attempts"))
            del self.batches[id]

    # -- rules -----------------------------------------------------------------------------

    @rule(
        id=st.sampled_from(IDS),
        value=st.integers(0, 9),
        event_id=st.none() | st.sampled_from(["e1", "e2", "e3"]),
    )
    def add(self, id: str, value: int, event_id: str | None) -> None:
        result = self.loop.run_until_complete(self.client.add(id, Event(value), event_id))
        now = self.clock.now()
        if event_id is not None and event_id in self.seen[id]:
            assert result.duplicate
            return
        assert not result.duplicate
        if event_id is not None:
            self.seen[id].add(event_id)
        batch = self.batches.get(id)
        assert result.created == (batch is None)
        if batch is None:
            batch = self.batches[id] = ModelBatch([], now + WINDOW)
        batch.values.append(value)
        if len(batch.values) >= MAX_EVENTS:
            assert result.flush is not None
            self.model_flush(id, "max_events", now)
        else:
            assert result.flush is None

    @rule(id=st.sampled_from(IDS))
    def flush(self, id: str) -> None:
        result = self.loop.run_until_complete(self.client.flush(id))
        assert result.flushed == (id in self.batches)
        if id in self.batches:
            assert result.event_count == len(self.batches[id].values)
            self.model_flush(id, "manual", self.clock.now())

    @rule(id=st.sampled_from(IDS))
    def clear(self, id: str) -> None:
        result = self.loop.run_until_complete(self.client.clear(id))
        batch = self.batches.pop(id, None)
        assert result.cleared == (batch is not None)
        assert result.discarded_events == (len(batch.values) if batch else 0)

    @rule(seconds=st.integers(1, 90))
    def advance(self, seconds: int) -> None:
        target = self.clock.now() + timedelta(seconds=seconds)
        self.loop.run_until_complete(self.clock.advance(timedelta(seconds=seconds)))
        # alarms fire in due order (ties by id), and a retry may fall inside the window
        while True:
            due = sorted((b.alarm_at, id) for id, b in self.batches.items() if b.alarm_at <= target)
            if not due:
                break
            at, id = due[0]
            self.model_flush(id, "flush_after", at)

    # -- comparison ----------------------------------------------------------------------

    @invariant()
    def same_history(self) -> None:
        assert self.delivered == self.expected_delivered
        assert self.failed == self.expected_failed

    @invariant()
    def same_batches(self) -> None:
        for id in IDS:
            status = self.loop.run_until_complete(self.client.status(id))
            batch = self.batches.get(id)
            if batch is None:
                assert status.status == "not_found"
                assert self.loop.run_until_complete(self.client.get_state(id)) is None
                continue
            expected = "retrying" if batch.attempt > 1 else "debouncing"
            assert (status.status, status.event_count, status.will_flush_at) == (
                expected,
                len(batch.values),
                batch.alarm_at,
            )
            state = self.loop.run_until_complete(self.client.get_state(id))
            assert state == Batch(tuple(batch.values))


DebounceMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestDebounceAgainstModel = DebounceMachine.TestCase
