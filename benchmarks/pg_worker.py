"""
One worker process of the PostgreSQL benchmarks: `python -m benchmarks.pg_worker WHICH DSN WHERE`.

WHICH is `ours` (a durable-jobs worker on PostgresStorage in schema WHERE) or `procrastinate`
(a procrastinate worker on database DSN; WHERE unused). Both run a no-op job with 16
concurrent slots, print `READY` once serving, and stop on SIGTERM.
"""

import asyncio
import contextlib
import signal
import sys
from typing import TYPE_CHECKING

from durable_jobs import Engine, Ok, WorkerPool, WorkerPoolContext
from durable_jobs.postgres import PostgresStorage


CONCURRENCY = 16
if TYPE_CHECKING:
    import procrastinate

PARTITIONS = 32
"""Worker-pool instances: each works FIFO, so this bounds the parallelism of the pool."""


async def noop(ctx: WorkerPoolContext[int]) -> Ok[None]:
    return Ok(None)


POOL = WorkerPool(name="bench_pool", event=int, concurrency=PARTITIONS, execute=noop)


def engine_for(dsn: str, schema: str, *, pool_size: int = CONCURRENCY + 8) -> Engine[None]:
    """The benchmark's engine (the parent uses it as a client, workers run it)."""
    storage = PostgresStorage(dsn, schema=schema, pool_size=pool_size)
    return Engine(jobs=[POOL], storage=storage, concurrency=CONCURRENCY, lease="1 minute")


def procrastinate_app(dsn: str) -> "procrastinate.App":
    """A procrastinate app with the same no-op task (imported only when used)."""
    import procrastinate  # noqa: PLC0415 - optional: only the bench extra has it

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="noop", queue="bench")
    async def noop_task(n: int) -> None:
        del n

    return app


async def _serve(which: str, dsn: str, where: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if which == "ours":
        engine = engine_for(dsn, where)
        async with engine:
            print("READY", flush=True)
            await stop.wait()
        return
    app = procrastinate_app(dsn)
    async with app.open_async():
        worker = asyncio.create_task(
            app.run_worker_async(
                queues=["bench"],
                concurrency=CONCURRENCY,
                install_signal_handlers=False,
                fetch_job_polling_interval=0.1,
            )
        )
        await asyncio.sleep(0.3)  # let it LISTEN before the parent defers work
        print("READY", flush=True)
        await stop.wait()
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await worker


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1], sys.argv[2], sys.argv[3]))
