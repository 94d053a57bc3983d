"""`python -m durable_jobs.demo`: a short scenario on in-memory storage with a TestClock."""

import asyncio
from collections.abc import Sequence

import attrs

from . import (
    Backoff,
    Debounce,
    DebounceExecuteContext,
    Engine,
    Err,
    JobEvent,
    MemoryStorage,
    Ok,
    Result,
    Retry,
)
from .testing import TestClock


@attrs.frozen
class Webhook:
    """An incoming webhook event."""

    contact: str


@attrs.frozen
class Batch:
    """The contacts collected in one debounce window."""

    contacts: tuple[str, ...]


class SendError(Exception):
    """The (simulated) downstream API failed."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


_attempts: list[int] = []


async def send_batch(ctx: DebounceExecuteContext[Batch]) -> Result[None, SendError]:
    """A flaky sender: fails twice with 503, then succeeds."""
    _attempts.append(ctx.attempt)
    if ctx.attempt < 3:
        return Err(SendError(503))
    print(f"  sent {len(ctx.state.contacts)} contacts ({ctx.flush_reason}, attempt {ctx.attempt})")
    return Ok(None)


webhooks = Debounce(
    name="webhooks",
    event=Webhook,
    state=Batch,
    flush_after="10 seconds",
    max_events=50,
    on_event=lambda ctx: Batch((*(ctx.state.contacts if ctx.state else ()), ctx.event.contact)),
    execute=send_batch,
    retry=Retry(
        max_attempts=5,
        delay=Backoff.exponential("1 second"),
        jitter=False,
        should_retry=lambda e: e.status >= 500,
    ),
    on_error=lambda e, ctx: print(f"  gave up after {ctx.attempts} attempts: {e.status}"),
)


def _log(event: JobEvent) -> None:
    extra = f" retry at +{event.retry_at:%S}s" if event.retry_at else ""
    print(f"[{event.at:%H:%M:%S}] {event.type} {event.job}/{event.id}{extra}")


async def _run() -> None:
    clock = TestClock()
    engine = Engine(jobs=[webhooks], storage=MemoryStorage(), clock=clock, observers=[_log])
    client = engine.client.debounce(webhooks)
    for contact in ("ada", "grace", "ada", "linus"):
        result = await client.add("team-7", Webhook(contact))
        print(f"  added {contact}: {result.event_count} in batch")
    await clock.advance("1 minute")
    status = await client.status("team-7")
    print(f"done: {len(_attempts)} attempts, instance now {status.status}")


def main(argv: "Sequence[str] | None" = None) -> int:
    """Run the demo; returns the exit code."""
    del argv
    asyncio.run(_run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
