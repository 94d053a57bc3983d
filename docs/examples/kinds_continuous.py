"""Continuous: recurring work with per-instance state, on `every(...)` or `cron(...)`."""

import asyncio
from datetime import UTC, datetime, timedelta

import attrs

from durable_jobs import (
    Continuous,
    ContinuousContext,
    Engine,
    MemoryStorage,
    Ok,
    cron,
    every,
)
from durable_jobs.testing import TestClock


@attrs.frozen
class Feed:
    url: str
    polls: int = 0


def poll(ctx: ContinuousContext[Feed]) -> Ok[None]:
    ctx.update_state(lambda feed: attrs.evolve(feed, polls=feed.polls + 1))
    if ctx.run_count == 4:
        ctx.terminate("four polls are enough")  # purges the instance
    return Ok(None)


feeds = Continuous(name="feeds", state=Feed, schedule=every("1 hour"), execute=poll)


def report(ctx: ContinuousContext[str]) -> Ok[None]:
    print(f"report for {ctx.state}, run {ctx.run_count}")
    return Ok(None)


reports = Continuous(
    name="reports",
    state=str,
    schedule=cron("0 9 * * MON-FRI", tz="Europe/Paris"),
    execute=report,
    start_immediately=False,  # the first run is the first cron match
)


async def main() -> None:
    clock = TestClock()  # starts at 2026-01-01T00:00:00Z, a Thursday
    engine = Engine(jobs=[feeds, reports], storage=MemoryStorage(), clock=clock)
    start = clock.now()

    client = engine.client.continuous(feeds)
    started = await client.start("python-blog", Feed("https://blog.python.org"))
    assert started.created
    assert started.next_run_at == start  # start_immediately: run 1 is due now
    assert await client.get_state("python-blog") == Feed("https://blog.python.org", polls=0)
    again = await client.start("python-blog", Feed("https://example.com"))
    assert not again.created  # an existing id is left as it is

    await clock.run_due()  # a worker runs what is due: run 1
    status = await client.status("python-blog")
    assert (status.status, status.run_count) == ("scheduled", 1)
    assert status.next_run_at == start + timedelta(hours=1)

    await clock.advance("1 hour")  # run 2
    triggered = await client.trigger("python-blog")  # run 3 is due now
    assert triggered.triggered
    await clock.run_due()
    status = await client.status("python-blog")
    assert status.run_count == 3
    assert status.next_run_at == start + timedelta(hours=2)  # the schedule did not move
    assert await client.get_state("python-blog") == Feed("https://blog.python.org", polls=3)

    await clock.advance("1 hour")  # run 4 terminates
    assert (await client.status("python-blog")).status == "not_found"
    assert not (await client.trigger("python-blog")).triggered  # never creates an instance

    daily = await engine.client.continuous(reports).start("sales", "sales")
    assert daily.next_run_at == datetime(2026, 1, 1, 8, 0, tzinfo=UTC)  # 09:00 in Paris


if __name__ == "__main__":
    asyncio.run(main())
