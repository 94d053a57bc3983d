"""
What only `PostgresStorage` has: schemas, the server's clock, races between processes,
LISTEN/NOTIFY, connection failures.

Two `PostgresStorage`s on one schema stand for two processes: each has a pool of its own.
"""

import asyncio
import contextlib
import random
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import psycopg
import pytest
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from durable_jobs import SchemaMismatchError, StorageError, ValidationError
from durable_jobs._storage._interface import (
    Claim,
    InstanceKey,
    InstanceRecord,
    ItemFinish,
    JobKind,
    LeaseLostError,
    PoolCounts,
    QueueItem,
)
from durable_jobs._storage._postgres import SCHEMA_VERSION
from durable_jobs.postgres import PostgresStorage
from pg_server import postgres_dsn


T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEY = InstanceKey(JobKind.TASK, "job", "a")
POOL = InstanceKey(JobKind.WORKER_POOL, "pool-job", "pool")
LONG = timedelta(hours=1)
V1_DUMP = Path(__file__).parent.parent / "data" / "schema_v1" / "postgres.sql"

_Pool = AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]]


def record(state: int, alarm: datetime | None = None, key: InstanceKey = KEY) -> InstanceRecord:
    return InstanceRecord(key=key, state=state, alarm_at=alarm, created_at=T0, updated_at=T0)


def item(event_id: str, partition_key: str | None = None) -> QueueItem:
    return QueueItem(
        event_id=event_id, event={"n": event_id}, partition_key=partition_key, enqueued_at=T0
    )


def fresh_schema() -> str:
    return f"t_{uuid.uuid4().hex}"


@contextlib.asynccontextmanager
async def storages(count: int, schema: str | None = None) -> AsyncIterator[list[PostgresStorage]]:
    """`count` storages on one fresh schema, each with a pool of its own (as processes)."""
    shared = schema or fresh_schema()
    opened = [PostgresStorage(postgres_dsn(), schema=shared) for _ in range(count)]
    try:
        yield opened
    finally:
        for storage in opened:
            await storage.close()


async def admin(statement: str, *params: object) -> list[TupleRow]:
    """Run one statement on a connection of its own (autocommit)."""
    async with await psycopg.AsyncConnection.connect(postgres_dsn(), autocommit=True) as conn:
        cursor = await conn.execute(statement.encode(), params or None)
        return await cursor.fetchall() if cursor.description else []


async def server_now() -> datetime:
    ((now,),) = await admin("SELECT now()")
    assert isinstance(now, datetime)
    return now


# -- schemas and versions ------------------------------------------------------------------


async def test_schemas_keep_storages_apart() -> None:
    async with storages(1) as (first,), storages(1) as (second,):
        async with first.instance(KEY) as tx:
            tx.save(record(1))
        assert await first.read(KEY) == record(1)
        assert await second.read(KEY) is None


async def test_an_empty_schema_is_created_at_the_latest_version() -> None:
    schema = fresh_schema()
    async with storages(1, schema) as (storage,):
        await storage.open()
        assert await storage.migrate() == (SCHEMA_VERSION, SCHEMA_VERSION)
    rows = await admin(f"SELECT version FROM {schema}.durable_jobs_schema ORDER BY version")
    assert [version for (version,) in rows] == list(range(1, SCHEMA_VERSION + 1))


async def test_a_newer_schema_version_is_refused() -> None:
    schema = fresh_schema()
    async with storages(1, schema) as (storage,):
        await storage.open()
    await admin(f"INSERT INTO {schema}.durable_jobs_schema (version) VALUES (999)")
    async with storages(1, schema) as (newer,):
        with pytest.raises(SchemaMismatchError, match="newer than this version of durable-jobs"):
            await newer.read(KEY)
        with pytest.raises(SchemaMismatchError, match="no downgrade"):
            await newer.migrate()


async def test_every_claim_checks_the_schema_version() -> None:
    schema = fresh_schema()
    async with storages(1, schema) as (storage,):
        assert await storage.claim_due(T0, limit=1, lease=LONG) == []
        # another release migrated the schema while this worker ran
        newer = SCHEMA_VERSION + 1
        await admin(f"INSERT INTO {schema}.durable_jobs_schema (version) VALUES ({newer})")
        with pytest.raises(SchemaMismatchError, match=f"has version {newer}"):
            await storage.claim_due(T0, limit=1, lease=LONG)
        with pytest.raises(SchemaMismatchError, match=f"has version {newer}"):
            await storage.claim_items({POOL: 1}, T0, limit=1, lease=LONG)


async def load_v1(schema: str) -> None:
    """The 0.1.0 dump in `schema`, loaded as tests/data/schema_v1/README.md says."""
    text = V1_DUMP.read_text(encoding="utf-8")
    text = re.sub(r"\bdurable_jobs(?=[.;])", schema, text)
    async with await psycopg.AsyncConnection.connect(postgres_dsn()) as conn:
        await conn.execute(text.encode())
        await conn.commit()


async def test_an_older_schema_is_refused_until_migrated() -> None:
    schema = fresh_schema()
    await load_v1(schema)
    async with storages(1, schema) as (storage,):
        with pytest.raises(SchemaMismatchError, match="durable-jobs migrate") as refused:
            await storage.read(KEY)
        assert f"--schema {schema}" in str(refused.value)
        assert "has version 1" in str(refused.value)
        assert await storage.migrate() == (1, SCHEMA_VERSION)
        assert await storage.list_instances()  # it opens now


async def test_a_role_that_may_not_create_schemas_works_in_an_existing_one() -> None:
    schema = fresh_schema()
    async with storages(1, schema) as (owner,):
        await owner.open()
    role = f"r_{uuid.uuid4().hex[:16]}"
    await admin(f"CREATE ROLE {role} LOGIN")
    await admin(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
    await admin(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}")
    await admin(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {role}")
    dsn = psycopg.conninfo.make_conninfo(postgres_dsn(), user=role)
    storage = PostgresStorage(dsn, schema=schema)
    try:
        async with storage.instance(KEY) as tx:
            tx.save(record(1, alarm=T0))
        assert [c.key for c in await storage.claim_due(T0, limit=1, lease=LONG)] == [KEY]
        assert await storage.push_items(POOL, [item("e1")], now=T0) == [True]
    finally:
        await storage.close()


def test_a_bad_schema_name_is_rejected_at_once() -> None:
    with pytest.raises(ValueError, match="schema"):
        PostgresStorage(postgres_dsn(), schema="Robert'); DROP TABLE students;--")


async def test_a_schema_name_fits_the_notify_channel_limit() -> None:
    with pytest.raises(ValueError, match="63 bytes"):
        PostgresStorage(postgres_dsn(), schema="s" * 51)
    # the longest accepted name: a commit from one storage wakes a listener on another
    schema = f"t_{uuid.uuid4().hex}".ljust(50, "x")
    async with storages(2, schema) as (watcher, writer):
        waiting = asyncio.ensure_future(watcher.wait_for_change())
        await listening(f"durable_jobs_{schema}")
        await push(writer, "")
        async with asyncio.timeout(10):
            await waiting


# -- races between processes -----------------------------------------------------------------


async def test_two_storages_racing_claim_due_never_claim_one_instance_twice() -> None:
    keys = [InstanceKey(JobKind.TASK, "job", f"i{n:03}") for n in range(120)]
    async with storages(2) as pair:
        for n, key in enumerate(keys):
            async with pair[n % 2].instance(key) as tx:
                tx.save(record(n, alarm=T0, key=key))
        claimed: list[Claim] = []

        async def claimer(storage: PostgresStorage) -> None:
            while batch := await storage.claim_due(T0, limit=3, lease=LONG):
                claimed.extend(batch)

        await asyncio.gather(*(claimer(storage) for storage in pair for _ in range(4)))
        assert sorted(claim.key.id for claim in claimed) == [key.id for key in keys]
        assert len({claim.token for claim in claimed}) == len(keys)


async def test_pool_concurrency_holds_across_two_storages_racing() -> None:
    concurrency = 3
    events = [item(f"e{n:03}", partition_key=f"k{n % 5}" if n % 2 else None) for n in range(90)]
    async with storages(2) as pair:
        assert all(await pair[0].push_items(POOL, events, now=T0))
        running: dict[str, str] = {}  # token -> partition key (or event id)
        most = 0
        rng = random.Random(7)

        async def worker(storage: PostgresStorage) -> None:
            nonlocal most
            while True:
                claims = await storage.claim_items({POOL: concurrency}, T0, limit=2, lease=LONG)
                if not claims:
                    if await storage.pool_counts(POOL) == PoolCounts(
                        queued=0, running=0, retrying=0
                    ):
                        return
                    await asyncio.sleep(0.001)  # the others' runs hold every slot
                    continue
                for claim in claims:
                    # one key never runs twice at once
                    group = claim.item.partition_key or claim.item.event_id
                    assert group not in running.values()
                    running[claim.token] = group
                most = max(most, len(running))
                assert len(running) <= concurrency
                for claim in claims:
                    for _ in range(rng.randrange(3)):
                        await asyncio.sleep(0)  # let other claims happen meanwhile
                    # forgotten before the finish starts: `running` never holds a freed slot
                    del running[claim.token]
                    await storage.finish_item(
                        POOL,
                        ItemFinish(event_id=claim.item.event_id, token=claim.token, processed=1),
                    )

        await asyncio.gather(*(worker(storage) for storage in pair for _ in range(3)))
        assert most <= concurrency
        pool = await pair[1].read(POOL)
        assert pool is not None
        assert pool.meta == {"processed": len(events)}


# -- leases by the server's clock ------------------------------------------------------------


async def test_a_lease_expires_by_the_servers_clock_not_the_engines() -> None:
    async with storages(2) as (first, second):
        async with first.instance(KEY) as tx:
            tx.save(record(1, alarm=T0))
        before = await server_now()
        # the engine's clock is years ahead: the lease is still counted from the server's
        far = T0 + timedelta(days=3650)
        (claim,) = await first.claim_due(far, limit=1, lease=timedelta(minutes=5))
        after = await server_now()
        lease = claim.record.lease
        assert lease is not None
        assert before + timedelta(minutes=5) <= lease.expires_at <= after + timedelta(minutes=5)
        assert await second.claim_due(far, limit=1, lease=LONG) == []


async def test_a_zero_lease_is_reclaimable_at_once_and_cannot_be_renewed() -> None:
    async with storages(2) as (first, second):
        async with first.instance(KEY) as tx:
            tx.save(record(1, alarm=T0))
        (gone,) = await first.claim_due(T0, limit=1, lease=timedelta(0))
        assert await first.renew([gone.token], LONG) == frozenset()
        assert await first.read(KEY) == record(1, alarm=T0)  # reads as no lease
        (taken,) = await second.claim_due(T0, limit=1, lease=LONG)
        assert taken.token != gone.token
        with pytest.raises(LeaseLostError):
            await fenced_save(first, gone.token, record(2))
        assert await first.read(KEY) == taken.record  # nothing written, the new lease kept


async def fenced_save(storage: PostgresStorage, token: str, saved: InstanceRecord) -> bool:
    """A run's write: what `fence` saw at the start of the block."""
    async with storage.instance(saved.key) as tx:
        held = tx.fence(token)
        tx.save(saved)
    return held


async def test_the_fenced_write_of_an_expired_lease_writes_nothing() -> None:
    async with storages(1) as (storage,):
        async with storage.instance(KEY) as tx:
            tx.save(record(1, alarm=T0))
        (claim,) = await storage.claim_due(T0, limit=1, lease=timedelta(0))
        with pytest.raises(LeaseLostError):
            await fenced_save(storage, claim.token, record(2))
        assert await storage.read(KEY) == record(1, alarm=T0)


async def test_renew_extends_a_live_lease_from_the_servers_now() -> None:
    async with storages(2) as (first, second):
        async with first.instance(KEY) as tx:
            tx.save(record(1, alarm=T0))
        (claim,) = await first.claim_due(T0, limit=1, lease=LONG)
        before = await server_now()
        assert await first.renew([claim.token, "unknown"], timedelta(minutes=2)) == {claim.token}
        after = await server_now()
        held = await second.read(KEY)
        assert held is not None
        assert held.lease is not None
        assert held.lease.token == claim.token
        assert before + timedelta(minutes=2) <= held.lease.expires_at
        assert held.lease.expires_at <= after + timedelta(minutes=2)
        # renewed to zero: expired by the server's clock, so another process takes it
        assert await first.renew([claim.token], timedelta(0)) == {claim.token}
        assert [c.key for c in await second.claim_due(T0, limit=1, lease=LONG)] == [KEY]


async def test_a_killed_connection_does_not_end_the_lease_it_claimed() -> None:
    async with storages(2) as (first, second):
        async with first.instance(KEY) as tx:
            tx.save(record(1, alarm=T0))
        (claim,) = await first.claim_due(T0, limit=1, lease=LONG)
        await terminate_clients()  # every pooled connection, the claim's among them
        assert await second.claim_due(T0, limit=1, lease=LONG) == []
        held = await second.read(KEY)
        assert held is not None
        assert held.lease is not None
        assert held.lease.token == claim.token
        assert await fenced_save(first, claim.token, record(2))  # on a fresh connection
        assert await second.read(KEY) == record(2)


# -- LISTEN / NOTIFY -------------------------------------------------------------------------


async def listening(channel: str) -> None:
    """Return once a session listens on `channel` (a bounded poll of the server's view)."""
    for _ in range(1000):
        if await admin(
            "SELECT 1 FROM pg_stat_activity WHERE query = %s AND state = 'idle'",
            f'LISTEN "{channel}"',
        ):
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"nobody listens on {channel}")


async def nothing(storage: PostgresStorage) -> str:
    del storage
    return ""


async def queued_item(storage: PostgresStorage) -> str:
    assert await storage.push_items(POOL, [item("e1")], now=T0) == [True]
    return ""


async def leased_item(storage: PostgresStorage) -> str:
    await queued_item(storage)
    (claim,) = await storage.claim_items({POOL: 1}, T0, limit=1, lease=LONG)
    return claim.token


async def leased_instance(storage: PostgresStorage) -> str:
    async with storage.instance(KEY) as tx:
        tx.save(record(1, alarm=T0))
    (claim,) = await storage.claim_due(T0, limit=1, lease=LONG)
    return claim.token


async def push(storage: PostgresStorage, token: str) -> None:
    del token
    await storage.push_items(POOL, [item("e2")], now=T0)


async def finish(storage: PostgresStorage, token: str) -> None:
    await storage.finish_item(POOL, ItemFinish(event_id="e1", token=token))


async def cancel(storage: PostgresStorage, token: str) -> None:
    del token
    assert await storage.cancel_item(POOL, "e1") == "cancelled"


async def revoke(storage: PostgresStorage, token: str) -> None:
    del token
    async with storage.instance(KEY) as tx:
        tx.revoke_lease()


async def release(storage: PostgresStorage, token: str) -> None:
    await storage.release([token])


async def alarm(storage: PostgresStorage, token: str) -> None:
    del token
    async with storage.instance(KEY) as tx:
        tx.save(record(1, alarm=T0))


@pytest.mark.parametrize(
    ("setup", "change"),
    [
        (nothing, push),
        (leased_item, finish),
        (queued_item, cancel),
        (leased_instance, revoke),
        (leased_item, release),
        (nothing, alarm),
    ],
    ids=["push", "finish", "cancel", "revoke", "release", "alarm"],
)
async def test_a_change_in_another_process_wakes_a_waiting_worker(
    setup: Callable[[PostgresStorage], Awaitable[str]],
    change: Callable[[PostgresStorage, str], Awaitable[None]],
) -> None:
    schema = fresh_schema()
    async with storages(2, schema) as (watcher, writer):
        token = await setup(writer)  # before anybody listens: it wakes nobody
        waiting = asyncio.ensure_future(watcher.wait_for_change())
        await listening(f"durable_jobs_{schema}")
        assert not waiting.done()
        await change(writer, token)
        async with asyncio.timeout(10):
            await waiting


async def test_notifications_sent_between_two_waits_are_not_lost() -> None:
    schema = fresh_schema()
    async with storages(2, schema) as (watcher, writer):
        first = asyncio.ensure_future(watcher.wait_for_change())
        await listening(f"durable_jobs_{schema}")
        await push(writer, "")
        async with asyncio.timeout(10):
            await first
        # nobody waits now, yet the connection keeps listening: the next wait gets this one
        await alarm(writer, "")
        async with asyncio.timeout(10):
            await watcher.wait_for_change()


async def test_a_storages_own_commits_do_not_wake_its_own_wait() -> None:
    schema = fresh_schema()
    async with storages(2, schema) as (worker, other):
        waiting = asyncio.ensure_future(worker.wait_for_change())
        await listening(f"durable_jobs_{schema}")
        await push(worker, "")  # its engine wakes itself for what it commits
        await alarm(worker, "")
        done, _ = await asyncio.wait([waiting], timeout=0.5)
        assert not done
        await other.push_items(POOL, [item("e3")], now=T0)  # another process's does
        async with asyncio.timeout(10):
            await waiting


async def test_a_killed_listening_connection_is_replaced_and_the_wait_returns() -> None:
    schema = fresh_schema()
    channel = f"durable_jobs_{schema}"
    async with storages(1, schema) as (watcher,):
        waiting = asyncio.ensure_future(watcher.wait_for_change())
        await listening(channel)
        await admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = %s",
            f'LISTEN "{channel}"',
        )
        # changes made while nobody listened would be missed: the worker looks again
        async with asyncio.timeout(10):
            await waiting
        await listening(channel)  # and listens again


# -- connections -----------------------------------------------------------------------------


async def terminate_clients() -> None:
    """Kill every client backend but the one asking."""
    await admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
    )


async def test_an_unreachable_server_is_a_storage_error_after_retries() -> None:
    storage = PostgresStorage(
        "host=127.0.0.1 port=1 user=nobody connect_timeout=1", open_timeout="1 second"
    )
    with pytest.raises(StorageError, match="cannot open PostgreSQL storage"):
        await asyncio.wait_for(storage.read(KEY), timeout=120)
    await storage.close()


async def test_blocks_on_one_key_from_two_pools_never_overlap() -> None:
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

    async with storages(2) as pair:
        await asyncio.gather(*(bump(storage) for _ in range(10) for storage in pair))
        assert overlaps == 0
        assert await pair[0].read(KEY) == record(20)


async def test_a_pool_of_the_callers_works_in_the_schema_without_changing_its_sessions() -> None:
    schema = fresh_schema()
    pool: _Pool = AsyncConnectionPool(postgres_dsn(), min_size=1, max_size=3, open=False)
    await pool.open()
    storage = PostgresStorage(pool, schema=schema, open_timeout="10 seconds")
    async with asyncio.timeout(60), storage.instance(KEY) as tx:
        tx.save(record(1, alarm=T0))
    assert await storage.read(KEY) == record(1, alarm=T0)
    assert [r.key for r in await storage.list_instances()] == [KEY]
    assert [c.key for c in await storage.claim_due(T0, limit=1, lease=LONG)] == [KEY]
    assert await storage.push_items(POOL, [item("e1")], now=T0) == [True]
    async with pool.connection() as conn:
        cursor = await conn.execute("SHOW search_path")
        shown = await cursor.fetchone()
    assert shown is not None
    assert schema not in str(shown[0])  # the caller's sessions keep their own search_path
    await storage.close()
    await pool.close()


async def test_closing_gives_the_listening_connection_back_to_a_callers_pool() -> None:
    schema = fresh_schema()
    pool: _Pool = AsyncConnectionPool(postgres_dsn(), min_size=1, max_size=2, open=False, timeout=5)
    await pool.open()
    storage = PostgresStorage(pool, schema=schema)
    waiting = asyncio.ensure_future(storage.wait_for_change())
    await listening(f"durable_jobs_{schema}")
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    await storage.close()
    assert pool.get_stats()["pool_available"] == pool.get_stats()["pool_size"]
    # both connections of the pool at once: neither listens, nor stays in autocommit
    async with pool.connection() as first, pool.connection() as second:
        for conn in (first, second):
            cursor = await conn.execute("SELECT count(*) FROM pg_listening_channels()")
            assert await cursor.fetchone() == (0,)
            assert not conn.autocommit
    await pool.close()


async def test_a_claimed_run_holds_no_connection() -> None:
    pool: _Pool = AsyncConnectionPool(postgres_dsn(), min_size=1, max_size=4, open=False)
    await pool.open()
    storage = PostgresStorage(pool, schema=fresh_schema())
    async with storage.instance(KEY) as tx:
        tx.save(record(1, alarm=T0))
    await storage.push_items(POOL, [item("e1")], now=T0)
    claims = [
        *await storage.claim_due(T0, limit=1, lease=LONG),
        *await storage.claim_items({POOL: 1}, T0, limit=1, lease=LONG),
    ]
    assert len(claims) == 2
    # both runs are "in flight" now: every connection is back in the pool
    stats = pool.get_stats()
    assert stats["pool_available"] == stats["pool_size"]
    await storage.close()
    await pool.close()


async def test_connections_killed_between_operations_are_replaced() -> None:
    storage = PostgresStorage(postgres_dsn(), schema=fresh_schema(), pool_size=4)
    async with storage.instance(KEY) as tx:
        tx.save(record(1, alarm=T0))
    await terminate_clients()
    # no StorageError: each dead connection is replaced before anything is written
    async with asyncio.timeout(60):
        async with storage.instance(KEY) as tx:
            current = tx.record
            assert current is not None
            tx.save(record(int(str(current.state)) + 1, alarm=T0))
        await terminate_clients()
        assert await storage.read(KEY) == record(2, alarm=T0)
        await terminate_clients()
        assert len(await storage.claim_due(T0, limit=1, lease=LONG)) == 1
    await storage.close()


async def killed_while_open(storage: PostgresStorage) -> None:
    async with storage.instance(KEY) as tx:
        await terminate_clients()
        tx.save(record(1))


async def test_a_connection_killed_inside_a_block_is_a_storage_error() -> None:
    async with storages(1) as (storage,):
        with pytest.raises(StorageError) as failed:
            await killed_while_open(storage)
        assert not isinstance(failed.value, psycopg.Error)
        assert isinstance(failed.value.__cause__, psycopg.OperationalError)
        assert await storage.read(KEY) is None


class _Proxy:
    """A TCP proxy to the test server that can refuse connections or cut one at COMMIT."""

    def __init__(self, socket: str) -> None:
        self.socket = socket
        self.cut_at_commit = False
        self.refuse = False
        self.links: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in self.links:
            writer.close()

    def cut_all(self) -> None:
        for writer in self.links:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refuse:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_unix_connection(self.socket)
        self.links.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, up: bool) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    if up and self.cut_at_commit and b"COMMIT\x00" in data:
                        self.cut_at_commit = False  # only this once: the COMMIT never arrives
                        break
                    dst.write(data)
                    await dst.drain()
            writer.close()
            up_writer.close()

        await asyncio.gather(pipe(reader, up_writer, up=True), pipe(up_reader, writer, up=False))


@contextlib.asynccontextmanager
async def proxied(schema: str) -> AsyncIterator[tuple[_Proxy, PostgresStorage]]:
    conninfo = psycopg.conninfo.conninfo_to_dict(postgres_dsn())
    directory, port = str(conninfo["host"]), conninfo.get("port") or 5432
    proxy = _Proxy(f"{directory}/.s.PGSQL.{port}")
    await proxy.start()
    dsn = psycopg.conninfo.make_conninfo(postgres_dsn(), host="127.0.0.1", port=proxy.port)
    pool: _Pool = AsyncConnectionPool(dsn, min_size=1, max_size=4, open=False, timeout=0.5)
    await pool.open()
    storage = PostgresStorage(pool, schema=schema, open_timeout="5 seconds")
    try:
        yield proxy, storage
    finally:
        await storage.close()
        await pool.close()
        await proxy.close()


async def test_a_commit_of_unknown_outcome_is_a_storage_error_and_never_retried() -> None:
    schema = fresh_schema()
    async with proxied(schema) as (proxy, storage):
        await storage.open()
        proxy.cut_at_commit = True
        with pytest.raises(StorageError, match="outcome unknown") as failed:
            await storage.push_items(POOL, [item("e1")], now=T0)
        assert isinstance(failed.value.__cause__, psycopg.Error)
        # the COMMIT never reached the server, and no second try went behind its back
        assert await storage.read_item(POOL, "e1") is None
        assert await storage.push_items(POOL, [item("e1")], now=T0) == [True]


async def test_a_lost_server_is_a_storage_error_from_every_operation() -> None:
    schema = fresh_schema()
    async with proxied(schema) as (proxy, storage):
        async with storage.instance(KEY) as tx:
            tx.save(record(1, alarm=T0))
        proxy.refuse = True
        proxy.cut_all()
        operations: list[Awaitable[object]] = [
            storage.read(KEY),
            storage.claim_due(T0, limit=1, lease=LONG),
            storage.claim_items({POOL: 1}, T0, limit=1, lease=LONG),
            storage.renew(["token"], LONG),
            storage.release(["token"]),
            storage.next_alarm_at({POOL: 1}),
            storage.push_items(POOL, [item("e1")], now=T0),
            storage.finish_item(POOL, ItemFinish(event_id="e1", token="token")),
            storage.cancel_item(POOL, "e1"),
            storage.pool_counts(POOL),
            storage.list_instances(),
            storage.dead_letters(),
            storage.delete_dead_letter("letter"),
            storage.forget_seen_before(T0),
            opened_block(storage),
        ]
        async with asyncio.timeout(120):
            outcomes = await asyncio.gather(*operations, return_exceptions=True)
        for outcome in outcomes:
            assert isinstance(outcome, StorageError), outcome
            assert not isinstance(outcome, psycopg.Error)


async def opened_block(storage: PostgresStorage) -> None:
    async with storage.instance(KEY) as tx:
        tx.save(record(2))


@pytest.mark.parametrize(
    ("event_id", "priority", "event"),
    [
        ("a\x00b", 0, None),  # psycopg refuses NUL in text
        ("e", 2**31, None),  # the INTEGER column's range
        ("\ud800", 0, None),  # not UTF-8
        ("e", 0, {"x": float("nan")}),  # JSON has no NaN
    ],
)
async def test_data_the_database_refuses_is_a_validation_error(
    event_id: str, priority: int, event: object
) -> None:
    # the data boundary refuses these before any write; the storage maps them anyway
    pool = InstanceKey(JobKind.WORKER_POOL, "pool", "pool")
    async with storages(1) as (storage,):
        item = QueueItem(event_id=event_id, event=event, priority=priority, enqueued_at=T0)
        with pytest.raises(ValidationError, match="PostgreSQL cannot store a value"):
            await storage.push_items(pool, [item], now=T0)
        async with storage.instance(pool) as tx:  # nothing held, nothing written
            assert tx.record is None
        assert await storage.push_items(
            pool, [attrs.evolve(item, event_id="ok", priority=0, event=None)], now=T0
        ) == [True]
