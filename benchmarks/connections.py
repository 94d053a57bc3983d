"""
PostgreSQL connections a worker process holds per running execution.

A worker process (`busy_worker.py`) connects with its own `application_name`. It serves
the `HOLD` WorkerPool, whose async `execute` waits until the parent releases it, with a
3 s lease (renewed every second, so renewals happen while we count). The parent counts
that process's backends in `pg_stat_activity` every `SAMPLE_EVERY` seconds for
`SAMPLE_FOR` seconds: first while the worker is idle (its `LISTEN` connection and the
pool's minimum), then while `n` executions are blocked in `execute`, for each `n` of
`HELD`. For each sample it notes the connections open, those inside a transaction
(`xact_start` set), and the locks those backends hold (other than their virtual
transaction id).
"""

import asyncio
import statistics
import uuid

import attrs
import psycopg
from psycopg.conninfo import make_conninfo

from durable_jobs import Client
from durable_jobs.postgres import PostgresStorage

from .busy_add import START_TIMEOUT, start_worker, stop_worker
from .busy_worker import HOLD, JOBS, Note


HELD = (1, 4, 16)
"""How many executions are blocked at once, one measurement each."""
SAMPLE_EVERY = 0.05
SAMPLE_FOR = 3.5
"""Seconds of sampling per measurement: more than three renewals of the 3 s lease."""
SETTLE = 1.0
"""Seconds waited after the worker starts, or after the executions started, before counting."""

_COUNT = (
    "SELECT count(*), count(*) FILTER (WHERE xact_start IS NOT NULL),"
    " (SELECT count(*) FROM pg_locks l JOIN pg_stat_activity s ON s.pid = l.pid"
    "  WHERE s.application_name = %(app)s AND l.locktype <> 'virtualxid')"
    " FROM pg_stat_activity WHERE application_name = %(app)s"
)


@attrs.frozen
class Counts:
    """The samples of one measurement."""

    open: tuple[int, ...]
    in_transaction: tuple[int, ...]
    locks: tuple[int, ...]

    @property
    def open_median(self) -> float:
        return statistics.median(self.open)


@attrs.frozen
class Held:
    """One worker process: counted idle, then while `held` executions are blocked."""

    held: int
    idle: Counts
    running: Counts


async def _count(dsn: str, app: str) -> Counts:
    opened: list[int] = []
    busy: list[int] = []
    locks: list[int] = []
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        loop = asyncio.get_running_loop()
        end = loop.time() + SAMPLE_FOR
        while loop.time() < end:
            cursor = await conn.execute(_COUNT, {"app": app})
            row = await cursor.fetchone()
            assert row is not None
            opened.append(int(row[0]))
            busy.append(int(row[1]))
            locks.append(int(row[2]))
            await asyncio.sleep(SAMPLE_EVERY)
    return Counts(tuple(opened), tuple(busy), tuple(locks))


async def _holding(stream: asyncio.StreamReader, count: int) -> None:
    async with asyncio.timeout(START_TIMEOUT):
        seen = 0
        while seen < count:
            line = await stream.readline()
            if not line:
                msg = "the worker process exited while executions were starting"
                raise RuntimeError(msg)
            if line.startswith(b"HOLDING"):
                seen += 1


async def _one(dsn: str, held: int) -> tuple[Counts, Counts]:
    """A fresh worker process: its idle counts, then its counts while `held` runs block."""
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    app = f"bench-worker-{uuid.uuid4().hex[:8]}"
    worker = await start_worker(["postgres", make_conninfo(dsn, application_name=app), schema])
    storage = PostgresStorage(dsn, schema=schema, pool_size=4)
    try:
        assert worker.stdout is not None
        pool = Client(jobs=list(JOBS), storage=storage).worker_pool(HOLD)
        await asyncio.sleep(SETTLE)
        idle = await _count(dsn, app)
        await pool.enqueue_many([Note(n) for n in range(held)])
        await _holding(worker.stdout, held)
        await asyncio.sleep(SETTLE)
        running = await _count(dsn, app)
    finally:
        # stopping releases the blocked runs: they finish and the worker exits
        await storage.close()
        tail = await stop_worker(worker)
    if worker.returncode != 0:
        msg = f"the worker process exited with {worker.returncode}: {tail}"
        raise RuntimeError(msg)
    return idle, running


async def measure(dsn: str) -> tuple[Held, ...]:
    """One fresh worker process per number of blocked executions (its pool starts empty)."""
    return tuple([Held(held, *await _one(dsn, held)) for held in HELD])
