"""Retries: Backoff shapes, a typed retry-after, should_retry, on_error and the events."""

import asyncio
from datetime import timedelta

import attrs

from durable_jobs import (
    Backoff,
    Engine,
    Err,
    ErrorContext,
    FailureReason,
    JobEvent,
    MemoryStorage,
    Ok,
    Result,
    Retry,
    WorkerPool,
    WorkerPoolContext,
)
from durable_jobs.testing import TestClock


def backoff_shapes() -> None:
    fixed = Backoff.fixed("2 seconds")
    assert [fixed.delay_for(n) for n in (1, 2, 3)] == [timedelta(seconds=2)] * 3
    linear = Backoff.linear("1 second", "2 seconds", max="4 seconds")
    assert [linear.delay_for(n).total_seconds() for n in (1, 2, 3)] == [1, 3, 4]
    exponential = Backoff.exponential("1 second", max="10 seconds", factor=3)
    assert [exponential.delay_for(n).total_seconds() for n in (1, 2, 3, 4)] == [1, 3, 9, 10]


@attrs.frozen
class Hook:
    url: str


@attrs.frozen
class RateLimited:
    retry_after: float  # seconds, as the server said


@attrs.frozen
class Rejected:
    status: int


answers: dict[str, list[int]] = {  # what our fake servers answer, in order
    "https://a.example": [429, 200],
    "https://b.example": [500, 500, 500],
    "https://c.example": [404],
    "https://d.example": [429, 429, 429, 200],
}
clock = TestClock()


async def post(ctx: WorkerPoolContext[Hook]) -> Result[None, RateLimited | Rejected]:
    if ctx.event.url == "https://a.example":
        clock.set(clock.now() + timedelta(seconds=3))  # this server takes 3 s to answer
    status = answers[ctx.event.url].pop(0)
    if status == 429:
        return Err(RateLimited(retry_after=5))
    if status >= 400:
        return Err(Rejected(status))
    return Ok(None)


failures: list[tuple[str, FailureReason, int]] = []


def on_failure(e: RateLimited | Rejected, ctx: ErrorContext[Hook]) -> None:
    failures.append((ctx.state.url, ctx.reason, ctx.attempts))
    if isinstance(e, RateLimited):
        ctx.reschedule("1 minute")  # try this event again later, from attempt 1


webhooks = WorkerPool(
    name="webhooks",
    event=Hook,
    concurrency=1,
    execute=post,
    retry=Retry(
        max_attempts=3,
        delay=lambda e, attempt: e.retry_after if isinstance(e, RateLimited) else 2**attempt,
        jitter=False,
        should_retry=lambda e: isinstance(e, RateLimited) or e.status >= 500,
    ),
    on_error=on_failure,
)


async def main() -> None:
    backoff_shapes()
    events: list[JobEvent] = []
    start = clock.now()
    engine = Engine(
        jobs=[webhooks], storage=MemoryStorage(), clock=clock, observers=[events.append]
    )
    pool = engine.client.worker_pool(webhooks)
    await pool.enqueue_many([Hook(url) for url in answers])
    await clock.advance("10 minutes")

    assert all(not left for left in answers.values())  # every answer was used
    assert sorted(failures) == [
        ("https://b.example", "max_attempts", 3),  # 500 three times: runs 1, 2 and 3
        ("https://c.example", "not_retryable", 1),  # 404: should_retry said no
        ("https://d.example", "max_attempts", 3),  # rescheduled, then 200 on the next run
    ]
    retries = [(e.attempt, e.retry_at) for e in events if e.type == "job.failed" and e.will_retry]
    # a: its attempt ended 3 s after the start; the retry is `retry_after` after that end
    assert retries[0] == (1, start + timedelta(seconds=3 + 5))
    exhausted = [e.reason for e in events if e.type == "job.retry_exhausted"]
    assert exhausted == ["max_attempts", "max_attempts"]
    assert (await pool.status()).processed == 2  # a and d succeeded
    assert await engine.dead_letters() == []  # on_error handled every final failure


if __name__ == "__main__":
    asyncio.run(main())
