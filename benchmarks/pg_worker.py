"""
One worker process of the PostgreSQL benchmarks: `python -m benchmarks.pg_worker WHICH DSN WHERE`.

WHICH is `ours` (a durable-jobs worker on PostgresStorage in schema WHERE), `procrastinate`
or `pgqueuer` (a worker of that library on database DSN; WHERE unused). Each runs a no-op
job with `CONCURRENCY` slots. The protocol with the parent: connect and get ready, print
`READY`, wait for a line on stdin (the start signal: the items are already queued), serve
until SIGTERM, then stop.
"""

import asyncio
import contextlib
import signal
import sys
from typing import TYPE_CHECKING

from durable_jobs import Engine, Ok, WorkerPool, WorkerPoolContext
from durable_jobs.postgres import PostgresStorage


if TYPE_CHECKING:
    import procrastinate

CONCURRENCY = 16
"""Items one worker process runs at once, in every library."""
POOL_CONCURRENCY = 64
"""The pool's concurrency across every process: 16 slots x 4 processes, never the bound."""
PGQUEUER_BATCH = 8
"""PgQueuer's dequeue batch: its `max_concurrent_tasks` must be at least twice this."""


async def noop(ctx: WorkerPoolContext[int]) -> Ok[None]:
    return Ok(None)


POOL = WorkerPool(name="bench_pool", event=int, concurrency=POOL_CONCURRENCY, execute=noop)


def engine_for(dsn: str, schema: str, *, pool_size: int = CONCURRENCY + 4) -> Engine[None]:
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


async def _ready_then_go() -> None:
    print("READY", flush=True)
    await asyncio.to_thread(sys.stdin.readline)


async def _ours(dsn: str, schema: str, stop: asyncio.Event) -> None:
    engine = engine_for(dsn, schema)
    if isinstance(engine.storage, PostgresStorage):
        await engine.storage.open()  # connected and migrated before the start signal
    await _ready_then_go()
    async with engine:
        await stop.wait()
    await engine.storage.close()


async def _procrastinate(dsn: str, stop: asyncio.Event) -> None:
    app = procrastinate_app(dsn)
    async with app.open_async():
        await _ready_then_go()
        worker = asyncio.create_task(
            app.run_worker_async(
                queues=["bench"],
                concurrency=CONCURRENCY,
                install_signal_handlers=False,
                fetch_job_polling_interval=0.1,
            )
        )
        await stop.wait()
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await worker


async def _pgqueuer(dsn: str, stop: asyncio.Event) -> None:
    import psycopg  # noqa: PLC0415
    from pgqueuer import Job, Queries, QueueManager  # noqa: PLC0415 - optional: bench extra

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        manager = QueueManager(Queries.from_psycopg_connection(conn))

        @manager.entrypoint("noop")
        async def noop_job(job: Job) -> None:
            del job

        await _ready_then_go()
        worker = asyncio.create_task(
            manager.run(batch_size=PGQUEUER_BATCH, max_concurrent_tasks=CONCURRENCY)
        )
        await stop.wait()
        manager.shutdown.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(worker, timeout=10)


async def _serve(which: str, dsn: str, where: str) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    if which == "ours":
        await _ours(dsn, where, stop)
    elif which == "procrastinate":
        await _procrastinate(dsn, stop)
    elif which == "pgqueuer":
        await _pgqueuer(dsn, stop)
    else:
        msg = f"unknown worker kind {which!r}"
        raise SystemExit(msg)


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1], sys.argv[2], sys.argv[3]))
