"""
The scheduling migration (`SCHEDULING_MIGRATION`, number 3 today) from a database of the
schema before it (2 today), on SQLite and PostgreSQL.

That schema was never released on its own, so the database is built here from the frozen
statements of the migrations before, with rows written the way schema 2 stored them: an
instance whose run holds a lease, and a pool with a running, a queued, a delayed and a
retrying event. After `migrate()` every row is still there, leases included, the new
columns read as "nothing asked" (no lease abandoned, no event asked to stop), and the new
operations (abandon, cancel a running event, rate-limited claims) work on the old rows.
"""

import contextlib
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import psycopg
import pytest
from psycopg import sql

from durable_jobs import SchemaMismatchError, SqliteStorage
from durable_jobs._storage import _postgres, _sqlite
from durable_jobs._storage._interface import (
    InstanceKey,
    ItemFinish,
    JobKind,
    PoolCounts,
    PoolRate,
    Storage,
)
from durable_jobs.postgres import PostgresStorage
from pg_server import postgres_dsn


T0 = datetime(2026, 1, 1, tzinfo=UTC)
TASK = InstanceKey(JobKind.TASK, "orders", "o-1")
POOL = InstanceKey(JobKind.WORKER_POOL, "thumbs", "pool")
LEASE = timedelta(seconds=30)
SCHEDULING = _sqlite.SCHEDULING_MIGRATION
assert _postgres.SCHEDULING_MIGRATION == SCHEDULING


class Migratable(Storage, Protocol):
    """A storage that can migrate its schema."""

    async def migrate(self) -> tuple[int, int]:
        """Apply pending migrations: (from, to)."""
        ...


def micros(when: datetime) -> int:
    """How SQLite stores times: microseconds since the epoch."""
    return (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


@contextlib.asynccontextmanager
async def _sqlite_v2(tmp: Path) -> AsyncGenerator[Callable[[], Migratable]]:
    path = tmp / "jobs.db"
    held_until = time.time_ns() // 1000 + 3_600_000_000  # the host's lease clock: an hour on
    with contextlib.closing(sqlite3.connect(path)) as raw, raw:
        raw.execute(
            "CREATE TABLE durable_jobs_schema (version INTEGER PRIMARY KEY,"
            " applied_at INTEGER NOT NULL)"
        )
        for version, statements, _ in _sqlite._MIGRATIONS:
            if version < _sqlite.SCHEDULING_MIGRATION:  # an empty database: no data step
                for statement in statements:
                    raw.execute(statement)
                raw.execute("INSERT INTO durable_jobs_schema VALUES (?, 0)", (version,))
        raw.execute(
            "INSERT INTO instances (kind, job, id, status, state, meta, alarm_at, attempt,"
            " retry_started_at, defects, last_error, created_at, updated_at, lease_expires_at,"
            " lease_token)"
            " VALUES (?, ?, ?, 'active', ?, ?, ?, 1, NULL, 0, NULL, ?, ?, ?, 'held')",
            (
                "task",
                "orders",
                "o-1",
                json.dumps({"status": "paid"}),
                json.dumps({"event_count": 1}),
                micros(T0),
                micros(T0),
                micros(T0),
                held_until,
            ),
        )
        raw.execute(
            "INSERT INTO instances (kind, job, id, status, state, meta, alarm_at, attempt,"
            " retry_started_at, defects, last_error, created_at, updated_at, lease_expires_at,"
            " lease_token)"
            " VALUES ('worker_pool', 'thumbs', 'pool', 'active', 'null',"
            " ?, NULL, 1, NULL, 0, NULL, ?, ?, NULL, NULL)",
            (json.dumps({"processed": 4}), micros(T0), micros(T0)),
        )
        raw.executemany(
            "INSERT INTO items (kind, job, id, event_id, event, priority, partition_key,"
            " enqueued_at, available_at, attempt, retry_started_at, defects, last_error,"
            " lease_token, lease_expires_at)"
            " VALUES ('worker_pool', 'thumbs', 'pool', ?, ?, 0, ?, ?, ?, ?, NULL, 0, ?, ?, ?)",
            [
                ("running", '{"n": 1}', "k", micros(T0), None, 1, None, "run", held_until),
                ("queued", '{"n": 2}', None, micros(T0), None, 1, None, None, None),
                ("delayed", '{"n": 3}', None, micros(T0), micros(T0 + LEASE), 1, None, None, None),
                ("retrying", '{"n": 4}', None, micros(T0), micros(T0), 2, "503", None, None),
            ],
        )
    opened: list[SqliteStorage] = []

    def storage() -> Migratable:
        made = SqliteStorage(path)
        opened.append(made)
        return made

    try:
        yield storage
    finally:
        for made in opened:
            await made.close()


@contextlib.asynccontextmanager
async def _postgres_v2(tmp: Path) -> AsyncGenerator[Callable[[], Migratable]]:
    del tmp
    schema = f"v2_{uuid.uuid4().hex}"
    async with await psycopg.AsyncConnection.connect(postgres_dsn()) as raw:
        await raw.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        await raw.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        await raw.execute(
            "CREATE TABLE durable_jobs_schema"
            " (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for version, statements in _postgres._MIGRATIONS:
            if version >= _postgres.SCHEDULING_MIGRATION:
                continue
            for statement in statements:
                await raw.execute(statement)
            await raw.execute("INSERT INTO durable_jobs_schema (version) VALUES (%s)", (version,))
        await raw.execute(
            "INSERT INTO instances (kind, job, id, status, state, meta, alarm_at, attempt,"
            " retry_started_at, defects, last_error, created_at, updated_at, lease_expires_at,"
            " lease_token)"
            " VALUES ('task', 'orders', 'o-1', 'active', %s, %s, %s, 1,"
            " NULL, 0, NULL, %s, %s, now() + interval '1 hour', 'held')",
            (
                psycopg.types.json.Jsonb({"status": "paid"}),
                psycopg.types.json.Jsonb({"event_count": 1}),
                T0,
                T0,
                T0,
            ),
        )
        await raw.execute(
            "INSERT INTO instances (kind, job, id, status, state, meta, alarm_at, attempt,"
            " retry_started_at, defects, last_error, created_at, updated_at, lease_expires_at,"
            " lease_token)"
            " VALUES ('worker_pool', 'thumbs', 'pool', 'active', 'null',"
            " %s, NULL, 1, NULL, 0, NULL, %s, %s, NULL, NULL)",
            (psycopg.types.json.Jsonb({"processed": 4}), T0, T0),
        )
        async with raw.cursor() as cursor:
            await cursor.executemany(
                "INSERT INTO items (kind, job, id, event_id, event, priority, partition_key,"
                " enqueued_at, available_at, attempt, retry_started_at, defects, last_error,"
                " lease_token, lease_expires_at) VALUES ('worker_pool', 'thumbs', 'pool',"
                " %s, %s, 0, %s, %s, %s, %s, NULL, 0, %s, %s,"
                " CASE WHEN %s THEN now() + interval '1 hour' END)",
                [
                    ("running", '{"n": 1}', "k", T0, None, 1, None, "run", True),
                    ("queued", '{"n": 2}', None, T0, None, 1, None, None, False),
                    ("delayed", '{"n": 3}', None, T0, T0 + LEASE, 1, None, None, False),
                    ("retrying", '{"n": 4}', None, T0, T0, 2, "503", None, False),
                ],
            )
        await raw.commit()
    opened: list[PostgresStorage] = []

    def storage() -> Migratable:
        made = PostgresStorage(postgres_dsn(), schema=schema)
        opened.append(made)
        return made

    try:
        yield storage
    finally:
        for made in opened:
            await made.close()


V2_BACKENDS: dict[
    str, Callable[[Path], contextlib.AbstractAsyncContextManager[Callable[[], Migratable]]]
] = {"sqlite": _sqlite_v2, "postgres": _postgres_v2}


@pytest.fixture(params=list(V2_BACKENDS))
async def v2(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncGenerator[Migratable]:
    """A storage on a database of schema 2 (not migrated)."""
    async with V2_BACKENDS[request.param](tmp_path) as storage:
        yield storage()


async def refused(call: Awaitable[object]) -> None:
    with pytest.raises(SchemaMismatchError, match="durable-jobs migrate"):
        await call


async def test_schema_2_is_refused_until_migrated_then_keeps_every_row(v2: Migratable) -> None:
    await refused(v2.list_instances())
    assert await v2.migrate() == (SCHEDULING - 1, SCHEDULING)
    assert await v2.migrate() == (SCHEDULING, SCHEDULING)
    task = await v2.read(TASK)
    assert task is not None
    assert (task.state, task.meta, task.alarm_at) == ({"status": "paid"}, {"event_count": 1}, T0)
    assert task.lease is not None
    assert (task.lease.token, task.lease.abandoned) == ("held", False)
    pool = await v2.read(POOL)
    assert pool is not None
    assert pool.meta == {"processed": 4}
    running = await v2.read_item(POOL, "running")
    assert running is not None
    assert running.lease is not None
    assert (running.lease.token, running.lease.abandoned) == ("run", False)
    assert not running.cancel_requested
    assert running.partition_key == "k"
    retrying = await v2.read_item(POOL, "retrying")
    assert retrying is not None
    assert (retrying.attempt, retrying.last_error, retrying.available_at) == (2, "503", T0)
    assert await v2.pool_counts(POOL, now=T0) == PoolCounts(
        queued=1, running=1, retrying=1, delayed=1
    )


async def test_the_new_operations_work_on_migrated_rows(v2: Migratable) -> None:
    await v2.migrate()
    await v2.abandon(["held", "run"])
    task = await v2.read(TASK)
    assert task is not None
    assert task.lease is not None
    assert task.lease.abandoned
    assert await v2.cancel_item(POOL, "running") == "running"
    assert await v2.cancel_requests(["run"]) == {"run"}
    await v2.finish_item(POOL, ItemFinish(event_id="running", token="run", cancelled=True))
    rate = {POOL: PoolRate(limit=1, period=timedelta(minutes=1))}
    claims = await v2.claim_items({POOL: 5}, T0, limit=5, lease=LEASE, rates=rate)
    assert [claim.item.event_id for claim in claims] == ["queued"]
    assert await v2.next_alarm_at({POOL: 5}, rate) == T0 + timedelta(minutes=1)
    pool = await v2.read(POOL)
    assert pool is not None
    assert pool.meta == {"processed": 4, "cancelled": 1}
