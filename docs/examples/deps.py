"""Dependencies through `ctx.deps`, and a test that swaps in a fake mail server."""

import asyncio
from typing import Protocol

import attrs
from getting_started import Digest, MailError, Signup, collect

from durable_jobs import (
    Backoff,
    Debounce,
    DebounceExecuteContext,
    Engine,
    Err,
    MemoryStorage,
    Ok,
    Result,
    Retry,
)
from durable_jobs.testing import TestClock


class Mailer(Protocol):
    async def send(self, to: tuple[str, ...]) -> int: ...


class HasMailer(Protocol):
    @property
    def mailer(self) -> Mailer: ...


async def send_digest(ctx: DebounceExecuteContext[Digest, HasMailer]) -> Result[None, MailError]:
    status = await ctx.deps.mailer.send(ctx.state.emails)
    return Ok(None) if status == 250 else Err(MailError(status))


digests = Debounce(  # Debounce[Signup, Digest, MailError, HasMailer]
    name="digests",
    event=Signup,
    state=Digest,
    flush_after="1 minute",
    on_event=collect,
    execute=send_digest,
    retry=Retry(max_attempts=5, delay=Backoff.exponential("1 second")),
)


@attrs.frozen
class Services:
    mailer: Mailer


@attrs.define
class FlakyMailer:
    """A fake mail server: answers 503 to the first `failures` sends."""

    failures: int
    sent: list[tuple[str, ...]] = attrs.field(factory=list[tuple[str, ...]])

    async def send(self, to: tuple[str, ...]) -> int:
        if self.failures > 0:
            self.failures -= 1
            return 503
        self.sent.append(to)
        return 250


async def test_a_503_is_retried_after_one_second() -> None:
    clock = TestClock()
    mailer = FlakyMailer(failures=1)
    engine = Engine(
        jobs=[digests],
        deps=Services(mailer=mailer),
        storage=MemoryStorage(),
        clock=clock,
        random=lambda: 0.5,  # no jitter: retry delays are exact
    )
    client = engine.client.debounce(digests)
    await client.add("team-7", Signup("a@example.com"))

    await clock.advance("1 minute")  # the flush runs: attempt 1 gets a 503
    status = await client.status("team-7")
    assert (status.status, status.attempt) == ("retrying", 2)
    assert mailer.sent == []

    await clock.advance("1 second")  # attempt 2 succeeds
    assert mailer.sent == [("a@example.com",)]


if __name__ == "__main__":
    asyncio.run(test_a_503_is_retried_after_one_second())
    print("retried once, then mailed")
