"""What only `PostgresStorage` has: schemas, LISTEN/NOTIFY, connection failures."""

import asyncio
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from durable_jobs import StorageError
from durable_jobs._storage._interface import InstanceKey, InstanceRecord, JobKind
from durable_jobs.postgres import PostgresStorage
from pg_server import postgres_dsn


T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEY = InstanceKey(JobKind.TASK, "job", "a")


def record(state: int, alarm: datetime | None = None) -> InstanceRecord:
    return InstanceRecord(key=KEY, state=state, alarm_at=alarm, created_at=T0, updated_at=T0)


def fresh_schema() -> str:
    return f"t_{uuid.uuid4().hex}"


async def test_schemas_keep_storages_apart() -> None:
    first = PostgresStorage(postgres_dsn(), schema=fresh_schema())
    second = PostgresStorage(postgres_dsn(), schema=fresh_schema())
    async with first.instance(KEY) as tx:
        tx.save(record(1))
    assert await first.read(KEY) == record(1)
    assert await second.read(KEY) is None
    await first.close()
    await second.close()


async def test_a_newer_schema_version_is_refused() -> None:
    schema = fresh_schema()
    storage = PostgresStorage(postgres_dsn(), schema=schema)
    await storage.open()
    await storage.close()
    async with await psycopg.AsyncConnection.connect(postgres_dsn(), autocommit=True) as raw:
        await raw.execute(f"INSERT INTO {schema}.durable_jobs_schema (version) VALUES (999)")
    newer = PostgresStorage(postgres_dsn(), schema=schema)
    with pytest.raises(StorageError, match="newer than this version of durable-jobs"):
        await newer.read(KEY)
    await newer.close()


def test_a_bad_schema_name_is_rejected_at_once() -> None:
    with pytest.raises(ValueError, match="schema"):
        PostgresStorage(postgres_dsn(), schema="Robert'); DROP TABLE students;--")


async def test_an_alarm_set_elsewhere_wakes_a_waiting_worker() -> None:
    schema = fresh_schema()
    watcher = PostgresStorage(postgres_dsn(), schema=schema)
    writer = PostgresStorage(postgres_dsn(), schema=schema)
    await watcher.open()
    waiting = asyncio.ensure_future(watcher.wait_for_change())
    await asyncio.sleep(0.2)
    assert not waiting.done()
    async with writer.instance(KEY) as tx:
        tx.save(record(1, alarm=T0))
    async with asyncio.timeout(10):
        await waiting
    await watcher.close()
    await writer.close()


async def test_an_unreachable_server_is_a_storage_error_after_retries() -> None:
    storage = PostgresStorage(
        "host=127.0.0.1 port=1 user=nobody connect_timeout=1", open_timeout="1 second"
    )
    with pytest.raises(StorageError, match="cannot open PostgreSQL storage"):
        await asyncio.wait_for(storage.read(KEY), timeout=120)
    await storage.close()


async def test_blocks_on_one_key_from_two_pools_never_overlap() -> None:
    schema = fresh_schema()
    pools = [PostgresStorage(postgres_dsn(), schema=schema) for _ in range(2)]
    inside = 0
    overlaps = 0

    async def bump(storage: PostgresStorage) -> None:
        nonlocal inside, overlaps
        async with storage.instance(KEY) as tx:
            inside += 1
            overlaps += inside > 1
            current = tx.record
            await asyncio.sleep(0.001)
            tx.save(record((0 if current is None else int(str(current.state))) + 1))
            inside -= 1

    await asyncio.gather(*(bump(storage) for _ in range(10) for storage in pools))
    assert overlaps == 0
    assert await pools[0].read(KEY) == record(20)
    for storage in pools:
        await storage.close()


async def test_a_pool_of_the_callers_works_in_the_schema_without_changing_its_sessions() -> None:
    schema = fresh_schema()
    pool: AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]] = AsyncConnectionPool(
        postgres_dsn(), min_size=1, max_size=2, open=False
    )
    await pool.open()
    storage = PostgresStorage(pool, schema=schema, open_timeout="10 seconds")
    async with asyncio.timeout(60), storage.instance(KEY) as tx:
        tx.save(record(1))
    assert await storage.read(KEY) == record(1)
    assert [r.key for r in await storage.list_instances()] == [KEY]
    async with pool.connection() as conn:
        cursor = await conn.execute("SHOW search_path")
        shown = await cursor.fetchone()
    assert shown is not None
    assert schema not in str(shown[0])  # the caller's sessions keep their own search_path
    await storage.close()
    await pool.close()


async def test_connections_killed_between_blocks_are_replaced() -> None:
    storage = PostgresStorage(postgres_dsn(), schema=fresh_schema(), pool_size=4)
    async with storage.instance(KEY) as tx:
        tx.save(record(1))
    # the pool now holds idle connections; the server drops every one of them
    async with await psycopg.AsyncConnection.connect(postgres_dsn(), autocommit=True) as admin:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
    # no StorageError: the dead connection is replaced
    async with asyncio.timeout(60), storage.instance(KEY) as tx:
        current = tx.record
        assert current is not None
        tx.save(record(int(str(current.state)) + 1))
    assert await storage.read(KEY) == record(2)
    await storage.close()
