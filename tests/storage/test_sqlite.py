"""What only `SqliteStorage` has: a file, a schema, lock rows shared between processes."""

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import attrs
import pytest

from durable_jobs import (
    Debounce,
    DebounceExecuteContext,
    Engine,
    Ok,
    Result,
    SqliteStorage,
    StorageError,
    ValidationError,
)
from durable_jobs._storage._interface import InstanceKey, InstanceRecord, JobKind
from durable_jobs._storage._sqlite import SCHEMA_VERSION
from durable_jobs.testing import TestClock


T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEY = InstanceKey(JobKind.TASK, "job", "a")


def record(state: int, key: InstanceKey = KEY) -> InstanceRecord:
    return InstanceRecord(key=key, state=state, created_at=T0, updated_at=T0)


async def test_the_schema_is_created_and_versioned(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "jobs.db")
    await storage.open()
    await storage.close()
    with sqlite3.connect(tmp_path / "jobs.db") as raw:
        versions = [row[0] for row in raw.execute("SELECT version FROM durable_jobs_schema")]
        mode = raw.execute("PRAGMA journal_mode").fetchone()[0]
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    assert mode == "wal"
    again = SqliteStorage(tmp_path / "jobs.db")  # reopening applies nothing twice
    await again.open()
    await again.close()


async def test_a_newer_schema_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "jobs.db")
    await storage.open()
    await storage.close()
    with sqlite3.connect(tmp_path / "jobs.db") as raw:
        raw.execute("INSERT INTO durable_jobs_schema VALUES (?, 0)", (SCHEMA_VERSION + 1,))
    newer = SqliteStorage(tmp_path / "jobs.db")
    with pytest.raises(StorageError, match="newer than this version of durable-jobs"):
        await newer.read(KEY)
    await newer.close()


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
    storage = SqliteStorage(path)
    with pytest.raises(StorageError, match=r"task:job:a.*unreadable"):
        await storage.read(KEY)
    assert await storage.read(other) == record(1, other)
    with pytest.raises(StorageError):
        async with storage.instance(KEY):
            pass
    async with storage.instance(other) as tx:  # the failed block released nothing it held
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


async def test_a_lock_left_by_a_dead_process_expires(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    storage = SqliteStorage(path, lock_lease="200 milliseconds")
    await storage.open()
    with sqlite3.connect(path) as raw:  # a process that died while holding the instance
        raw.execute(
            "INSERT INTO instance_locks VALUES ('task', 'job', 'a', 'dead', ?)",
            (int(datetime.now(UTC).timestamp() * 1_000_000) + 150_000,),
        )
    async with asyncio.timeout(10):
        async with storage.instance(KEY) as tx:  # waits for the expiry, then takes over
            tx.save(record(1))
    assert await storage.read(KEY) == record(1)
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


async def test_a_live_holder_keeps_its_lock_past_the_lease(tmp_path: Path) -> None:
    holder = SqliteStorage(tmp_path / "jobs.db", lock_lease="150 milliseconds")
    other = SqliteStorage(tmp_path / "jobs.db", lock_lease="150 milliseconds")
    order: list[str] = []

    async def hold() -> None:
        async with holder.instance(KEY) as tx:
            order.append("held")
            await asyncio.sleep(0.6)  # four leases: the heartbeat must keep the lock
            tx.save(record(1))
            order.append("released")

    async def take() -> None:
        await asyncio.sleep(0.05)
        async with other.instance(KEY) as tx:
            order.append("taken")
            assert tx.record == record(1)

    await asyncio.gather(hold(), take())
    assert order == ["held", "released", "taken"]
    await holder.close()
    await other.close()
