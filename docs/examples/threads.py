"""Sync callbacks run in the worker's thread pool; a caller waits for an event, bounded."""

import asyncio
import threading

import attrs

from durable_jobs import Engine, MemoryStorage, Ok, WorkerPool, WorkerPoolContext


@attrs.frozen
class Resize:
    image: str


both_running = threading.Barrier(2, timeout=5)
threads: set[str] = set()


def resize(ctx: WorkerPoolContext[Resize]) -> Ok[None]:
    # Blocking is fine here: a sync callback runs in a thread of the worker's pool, never
    # on the event loop. Each call waits until the other one arrives at the barrier, so
    # both return only because they run at the same time, in two threads.
    both_running.wait()
    threads.add(threading.current_thread().name)
    return Ok(None)


resizes = WorkerPool(name="resizes", event=Resize, concurrency=2, execute=resize)


async def main() -> None:
    engine = Engine(jobs=[resizes], storage=MemoryStorage(), threads=4)
    async with engine:  # the worker runs until the block exits
        pool = engine.client.worker_pool(resizes)
        first = await pool.enqueue(Resize("a.png"))
        second = await pool.enqueue(Resize("b.png"))
        async with asyncio.timeout(5):  # `wait` polls until the event is done
            await pool.wait(first.event_id)
            await pool.wait(second.event_id)
        assert (await pool.status()).processed == 2
    assert len(threads) == 2
    assert all(name.startswith("durable-jobs") for name in threads)


if __name__ == "__main__":
    asyncio.run(main())
    print("two sync executes ran at once, in", ", ".join(sorted(threads)))
