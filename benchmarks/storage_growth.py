"""
Bytes per event on disk, and what pruning gives back (not part of `make bench`).

    .venv/bin/python -m benchmarks.storage_growth [EVENTS]

For SQLite and PostgreSQL: enqueue EVENTS worker-pool events (default 5,000) with unique
event ids, each a small JSON event, and measure the database (SQLite: the file after a WAL
checkpoint; PostgreSQL: `pg_total_relation_size` of the schema's tables, indexes and TOAST
included) while they are queued, once a worker has run them all (only their remembered
event ids are left), and after the event ids are forgotten (the retention window
passed). Sizes are given per event, next to the empty database's size as the baseline
measured in the same run.
"""

import asyncio
import sqlite3
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import attrs
import psycopg

from durable_jobs import (
    Engine,
    Ok,
    Result,
    SqliteStorage,
    WorkerPool,
    WorkerPoolContext,
)
from durable_jobs._storage._interface import Storage
from durable_jobs.postgres import PostgresStorage
from durable_jobs.testing import TestClock

from . import _pg_server


@attrs.frozen
class Signup:
    """A typical small event: about 60 bytes of JSON."""

    user_id: int
    email: str
    plan: str


async def _welcome(ctx: WorkerPoolContext[Signup]) -> Result[None, Exception]:
    del ctx
    return Ok(None)


POOL = WorkerPool(name="welcome", event=Signup, concurrency=16, execute=_welcome)


async def _measure(
    name: str, storage: Storage, size: Callable[[], Awaitable[int]], events: int
) -> None:
    clock = TestClock()
    engine = Engine(
        jobs=[POOL], storage=storage, clock=clock, concurrency=16, event_id_retention="7 days"
    )
    queue = engine.client.worker_pool(POOL)
    await queue.pause()
    empty = await size()
    batch = 500
    for start in range(0, events, batch):
        async with asyncio.TaskGroup() as group:
            for n in range(start, min(start + batch, events)):
                event = Signup(n, f"user{n}@example.com", "pro")
                group.create_task(queue.enqueue(event, event_id=f"signup-{uuid.uuid4().hex}"))
    queued = await size()
    await queue.resume()
    await clock.run_due()
    assert (await queue.status()).pending == 0
    done = await size()
    await clock.advance(timedelta(days=8))  # the worker forgets ids older than 7 days
    await clock.run_due()
    pruned = await size()
    await storage.close()
    print(f"| {name} | {empty:,} | {(queued - empty) / events:,.0f} |", end="")
    print(f" {(done - empty) / events:,.0f} | {(pruned - empty) / events:,.1f} |")


async def _sqlite(events: int) -> None:
    path = Path(tempfile.mkdtemp(prefix="growth-")) / "jobs.db"

    async def size() -> int:
        with sqlite3.connect(path) as raw:
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        wal = path.with_name(path.name + "-wal")
        return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)

    await _measure("SQLite (file + WAL)", SqliteStorage(path), size, events)


async def _postgres(events: int) -> None:
    dsn = _pg_server.shared()
    schema = f"growth_{uuid.uuid4().hex[:12]}"

    async def size() -> int:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(f"VACUUM ANALYZE {schema}.items")
            await conn.execute(f"VACUUM ANALYZE {schema}.seen_events")
            cursor = await conn.execute(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relkind = 'r'",
                (schema,),
            )
            row = await cursor.fetchone()
            return 0 if row is None else int(row[0])

    storage = PostgresStorage(dsn, schema=schema)
    await storage.open()
    await _measure("PostgreSQL (tables + indexes)", storage, size, events)


async def _main(events: int) -> None:
    print(f"{events:,} worker-pool events with unique event ids, bytes on disk:\n")
    print("| database | empty (baseline) | per event, queued | per event, run |", end="")
    print(" per event, after the retention window |")
    print("| --- | --- | --- | --- | --- |")
    await _sqlite(events)
    await _postgres(events)


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000))
