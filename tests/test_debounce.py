"""Debounce through the public client, driven by TestClock."""

import asyncio
from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import TypeVar

import attrs
import pytest

from durable_jobs import (
    AddResult,
    Backoff,
    Debounce,
    DebounceExecuteContext,
    Engine,
    Err,
    ErrorContext,
    InvalidDefinitionError,
    MemoryStorage,
    Ok,
    Result,
    Retry,
    ValidationError,
)
from durable_jobs.testing import TestClock


T = TypeVar("T")


@attrs.frozen
class Signup:
    email: str


@attrs.frozen
class Digest:
    emails: tuple[str, ...]


class MailError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def fold(ctx: "object") -> Digest:  # replaced per test
    raise NotImplementedError


def make(
    *, fail_until: int = 0, status: int = 503, retry: "Retry[MailError] | None" = None
) -> tuple[Debounce[Signup, Digest, MailError], list[tuple[int, tuple[str, ...], str]], list[str]]:
    calls: list[tuple[int, tuple[str, ...], str]] = []
    handled: list[str] = []

    def execute(ctx: DebounceExecuteContext[Digest]) -> Result[None, MailError]:
        calls.append((ctx.attempt, ctx.state.emails, ctx.flush_reason))
        if ctx.attempt <= fail_until:
            return Err(MailError(status))
        return Ok(None)

    def on_error(e: MailError, ctx: ErrorContext[Digest]) -> None:
        handled.append(f"{e.status}:{ctx.reason}:{ctx.attempts}:{len(ctx.state.emails)}")

    job = Debounce(
        name="digests",
        event=Signup,
        state=Digest,
        flush_after="1 minute",
        max_events=3,
        on_event=lambda ctx: Digest((*(ctx.state.emails if ctx.state else ()), ctx.event.email)),
        execute=execute,
        retry=retry,
        on_error=on_error,
    )
    return job, calls, handled


async def test_window_is_fixed_from_first_event(clock: TestClock) -> None:
    job, calls, _ = make()
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.debounce(job)
    first = await client.add("t", Signup("a"))
    assert first.created
    assert first.will_flush_at == clock.now() + timedelta(minutes=1)
    await clock.advance("30 seconds")
    second = await client.add("t", Signup("b"))
    assert not second.created
    assert second.will_flush_at == first.will_flush_at
    await clock.advance("29 seconds")
    assert calls == []
    await clock.advance("1 second")
    assert calls == [(1, ("a", "b"), "flush_after")]
    assert (await client.status("t")).status == "not_found"
    assert await client.get_state("t") is None


async def test_max_events_seals_the_batch_and_a_worker_flushes_it(clock: TestClock) -> None:
    job, calls, _ = make()
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.debounce(job)
    for email in ("a", "b"):
        await client.add("t", Signup(email))
    result = await client.add("t", Signup("c"))
    # the full batch is sealed and due now; a worker flushes it, never the add call
    assert (result.sealed, result.event_count, result.will_flush_at) == (True, 3, clock.now())
    assert calls == []
    status = await client.status("t")
    assert [(b.batch_id, b.stage, b.event_count, b.reason) for b in status.batches] == [
        (result.batch_id, "queued", 3, "max_events")
    ]
    assert await client.get_state("t") is None  # no open batch: the next add opens one
    await clock.run_due()
    assert calls == [(1, ("a", "b", "c"), "max_events")]
    assert (await client.status("t")).status == "not_found"


async def test_event_id_is_idempotent(clock: TestClock) -> None:
    job, calls, _ = make()
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.debounce(job)
    await client.add("t", Signup("a"), event_id="e1")
    again = await client.add("t", Signup("a"), event_id="e1")
    assert again.duplicate
    assert (again.created, again.batch_id) == (False, None)
    assert [b.event_count for b in (await client.status("t")).batches] == [1]
    assert await client.get_state("t") == Digest(("a",))
    await clock.advance("1 minute")
    assert calls == [(1, ("a",), "flush_after")]


async def test_retry_with_exact_fixed_delays_then_success(clock: TestClock) -> None:
    retry: Retry[MailError] = Retry(max_attempts=3, delay=Backoff.fixed("10 seconds"), jitter=False)
    job, calls, handled = make(fail_until=2, retry=retry)
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.debounce(job)
    await client.add("t", Signup("a"))
    await clock.advance("1 minute")
    status = await client.status("t")
    assert status.status == "retrying"
    assert status.next_flush_at == clock.now() + timedelta(seconds=10)
    assert [(b.stage, b.due_at) for b in status.batches] == [
        ("retrying", clock.now() + timedelta(seconds=10))
    ]
    await clock.advance("10 seconds")
    await clock.advance("10 seconds")
    assert [c[0] for c in calls] == [1, 2, 3]
    assert handled == []
    assert (await client.status("t")).status == "not_found"


async def test_attempts_exhausted_calls_on_error_with_same_error(clock: TestClock) -> None:
    retry: Retry[MailError] = Retry(max_attempts=3, delay="1 second", jitter=False)
    job, calls, handled = make(fail_until=99, retry=retry)
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.debounce(job)
    await client.add("t", Signup("a"))
    await clock.advance("2 minutes")
    assert len(calls) == 3
    assert handled == ["503:max_attempts:3:1"]
    assert (await client.status("t")).status == "not_found"


async def test_should_retry_false_is_final_after_one_run(clock: TestClock) -> None:
    retry: Retry[MailError] = Retry(max_attempts=5, should_retry=lambda e: e.status >= 500)
    job, calls, handled = make(fail_until=99, status=400, retry=retry)
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.debounce(job)
    await client.add("t", Signup("a"))
    flushed = await client.flush("t")
    assert (flushed.requested, flushed.event_count) == (True, 1)
    assert calls == []  # flush() only makes the batch due: a worker runs it
    await clock.run_due()
    assert [reason for _, _, reason in calls] == ["manual"]
    assert handled == ["400:not_retryable:1:1"]
    assert (await client.status("t")).status == "not_found"
    await clock.advance("1 hour")
    assert len(calls) == 1


async def test_no_on_error_writes_dead_letter_before_purge(clock: TestClock) -> None:
    def execute(ctx: DebounceExecuteContext[Signup]) -> Result[None, MailError]:
        return Err(MailError(500))

    job = Debounce(name="d", event=Signup, flush_after=5, execute=execute)
    storage = MemoryStorage()
    engine = Engine(jobs=[job], storage=storage, clock=clock)
    await engine.client.debounce(job).add("t", Signup("a"))
    await clock.advance(5)
    letters = await storage.dead_letters()
    assert [(d.key.id, d.reason, d.attempts, d.error) for d in letters] == [
        ("t", "no_retry", 1, "MailError: 500")
    ]
    assert letters[0].state == {"email": "a"}


async def test_add_json_names_the_failing_field(clock: TestClock) -> None:
    job, _, _ = make()
    storage = MemoryStorage()
    engine = Engine(jobs=[job], storage=storage, clock=clock)
    with pytest.raises(ValidationError) as info:
        await engine.client.debounce(job).add_json("t", '{"email": 5}')
    assert "email" in info.value.path
    assert await storage.list_instances() == []


def test_execute_annotated_for_another_state_without_on_event_is_rejected() -> None:
    def wants_digest(ctx: DebounceExecuteContext[Digest]) -> Result[None, MailError]:
        return Ok(None)

    with pytest.raises(InvalidDefinitionError, match=r"execute: expects .*Digest.*Signup"):
        Debounce(name="d", event=Signup, flush_after=5, execute=wants_digest)

    def wants_signup(ctx: DebounceExecuteContext[Signup]) -> Result[None, MailError]:
        return Ok(None)

    assert (
        Debounce(name="d", event=Signup, flush_after=5, execute=wants_signup).state_class is Signup
    )


# --- sealed batches: a retry is never hammered, a batch never grows, adds never wait -----

HANG_GUARD = 10.0
"""
Seconds before a blocked await fails the test instead of hanging it. Never reached when the
behaviour is right; 0.1.0 flushed while holding the instance, so an `add` during a gated
flush waited for it, and the flush waited for the test: a deadlock.
"""


async def promptly(awaitable: Awaitable[T]) -> T:
    async with asyncio.timeout(HANG_GUARD):
        return await awaitable


@attrs.frozen
class Attempt:
    """One flush attempt as `execute` saw it."""

    at: datetime
    attempt: int
    batch_id: str
    emails: tuple[str, ...]
    reason: str


def failing_five(
    attempts: list[Attempt], *, fail_until: int = 99
) -> Debounce[Signup, Digest, MailError]:
    """max_events=5, 4 attempts 10 s apart; attempts up to `fail_until` fail."""

    def execute(ctx: DebounceExecuteContext[Digest]) -> Result[None, MailError]:
        attempts.append(
            Attempt(ctx.now, ctx.attempt, ctx.batch_id, ctx.state.emails, ctx.flush_reason)
        )
        return Err(MailError(503)) if ctx.attempt <= fail_until else Ok(None)

    return Debounce(
        name="five",
        event=Signup,
        state=Digest,
        flush_after="1 minute",
        max_events=5,
        on_event=lambda ctx: Digest((*(ctx.state.emails if ctx.state else ()), ctx.event.email)),
        execute=execute,
        retry=Retry(max_attempts=4, delay=Backoff.fixed("10 seconds"), jitter=False),
    )


async def test_adds_past_max_events_never_flush_a_retrying_batch_again(
    clock: TestClock,
) -> None:
    """
    Eight adds at one instant, the worker running whatever is due after each: the full
    batch flushes once, fails and waits 10 s for its retry; the three later events open
    the next batch and nothing flushes again at that instant.

    Fails on 0.1.0 (issue 11, measured): the retrying batch kept taking events, and each
    add past max_events flushed it again at once: the 8 events used all 4 attempts with no
    delay, hammering the failing service.
    """
    attempts: list[Attempt] = []
    job = failing_five(attempts)
    storage = MemoryStorage()
    engine = Engine(jobs=[job], storage=storage, clock=clock)
    client = engine.client.debounce(job)
    t0 = clock.now()

    results: list[AddResult] = []
    for n in range(8):
        results.append(await client.add("team", Signup(f"u{n}")))
        await clock.run_due()

    assert [(a.at, a.attempt, len(a.emails)) for a in attempts] == [(t0, 1, 5)]
    first, second = results[0].batch_id, results[5].batch_id
    assert first is not None
    assert second is not None
    assert first != second
    assert [r.batch_id for r in results] == [first] * 5 + [second] * 3
    status = await client.status("team")
    assert (status.status, status.attempt, status.next_flush_at) == (
        "retrying",
        2,
        t0 + timedelta(seconds=10),
    )
    assert [(b.batch_id, b.stage, b.event_count) for b in status.batches] == [
        (first, "retrying", 5),
        (second, "open", 3),
    ]

    await clock.advance("30 seconds")

    # the backoff holds: one attempt every 10 s, all of them on the same sealed batch
    assert [(a.at - t0, a.attempt, a.batch_id, len(a.emails)) for a in attempts] == [
        (timedelta(seconds=s), n, first, 5) for n, s in ((1, 0), (2, 10), (3, 20), (4, 30))
    ]
    assert [(d.reason, d.attempts) for d in await storage.dead_letters()] == [("max_attempts", 4)]


async def test_no_batch_ever_holds_more_than_max_events(clock: TestClock) -> None:
    """
    Whatever arrives while a batch waits for its retry, every flush (first attempt or
    retry) sends at most max_events events, each accepted event exactly once.

    Fails on 0.1.0 (issue 11, measured): a batch of 6 was sent with max_events=5, because
    events kept joining the batch that waited for its retry.
    """
    attempts: list[Attempt] = []
    job = failing_five(attempts, fail_until=1)
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.debounce(job)
    emails = [f"u{n}" for n in range(13)]

    for email in emails[:5]:
        await client.add("team", Signup(email))
    await clock.run_due()  # the full batch fails once and waits for its retry
    for email in emails[5:]:
        await client.add("team", Signup(email))
        await clock.run_due()
    await clock.advance("10 minutes")

    # every batch fails once and succeeds on its retry, 10 s later, with the same events
    assert [(len(a.emails), a.attempt) for a in attempts] == [
        (5, 1),
        (5, 2),
        (5, 1),
        (5, 2),
        (3, 1),
        (3, 2),
    ]
    batches: dict[str, list[Attempt]] = {}
    for a in attempts:
        batches.setdefault(a.batch_id, []).append(a)
    assert len(batches) == 3
    for first, retry in batches.values():
        assert (retry.emails, retry.reason) == (first.emails, first.reason)
        assert retry.at - first.at == timedelta(seconds=10)
    flushed = [email for first, _ in batches.values() for email in first.emails]
    assert sorted(flushed) == sorted(emails)  # each accepted event exactly once
    assert [first.reason for first, _ in batches.values()] == [
        "max_events",
        "max_events",
        "flush_after",
    ]
    assert (await client.status("team")).status == "not_found"


async def test_add_during_a_running_flush_joins_the_next_batch(clock: TestClock) -> None:
    """
    While a flush runs, `add` returns at once with a new batch; the running flush keeps
    exactly its own events, and the new batch flushes later, after its own window.

    Fails on 0.1.0 (hangs, stopped by the guard): the flush ran `execute` holding the
    instance, so `add` waited for the whole flush (issue 11: 2.4-3.0 s per add on SQLite).
    """
    started = asyncio.Event()
    release = asyncio.Event()
    flushed: list[tuple[str, tuple[str, ...], datetime]] = []

    async def execute(ctx: DebounceExecuteContext[Digest]) -> Result[None, MailError]:
        flushed.append((ctx.batch_id, ctx.state.emails, ctx.now))
        if len(flushed) == 1:
            started.set()
            await release.wait()
        return Ok(None)

    job = Debounce(
        name="gated",
        event=Signup,
        state=Digest,
        flush_after="1 minute",
        on_event=lambda ctx: Digest((*(ctx.state.emails if ctx.state else ()), ctx.event.email)),
        execute=execute,
    )
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    client = engine.client.debounce(job)
    first = await client.add("t", Signup("a"))
    await client.add("t", Signup("b"))
    flush = await client.flush("t")
    worker = asyncio.create_task(clock.run_due())
    await promptly(started.wait())

    late = await promptly(client.add("t", Signup("c")))

    assert (late.created, late.event_count, late.sealed) == (True, 1, False)
    assert late.batch_id not in (None, first.batch_id)
    assert late.will_flush_at == clock.now() + timedelta(minutes=1)
    assert await client.get_state("t") == Digest(("c",))
    status = await client.status("t")
    assert [(b.batch_id, b.stage, b.event_count) for b in status.batches] == [
        (flush.batch_id, "flushing", 2),
        (late.batch_id, "open", 1),
    ]
    release.set()
    await promptly(worker)
    assert flushed == [(first.batch_id, ("a", "b"), clock.now())]

    await clock.advance("1 minute")
    assert [(batch, emails) for batch, emails, _ in flushed] == [
        (first.batch_id, ("a", "b")),
        (late.batch_id, ("c",)),
    ]
    assert (await client.status("t")).status == "not_found"
