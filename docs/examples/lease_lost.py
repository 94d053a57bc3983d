"""A client call during a run: `terminate` takes effect at once, the run's finish is refused."""

import asyncio

from durable_jobs import (
    Continuous,
    ContinuousContext,
    Engine,
    JobEvent,
    MemoryStorage,
    Ok,
    every,
)
from durable_jobs.testing import TestClock


calling = asyncio.Event()
answer = asyncio.Event()


async def sync_account(ctx: ContinuousContext[int]) -> Ok[None]:
    calling.set()
    await answer.wait()  # a slow call to another service
    ctx.set_state(ctx.state + 1)
    return Ok(None)


syncs = Continuous(name="syncs", state=int, schedule=every("1 hour"), execute=sync_account)


async def main() -> None:
    clock = TestClock()
    events: list[JobEvent] = []
    engine = Engine(jobs=[syncs], storage=MemoryStorage(), clock=clock, observers=[events.append])
    client = engine.client.continuous(syncs)
    await client.start("acme", 0)

    worker = asyncio.create_task(clock.run_due())  # a worker runs the first sync
    await calling.wait()
    assert (await client.status("acme")).status == "running"
    ended = await client.terminate("acme")  # does not wait for the run: purged now
    assert ended.terminated
    assert (await client.status("acme")).status == "not_found"

    answer.set()  # the run ends and tries to write its result
    await worker
    assert (await client.status("acme")).status == "not_found"  # nothing was written
    lost = [event for event in events if event.type == "job.lease_lost"]
    assert [(event.job, event.id) for event in lost] == [("syncs", "acme")]


if __name__ == "__main__":
    asyncio.run(main())
