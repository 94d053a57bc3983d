"""WorkerPool: a durable queue; concurrency, FIFO per key, priority, pause, resume, cancel."""

import asyncio

import attrs

from durable_jobs import Engine, MemoryStorage, Ok, WorkerPool, WorkerPoolContext
from durable_jobs.testing import TestClock


@attrs.frozen
class Thumbnail:
    image: str


done: list[str] = []
running: set[str] = set()
together: list[frozenset[str]] = []  # which events were running at once


async def render(ctx: WorkerPoolContext[Thumbnail]) -> Ok[None]:
    running.add(ctx.event.image)
    together.append(frozenset(running))
    await asyncio.sleep(0)  # the work: other runs go on meanwhile
    running.discard(ctx.event.image)
    done.append(ctx.event.image)
    return Ok(None)


thumbnails = WorkerPool(name="thumbnails", event=Thumbnail, concurrency=2, execute=render)


async def main() -> None:
    clock = TestClock()
    engine = Engine(jobs=[thumbnails], storage=MemoryStorage(), clock=clock)
    pool = engine.client.worker_pool(thumbnails)

    await pool.enqueue_many([Thumbnail("a.png"), Thumbnail("b.png"), Thumbnail("c.png")])
    await clock.run_due()  # a worker runs them, at most two at a time
    assert sorted(done) == ["a.png", "b.png", "c.png"]
    assert max(len(images) for images in together) == 2

    done.clear()
    together.clear()
    await pool.enqueue_many([Thumbnail("u1.png"), Thumbnail("u2.png")], partition_key="user-1")
    await pool.enqueue(Thumbnail("v1.png"), partition_key="user-2")
    await clock.run_due()
    assert [image for image in done if image.startswith("u")] == ["u1.png", "u2.png"]  # FIFO
    assert not any({"u1.png", "u2.png"} <= images for images in together)  # one at a time
    assert any({"u1.png", "v1.png"} <= images for images in together)  # keys do not wait

    done.clear()
    await pool.pause()  # events are kept, not started
    await pool.enqueue(Thumbnail("low.png"))
    await pool.enqueue(Thumbnail("mid.png"), priority=5)
    await pool.enqueue(Thumbnail("high.png"), priority=10)
    dropped = await pool.enqueue(Thumbnail("oops.png"))
    assert (await pool.cancel(dropped.event_id)).status == "cancelled"
    status = await pool.status()
    assert (status.paused, status.queued, status.pending) == (True, 3, 3)
    await clock.run_due()
    assert done == []

    await pool.resume()
    await clock.run_due()
    assert done == ["high.png", "mid.png", "low.png"]  # higher priority first
    assert (await pool.status()).processed == 9

    first = await pool.enqueue(Thumbnail("a.png"), event_id="upload-1")
    again = await pool.enqueue(Thumbnail("a.png"), event_id="upload-1")  # a redelivery
    assert (again.event_id, again.duplicate) == (first.event_id, True)


if __name__ == "__main__":
    asyncio.run(main())
