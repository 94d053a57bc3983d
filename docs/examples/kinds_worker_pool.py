"""WorkerPool: a durable queue; partitions, FIFO per key, priority, pause, resume, cancel."""

import asyncio

import attrs

from durable_jobs import Engine, MemoryStorage, Ok, WorkerPool, WorkerPoolContext
from durable_jobs.testing import TestClock


@attrs.frozen
class Thumbnail:
    image: str


done: list[tuple[int, str]] = []


async def render(ctx: WorkerPoolContext[Thumbnail]) -> Ok[None]:
    done.append((ctx.partition, ctx.event.image))
    return Ok(None)


thumbnails = WorkerPool(name="thumbnails", event=Thumbnail, concurrency=2, execute=render)


async def main() -> None:
    clock = TestClock()
    engine = Engine(jobs=[thumbnails], storage=MemoryStorage(), clock=clock)
    pool = engine.client.worker_pool(thumbnails)

    first = await pool.enqueue(Thumbnail("a.png"))  # round-robin: partition 0, then 1
    second = await pool.enqueue(Thumbnail("b.png"))
    assert (first.partition, second.partition) == (0, 1)
    await clock.run_due()  # enqueue makes the partition due now
    assert sorted(done) == [(0, "a.png"), (1, "b.png")]

    done.clear()
    queued = await pool.enqueue_many(
        [Thumbnail("u1.png"), Thumbnail("u2.png"), Thumbnail("u3.png")], partition_key="user-1"
    )
    assert len({result.partition for result in queued}) == 1  # one key, one partition
    await clock.run_due()
    assert [image for _, image in done] == ["u1.png", "u2.png", "u3.png"]  # FIFO per key

    done.clear()
    await pool.pause()  # events are kept, not dequeued
    await pool.enqueue(Thumbnail("low.png"), partition_key="user-1")
    await pool.enqueue(Thumbnail("high.png"), partition_key="user-1", priority=10)
    dropped = await pool.enqueue(Thumbnail("oops.png"), partition_key="user-1")
    assert (await pool.cancel(dropped.event_id)).cancelled
    status = await pool.status()
    assert (status.paused, status.pending) == (True, 2)
    await clock.run_due()
    assert done == []

    await pool.resume()
    await clock.run_due()
    assert [image for _, image in done] == ["high.png", "low.png"]  # higher priority first
    assert (await pool.status()).processed == 7

    repeat = await pool.enqueue(Thumbnail("a.png"), event_id="upload-1")
    again = await pool.enqueue(Thumbnail("a.png"), event_id="upload-1")
    assert again.duplicate
    assert again.partition == repeat.partition


if __name__ == "__main__":
    asyncio.run(main())
