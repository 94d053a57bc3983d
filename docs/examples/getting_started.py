"""The getting-started example: a debounced digest, tested with a TestClock."""

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


sent: list[tuple[str, ...]] = []


def collect(ctx: DebounceEventContext[Signup, Digest]) -> Digest:
    before = ctx.state.emails if ctx.state is not None else ()
    return Digest((*before, ctx.event.email))


async def send_digest(ctx: DebounceExecuteContext[Digest]) -> Result[None, MailError]:
    if ctx.attempt == 1:
        return Err(MailError(503))  # the first try fails; the retry succeeds
    sent.append(ctx.state.emails)
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


async def main() -> None:
    clock = TestClock()
    engine = Engine(jobs=[digests], storage=MemoryStorage(), clock=clock)
    client = engine.client.debounce(digests)
    await client.add("team-7", Signup("a@example.com"))
    await client.add("team-7", Signup("b@example.com"))
    await clock.advance("1 minute")  # the window closes: attempt 1 fails with 503
    assert sent == []
    await clock.advance("2 seconds")  # the retry (1 s ± 10 % jitter) succeeds
    assert sent == [("a@example.com", "b@example.com")]
    print("sent", sent)


if __name__ == "__main__":
    asyncio.run(main())
