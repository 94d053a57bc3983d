"""Debounce through the public client, driven by TestClock."""

from datetime import timedelta

import attrs
import pytest

from durable_jobs import (
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
