"""Getting started: a debounced digest, and how to test it with MemoryStorage and TestClock."""

import asyncio

import attrs

from durable_jobs import (
    Backoff,
    Debounce,
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


@attrs.frozen
class Signup:
    email: str


@attrs.frozen
class Digest:
    emails: tuple[str, ...]


class MailError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"mail server answered {status}")
        self.status = status


outbox: list[tuple[str, ...]] = []


async def deliver(emails: tuple[str, ...]) -> int:
    """A stand-in for a mail API: returns the server's status code."""
    outbox.append(emails)
    return 250


def collect(ctx: DebounceEventContext[Signup, Digest]) -> Digest:
    before = ctx.state.emails if ctx.state is not None else ()
    return Digest((*before, ctx.event.email))


async def send_digest(ctx: DebounceExecuteContext[Digest]) -> Result[None, MailError]:
    status = await deliver(ctx.state.emails)
    if status != 250:
        return Err(MailError(status))
    return Ok(None)


def give_up(e: MailError, ctx: ErrorContext[Digest]) -> None:
    print(f"gave up on {ctx.id} after {ctx.attempts} attempts: {e.status}")


digests = Debounce(
    name="digests",
    event=Signup,
    state=Digest,
    flush_after="1 minute",
    max_events=100,
    on_event=collect,
    execute=send_digest,
    retry=Retry(
        max_attempts=5,
        delay=Backoff.exponential("1 second", max="1 minute"),
        should_retry=lambda e: e.status >= 500,
    ),
    on_error=give_up,
)


async def test_signups_are_mailed_once_a_minute_after_the_first() -> None:
    clock = TestClock()
    engine = Engine(jobs=[digests], storage=MemoryStorage(), clock=clock)
    client = engine.client.debounce(digests)

    await client.add("team-7", Signup("a@example.com"))
    await clock.advance("40 seconds")
    await client.add("team-7", Signup("b@example.com"))  # joins the batch, does not move it
    assert await client.get_state("team-7") == Digest(("a@example.com", "b@example.com"))
    assert outbox == []

    await clock.advance("20 seconds")  # one minute after the first signup: the flush runs
    assert outbox == [("a@example.com", "b@example.com")]
    assert (await client.status("team-7")).status == "not_found"  # the batch is purged


if __name__ == "__main__":
    asyncio.run(test_signups_are_mailed_once_a_minute_after_the_first())
    print("mailed", outbox)
