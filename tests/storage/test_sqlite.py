"""What only `SqliteStorage` has: a file, a schema, SQLite's write lock shared by processes."""

import asyncio
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest

from durable_jobs import (
    Debounce,
    DebounceExecuteContext,
    Engine,
    Ok,
    Result,
    SchemaMismatchError,
    SqliteStorage,
    StorageError,
    ValidationError,
)
from durable_jobs._storage._interface import (
    InstanceKey,
    InstanceRecord,
    InstanceStatus,
    JobKind,
    LeaseLostError,
    QueueItem,
)
from durable_jobs._storage._sqlite import SCHEMA_VERSION
from durable_jobs.testing import TestClock


T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEY = InstanceKey(JobKind.TASK, "job", "a")
POOL = InstanceKey(JobKind.WORKER_POOL, "pool-job", "pool")
LEASE = timedelta(seconds=30)


def record(state: int, key: InstanceKey = KEY, alarm: datetime | None = None) -> InstanceRecord:
    return InstanceRecord(key=key, state=state, alarm_at=alarm, created_at=T0, updated_at=T0)


async def test_the_schema_is_created_and_versioned(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "jobs.db")
    await storage.open()
    await storage.close()
    with sqlite3.connect(tmp_path / "jobs.db") as raw:
        versions = [row[0] for row in raw.execute("SELECT version FROM durable_jobs_schema")]
        mode = raw.execute("PRAGMA journal_mode").fetchone()[0]
        tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master")}
        columns = {row[1] for row in raw.execute("PRAGMA table_info(instances)")}
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    assert mode == "wal"
    assert {"instances", "items", "seen_events", "dead_letters"} <= tables
    assert "queue_items" not in tables
    assert "instance_locks" not in tables
    assert {"lease_token", "lease_expires_at"} <= columns
    again = SqliteStorage(tmp_path / "jobs.db")  # reopening applies nothing twice
    assert await again.migrate() == (SCHEMA_VERSION, SCHEMA_VERSION)
    await again.close()


async def test_a_file_that_is_not_a_database_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    path.write_bytes(b"not sqlite " * 200)
    storage = SqliteStorage(path)
    with pytest.raises(StorageError, match="file is not a database"):
        await storage.open()
    await storage.close()


async def test_corrupt_state_of_one_instance_does_not_hide_the_others(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    storage = SqliteStorage(path)
    other = InstanceKey(JobKind.TASK, "job", "b")
    for key in (KEY, other):
        async with storage.instance(key) as tx:
            tx.save(record(1, key))
    await storage.close()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE instances SET state = '{oops' WHERE id = 'a'")
        raw.execute("UPDATE instances SET status = 'zombie' WHERE id = 'a'")
        raw.execute("UPDATE instances SET updated_at = 'yesterday' WHERE id = 'a'")
    storage = SqliteStorage(path)
    # the row reads, noted as unreadable, with its text as a stand-in: the runtime parks it
    broken = await storage.read(KEY)
    assert broken is not None
    assert broken.state == "{oops"
    assert broken.status is InstanceStatus.FAILED
    assert broken.unreadable is not None
    assert "state: invalid JSON" in broken.unreadable
    assert "unknown status" in broken.unreadable
    assert "updated_at: not a time" in broken.unreadable
    assert await storage.read(other) == record(1, other)
    assert len(await storage.list_instances()) == 2
    async with storage.instance(KEY) as tx:  # saving keeps the stored text for repair
        current = tx.record
        assert current is not None
        tx.save(attrs.evolve(current, status=InstanceStatus.FAILED, last_error="parked"))
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT state, status FROM instances WHERE id = 'a'").fetchone() == (
            "{oops",
            "failed",
        )
    async with storage.instance(other) as tx:
        tx.save(record(2, other))
    assert await storage.read(other) == record(2, other)
    await storage.close()


async def test_two_storages_on_one_file_never_hold_one_instance_at_once(tmp_path: Path) -> None:
    # two SqliteStorage objects stand for two processes: they share only the file
    first = SqliteStorage(tmp_path / "jobs.db")
    second = SqliteStorage(tmp_path / "jobs.db")
    inside = 0
    overlaps = 0

    async def bump(storage: SqliteStorage) -> None:
        nonlocal inside, overlaps
        async with storage.instance(KEY) as tx:
            inside += 1
            overlaps += inside > 1
            current = tx.record
            await asyncio.sleep(0)
            tx.save(record((0 if current is None else int(str(current.state))) + 1))
            inside -= 1

    await asyncio.gather(*(bump(s) for _ in range(10) for s in (first, second)))
    assert overlaps == 0
    assert await first.read(KEY) == record(20)
    await first.close()
    await second.close()


_CHILD = """
import asyncio, sys
from datetime import UTC, datetime
from durable_jobs import SqliteStorage
from durable_jobs._storage._interface import InstanceKey, InstanceRecord, JobKind, QueueItem

async def main() -> None:
    storage = SqliteStorage(sys.argv[1])
    key = InstanceKey(JobKind.TASK, "job", "a")
    now = datetime.now(UTC)
    async with storage.instance(key) as tx:
        tx.save(InstanceRecord(key=key, state="from the dead", created_at=now, updated_at=now))
        tx.queue_push(QueueItem(event_id="e", event=None, enqueued_at=now))
        print("inside", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_process_that_dies_inside_a_block_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    storage = SqliteStorage(path)
    async with storage.instance(KEY) as tx:
        tx.save(record(1))
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CHILD, str(path), stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    async with asyncio.timeout(30):  # only reached on failure
        assert await child.stdout.readline() == b"inside\n"
    # the child holds SQLite's write lock now; reads go on (WAL)
    assert await storage.read(KEY) == record(1)
    child.kill()
    await child.wait()
    async with asyncio.timeout(10):  # its lock died with it: no wait for the busy timeout
        async with storage.instance(KEY) as tx:
            assert tx.record == record(1)
            assert await tx.queue_size() == 0
            tx.save(record(2))
    assert await storage.read(KEY) == record(2)
    await storage.close()


async def test_a_block_cancelled_while_waiting_for_another_process_holds_nothing(
    tmp_path: Path,
) -> None:
    holder = SqliteStorage(tmp_path / "jobs.db")
    waiter = SqliteStorage(tmp_path / "jobs.db")
    await waiter.open()
    inside = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        async with holder.instance(KEY) as tx:
            inside.set()
            await release.wait()
            tx.save(record(1))

    async def wait() -> None:
        async with waiter.instance(KEY) as tx:  # blocked in BEGIN IMMEDIATE on its thread
            tx.save(record(99))

    holding = asyncio.create_task(hold())
    await inside.wait()
    waiting = asyncio.create_task(wait())
    for _ in range(20):
        await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    release.set()
    await holding
    async with asyncio.timeout(10):  # neither storage holds the write lock any more
        async with waiter.instance(KEY) as tx:
            assert tx.record == record(1)
            tx.save(record(2))
        async with holder.instance(KEY) as tx:
            assert tx.record == record(2)
    await holder.close()
    await waiter.close()


async def test_every_claim_checks_the_schema_version(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "jobs.db")
    async with storage.instance(KEY) as tx:
        tx.save(record(1, alarm=T0))
    with sqlite3.connect(tmp_path / "jobs.db") as raw:  # a newer release migrated the file
        raw.execute("INSERT INTO durable_jobs_schema VALUES (?, 0)", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaMismatchError, match="changed while this process"):
        await storage.claim_due(T0, limit=10, lease=LEASE)
    with pytest.raises(SchemaMismatchError, match="newer than this version"):
        await storage.claim_items({POOL: 1}, T0, limit=10, lease=LEASE)
    fresh = SqliteStorage(tmp_path / "jobs.db")
    with pytest.raises(SchemaMismatchError, match="upgrade durable-jobs"):
        await fresh.open()
    await fresh.close()
    await storage.close()


async def test_another_connection_commit_is_noticed(tmp_path: Path) -> None:
    watcher = SqliteStorage(tmp_path / "jobs.db")
    writer = SqliteStorage(tmp_path / "jobs.db")
    await watcher.open()
    waiting = asyncio.ensure_future(watcher.wait_for_change())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    async with writer.instance(KEY) as tx:
        tx.save(record(1))
    async with asyncio.timeout(10):
        await waiting
    await watcher.close()
    await writer.close()


async def test_a_lease_taken_in_one_process_is_seen_in_another(tmp_path: Path) -> None:
    worker = SqliteStorage(tmp_path / "jobs.db")
    client = SqliteStorage(tmp_path / "jobs.db")
    async with client.instance(KEY) as tx:
        tx.save(record(1, alarm=T0))
    (claim,) = await worker.claim_due(T0, limit=1, lease=LEASE)
    assert await client.claim_due(T0, limit=1, lease=LEASE) == []
    async with client.instance(KEY) as tx:  # a client's terminate while the run goes on
        tx.purge()

    async def finish() -> None:
        async with worker.instance(KEY) as tx:
            tx.fence(claim.token)
            tx.save(record(2))

    with pytest.raises(LeaseLostError):
        await finish()
    assert await client.read(KEY) is None
    await worker.close()
    await client.close()


@attrs.frozen
class Signup:
    email: str


def send(ctx: DebounceExecuteContext[Signup]) -> Result[None, Exception]:
    return Ok(None)


async def test_a_rejected_operation_changes_nothing_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    job = Debounce(name="signups", event=Signup, flush_after="1 minute", execute=send)
    engine = Engine(jobs=[job], storage=SqliteStorage(path), clock=TestClock())
    client = engine.client.debounce(job)
    await client.add("a", Signup("x@example.com"))
    await engine.storage.close()

    def dump() -> list[str]:
        with sqlite3.connect(path) as raw:
            return list(raw.iterdump())

    before = dump()
    engine = Engine(jobs=[job], storage=SqliteStorage(path), clock=TestClock())
    client = engine.client.debounce(job)
    with pytest.raises(ValidationError) as error:
        await client.add_json("a", '{"email": 42}')
    assert error.value.path == "event.email"
    with pytest.raises(ValidationError):
        await client.add_json("b", "{not json")
    await engine.storage.close()
    assert dump() == before


async def test_forgetting_event_ids_gives_the_space_back(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    storage = SqliteStorage(path)
    for batch in range(10):
        async with storage.instance(KEY) as tx:
            for n in range(500):
                tx.remember(f"event-{batch}-{n}-{'x' * 40}", T0)
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental
        grown = raw.execute("PRAGMA page_count").fetchone()[0]
    assert await storage.forget_seen_before(T0 + timedelta(days=1)) == 5000
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA freelist_count").fetchone() == (0,)
        assert raw.execute("PRAGMA page_count").fetchone()[0] < grown / 4
    await storage.close()


@pytest.mark.parametrize(
    ("event_id", "priority"), [("e", 2**63), ("\ud800", 0)], ids=["int64", "surrogate"]
)
async def test_data_the_driver_refuses_is_a_validation_error(
    tmp_path: Path, event_id: str, priority: int
) -> None:
    # the data boundary refuses these before any write; the storage maps them anyway
    storage = SqliteStorage(tmp_path / "jobs.db")
    pool = InstanceKey(JobKind.WORKER_POOL, "pool", "pool")
    item = QueueItem(event_id=event_id, event=None, priority=priority, enqueued_at=T0)
    with pytest.raises(ValidationError, match=r"SQLite database .* cannot store a value"):
        await storage.push_items(pool, [item], now=T0)
    ok = QueueItem(event_id="ok", event=None, enqueued_at=T0)
    assert await storage.push_items(pool, [ok], now=T0) == [True]  # no lock left behind
    await storage.close()
