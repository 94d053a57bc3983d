"""
`SqliteStorage`: the storage protocol on one SQLite file (WAL), for one or many processes.

Design, briefly:
- Every SQLite call runs on one dedicated thread per storage (one connection), so a busy
  database or a slow disk never stalls the event loop.
- An instance block is serialized across processes by a row in `instance_locks` (owner +
  expiry, refreshed while the block is open) and inside one process by an asyncio lock per
  key. The block's changes are buffered and written in ONE transaction on clean exit, which
  also checks and drops the lock row; user code never runs inside a write transaction, so a
  slow `execute` does not hold SQLite's single write lock.
- A process that dies holding a lock row loses it when the row expires; a claimed alarm's
  lease (`instances.lease_until`) expires the same way, so the alarm runs again.
- Times are stored as integer microseconds since the Unix epoch (UTC); JSON as text.
- The schema is versioned in `durable_jobs_schema`; pending migrations run on open, and a
  file written by a newer version is refused with a `StorageError`.
"""

import asyncio
import contextlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final, TypeVar

from .._duration import DurationInput, to_timedelta
from .._errors import StorageError
from .._types import JsonValue
from ._buffered import BufferedTransaction, Changes
from ._interface import (
    DeadLetter,
    InstanceKey,
    InstanceRecord,
    InstanceTransaction,
    QueueItem,
    Storage,
)
from ._keylocks import KeyLocks
from ._rows import RECORD_COLUMNS as _RECORD_COLUMNS
from ._rows import key_of as _key_of
from ._rows import key_params as _key_params
from ._rows import status_of as _status_of


T = TypeVar("T")

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)

# (version, statements); append only: a released migration never changes.
_MIGRATIONS: Final[tuple[tuple[int, tuple[str, ...]], ...]] = (
    (
        1,
        (
            """CREATE TABLE instances (
                kind TEXT NOT NULL, job TEXT NOT NULL, id TEXT NOT NULL,
                status TEXT NOT NULL, state TEXT NOT NULL, meta TEXT NOT NULL,
                alarm_at INTEGER, lease_until INTEGER,
                attempt INTEGER NOT NULL, retry_started_at INTEGER, defects INTEGER NOT NULL,
                last_error TEXT, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
                PRIMARY KEY (kind, job, id)
            ) WITHOUT ROWID""",
            "CREATE INDEX instances_alarm ON instances (alarm_at) WHERE alarm_at IS NOT NULL",
            """CREATE TABLE dead_letters (
                seq INTEGER PRIMARY KEY AUTOINCREMENT, letter_id TEXT NOT NULL UNIQUE,
                kind TEXT NOT NULL, job TEXT NOT NULL, id TEXT NOT NULL,
                state TEXT NOT NULL, meta TEXT NOT NULL, event TEXT NOT NULL,
                error TEXT NOT NULL,
                reason TEXT NOT NULL, attempts INTEGER NOT NULL, at INTEGER NOT NULL
            )""",
            "CREATE INDEX dead_letters_at ON dead_letters (at, seq)",
            """CREATE TABLE seen_events (
                kind TEXT NOT NULL, job TEXT NOT NULL, id TEXT NOT NULL,
                event_id TEXT NOT NULL, at INTEGER NOT NULL,
                PRIMARY KEY (kind, job, id, event_id)
            ) WITHOUT ROWID""",
            "CREATE INDEX seen_events_at ON seen_events (at)",
            """CREATE TABLE queue_items (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                kind TEXT NOT NULL, job TEXT NOT NULL, id TEXT NOT NULL,
                event_id TEXT NOT NULL, event TEXT NOT NULL, priority INTEGER NOT NULL,
                partition_key TEXT, enqueued_at INTEGER NOT NULL,
                UNIQUE (kind, job, id, event_id)
            )""",
            "CREATE INDEX queue_items_order ON queue_items (kind, job, id, priority DESC, seq)",
            """CREATE TABLE instance_locks (
                kind TEXT NOT NULL, job TEXT NOT NULL, id TEXT NOT NULL,
                owner TEXT NOT NULL, until INTEGER NOT NULL,
                PRIMARY KEY (kind, job, id)
            ) WITHOUT ROWID""",
        ),
    ),
)
SCHEMA_VERSION: Final = _MIGRATIONS[-1][0]
"""The schema version this library writes."""

_CHANGE_POLL: Final = 0.02
"""Seconds between two looks at the file for other processes' commits."""

_KEY: Final = "kind = ? AND job = ? AND id = ?"


def _micros(when: datetime) -> int:
    if when.tzinfo is None:
        msg = f"naive datetime {when.isoformat()} given to storage; use an aware (UTC) one"
        raise ValueError(msg)
    return (when - _EPOCH) // _MICROSECOND


def _micros_or_none(when: datetime | None) -> int | None:
    return None if when is None else _micros(when)


def _when(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _when_or_none(micros: int | None) -> datetime | None:
    return None if micros is None else _when(micros)


def _dump(value: JsonValue) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _load(text: str, what: str) -> JsonValue:
    try:
        value: JsonValue = json.loads(text)
    except ValueError as exc:
        msg = f"stored JSON of {what} is unreadable: {exc}"
        raise StorageError(msg) from exc
    return value


_RecordRow = tuple[
    str, str, str, str, str, str, int | None, int, int | None, int, str | None, int, int
]


def _record_of(row: _RecordRow) -> InstanceRecord:
    kind, job, id, status, state, meta, alarm, attempt, retry_started, defects = row[:10]
    last_error, created, updated = row[10:]
    what = f"{kind}:{job}:{id}"
    return InstanceRecord(
        key=_key_of(kind, job, id),
        status=_status_of(status, what),
        state=_load(state, what),
        meta=_load(meta, what),
        alarm_at=_when_or_none(alarm),
        attempt=attempt,
        retry_started_at=_when_or_none(retry_started),
        defects=defects,
        last_error=last_error,
        created_at=_when(created),
        updated_at=_when(updated),
    )


def _record_params(record: InstanceRecord) -> tuple[object, ...]:
    return (
        *_key_params(record.key),
        record.status.value,
        _dump(record.state),
        _dump(record.meta),
        _micros_or_none(record.alarm_at),
        record.attempt,
        _micros_or_none(record.retry_started_at),
        record.defects,
        record.last_error,
        _micros(record.created_at),
        _micros(record.updated_at),
    )


_ItemRow = tuple[int, str, str, int, str | None, int]


def _item_of(row: _ItemRow, what: str) -> QueueItem:
    seq, event_id, event, priority, partition_key, enqueued = row
    return QueueItem(
        event_id=event_id,
        event=_load(event, what),
        priority=priority,
        partition_key=partition_key,
        enqueued_at=_when(enqueued),
        seq=seq,
    )


class _LockLostError(Exception):
    """Our lock row expired and another process took the instance."""


class _Database:
    """The connection and every statement; used only on the storage's thread."""

    def __init__(self, path: Path, busy_timeout: float) -> None:
        try:
            self.conn = sqlite3.connect(
                path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            msg = f"cannot open the SQLite database {str(path)!r}: {exc}"
            raise StorageError(msg) from exc
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self._migrate(path)
        except sqlite3.Error as exc:
            self.conn.close()
            msg = f"cannot open the SQLite database {str(path)!r}: {exc}"
            raise StorageError(msg) from exc
        except BaseException:
            self.conn.close()
            raise

    @contextlib.contextmanager
    def write(self) -> Generator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE): committed on exit, rolled back on error."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.execute("COMMIT")

    def _migrate(self, path: Path) -> None:
        with self.write() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS durable_jobs_schema"
                " (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
            )
            row = conn.execute("SELECT MAX(version) FROM durable_jobs_schema").fetchone()
            current: int = row[0] if row is not None and row[0] is not None else 0
            if current > SCHEMA_VERSION:
                msg = (
                    f"the SQLite database {str(path)!r} has schema version {current}, newer"
                    f" than this version of durable-jobs supports ({SCHEMA_VERSION});"
                    " upgrade durable-jobs"
                )
                raise StorageError(msg)
            for version, statements in _MIGRATIONS:
                if version <= current:
                    continue
                for statement in statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO durable_jobs_schema VALUES (?, ?)",
                    (version, _micros(datetime.now(UTC))),
                )

    # -- instance blocks -----------------------------------------------------------------

    def lock_and_read(
        self, key: InstanceKey, owner: str, now_us: int, until_us: int
    ) -> tuple[bool, InstanceRecord | None]:
        params = _key_params(key)
        with self.write() as conn:
            row = conn.execute(
                f"SELECT owner, until FROM instance_locks WHERE {_KEY}", params
            ).fetchone()
            if row is not None and row[0] != owner and row[1] > now_us:
                return (False, None)
            conn.execute(
                "INSERT OR REPLACE INTO instance_locks VALUES (?, ?, ?, ?, ?)",
                (*params, owner, until_us),
            )
            return (True, self.read(key))

    def refresh_locks(self, keys: Sequence[InstanceKey], owner: str, until_us: int) -> None:
        with self.write() as conn:
            conn.executemany(
                f"UPDATE instance_locks SET until = ? WHERE {_KEY} AND owner = ?",
                [(until_us, *_key_params(key), owner) for key in keys],
            )

    def unlock(self, key: InstanceKey, owner: str) -> None:
        with self.write() as conn:
            conn.execute(
                f"DELETE FROM instance_locks WHERE {_KEY} AND owner = ?",
                (*_key_params(key), owner),
            )

    def commit_block(self, key: InstanceKey, owner: str, changes: Changes) -> None:
        params = _key_params(key)
        with self.write() as conn:
            cursor = conn.execute(
                f"DELETE FROM instance_locks WHERE {_KEY} AND owner = ?", (*params, owner)
            )
            if cursor.rowcount != 1:
                raise _LockLostError
            if changes.record_changed:
                if changes.record is None:
                    conn.execute(f"DELETE FROM instances WHERE {_KEY}", params)
                else:
                    conn.execute(
                        f"INSERT OR REPLACE INTO instances ({_RECORD_COLUMNS}, lease_until)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                        _record_params(changes.record),
                    )
            if changes.queue_purged:
                conn.execute(f"DELETE FROM queue_items WHERE {_KEY}", params)
            conn.executemany(
                f"DELETE FROM queue_items WHERE {_KEY} AND event_id = ?",
                [(*params, event_id) for event_id in changes.removed],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO queue_items"
                " (kind, job, id, event_id, event, priority, partition_key, enqueued_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        *params,
                        item.event_id,
                        _dump(item.event),
                        item.priority,
                        item.partition_key,
                        _micros(item.enqueued_at),
                    )
                    for item in changes.pushed
                ],
            )
            conn.executemany(
                "DELETE FROM dead_letters WHERE letter_id = ?",
                [(letter_id,) for letter_id in changes.letters_removed],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO dead_letters"
                " (letter_id, kind, job, id, state, meta, event, error, reason, attempts, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        letter.id,
                        *_key_params(letter.key),
                        _dump(letter.state),
                        _dump(letter.meta),
                        _dump(letter.event),
                        letter.error,
                        letter.reason,
                        letter.attempts,
                        _micros(letter.at),
                    )
                    for letter in changes.letters
                ],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO seen_events VALUES (?, ?, ?, ?, ?)",
                [(*params, event_id, _micros(at)) for event_id, at in changes.remembered],
            )

    def has_seen(self, key: InstanceKey, event_id: str) -> bool:
        row = self.conn.execute(
            f"SELECT 1 FROM seen_events WHERE {_KEY} AND event_id = ?",
            (*_key_params(key), event_id),
        ).fetchone()
        return row is not None

    def queue_head(self, key: InstanceKey, skip: frozenset[str]) -> QueueItem | None:
        cursor = self.conn.execute(
            "SELECT seq, event_id, event, priority, partition_key, enqueued_at"
            f" FROM queue_items WHERE {_KEY} ORDER BY priority DESC, seq",
            _key_params(key),
        )
        for row in cursor:
            if row[1] not in skip:
                cursor.close()
                return _item_of(row, f"the queue of {key}")
        return None

    def queue_has(self, key: InstanceKey, event_id: str) -> bool:
        row = self.conn.execute(
            f"SELECT 1 FROM queue_items WHERE {_KEY} AND event_id = ?",
            (*_key_params(key), event_id),
        ).fetchone()
        return row is not None

    def queue_size(self, key: InstanceKey) -> int:
        row = self.conn.execute(
            f"SELECT COUNT(*) FROM queue_items WHERE {_KEY}", _key_params(key)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def max_seq(self) -> int:
        row = self.conn.execute("SELECT MAX(seq) FROM queue_items").fetchone()
        return 0 if row is None or row[0] is None else int(row[0])

    # -- reads and alarms ------------------------------------------------------------------

    def read(self, key: InstanceKey) -> InstanceRecord | None:
        row = self.conn.execute(
            f"SELECT {_RECORD_COLUMNS} FROM instances WHERE {_KEY}", _key_params(key)
        ).fetchone()
        return None if row is None else _record_of(row)

    def claim_due(self, now_us: int, limit: int, until_us: int) -> list[InstanceKey]:
        with self.write() as conn:
            rows = conn.execute(
                "SELECT kind, job, id FROM instances"
                " WHERE alarm_at IS NOT NULL AND alarm_at <= ?"
                " AND (lease_until IS NULL OR lease_until <= ?)"
                " ORDER BY alarm_at, kind, job, id LIMIT ?",
                (now_us, now_us, limit),
            ).fetchall()
            conn.executemany(
                f"UPDATE instances SET lease_until = ? WHERE {_KEY}",
                [(until_us, *row) for row in rows],
            )
        return [_key_of(*row) for row in rows]

    def next_alarm_at(self) -> int | None:
        best: int | None = None
        # leased rows are few (the alarms in flight): walk past them in alarm order
        cursor = self.conn.execute(
            "SELECT alarm_at, lease_until FROM instances"
            " WHERE alarm_at IS NOT NULL ORDER BY alarm_at"
        )
        for alarm, lease in cursor:
            if best is not None and alarm >= best:
                break
            ready = alarm if lease is None else max(alarm, lease)
            best = ready if best is None else min(best, ready)
            if lease is None:
                break
        cursor.close()
        return best

    def list_instances(self, job: str | None) -> list[InstanceRecord]:
        where, params = ("", ()) if job is None else (" WHERE job = ?", (job,))
        rows = self.conn.execute(
            f"SELECT {_RECORD_COLUMNS} FROM instances{where} ORDER BY kind, job, id", params
        ).fetchall()
        return [_record_of(row) for row in rows]

    def dead_letters(self, job: str | None) -> list[DeadLetter]:
        where, params = ("", ()) if job is None else (" WHERE job = ?", (job,))
        rows = self.conn.execute(
            "SELECT letter_id, kind, job, id, state, meta, event, error, reason, attempts, at"
            f" FROM dead_letters{where} ORDER BY at, seq",
            params,
        ).fetchall()
        letters: list[DeadLetter] = []
        for letter_id, kind, job_name, id, state, meta, event, error, reason, attempts, at in rows:
            what = f"dead letter {letter_id}"
            letters.append(
                DeadLetter(
                    id=letter_id,
                    key=_key_of(kind, job_name, id),
                    state=_load(state, what),
                    meta=_load(meta, what),
                    event=_load(event, what),
                    error=error,
                    reason=reason,
                    attempts=attempts,
                    at=_when(at),
                )
            )
        return letters

    def delete_dead_letter(self, letter_id: str) -> bool:
        with self.write() as conn:
            cursor = conn.execute("DELETE FROM dead_letters WHERE letter_id = ?", (letter_id,))
            return cursor.rowcount == 1

    def data_version(self) -> int:
        row = self.conn.execute("PRAGMA data_version").fetchone()
        return 0 if row is None else int(row[0])

    def forget_seen_before(self, cutoff_us: int) -> int:
        with self.write() as conn:
            return conn.execute("DELETE FROM seen_events WHERE at < ?", (cutoff_us,)).rowcount


class SqliteStorage:
    """
    Storage on one SQLite file: durable, atomic per instance, safe for several processes.

    `SqliteStorage("jobs.db")` creates the file (and the schema) on first use. Workers and
    clients in several processes may share the file; two of them never hold one instance at
    the same time. All SQLite work runs on a thread of this storage, never on the event loop.

    Args:
        path: the database file.
        lock_lease: how long an instance stays locked by a process that stopped answering
            (a lock is refreshed while its holder is alive, so only a dead process loses it).
        busy_timeout: how long one statement waits for SQLite's write lock before failing.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        lock_lease: DurationInput = "30 seconds",
        busy_timeout: DurationInput = "30 seconds",
    ) -> None:
        self._path = Path(path)
        self._conn = _Connection(
            self._path,
            lock_lease=to_timedelta(lock_lease, field="lock_lease"),
            busy_timeout=to_timedelta(busy_timeout, field="busy_timeout"),
        )

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    async def open(self) -> None:
        """Open the file and apply pending migrations now (otherwise done on first use)."""
        await self._call(lambda db: None)

    def instance(self, key: InstanceKey) -> AbstractAsyncContextManager[InstanceTransaction]:
        """
        Serialized, atomic access to one instance, across tasks and processes.

        Changes are buffered and written in one transaction on clean exit, or dropped when
        the block raises. If this process stalled so long that its lock expired and another
        process took the instance, the exit raises `StorageError` and writes nothing.
        """
        return _SqliteBlock(self._conn, key)

    async def read(self, key: InstanceKey) -> InstanceRecord | None:
        """A committed snapshot of one record, without taking the instance."""
        return await self._call(lambda db: db.read(key))

    async def claim_due(
        self, now: datetime, *, limit: int, lease: timedelta
    ) -> Sequence[InstanceKey]:
        """Lease up to `limit` instances whose alarm is due at `now` and not leased."""
        if limit <= 0:
            return []
        now_us, until_us = _micros(now), _micros(now + lease)
        return await self._call(lambda db: db.claim_due(now_us, limit, until_us))

    async def next_alarm_at(self) -> datetime | None:
        """When `claim_due` can next return something (leases counted), or None."""
        return _when_or_none(await self._call(lambda db: db.next_alarm_at()))

    async def list_instances(self, job: str | None = None) -> Sequence[InstanceRecord]:
        """Every record, optionally of one job, in key order."""
        return await self._call(lambda db: db.list_instances(job))

    async def dead_letters(self, job: str | None = None) -> Sequence[DeadLetter]:
        """Dead letters, oldest first (then in commit order), optionally of one job."""
        return await self._call(lambda db: db.dead_letters(job))

    async def delete_dead_letter(self, letter_id: str) -> bool:
        """Remove one dead letter; False when there is none with that id."""
        return await self._call(lambda db: db.delete_dead_letter(letter_id))

    async def forget_seen_before(self, cutoff: datetime) -> int:
        """Drop remembered event ids accepted before `cutoff` (strictly); returns how many."""
        cutoff_us = _micros(cutoff)
        return await self._call(lambda db: db.forget_seen_before(cutoff_us))

    async def wait_for_change(self) -> None:
        """Return once another connection (process) has committed to the file."""
        # `PRAGMA data_version` changes only for commits by other connections; polling it
        # is one cheap statement on the storage thread
        start = await self._call(_Database.data_version)
        while True:
            await asyncio.sleep(_CHANGE_POLL)
            if await self._call(_Database.data_version) != start:
                return

    async def close(self) -> None:
        """Close the connection and stop the thread; the storage cannot be used after."""
        await self._conn.close()

    async def _call(self, work: Callable[[_Database], T]) -> T:
        return await self._conn.call(work)


class _Connection:
    """The storage's thread, its database, and this process's identity as a lock owner."""

    def __init__(self, path: Path, *, lock_lease: timedelta, busy_timeout: timedelta) -> None:
        self.path = path
        self.lock_lease = lock_lease
        self.owner = uuid.uuid4().hex
        self.locks: KeyLocks[InstanceKey] = KeyLocks()
        self._held: set[InstanceKey] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._db: _Database | None = None
        self._closed = False

    async def call(self, work: Callable[[_Database], T]) -> T:
        """Run `work` on the storage's thread; SQLite failures become `StorageError`."""
        if self._closed:
            msg = f"the SQLite storage {str(self.path)!r} is closed"
            raise StorageError(msg)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="durable-jobs-sqlite")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._run, work)

    def _run(self, work: Callable[[_Database], T]) -> T:
        try:
            if self._db is None:
                self._db = _Database(self.path, self._busy_timeout.total_seconds())
            return work(self._db)
        except sqlite3.Error as exc:
            msg = f"SQLite storage {str(self.path)!r} failed: {exc}"
            raise StorageError(msg) from exc

    def hold(self, key: InstanceKey) -> None:
        """Keep `key`'s lock row alive until `let_go` (one heartbeat for every held lock)."""
        self._held.add(key)
        heartbeat = self._heartbeat
        if heartbeat is None or heartbeat.done():
            self._heartbeat = asyncio.create_task(self._keep_alive(), name="durable-jobs-locks")

    def let_go(self, key: InstanceKey) -> None:
        """Stop refreshing `key`'s lock row."""
        self._held.discard(key)

    async def _keep_alive(self) -> None:
        period = self.lock_lease.total_seconds() / 3
        while self._held:
            await asyncio.sleep(period)
            keys = list(self._held)
            if not keys:
                return
            _, until_us = self.lock_until()
            owner = self.owner
            with contextlib.suppress(StorageError):
                await self.call(
                    partial(_Database.refresh_locks, keys=keys, owner=owner, until_us=until_us)
                )

    def lock_until(self) -> tuple[int, int]:
        """Now and the expiry of a lock taken now, in microseconds."""
        # lock rows expire in real time (process liveness), whatever the engine's clock says
        now = datetime.fromtimestamp(time.time(), UTC)
        return _micros(now), _micros(now + self.lock_lease)

    async def close(self) -> None:
        """Close the database on its thread, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None and not heartbeat.done():
            heartbeat.cancel()
        executor, self._executor = self._executor, None
        if executor is None:
            return
        await asyncio.get_running_loop().run_in_executor(executor, self._close_db)
        executor.shutdown(wait=True)

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.conn.close()
            self._db = None


class _ThreadView:
    """The committed data, read on the storage's thread (for `BufferedTransaction`)."""

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    async def has_seen(self, key: InstanceKey, event_id: str) -> bool:
        return await self._conn.call(partial(_Database.has_seen, key=key, event_id=event_id))

    async def queue_head(self, key: InstanceKey, skip: frozenset[str]) -> QueueItem | None:
        return await self._conn.call(partial(_Database.queue_head, key=key, skip=skip))

    async def queue_has(self, key: InstanceKey, event_id: str) -> bool:
        return await self._conn.call(partial(_Database.queue_has, key=key, event_id=event_id))

    async def queue_size(self, key: InstanceKey) -> int:
        return await self._conn.call(partial(_Database.queue_size, key=key))

    async def max_seq(self) -> int:
        return await self._conn.call(_Database.max_seq)


class _SqliteBlock:
    """`async with storage.instance(key) as tx`: lock, read, buffer, commit or discard."""

    def __init__(self, conn: _Connection, key: InstanceKey) -> None:
        self._conn = conn
        self._key = key
        self._tx: BufferedTransaction | None = None

    async def __aenter__(self) -> InstanceTransaction:
        if self._tx is not None:
            msg = "a storage.instance(...) block cannot be entered twice"
            raise RuntimeError(msg)
        conn, key = self._conn, self._key
        await conn.locks.acquire(key)
        try:
            record = await self._take()
        except BaseException:
            conn.locks.release(key)
            raise
        self._tx = BufferedTransaction(_ThreadView(conn), key, record)
        conn.hold(key)
        return self._tx

    async def _take(self) -> InstanceRecord | None:
        conn, key = self._conn, self._key
        owner = conn.owner
        pause = 0.002
        while True:
            now_us, until_us = conn.lock_until()
            future = asyncio.ensure_future(
                conn.call(
                    partial(
                        _Database.lock_and_read,
                        key=key,
                        owner=owner,
                        now_us=now_us,
                        until_us=until_us,
                    )
                )
            )
            try:
                taken, record = await asyncio.shield(future)
            except asyncio.CancelledError:
                # the lock may be taken on the thread already: let it finish, then give it back
                with contextlib.suppress(Exception):
                    taken, _ = await future
                    if taken:
                        await conn.call(lambda db: db.unlock(key, owner))
                raise
            if taken:
                return record
            # another process holds the instance: poll with a short, growing pause
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.1)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tx = self._tx
        if tx is None:
            return
        conn, key, owner = self._conn, self._key, self._conn.owner
        conn.let_go(key)
        try:
            changes = tx.close()
            if exc_type is None:
                await self._commit(changes)
            else:
                await asyncio.shield(conn.call(lambda db: db.unlock(key, owner)))
        finally:
            conn.locks.release(key)

    async def _commit(self, changes: Changes) -> None:
        conn, key, owner = self._conn, self._key, self._conn.owner
        future = asyncio.ensure_future(conn.call(lambda db: db.commit_block(key, owner, changes)))
        try:
            # a cancelled caller must not leave the commit half-known: wait for its end
            await asyncio.shield(future)
        except _LockLostError:
            msg = (
                f"the lock on {key} expired while this process held it and another process"
                " took the instance; this block's changes were not written"
            )
            raise StorageError(msg) from None
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await future
            raise


DEFAULT_DATABASE = "durable_jobs.db"
"""The file of the default storage, relative to the working directory."""


def default_storage() -> SqliteStorage:
    """The storage an engine or client uses when given none: `SqliteStorage("durable_jobs.db")`."""
    return SqliteStorage(DEFAULT_DATABASE)


if TYPE_CHECKING:
    # SqliteStorage is a `Storage` only structurally: make both checkers prove it here.
    _conforms: Storage = SqliteStorage(":memory:")
