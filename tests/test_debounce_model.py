"""
Sealed Debounce batches against a model: random adds, flushes, clears, failures and time.

The model writes the rules out directly. Each id has a FIFO chain of batches: at most one
`flushing` (its first flush has started: it waits for a retry between steps), sealed batches
`queued` behind it (sealed when they reached `max_events`), and one `open` batch taking
events, due `flush_after` after its own first event, or at once after `flush()`. A worker
flushes an id's oldest batch when it is due: the flushing one at its retry time, a queued
one right away, the open one (sealed then) at its due time. A retry comes `RETRY_DELAY`
after the failed attempt; after `MAX_ATTEMPTS` the batch is dead-lettered. `clear` discards
the queued and open batches; a flushing one goes on. Repeated event ids are acknowledged and
not folded.

Hypothesis drives the real engine and the model side by side; after every step it compares
every flush attempt, dead letter, status and open state with the model, and checks the
promises directly on what the engine did (the invariants below).

Fails on 0.1.0: it had no batch ids and no chain (`AddResult.batch_id`, `status().batches`);
events joined a batch waiting for its retry, so retries saw other events and a batch could
exceed `max_events`; reaching `max_events` flushed at once inside `add`, cutting the backoff.
"""

import asyncio
import itertools
from collections import Counter
from collections.abc import Coroutine
from datetime import datetime, timedelta
from typing import Any, TypeVar

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
    DebounceStatus,
    Engine,
    Err,
    FlushReason,
    MemoryStorage,
    Ok,
    Result,
    Retry,
)
from durable_jobs.testing import TestClock


T = TypeVar("T")

WINDOW = timedelta(seconds=60)
MAX_WAIT = timedelta(seconds=90)
"""The cap of the quiet-period variant (`quiet=True`)."""
RETRY_DELAY = timedelta(seconds=30)
MAX_EVENTS = 3
MAX_ATTEMPTS = 3
IDS = ("a", "b")
EVENT_IDS = ("e1", "e2", "e3", "e4")


@attrs.frozen
class Event:
    value: int


@attrs.frozen
class Batch:
    values: tuple[int, ...]


class Flaky(Exception):
    pass


@attrs.frozen
class Attempt:
    """One flush attempt, as `execute` saw it (or as the model expects it)."""

    id: str
    batch_id: str
    values: tuple[int, ...]
    attempt: int
    at: datetime
    reason: FlushReason


Letter = tuple[str, str, tuple[int, ...]]
"""A dead letter: the id, the batch id, the batch's values."""


@attrs.frozen
class Snapshot:
    """What the public API shows after a step (read once per step, checked by invariants)."""

    statuses: dict[str, DebounceStatus]
    states: dict[str, Batch | None]
    letters: list[Letter]


@attrs.define
class ModelBatch:
    batch_id: str
    started_at: datetime
    values: list[int] = attrs.field(factory=list[int])
    flush_requested_at: datetime | None = None
    reason: FlushReason | None = None
    """Set when sealed."""
    attempt: int = 1
    """The next attempt."""
    retry_at: datetime | None = None
    quiet: bool = False
    """A quiet period: due `WINDOW` after its latest event, at most `MAX_WAIT` after its first."""
    last_at: datetime | None = None

    def due(self) -> datetime:
        if self.flush_requested_at is not None:
            return self.flush_requested_at
        if self.quiet:
            last = self.last_at or self.started_at
            return min(last + WINDOW, self.started_at + MAX_WAIT)
        return self.started_at + WINDOW


@attrs.define
class Chain:
    flushing: ModelBatch | None = None
    queued: list[ModelBatch] = attrs.field(factory=list[ModelBatch])
    open: ModelBatch | None = None

    def batches(self) -> list[ModelBatch]:
        head = [] if self.flushing is None else [self.flushing]
        tail = [] if self.open is None else [self.open]
        return [*head, *self.queued, *tail]


class DebounceMachine(RuleBasedStateMachine):
    quiet = False
    """The window mode of the job under test (the fixed window by default)."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = TestClock()
        self.storage = MemoryStorage()
        self.values = itertools.count()
        # what the engine did
        self.attempts: list[Attempt] = []
        self.succeeded: list[Attempt] = []
        self.in_flight: Counter[str] = Counter()
        self.peak_in_flight = 0
        # "b" starts failing, so that retries meet adds, flushes and clears early on
        self.failing: dict[str, bool] = {"a": False, "b": True}
        self.batch_order: dict[str, list[str]] = {id: [] for id in IDS}
        # what the model expects
        self.chains: dict[str, Chain] = {id: Chain() for id in IDS}
        self.expected: list[Attempt] = []
        self.expected_letters: list[Letter] = []
        self._snapshot: Snapshot | None = None
        self.model_failing: dict[str, bool] = {"a": False, "b": True}
        self.seen: dict[str, set[str]] = {id: set() for id in IDS}
        self.accepted: dict[str, list[int]] = {id: [] for id in IDS}
        self.cleared: dict[str, list[int]] = {id: [] for id in IDS}

        def on_event(ctx: DebounceEventContext[Event, Batch]) -> Batch:
            previous = ctx.state.values if ctx.state is not None else ()
            return Batch((*previous, ctx.event.value))

        async def execute(ctx: DebounceExecuteContext[Batch]) -> Result[None, Flaky]:
            attempt = Attempt(
                ctx.id, ctx.batch_id, ctx.state.values, ctx.attempt, ctx.now, ctx.flush_reason
            )
            self.attempts.append(attempt)
            self.in_flight[ctx.id] += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight[ctx.id])
            await asyncio.sleep(0)  # a yield: another flush of this id could start meanwhile
            self.in_flight[ctx.id] -= 1
            if self.failing[ctx.id]:
                return Err(Flaky())
            self.succeeded.append(attempt)
            return Ok(None)

        job = Debounce(
            name="model",
            event=Event,
            state=Batch,
            flush_after=WINDOW,
            max_events=MAX_EVENTS,
            quiet=self.quiet,
            max_wait=MAX_WAIT if self.quiet else None,
            on_event=on_event,
            execute=execute,
            retry=Retry(max_attempts=MAX_ATTEMPTS, delay=Backoff.fixed(RETRY_DELAY), jitter=False),
        )
        self.engine = Engine(jobs=[job], storage=self.storage, clock=self.clock)
        self.client: DebounceClient[Event, Batch] = self.engine.client.debounce(job)

    def teardown(self) -> None:
        self.loop.run_until_complete(self.engine.stop())  # stops the lease keeper's task
        self.loop.close()

    def run(self, step: Coroutine[Any, Any, T]) -> T:
        self._snapshot = None
        return self.loop.run_until_complete(step)

    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            self._snapshot = self.loop.run_until_complete(self._observe())
        return self._snapshot

    async def _observe(self) -> Snapshot:
        statuses = {id: await self.client.status(id) for id in IDS}
        states = {id: await self.client.get_state(id) for id in IDS}
        letters: list[Letter] = []
        for letter in await self.storage.dead_letters():
            assert (letter.reason, letter.attempts) == ("max_attempts", MAX_ATTEMPTS)
            assert isinstance(letter.meta, dict)
            assert isinstance(letter.state, dict)
            values = letter.state["values"]
            assert isinstance(values, list)
            batch_id = str(letter.meta["batch_id"])
            letters.append((letter.key.id, batch_id, tuple(int(str(v)) for v in values)))
        return Snapshot(statuses=statuses, states=states, letters=letters)

    # -- the model's worker --------------------------------------------------------------

    def model_due(self, chain: Chain, now: datetime) -> datetime | None:
        """When the worker next flushes a batch of this chain (`now`: at once)."""
        if chain.flushing is not None:
            return chain.flushing.retry_at
        if chain.queued:
            return now
        if chain.open is not None:
            return chain.open.due()
        return None

    def model_run(self, id: str, start: datetime, target: datetime) -> None:
        """Every flush of `id` an advance from `start` to `target` runs (ids are independent)."""
        chain = self.chains[id]
        now = start
        while (due := self.model_due(chain, now)) is not None and due <= target:
            now = max(now, due)
            if chain.flushing is None:
                if chain.queued:
                    chain.flushing = chain.queued.pop(0)
                else:
                    assert chain.open is not None
                    chain.flushing, chain.open = chain.open, None
                    chain.flushing.reason = (
                        "flush_after" if chain.flushing.flush_requested_at is None else "manual"
                    )
            batch = chain.flushing
            assert batch.reason is not None
            values = tuple(batch.values)
            self.expected.append(
                Attempt(id, batch.batch_id, values, batch.attempt, now, batch.reason)
            )
            if not self.model_failing[id]:
                chain.flushing = None
            elif batch.attempt < MAX_ATTEMPTS:
                batch.attempt += 1
                batch.retry_at = now + RETRY_DELAY
            else:
                self.expected_letters.append((id, batch.batch_id, values))
                chain.flushing = None

    # -- rules -----------------------------------------------------------------------------

    @rule(
        id=st.sampled_from(IDS),
        event_ids=st.lists(st.none() | st.sampled_from(EVENT_IDS), min_size=1, max_size=6),
    )
    def add(self, id: str, event_ids: list[str | None]) -> None:
        chain = self.chains[id]
        for event_id in event_ids:
            value = next(self.values)
            result = self.run(self.client.add(id, Event(value), event_id))
            now = self.clock.now()
            if event_id is not None and event_id in self.seen[id]:
                assert (result.duplicate, result.batch_id, result.created) == (True, None, False)
                continue
            assert not result.duplicate
            assert result.batch_id is not None
            if event_id is not None:
                self.seen[id].add(event_id)
            self.accepted[id].append(value)
            batch = chain.open
            assert result.created == (batch is None)
            if batch is None:
                batch = chain.open = ModelBatch(result.batch_id, now, quiet=self.quiet)
                self.batch_order[id].append(result.batch_id)
            assert result.batch_id == batch.batch_id
            batch.values.append(value)
            batch.last_at = now
            assert result.event_count == len(batch.values)
            if len(batch.values) >= MAX_EVENTS:
                batch.reason = "max_events"
                chain.queued.append(batch)
                chain.open = None
                assert (result.sealed, result.will_flush_at) == (True, now)
            else:
                assert (result.sealed, result.will_flush_at) == (False, batch.due())

    @rule(id=st.sampled_from(IDS))
    def flush(self, id: str) -> None:
        result = self.run(self.client.flush(id))
        batch = self.chains[id].open
        assert result.requested == (batch is not None)
        if batch is not None:
            assert (result.batch_id, result.event_count) == (batch.batch_id, len(batch.values))
            if batch.flush_requested_at is None:
                batch.flush_requested_at = self.clock.now()

    @rule(id=st.sampled_from(IDS))
    def clear(self, id: str) -> None:
        result = self.run(self.client.clear(id))
        chain = self.chains[id]
        discarded = [*chain.queued, *([] if chain.open is None else [chain.open])]
        assert (result.cleared, result.discarded_batches, result.discarded_events) == (
            bool(discarded),
            len(discarded),
            sum(len(b.values) for b in discarded),
        )
        for batch in discarded:
            self.cleared[id].extend(batch.values)
        chain.queued, chain.open = [], None

    @rule(id=st.sampled_from(IDS), fail=st.booleans())
    def next_attempts(self, id: str, fail: bool) -> None:
        """Make the next flush attempts of `id` fail, or succeed, until told otherwise."""
        self.failing[id] = fail
        self.model_failing[id] = fail

    @rule(seconds=st.sampled_from([0, 1, 10, 30, 61]))
    def advance(self, seconds: int) -> None:
        start = self.clock.now()
        self.run(self.clock.advance(timedelta(seconds=seconds)))
        for id in IDS:
            self.model_run(id, start, start + timedelta(seconds=seconds))

    # -- the engine against the model ------------------------------------------------------

    @invariant()
    def same_flush_attempts(self) -> None:
        # per id: attempts of different ids at one instant may come in any order
        for id in IDS:
            assert [a for a in self.attempts if a.id == id] == [
                a for a in self.expected if a.id == id
            ]

    @invariant()
    def same_dead_letters(self) -> None:
        assert sorted(self.snapshot().letters) == sorted(self.expected_letters)

    @invariant()
    def status_is_the_chain(self) -> None:
        for id in IDS:
            chain = self.chains[id]
            status = self.snapshot().statuses[id]
            expected: list[tuple[str, str, int, datetime | None, FlushReason | None]] = []
            if chain.flushing is not None:
                b = chain.flushing
                expected.append((b.batch_id, "retrying", len(b.values), b.retry_at, b.reason))
            expected.extend(
                (b.batch_id, "queued", len(b.values), None, b.reason) for b in chain.queued
            )
            if chain.open is not None:
                b = chain.open
                reason: FlushReason | None = None if b.flush_requested_at is None else "manual"
                expected.append((b.batch_id, "open", len(b.values), b.due(), reason))
            assert [
                (b.batch_id, b.stage, b.event_count, b.due_at, b.reason) for b in status.batches
            ] == expected
            if not expected:
                assert status.status == "not_found"
            elif chain.flushing is not None:
                assert (status.status, status.attempt, status.next_flush_at) == (
                    "retrying",
                    chain.flushing.attempt,
                    chain.flushing.retry_at,
                )
            else:
                assert status.status == "debouncing"
                assert status.next_flush_at is not None
                if chain.queued:  # due at once
                    assert status.next_flush_at <= self.clock.now()
                else:
                    assert chain.open is not None
                    assert status.next_flush_at == chain.open.due()

    @invariant()
    def state_is_the_open_batch(self) -> None:
        for id in IDS:
            batch = self.chains[id].open
            state = self.snapshot().states[id]
            assert state == (None if batch is None else Batch(tuple(batch.values)))

    # -- the promises, checked on what the engine did ---------------------------------------

    @invariant()
    def retries_see_the_same_batch(self) -> None:
        by_batch: dict[str, list[Attempt]] = {}
        for attempt in self.attempts:
            by_batch.setdefault(attempt.batch_id, []).append(attempt)
        for attempts in by_batch.values():
            first = attempts[0]
            assert [a.attempt for a in attempts] == list(range(1, len(attempts) + 1))
            assert {(a.id, a.values, a.reason) for a in attempts} == {
                (first.id, first.values, first.reason)
            }

    @invariant()
    def no_batch_exceeds_max_events(self) -> None:
        assert all(0 < len(a.values) <= MAX_EVENTS for a in self.attempts)

    @invariant()
    def batches_flush_in_order_one_at_a_time(self) -> None:
        assert self.peak_in_flight <= 1
        for id in IDS:
            flushed = [a.batch_id for a in self.attempts if a.id == id]
            runs = [batch for batch, _ in itertools.groupby(flushed)]
            assert len(runs) == len(set(runs))  # a batch's attempts are never interleaved
            order = self.batch_order[id]
            assert runs == sorted(runs, key=order.index)  # oldest batch first

    @invariant()
    def a_retry_is_never_early(self) -> None:
        by_batch: dict[str, datetime] = {}
        for attempt in self.attempts:
            previous = by_batch.get(attempt.batch_id)
            if previous is not None:
                assert attempt.at - previous >= RETRY_DELAY
            by_batch[attempt.batch_id] = attempt.at

    @invariant()
    def no_event_is_lost_or_duplicated(self) -> None:
        for id in IDS:
            delivered = [v for a in self.succeeded if a.id == id for v in a.values]
            delivered += [v for i, _, values in self.snapshot().letters if i == id for v in values]
            pending = [v for b in self.chains[id].batches() for v in b.values]
            ended = delivered + self.cleared[id] + pending
            assert sorted(ended) == sorted(self.accepted[id])


DebounceMachine.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSealedBatchesAgainstModel = DebounceMachine.TestCase


class QuietDebounceMachine(DebounceMachine):
    """The same model with a quiet-period window: each event moves the flush, up to a cap."""

    quiet = True


QuietDebounceMachine.TestCase.settings = settings(
    max_examples=20,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestQuietPeriodBatchesAgainstModel = QuietDebounceMachine.TestCase
