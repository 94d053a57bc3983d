"""
`SqliteStorage`: the storage protocol on one SQLite file (WAL), for one or many processes.

Design, briefly:
- An instance block is ONE write transaction: `BEGIN IMMEDIATE` when it opens (SQLite's
  single write lock serializes it against every writer of the file, in every process),
  its short body, `COMMIT` (or `ROLLBACK`) when it ends. The storage's other writes wait
  for an open block. A process that dies inside a block leaves nothing behind: SQLite's
  lock dies with it and the uncommitted transaction is discarded.
- User code never runs inside a block. A worker claims due work in one short transaction
  that writes a lease (a random token and an expiry) on the instance or pool-item row, and
  finishes in a block that re-checks the lease in its commit (fencing). Leases expire by
  the host's wall clock (`time.time()`), never by the engine clock; hosts sharing one file
  share that clock.
- Every SQLite call runs on the storage's own threads, never on the event loop: one
  thread with the connection that writes, one with a read-only connection, so snapshot
  reads (`read`, `status`, `next_alarm_at`, ...) never wait for a block (WAL). Nothing of
  the storage belongs to an event loop (its write lock is an `AnyLoopLock`), so callers on
  any loop, in any thread, share it.
- Times are integer microseconds since the Unix epoch (UTC); JSON is text.
- The schema is versioned in `durable_jobs_schema`. An empty file gets the latest schema;
  a file of an older or newer schema is refused with `SchemaMismatchError` (every claim
  checks again) until `durable-jobs migrate` (`SqliteStorage.migrate`) upgrades it.
"""

import asyncio
import contextlib
import json
import os
import shlex
import sqlite3
import time
import uuid
from collections.abc import Callable, Collection, Generator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs

from .._duration import DurationInput, to_timedelta
from .._errors import SchemaMismatchError, StorageError, ValidationError
from .._serde import truncate
from .._types import JsonValue
from . import _upgrade_v1 as v1
from ._buffered import BufferedTransaction, Changes
from ._interface import (
    CancelOutcome,
    Claim,
    DeadLetter,
    InstanceKey,
    InstanceRecord,
    InstanceTransaction,
    ItemClaim,
    ItemFinish,
    Lease,
    LeaseLostError,
    PoolCounts,
    PoolRate,
    QueueItem,
    Storage,
)
from ._keylocks import AnyLoopLock
from ._rows import RECORD_COLUMNS as _RECORD_COLUMNS
from ._rows import key_of as _key_of
from ._rows import key_params as _key_params
from ._rows import lenient_status as _lenient_status


T = TypeVar("T")

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)

_MIGRATION_1: Final = (
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
)

# The claim -> run -> finish model: leases with tokens, one queue per pool with per-event
# retry bookkeeping, no lock rows. The renames make a worker of schema 1 fail instead of
# running against this schema.
_MIGRATION_2: Final = (
    "ALTER TABLE instances RENAME COLUMN lease_until TO lease_expires_at",
    "ALTER TABLE instances ADD COLUMN lease_token TEXT",
    "CREATE INDEX instances_lease ON instances (lease_token) WHERE lease_token IS NOT NULL",
    "ALTER TABLE queue_items RENAME TO items",
    "ALTER TABLE items ADD COLUMN available_at INTEGER",
    "ALTER TABLE items ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1",
    "ALTER TABLE items ADD COLUMN retry_started_at INTEGER",
    "ALTER TABLE items ADD COLUMN defects INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE items ADD COLUMN last_error TEXT",
    "ALTER TABLE items ADD COLUMN lease_token TEXT",
    "ALTER TABLE items ADD COLUMN lease_expires_at INTEGER",
    "DROP INDEX queue_items_order",
    "CREATE INDEX items_order ON items (kind, job, id, priority DESC, seq)",
    "CREATE INDEX items_key_head ON items (kind, job, id, partition_key, seq)",
    "CREATE INDEX items_lease ON items (lease_token) WHERE lease_token IS NOT NULL",
    "DROP TABLE instance_locks",
)

SCHEDULING_MIGRATION: Final = 3
"""The number of the scheduling migration (`_MIGRATION_SCHEDULING`) in `_MIGRATIONS`."""

# Scheduling: a lease can be marked abandoned (its run stopped while a thread of it still
# runs), a running pool event can be asked to stop, and a rate-limited pool records the
# starts of its events for as long as they count against its budget.
_MIGRATION_SCHEDULING: Final = (
    "ALTER TABLE instances ADD COLUMN lease_abandoned INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE items ADD COLUMN lease_abandoned INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE items ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0",
    "CREATE INDEX items_cancel ON items (kind, job, id) WHERE cancel_requested = 1",
    """CREATE TABLE rate_starts (
        kind TEXT NOT NULL, job TEXT NOT NULL, id TEXT NOT NULL,
        bucket TEXT NOT NULL, started_at INTEGER NOT NULL
    )""",
    "CREATE INDEX rate_starts_window ON rate_starts (kind, job, id, bucket, started_at)",
)

_Migration = tuple[int, tuple[str, ...], Callable[[sqlite3.Connection], None] | None]

_CHANGE_POLL: Final = 0.02
"""Seconds between two looks at the file for other processes' commits."""

_KEY: Final = "kind = ? AND job = ? AND id = ?"
_LIVE: Final = "lease_token IS NOT NULL AND lease_expires_at > ?"
_FREE: Final = "(lease_token IS NULL OR lease_expires_at <= ?)"
_ITEM_COLUMNS: Final = (
    "seq, event_id, event, priority, partition_key, enqueued_at, available_at, attempt,"
    " retry_started_at, defects, last_error, lease_token, lease_expires_at, lease_abandoned,"
    " cancel_requested"
)
_IS_KEY_HEAD: Final = (
    "(i.partition_key IS NULL OR NOT EXISTS (SELECT 1 FROM items AS e"
    " WHERE e.kind = i.kind AND e.job = i.job AND e.id = i.id"
    " AND e.partition_key = i.partition_key AND e.seq < i.seq))"
)


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


def _lease_now() -> int:
    """The lease clock: the host's wall clock, in microseconds."""
    return time.time_ns() // 1000


def _lease_micros(lease: timedelta) -> int:
    return lease // _MICROSECOND


def _dump(value: JsonValue) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _load(text: str, column: str, problems: list[str]) -> JsonValue:
    """
    A stored JSON column; text that does not parse is given as itself (a JSON string) and
    noted in `problems`, so that one corrupted row is parked, not a failure of every read.
    """
    try:
        value: JsonValue = json.loads(text)
    except (ValueError, TypeError, RecursionError) as exc:
        problems.append(f"{column}: invalid JSON ({truncate(str(exc))})")
        return text
    return value


def _load_v1(text: str, what: str) -> JsonValue:
    """A JSON column of a 0.1.0 row; the upgrade refuses a row it cannot parse."""
    problems: list[str] = []
    value = _load(text, what, problems)
    if problems:
        msg = f"stored JSON of {what} is unreadable: {problems[0]}"
        raise StorageError(msg)
    return value


def _time_or_note(value: object, column: str, problems: list[str]) -> datetime | None:
    """A stored time; a value that is not integer microseconds is noted and read as None."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return _when(value)
        except OverflowError:
            pass
    problems.append(f"{column}: not a time ({truncate(repr(value))})")
    return None


def _int_or_note(value: object, column: str, problems: list[str]) -> int:
    """A stored counter; a value that is not an integer is noted and read as 1."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    problems.append(f"{column}: not an integer ({truncate(repr(value))})")
    return 1


def _unreadable(problems: list[str]) -> str | None:
    return "; ".join(problems) if problems else None


def _live_lease(
    token: str | None, expires: int | None, now_us: int, abandoned: int = 0
) -> Lease | None:
    if token is None or expires is None or expires <= now_us:
        return None
    return Lease(token=token, expires_at=_when(expires), abandoned=bool(abandoned))


_RecordRow = tuple[
    str,
    str,
    str,
    str,
    str,
    str,
    int | None,
    int,
    int | None,
    int,
    str | None,
    int,
    int,
    str | None,
    int | None,
    int,
]
_RECORD_AND_LEASE: Final = f"{_RECORD_COLUMNS}, lease_token, lease_expires_at, lease_abandoned"


def _record_of(row: _RecordRow, now_us: int) -> InstanceRecord:
    kind, job, id, status, state, meta, alarm, attempt, retry_started, defects = row[:10]
    last_error, created, updated, token, expires, abandoned = row[10:]
    problems: list[str] = []
    return InstanceRecord(
        key=_key_of(kind, job, id),
        status=_lenient_status(status, problems),
        state=_load(state, "state", problems),
        meta=_load(meta, "meta", problems),
        alarm_at=_time_or_note(alarm, "alarm_at", problems),
        attempt=_int_or_note(attempt, "attempt", problems),
        retry_started_at=_time_or_note(retry_started, "retry_started_at", problems),
        defects=_int_or_note(defects, "defects", problems),
        last_error=None if last_error is None else str(last_error),
        created_at=_time_or_note(created, "created_at", problems) or _EPOCH,
        updated_at=_time_or_note(updated, "updated_at", problems) or _EPOCH,
        lease=_live_lease(token, expires, now_us, abandoned),
        unreadable=_unreadable(problems),
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


_ItemRow = tuple[
    int,
    str,
    str,
    int,
    str | None,
    int,
    int | None,
    int,
    int | None,
    int,
    str | None,
    str | None,
    int | None,
    int,
    int,
]


def _item_of(row: _ItemRow, what: str, now_us: int) -> QueueItem:
    seq, event_id, event, priority, partition_key, enqueued, available = row[:7]
    attempt, retry_started, defects, last_error, token, expires, abandoned, cancel = row[7:]
    del what
    problems: list[str] = []
    return QueueItem(
        event_id=event_id,
        event=_load(event, "event", problems),
        priority=_int_or_note(priority, "priority", problems),
        partition_key=None if partition_key is None else str(partition_key),
        enqueued_at=_time_or_note(enqueued, "enqueued_at", problems) or _EPOCH,
        seq=seq,
        available_at=_time_or_note(available, "available_at", problems),
        attempt=_int_or_note(attempt, "attempt", problems),
        retry_started_at=_time_or_note(retry_started, "retry_started_at", problems),
        defects=_int_or_note(defects, "defects", problems),
        last_error=None if last_error is None else str(last_error),
        lease=_live_lease(token, expires, now_us, abandoned),
        cancel_requested=bool(cancel),
        unreadable=_unreadable(problems),
    )


def _item_params(pool: InstanceKey, item: QueueItem) -> tuple[object, ...]:
    return (
        *_key_params(pool),
        item.event_id,
        _dump(item.event),
        item.priority,
        item.partition_key,
        _micros(item.enqueued_at),
        _micros_or_none(item.available_at),
        item.attempt,
        _micros_or_none(item.retry_started_at),
        item.defects,
        item.last_error,
    )


_INSERT_ITEM: Final = (
    "INSERT OR REPLACE INTO items (kind, job, id, event_id, event, priority, partition_key,"
    " enqueued_at, available_at, attempt, retry_started_at, defects, last_error)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_RECORD: Final = (
    f"INSERT INTO instances ({_RECORD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (kind, job, id) DO UPDATE SET status = excluded.status,"
    " state = excluded.state, meta = excluded.meta, alarm_at = excluded.alarm_at,"
    " attempt = excluded.attempt, retry_started_at = excluded.retry_started_at,"
    " defects = excluded.defects, last_error = excluded.last_error,"
    " created_at = excluded.created_at, updated_at = excluded.updated_at"
)
_FORGET_SEEN: Final = (
    "DELETE FROM seen_events WHERE at < ?"
    " AND NOT EXISTS (SELECT 1 FROM items WHERE items.kind = seen_events.kind"
    " AND items.job = seen_events.job AND items.id = seen_events.id"
    " AND items.event_id = seen_events.event_id)"
    " AND NOT (seen_events.kind = 'debounce' AND EXISTS (SELECT 1 FROM instances"
    " WHERE instances.kind = seen_events.kind AND instances.job = seen_events.job"
    " AND instances.id = seen_events.id))"
)
"""Forget old event ids, but never a queued event's, nor those of a Debounce id alive."""
_UPDATE_UNREADABLE: Final = (
    "UPDATE instances SET status = ?, alarm_at = ?, attempt = ?, retry_started_at = ?,"
    " defects = ?, last_error = ?, created_at = ?, updated_at = ?"
    " WHERE kind = ? AND job = ? AND id = ?"
)
"""Save a record whose state or meta did not parse: every column but those two."""
_INSERT_LETTER: Final = (
    "INSERT OR REPLACE INTO dead_letters"
    " (letter_id, kind, job, id, state, meta, event, error, reason, attempts, at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _letter_params(letter: DeadLetter) -> tuple[object, ...]:
    return (
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


def _pool_active(conn: sqlite3.Connection, pool: InstanceKey) -> bool:
    """Whether the pool takes events: its record is active, or it has none yet."""
    row = conn.execute(
        f"SELECT NOT EXISTS (SELECT 1 FROM instances WHERE {_KEY} AND status <> 'active')",
        _key_params(pool),
    ).fetchone()
    return row is not None and bool(row[0])


def _count(conn: sqlite3.Connection, pool: InstanceKey, field: str, amount: int) -> None:
    """Add `amount` to the integer `field` of the pool record's meta, in SQL."""
    if not amount:
        return
    # added in SQL: concurrent writes of one pool never lose a count
    conn.execute(
        "UPDATE instances SET meta = json_set("
        "CASE WHEN json_type(meta) = 'object' THEN meta ELSE '{}' END, ?,"
        " CASE WHEN json_type(meta, ?) = 'integer' THEN json_extract(meta, ?) ELSE 0 END + ?)"
        f" WHERE {_KEY}",
        (f"$.{field}", f"$.{field}", f"$.{field}", amount, *_key_params(pool)),
    )


def _bucket_sql(rate: PoolRate) -> str:
    """`PoolRate.bucket` of `items i`, in SQL."""
    if not rate.per_key:
        return "'*'"
    return "CASE WHEN i.partition_key IS NULL THEN '-' ELSE 'k:' || i.partition_key END"


def _pool_running(conn: sqlite3.Connection, pool: InstanceKey, lease_now: int) -> int:
    """How many of the pool's events hold a live lease."""
    row = conn.execute(
        f"SELECT COUNT(*) FROM items WHERE {_KEY} AND {_LIVE}", (*_key_params(pool), lease_now)
    ).fetchone()
    return 0 if row is None else int(row[0])


def _drop_cancelled(conn: sqlite3.Connection, pool: InstanceKey, lease_now: int) -> None:
    """Remove the events asked to stop whose worker is gone (their lease expired)."""
    gone = conn.execute(
        f"DELETE FROM items WHERE {_KEY} AND cancel_requested = 1 AND {_FREE}",
        (*_key_params(pool), lease_now),
    ).rowcount
    _count(conn, pool, "cancelled", gone)


def _budgets(
    conn: sqlite3.Connection, pool: InstanceKey, rate: PoolRate, now_us: int
) -> dict[str, int]:
    """How many more starts each budget of the pool allows at `now_us` (others: all)."""
    params = _key_params(pool)
    forget = _micros(rate.forget_before(_when(now_us)))
    conn.execute(f"DELETE FROM rate_starts WHERE {_KEY} AND started_at <= ?", (*params, forget))
    rows = conn.execute(
        f"SELECT bucket, COUNT(*) FROM rate_starts WHERE {_KEY} AND started_at > ? GROUP BY bucket",
        (*params, now_us - _lease_micros(rate.period)),
    ).fetchall()
    return {str(bucket): rate.limit - int(used) for bucket, used in rows}


def _ready_rows(
    conn: sqlite3.Connection,
    pool: InstanceKey,
    rate: PoolRate | None,
    free: int,
    now_us: int,
    lease_now: int,
) -> list[_ItemRow]:
    """The rows of the pool's events a claim takes now: at most `free`, in claim order."""
    params = _key_params(pool)
    ready = (
        f"SELECT {_ITEM_COLUMNS} FROM items AS i WHERE {_KEY} AND {_FREE}"
        " AND cancel_requested = 0"
        f" AND (available_at IS NULL OR available_at <= ?) AND {_IS_KEY_HEAD}"
        " ORDER BY priority DESC, seq"
    )
    budgets: dict[str, int] = {}
    if rate is not None:
        budgets = _budgets(conn, pool, rate, now_us)
        if not rate.per_key:
            free = min(free, budgets.get("*", rate.limit))
    if free <= 0:
        return []
    if rate is None or not rate.per_key:
        rows: list[_ItemRow] = conn.execute(
            f"{ready} LIMIT ?", (*params, lease_now, now_us, free)
        ).fetchall()
        return rows
    # one budget per key: skip the events whose budget is spent, read lazily, and update
    # nothing until the reading is over
    taken: list[_ItemRow] = []
    cursor = conn.execute(ready, (*params, lease_now, now_us))
    try:
        for row in cursor:
            bucket = rate.bucket(row[4])
            left = budgets.get(bucket, rate.limit)
            if left <= 0:
                continue
            budgets[bucket] = left - 1
            taken.append(row)
            if len(taken) >= free:
                break
    finally:
        cursor.close()
    return taken


JOURNAL_SIZE_LIMIT: Final = 64 * 1024 * 1024
"""The size (bytes) a checkpoint truncates the `-wal` file to when it grew larger."""


def _create_private(path: Path) -> None:
    """
    Create the database file readable and writable by its owner only (0600): it holds
    every event and state. SQLite gives its `-wal` and `-shm` files the same mode.
    """
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    try:
        if not path.exists():
            _create_private(path)
        # autocommit mode: every transaction is an explicit BEGIN ... COMMIT below
        conn = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
    except (sqlite3.Error, OSError) as exc:
        msg = f"cannot open the SQLite database {str(path)!r}: {exc}"
        raise StorageError(msg) from exc
    try:
        if conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,):
            # only possible before the first table: freed pages can then be given back to
            # the file system (`incremental_vacuum`, after old event ids are forgotten)
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        _use_wal(conn, busy_timeout)
        conn.execute("PRAGMA synchronous=NORMAL")
        # a checkpoint truncates the WAL back to this size: it does not stay at its peak
        conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
    except BaseException:
        conn.close()
        raise
    return conn


def _use_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """
    Put the file in WAL mode (a persistent setting: usually already done).

    Two processes opening a new file at once can both try to switch it, and the switch can
    fail with "database is locked" without waiting for the busy timeout: it is retried
    until that timeout (on a file already in WAL mode it succeeds at once).
    """
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            # only "busy"/"locked" goes away by waiting; any other failure is reported now
            waiting = (exc.sqlite_errorcode & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not waiting or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
        else:
            return


_DATA_ERRORS: Final = (sqlite3.DataError, OverflowError, UnicodeEncodeError)
"""What the driver raises for a value it cannot bind or store (the data, not the database)."""


@contextlib.contextmanager
def map_sqlite_errors(path: Path) -> Generator[None]:
    """
    The one place where driver errors become library errors (every SQLite call runs in it).

    A value the driver cannot bind (an integer beyond 64 bits, text that is not UTF-8, a
    too-big blob) becomes `ValidationError`: the data is wrong and retrying will not help
    (the data boundary refuses such values before any write, so this is a safety net).
    Any other `sqlite3.Error` (a busy or locked database, I/O, a corrupt file) becomes
    `StorageError`, which callers may retry. Messages never carry the values themselves.
    """
    try:
        yield
    except _DATA_ERRORS as exc:
        msg = f"the SQLite database {str(path)!r} cannot store a value: {truncate(str(exc))}"
        raise ValidationError("$", msg) from exc
    except sqlite3.Error as exc:
        msg = f"SQLite storage {str(path)!r} failed: {truncate(str(exc))}"
        raise StorageError(msg) from exc


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Generator[sqlite3.Connection]:
    """One write transaction (BEGIN IMMEDIATE): committed on exit, rolled back on error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.rollback()
        raise
    conn.execute("COMMIT")


def _schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT MAX(version) FROM durable_jobs_schema").fetchone()
    return 0 if row is None or row[0] is None else int(row[0])


def _mismatch(path: Path, version: int, *, while_running: bool = False) -> SchemaMismatchError:
    where = f"the SQLite database {str(path)!r}"
    if while_running:
        where += " (changed while this process was using it)"
    if version > SCHEMA_VERSION:
        msg = (
            f"{where} has schema version {version}, newer than this version of durable-jobs"
            f" supports ({SCHEMA_VERSION}); upgrade durable-jobs (there is no downgrade)"
        )
    else:
        msg = (
            f"{where} has schema version {version}; this version of durable-jobs needs"
            f" version {SCHEMA_VERSION}. Stop every worker using it, then run"
            f" `durable-jobs migrate --db {shlex.quote(str(path))}`"
            " (or `await storage.migrate()`)"
        )
    return SchemaMismatchError(msg)


def _upgrade_v1_rows(conn: sqlite3.Connection) -> None:
    """Migration 2's data step: every row rewritten as `_upgrade_v1.upgrade` says."""
    rows = v1.upgrade(
        v1.V1Rows(
            instances=[
                _v1_instance(row)
                for row in conn.execute(f"SELECT {_RECORD_COLUMNS} FROM instances")
            ],
            items=[
                _v1_item(row)
                for row in conn.execute(
                    "SELECT seq, kind, job, id, event_id, event, priority, partition_key,"
                    " enqueued_at FROM items"
                )
            ],
            seen=[
                v1.SeenRow(kind=kind, job=job, id=id, event_id=event_id, at=_when(at))
                for kind, job, id, event_id, at in conn.execute(
                    "SELECT kind, job, id, event_id, at FROM seen_events"
                )
            ],
            letters=[
                _v1_letter(row)
                for row in conn.execute(
                    "SELECT seq, letter_id, kind, job, id, state, meta, event, error, reason,"
                    " attempts, at FROM dead_letters"
                )
            ],
        )
    )
    for table in ("instances", "items", "seen_events", "dead_letters"):
        conn.execute(f"DELETE FROM {table}")
    conn.executemany(
        f"INSERT INTO instances ({_RECORD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [_v2_instance_params(row) for row in rows.instances],
    )
    conn.executemany(
        "INSERT INTO items (seq, kind, job, id, event_id, event, priority, partition_key,"
        " enqueued_at, available_at, attempt, retry_started_at, defects, last_error)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [_v2_item_params(item) for item in rows.items],
    )
    conn.executemany(
        "INSERT INTO seen_events (kind, job, id, event_id, at) VALUES (?, ?, ?, ?, ?)",
        [(s.kind, s.job, s.id, s.event_id, _micros(s.at)) for s in rows.seen],
    )
    conn.executemany(
        "INSERT INTO dead_letters"
        " (seq, letter_id, kind, job, id, state, meta, event, error, reason, attempts, at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(d.seq, *_letter_params(_v2_letter(d))) for d in rows.letters],
    )


def _v1_instance(row: tuple[Any, ...]) -> v1.InstanceRow:
    kind, job, id, status, state, meta, alarm, attempt, retry_started, defects = row[:10]
    last_error, created, updated = row[10:]
    what = f"{kind}:{job}:{id}"
    return v1.InstanceRow(
        kind=kind,
        job=job,
        id=id,
        status=status,
        state=_load_v1(state, what),
        meta=_load_v1(meta, what),
        alarm_at=_when_or_none(alarm),
        attempt=attempt,
        retry_started_at=_when_or_none(retry_started),
        defects=defects,
        last_error=last_error,
        created_at=_when(created),
        updated_at=_when(updated),
    )


def _v1_item(row: tuple[Any, ...]) -> v1.V1ItemRow:
    seq, kind, job, id, event_id, event, priority, partition_key, enqueued = row
    return v1.V1ItemRow(
        seq=seq,
        kind=kind,
        job=job,
        id=id,
        event_id=event_id,
        event=_load_v1(event, f"queue item {seq}"),
        priority=priority,
        partition_key=partition_key,
        enqueued_at=_when(enqueued),
    )


def _v1_letter(row: tuple[Any, ...]) -> v1.LetterRow:
    seq, letter_id, kind, job, id, state, meta, event, error, reason, attempts, at = row
    what = f"dead letter {letter_id}"
    return v1.LetterRow(
        seq=seq,
        letter_id=letter_id,
        kind=kind,
        job=job,
        id=id,
        state=_load_v1(state, what),
        meta=_load_v1(meta, what),
        event=_load_v1(event, what),
        error=error,
        reason=reason,
        attempts=attempts,
        at=_when(at),
    )


def _v2_instance_params(row: v1.InstanceRow) -> tuple[object, ...]:
    return (
        row.kind,
        row.job,
        row.id,
        row.status,
        _dump(row.state),
        _dump(row.meta),
        _micros_or_none(row.alarm_at),
        row.attempt,
        _micros_or_none(row.retry_started_at),
        row.defects,
        row.last_error,
        _micros(row.created_at),
        _micros(row.updated_at),
    )


def _v2_item_params(item: v1.ItemRow) -> tuple[object, ...]:
    return (
        item.seq,
        item.kind,
        item.job,
        item.id,
        item.event_id,
        _dump(item.event),
        item.priority,
        item.partition_key,
        _micros(item.enqueued_at),
        _micros_or_none(item.available_at),
        item.attempt,
        _micros_or_none(item.retry_started_at),
        item.defects,
        item.last_error,
    )


def _v2_letter(row: v1.LetterRow) -> DeadLetter:
    return DeadLetter(
        id=row.letter_id,
        key=_key_of(row.kind, row.job, row.id),
        state=row.state,
        meta=row.meta,
        event=row.event,
        error=row.error,
        reason=row.reason,
        attempts=row.attempts,
        at=row.at,
    )


# (version, statements, data step); append only: a released migration never changes.
_MIGRATIONS: Final[tuple[_Migration, ...]] = (
    (1, _MIGRATION_1, None),
    (2, _MIGRATION_2, _upgrade_v1_rows),
    (SCHEDULING_MIGRATION, _MIGRATION_SCHEDULING, None),
)
SCHEMA_VERSION: Final = _MIGRATIONS[-1][0]
"""The schema version this library reads and writes."""


def _apply_migrations(conn: sqlite3.Connection, current: int) -> None:
    """Apply every migration after `current`, inside the caller's transaction."""
    for version, statements, data_step in _MIGRATIONS:
        if version <= current:
            continue
        for statement in statements:
            conn.execute(statement)
        if data_step is not None:
            data_step(conn)
        conn.execute(
            "INSERT INTO durable_jobs_schema VALUES (?, ?)",
            (version, _micros(datetime.now(UTC))),
        )


class _Writer:
    """The connection that writes, and every write; used only on the storage's write thread."""

    def __init__(self, path: Path, busy_timeout: float) -> None:
        self.path = path
        self.conn = _connect(path, busy_timeout)

    def close(self) -> None:
        self.conn.close()

    # -- schema --------------------------------------------------------------------------

    def _version_in(self, conn: sqlite3.Connection) -> int:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS durable_jobs_schema"
            " (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
        )
        return _schema_version(conn)

    def check_schema(self) -> None:
        """Create the schema in an empty file; refuse any other version than this one's."""
        with _transaction(self.conn) as conn:
            current = self._version_in(conn)
            if current == 0:
                _apply_migrations(conn, current)
            elif current != SCHEMA_VERSION:
                raise _mismatch(self.path, current)

    def migrate(self) -> tuple[int, int]:
        with _transaction(self.conn) as conn:
            current = self._version_in(conn)
            if current > SCHEMA_VERSION:
                raise _mismatch(self.path, current)
            _apply_migrations(conn, current)
        return (current, SCHEMA_VERSION)

    def _require_schema(self, conn: sqlite3.Connection) -> None:
        current = _schema_version(conn)
        if current != SCHEMA_VERSION:
            raise _mismatch(self.path, current, while_running=True)

    def data_version(self) -> int:
        row = self.conn.execute("PRAGMA data_version").fetchone()
        return 0 if row is None else int(row[0])

    # -- instance blocks -----------------------------------------------------------------

    def begin(self, key: InstanceKey) -> InstanceRecord | None:
        """Open a block's transaction (SQLite's write lock) and read the record."""
        conn = self.conn
        if conn.in_transaction:  # pragma: no cover - every path ends its transaction
            conn.rollback()
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(
                f"SELECT {_RECORD_AND_LEASE} FROM instances WHERE {_KEY}", _key_params(key)
            ).fetchone()
            return None if row is None else _record_of(row, _lease_now())
        except BaseException:
            conn.rollback()
            raise

    def commit(self, key: InstanceKey, changes: Changes) -> None:
        """Write a block's changes and end its transaction (rolled back on any error)."""
        conn = self.conn
        try:
            self._apply(conn, key, changes)
        except BaseException:
            conn.rollback()
            raise
        conn.execute("COMMIT")

    def rollback(self) -> None:
        """End an open transaction without writing (nothing to do when none is open)."""
        if self.conn.in_transaction:
            self.conn.rollback()

    def _apply(self, conn: sqlite3.Connection, key: InstanceKey, changes: Changes) -> None:
        params = _key_params(key)
        drop_lease = (
            f"UPDATE instances SET lease_token = NULL, lease_expires_at = NULL WHERE {_KEY}"
        )
        if changes.fence is not None:
            row = conn.execute(
                f"SELECT lease_token, lease_expires_at FROM instances WHERE {_KEY}", params
            ).fetchone()
            lease = None if row is None else _live_lease(row[0], row[1], _lease_now())
            if lease is None or lease.token != changes.fence:
                msg = f"the lease of {key} was lost before its finish; nothing was written"
                raise LeaseLostError(msg)
            if changes.release:
                conn.execute(drop_lease, params)
        if changes.revoke:
            conn.execute(drop_lease, params)
        if changes.record_changed:
            if changes.record is None:
                conn.execute(f"DELETE FROM instances WHERE {_KEY}", params)
            else:
                # the lease columns are left as they are: saving never touches a lease
                record = changes.record
                if record.unreadable is None:
                    conn.execute(_UPSERT_RECORD, _record_params(record))
                else:
                    # the stored text stays as it is, for an operator to repair
                    values = _record_params(record)
                    conn.execute(_UPDATE_UNREADABLE, (values[3], *values[6:], *params))
        if changes.queue_purged:
            conn.execute(f"DELETE FROM items WHERE {_KEY}", params)
        conn.executemany(
            f"DELETE FROM items WHERE {_KEY} AND event_id = ?",
            [(*params, event_id) for event_id in changes.removed],
        )
        # one row at a time, in push order: AUTOINCREMENT numbers them in that order
        conn.executemany(_INSERT_ITEM, [_item_params(key, item) for item in changes.pushed])
        conn.executemany(
            "DELETE FROM dead_letters WHERE letter_id = ?",
            [(letter_id,) for letter_id in changes.letters_removed],
        )
        conn.executemany(_INSERT_LETTER, [_letter_params(letter) for letter in changes.letters])
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
            f"SELECT {_ITEM_COLUMNS} FROM items WHERE {_KEY} ORDER BY priority DESC, seq",
            _key_params(key),
        )
        for row in cursor:
            if row[1] not in skip:
                cursor.close()
                return _item_of(row, f"the queue of {key}", _lease_now())
        return None

    def queue_has(self, key: InstanceKey, event_id: str) -> bool:
        row = self.conn.execute(
            f"SELECT 1 FROM items WHERE {_KEY} AND event_id = ?", (*_key_params(key), event_id)
        ).fetchone()
        return row is not None

    def queue_size(self, key: InstanceKey) -> int:
        row = self.conn.execute(
            f"SELECT COUNT(*) FROM items WHERE {_KEY}", _key_params(key)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def max_seq(self) -> int:
        row = self.conn.execute("SELECT MAX(seq) FROM items").fetchone()
        return 0 if row is None or row[0] is None else int(row[0])

    # -- claims and leases ---------------------------------------------------------------

    def claim_due(self, now_us: int, limit: int, lease_us: int) -> list[Claim]:
        with _transaction(self.conn) as conn:
            self._require_schema(conn)
            lease_now = _lease_now()
            rows = conn.execute(
                f"SELECT {_RECORD_AND_LEASE} FROM instances"
                " WHERE alarm_at IS NOT NULL AND alarm_at <= ? AND status = 'active'"
                f" AND {_FREE} ORDER BY alarm_at, kind, job, id LIMIT ?",
                (now_us, lease_now, limit),
            ).fetchall()
            expires = lease_now + lease_us
            claims: list[Claim] = []
            for row in rows:
                record = _record_of(row, lease_now)
                token = uuid.uuid4().hex
                conn.execute(
                    "UPDATE instances SET lease_token = ?, lease_expires_at = ?,"
                    f" lease_abandoned = 0 WHERE {_KEY}",
                    (token, expires, *_key_params(record.key)),
                )
                grant = Lease(token=token, expires_at=_when(expires))
                claims.append(
                    Claim(key=record.key, token=token, record=attrs.evolve(record, lease=grant))
                )
        return claims

    def claim_items(
        self,
        pools: Mapping[InstanceKey, int],
        now_us: int,
        limit: int,
        lease_us: int,
        rates: Mapping[InstanceKey, PoolRate],
    ) -> list[ItemClaim]:
        with _transaction(self.conn) as conn:
            self._require_schema(conn)
            lease_now = _lease_now()
            expires = lease_now + lease_us
            claims: list[ItemClaim] = []
            for pool, concurrency in pools.items():
                if len(claims) >= limit or not _pool_active(conn, pool):
                    continue
                _drop_cancelled(conn, pool, lease_now)
                running = _pool_running(conn, pool, lease_now)
                free = min(concurrency - running, limit - len(claims))
                if free <= 0:
                    continue
                rate = rates.get(pool)
                for row in _ready_rows(conn, pool, rate, free, now_us, lease_now):
                    token = uuid.uuid4().hex
                    conn.execute(
                        "UPDATE items SET lease_token = ?, lease_expires_at = ?,"
                        " lease_abandoned = 0 WHERE seq = ?",
                        (token, expires, row[0]),
                    )
                    grant = Lease(token=token, expires_at=_when(expires))
                    item = _item_of(row, f"the queue of {pool}", lease_now)
                    if rate is not None:
                        conn.execute(
                            "INSERT INTO rate_starts VALUES (?, ?, ?, ?, ?)",
                            (*_key_params(pool), rate.bucket(item.partition_key), now_us),
                        )
                    claims.append(
                        ItemClaim(pool=pool, token=token, item=attrs.evolve(item, lease=grant))
                    )
        return claims

    def renew(self, tokens: Sequence[str], lease_us: int) -> frozenset[str]:
        with _transaction(self.conn) as conn:
            lease_now = _lease_now()
            params = (lease_now + lease_us, json.dumps(tokens), lease_now)
            renewed: set[str] = set()
            for table in ("instances", "items"):
                rows = conn.execute(
                    f"UPDATE {table} SET lease_expires_at = ?"
                    " WHERE lease_token IN (SELECT value FROM json_each(?))"
                    " AND lease_expires_at > ? RETURNING lease_token",
                    params,
                ).fetchall()
                renewed.update(str(row[0]) for row in rows)
        return frozenset(renewed)

    def release(self, tokens: Sequence[str]) -> None:
        with _transaction(self.conn) as conn:
            for table in ("instances", "items"):
                conn.execute(
                    f"UPDATE {table} SET lease_token = NULL, lease_expires_at = NULL"
                    " WHERE lease_token IN (SELECT value FROM json_each(?))",
                    (json.dumps(tokens),),
                )

    # -- pool events ---------------------------------------------------------------------

    def push_items(self, pool: InstanceKey, items: Sequence[QueueItem], now_us: int) -> list[bool]:
        params = _key_params(pool)
        with _transaction(self.conn) as conn:
            accepted: list[bool] = []
            fresh: set[str] = set()
            for item in items:
                if item.event_id in fresh or self.has_seen(pool, item.event_id):
                    accepted.append(False)
                    continue
                accepted.append(True)
                fresh.add(item.event_id)
                conn.execute(_INSERT_ITEM, _item_params(pool, item))
                conn.execute(
                    "INSERT OR REPLACE INTO seen_events VALUES (?, ?, ?, ?, ?)",
                    (*params, item.event_id, now_us),
                )
            if fresh:
                conn.execute(
                    f"INSERT INTO instances ({_RECORD_COLUMNS})"
                    " VALUES (?, ?, ?, 'active', 'null', ?, NULL, 1, NULL, 0, NULL, ?, ?)"
                    " ON CONFLICT (kind, job, id) DO NOTHING",
                    (*params, _dump({"processed": 0}), now_us, now_us),
                )
        return accepted

    def finish_item(self, pool: InstanceKey, finish: ItemFinish) -> None:
        params = (*_key_params(pool), finish.event_id)
        with _transaction(self.conn) as conn:
            row = conn.execute(
                "SELECT lease_token, lease_expires_at, cancel_requested FROM items"
                f" WHERE {_KEY} AND event_id = ?",
                params,
            ).fetchone()
            lease = None if row is None else _live_lease(row[0], row[1], _lease_now())
            if row is None or lease is None or lease.token != finish.token:
                msg = f"the lease of event {finish.event_id!r} of {pool} was lost; nothing written"
                raise LeaseLostError(msg)
            retry = finish.retry
            # an event asked to stop is never kept for a retry
            cancelled = finish.cancelled or (retry is not None and bool(row[2]))
            if retry is None or cancelled:
                conn.execute(f"DELETE FROM items WHERE {_KEY} AND event_id = ?", params)
                _count(conn, pool, "cancelled", int(cancelled))
            else:
                conn.execute(
                    "UPDATE items SET available_at = ?, attempt = ?, retry_started_at = ?,"
                    " defects = ?, last_error = ?, lease_token = NULL, lease_expires_at = NULL"
                    f" WHERE {_KEY} AND event_id = ?",
                    (
                        _micros(retry.available_at),
                        retry.attempt,
                        _micros_or_none(retry.retry_started_at),
                        retry.defects,
                        retry.last_error,
                        *params,
                    ),
                )
            conn.executemany(_INSERT_LETTER, [_letter_params(d) for d in finish.letters])
            _count(conn, pool, "processed", finish.processed)

    def cancel_item(self, pool: InstanceKey, event_id: str) -> CancelOutcome:
        params = (*_key_params(pool), event_id)
        with _transaction(self.conn) as conn:
            row = conn.execute(
                f"SELECT lease_token, lease_expires_at FROM items WHERE {_KEY} AND event_id = ?",
                params,
            ).fetchone()
            if row is None:
                return "not_found"
            if _live_lease(row[0], row[1], _lease_now()) is not None:
                conn.execute(
                    f"UPDATE items SET cancel_requested = 1 WHERE {_KEY} AND event_id = ?", params
                )
                return "running"
            conn.execute(f"DELETE FROM items WHERE {_KEY} AND event_id = ?", params)
            _count(conn, pool, "cancelled", 1)
            return "cancelled"

    def abandon(self, tokens: Sequence[str]) -> None:
        with _transaction(self.conn) as conn:
            for table in ("instances", "items"):
                conn.execute(
                    f"UPDATE {table} SET lease_abandoned = 1"
                    " WHERE lease_token IN (SELECT value FROM json_each(?))"
                    " AND lease_expires_at > ?",
                    (json.dumps(tokens), _lease_now()),
                )

    # -- maintenance ---------------------------------------------------------------------

    def delete_dead_letter(self, letter_id: str) -> bool:
        with _transaction(self.conn) as conn:
            cursor = conn.execute("DELETE FROM dead_letters WHERE letter_id = ?", (letter_id,))
            return cursor.rowcount == 1

    def forget_seen_before(self, cutoff_us: int) -> int:
        with _transaction(self.conn) as conn:
            forgotten = conn.execute(_FORGET_SEEN, (cutoff_us,)).rowcount
        # give the freed pages back to the file system (a no-op unless auto_vacuum is
        # incremental, as in every file this version created); executescript steps the
        # pragma to its end, where execute would free one page only
        self.conn.executescript("PRAGMA incremental_vacuum;")
        return forgotten


class _Reader:
    """A read-only connection for committed snapshots; used only on the storage's read thread."""

    def __init__(self, path: Path, busy_timeout: float) -> None:
        self.conn = _connect(path, busy_timeout)
        self.conn.execute("PRAGMA query_only=1")

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def _snapshot(self) -> Generator[sqlite3.Connection]:
        """Several statements that see one committed state (a read transaction)."""
        conn = self.conn
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.rollback()

    def read(self, key: InstanceKey) -> InstanceRecord | None:
        row = self.conn.execute(
            f"SELECT {_RECORD_AND_LEASE} FROM instances WHERE {_KEY}", _key_params(key)
        ).fetchone()
        return None if row is None else _record_of(row, _lease_now())

    def list_instances(self, job: str | None) -> list[InstanceRecord]:
        where, params = ("", ()) if job is None else (" WHERE job = ?", (job,))
        rows = self.conn.execute(
            f"SELECT {_RECORD_AND_LEASE} FROM instances{where} ORDER BY kind, job, id", params
        ).fetchall()
        now_us = _lease_now()
        return [_record_of(row, now_us) for row in rows]

    def dead_letters(self, job: str | None) -> list[DeadLetter]:
        where, params = ("", ()) if job is None else (" WHERE job = ?", (job,))
        rows = self.conn.execute(
            "SELECT letter_id, kind, job, id, state, meta, event, error, reason, attempts, at"
            f" FROM dead_letters{where} ORDER BY at, seq",
            params,
        ).fetchall()
        letters: list[DeadLetter] = []
        for letter_id, kind, job_name, id, state, meta, event, error, reason, attempts, at in rows:
            # a letter's corrupted JSON is listed as its text: listing never fails on it
            problems: list[str] = []
            letters.append(
                DeadLetter(
                    id=letter_id,
                    key=_key_of(kind, job_name, id),
                    state=_load(state, "state", problems),
                    meta=_load(meta, "meta", problems),
                    event=_load(event, "event", problems),
                    error=error,
                    reason=reason,
                    attempts=_int_or_note(attempts, "attempts", problems),
                    at=_time_or_note(at, "at", problems) or _EPOCH,
                )
            )
        return letters

    def read_item(self, pool: InstanceKey, event_id: str) -> QueueItem | None:
        row = self.conn.execute(
            f"SELECT {_ITEM_COLUMNS} FROM items WHERE {_KEY} AND event_id = ?",
            (*_key_params(pool), event_id),
        ).fetchone()
        return None if row is None else _item_of(row, f"the queue of {pool}", _lease_now())

    def pool_counts(self, pool: InstanceKey, now_us: int | None) -> PoolCounts:
        live = "(lease_token IS NOT NULL AND lease_expires_at > :now)"
        retrying = "(attempt > 1 OR defects > 0)"
        row = self.conn.execute(
            f"SELECT COALESCE(SUM({live}), 0),"
            f" COALESCE(SUM(NOT {live} AND {retrying}), 0),"
            f" COALESCE(SUM(NOT {live} AND NOT {retrying} AND available_at > :engine_now), 0),"
            f" COALESCE(SUM({live} AND lease_abandoned), 0),"
            " COUNT(*) FROM items WHERE kind = :kind AND job = :job AND id = :id",
            {
                "now": _lease_now(),
                "engine_now": now_us,
                "kind": pool.kind.value,
                "job": pool.job,
                "id": pool.id,
            },
        ).fetchone()
        running, retries, delayed, abandoned, total = (0, 0, 0, 0, 0) if row is None else row
        return PoolCounts(
            queued=total - running - retries - delayed,
            running=running,
            retrying=retries,
            delayed=delayed,
            abandoned=abandoned,
        )

    def cancel_requests(self, tokens: Sequence[str]) -> frozenset[str]:
        rows = self.conn.execute(
            "SELECT lease_token FROM items WHERE lease_token IN (SELECT value FROM json_each(?))"
            " AND lease_expires_at > ? AND cancel_requested = 1",
            (json.dumps(tokens), _lease_now()),
        ).fetchall()
        return frozenset(str(row[0]) for row in rows)

    def next_alarm_at(
        self, pools: Mapping[InstanceKey, int], rates: Mapping[InstanceKey, PoolRate]
    ) -> int | None:
        with self._snapshot() as conn:
            lease_now = _lease_now()
            # leased rows are few (the runs in flight): the index walk skips them in order
            row = conn.execute(
                "SELECT alarm_at FROM instances WHERE alarm_at IS NOT NULL"
                f" AND status = 'active' AND {_FREE} ORDER BY alarm_at LIMIT 1",
                (lease_now,),
            ).fetchone()
            times: list[int] = [] if row is None else [int(row[0])]
            for pool, concurrency in pools.items():
                params = _key_params(pool)
                if not _pool_active(conn, pool):
                    continue
                if _pool_running(conn, pool, lease_now) >= concurrency:
                    continue
                rate = rates.get(pool)
                if rate is not None:
                    times.extend(_rated_ready_at(conn, pool, rate, lease_now))
                    continue
                first = conn.execute(
                    "SELECT MIN(COALESCE(available_at, enqueued_at)) FROM items AS i"
                    f" WHERE {_KEY} AND {_FREE} AND {_IS_KEY_HEAD}",
                    (*params, lease_now),
                ).fetchone()
                if first is not None and first[0] is not None:
                    times.append(int(first[0]))
        return min(times, default=None)


def _rated_ready_at(
    conn: sqlite3.Connection, pool: InstanceKey, rate: PoolRate, lease_now: int
) -> list[int]:
    """When each budget of a rate-limited pool can start its first waiting event."""
    params = _key_params(pool)
    # an event asked to stop (its worker gone) is due for removal, whatever the budget
    rows = conn.execute(
        f"SELECT CASE WHEN cancel_requested = 1 THEN NULL ELSE {_bucket_sql(rate)} END,"
        " MIN(COALESCE(available_at, enqueued_at)) FROM items AS i"
        f" WHERE {_KEY} AND {_FREE} AND {_IS_KEY_HEAD} GROUP BY 1",
        (*params, lease_now),
    ).fetchall()
    # the `limit`-th latest start of a budget holds it until it is `period` old
    full = dict(
        conn.execute(
            "SELECT bucket, started_at FROM (SELECT bucket, started_at, ROW_NUMBER() OVER"
            " (PARTITION BY bucket ORDER BY started_at DESC) AS nth FROM rate_starts"
            f" WHERE {_KEY}) WHERE nth = ?",
            (*params, rate.limit),
        ).fetchall()
    )
    period = _lease_micros(rate.period)
    times: list[int] = []
    for bucket, ready in rows:
        reopens = full.get(bucket)
        times.append(int(ready) if reopens is None else max(int(ready), int(reopens) + period))
    return times


class SqliteStorage:
    """
    Storage on one SQLite file: durable, atomic per instance, safe for several processes.

    `SqliteStorage("jobs.db")` creates the file (and the schema) on first use. Workers and
    clients in several processes may share the file: each instance block is one SQLite
    write transaction, so blocks never overlap, and a lease keeps a second worker from
    running an instance (or a pool event) another one runs. All SQLite work runs on
    threads of this storage, never on the event loop.

    Args:
        path: the database file.
        busy_timeout: how long one transaction waits for SQLite's write lock (held by
            another process's block) before failing with `StorageError`.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout: DurationInput = "30 seconds"
    ) -> None:
        self._path = Path(path)
        self._conn = _Connection(
            self._path, busy_timeout=to_timedelta(busy_timeout, field="busy_timeout")
        )

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    async def exists(self) -> bool:
        """Whether the database file exists (checked without creating it)."""
        return self._path.is_file()

    async def open(self) -> None:
        """Open the file and check its schema now (otherwise done on first use)."""
        await self._conn.ready()

    async def migrate(self) -> tuple[int, int]:
        """
        Bring the file's schema to this version's, in one transaction: (from, to) versions.

        Stop every worker using the file first: a worker of the old version fails on the
        new schema. Migrating a file that is up to date changes nothing; a file of a newer
        version is refused with `SchemaMismatchError` (there is no downgrade).
        """
        return await self._conn.migrate()

    def instance(self, key: InstanceKey) -> AbstractAsyncContextManager[InstanceTransaction]:
        """
        Serialized, atomic access to one instance, across tasks and processes.

        The block is one SQLite write transaction from its start to its end: keep it short.
        Changes are buffered and written when it ends cleanly, or dropped when it raises;
        a fenced block whose lease is gone raises `LeaseLostError` and writes nothing.
        """
        return _SqliteBlock(self._conn, key)

    async def read(self, key: InstanceKey) -> InstanceRecord | None:
        """A committed snapshot of one record (with its live lease), without taking it."""
        return await self._conn.read(lambda db: db.read(key))

    async def claim_due(self, now: datetime, *, limit: int, lease: timedelta) -> Sequence[Claim]:
        """Lease up to `limit` active instances due at `now` that hold no live lease."""
        if limit <= 0:
            return []
        now_us, lease_us = _micros(now), _lease_micros(lease)
        return await self._conn.write(lambda db: db.claim_due(now_us, limit, lease_us))

    async def claim_items(
        self,
        pools: Mapping[InstanceKey, int],
        now: datetime,
        *,
        limit: int,
        lease: timedelta,
        rates: Mapping[InstanceKey, PoolRate] | None = None,
    ) -> Sequence[ItemClaim]:
        """Lease up to `limit` ready pool events (see `Storage.claim_items`)."""
        if limit <= 0 or not pools:
            return []
        now_us, lease_us = _micros(now), _lease_micros(lease)
        wanted, limits = dict(pools), dict(rates or {})
        return await self._conn.write(
            lambda db: db.claim_items(wanted, now_us, limit, lease_us, limits)
        )

    async def renew(self, tokens: Collection[str], lease: timedelta) -> frozenset[str]:
        """Extend the live leases of `tokens` by `lease` from now; returns those renewed."""
        wanted, lease_us = list(tokens), _lease_micros(lease)
        if not wanted:
            return frozenset()
        return await self._conn.write(lambda db: db.renew(wanted, lease_us))

    async def release(self, tokens: Collection[str]) -> None:
        """End the leases of `tokens` without writing anything else."""
        wanted = list(tokens)
        if wanted:
            await self._conn.write(lambda db: db.release(wanted))

    async def next_alarm_at(
        self,
        pools: Mapping[InstanceKey, int],
        rates: Mapping[InstanceKey, PoolRate] | None = None,
    ) -> datetime | None:
        """When `claim_due` or `claim_items` can next return something (leased work aside)."""
        wanted, limits = dict(pools), dict(rates or {})
        return _when_or_none(await self._conn.read(lambda db: db.next_alarm_at(wanted, limits)))

    async def push_items(
        self, pool: InstanceKey, items: Sequence[QueueItem], *, now: datetime
    ) -> Sequence[bool]:
        """Queue events on a pool in one transaction; False for an id the pool has seen."""
        wanted, now_us = list(items), _micros(now)
        if not wanted:
            return []
        return await self._conn.write(lambda db: db.push_items(pool, wanted, now_us))

    async def finish_item(self, pool: InstanceKey, finish: ItemFinish) -> None:
        """The fenced write of a pool event's run (`LeaseLostError`: nothing written)."""
        await self._conn.write(lambda db: db.finish_item(pool, finish))

    async def read_item(self, pool: InstanceKey, event_id: str) -> QueueItem | None:
        """One of the pool's events as stored (with its live lease), or None."""
        return await self._conn.read(lambda db: db.read_item(pool, event_id))

    async def cancel_item(self, pool: InstanceKey, event_id: str) -> CancelOutcome:
        """Remove a pool event that is not running; ask a running one to stop."""
        return await self._conn.write(lambda db: db.cancel_item(pool, event_id))

    async def cancel_requests(self, tokens: Collection[str]) -> frozenset[str]:
        """Of `tokens`, those whose running pool event was asked to stop."""
        wanted = list(tokens)
        if not wanted:
            return frozenset()
        return await self._conn.read(lambda db: db.cancel_requests(wanted))

    async def abandon(self, tokens: Collection[str]) -> None:
        """Mark the live leases of `tokens` abandoned (kept until their thread returns)."""
        wanted = list(tokens)
        if wanted:
            await self._conn.write(lambda db: db.abandon(wanted))

    async def pool_counts(self, pool: InstanceKey, now: datetime | None = None) -> PoolCounts:
        """How many of the pool's events are queued, delayed, running and retrying."""
        now_us = None if now is None else _micros(now)
        return await self._conn.read(lambda db: db.pool_counts(pool, now_us))

    async def list_instances(self, job: str | None = None) -> Sequence[InstanceRecord]:
        """Every record, optionally of one job, in key order."""
        return await self._conn.read(lambda db: db.list_instances(job))

    async def dead_letters(self, job: str | None = None) -> Sequence[DeadLetter]:
        """Dead letters, oldest first (then in commit order), optionally of one job."""
        return await self._conn.read(lambda db: db.dead_letters(job))

    async def delete_dead_letter(self, letter_id: str) -> bool:
        """Remove one dead letter; False when there is none with that id."""
        return await self._conn.write(lambda db: db.delete_dead_letter(letter_id))

    async def forget_seen_before(self, cutoff: datetime) -> int:
        """Drop remembered event ids accepted before `cutoff` (strictly; see the protocol)."""
        cutoff_us = _micros(cutoff)
        return await self._conn.write(lambda db: db.forget_seen_before(cutoff_us))

    async def wait_for_change(self) -> None:
        """Return once another connection (process) has committed to the file."""
        # `PRAGMA data_version` of the writing connection changes only for commits of other
        # connections; polling it is one cheap statement on the write thread
        start = await self._conn.data_version()
        while True:
            await asyncio.sleep(_CHANGE_POLL)
            if await self._conn.data_version() != start:
                return

    async def close(self) -> None:
        """Close the connections and stop the threads; the storage cannot be used after."""
        await self._conn.close()


class _Connection:
    """The storage's two threads and connections, and the lock every write takes."""

    def __init__(self, path: Path, *, busy_timeout: timedelta) -> None:
        self.path = path
        self._busy_timeout = busy_timeout.total_seconds()
        # neither lock belongs to an event loop: every loop and thread of the process shares
        # this storage (a worker's loop, a sync client's, one `asyncio.run` per web request)
        self.lock = AnyLoopLock()
        """Held by an open block and by every other write: one write transaction at a time."""
        self._opening = AnyLoopLock()
        self._checked = False
        self._write_thread: ThreadPoolExecutor | None = None
        self._read_thread: ThreadPoolExecutor | None = None
        self._writer: _Writer | None = None
        self._reader: _Reader | None = None
        self._closed = False

    # -- threads -------------------------------------------------------------------------

    def _threads(self) -> tuple[ThreadPoolExecutor, ThreadPoolExecutor]:
        if self._closed:
            msg = f"the SQLite storage {str(self.path)!r} is closed"
            raise StorageError(msg)
        if self._write_thread is None or self._read_thread is None:
            self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="durable-jobs-sqlite")
            self._read_thread = ThreadPoolExecutor(1, thread_name_prefix="durable-jobs-sqlite-r")
        return self._write_thread, self._read_thread

    def _on_writer(self, work: Callable[[_Writer], T]) -> T:
        with map_sqlite_errors(self.path):
            if self._writer is None:
                self._writer = _Writer(self.path, self._busy_timeout)
            return work(self._writer)

    def _on_reader(self, work: Callable[[_Reader], T]) -> T:
        with map_sqlite_errors(self.path):
            if self._reader is None:
                self._reader = _Reader(self.path, self._busy_timeout)
            return work(self._reader)

    async def step(self, work: Callable[[_Writer], T]) -> T:
        """Run `work` on the write thread, in the open block (its caller holds `lock`)."""
        writer, _ = self._threads()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(writer, self._on_writer, work)

    def rollback_soon(self) -> None:
        """
        End the write thread's open transaction, if any, after whatever it is running.

        Not awaited: a cancelled block may not wait, and the thread runs calls in order,
        so the next transaction starts after this rollback whatever happens to the caller.
        """
        if self._write_thread is not None and not self._closed:
            self._write_thread.submit(self._on_writer, _Writer.rollback)

    # -- operations ----------------------------------------------------------------------

    async def ready(self) -> None:
        """Open the file and check its schema once (an empty file gets the schema)."""
        if self._checked:
            return
        async with self._opening:
            if not self._checked:
                async with self.lock:
                    await self.step(_Writer.check_schema)
                self._checked = True

    async def migrate(self) -> tuple[int, int]:
        async with self._opening, self.lock:
            versions = await self.step(_Writer.migrate)
            self._checked = True
        return versions

    async def write(self, work: Callable[[_Writer], T]) -> T:
        """One write transaction of its own, after any open block of this storage."""
        await self.ready()
        async with self.lock:
            try:
                return await self.step(work)
            except asyncio.CancelledError:
                self.rollback_soon()
                raise

    async def read(self, work: Callable[[_Reader], T]) -> T:
        """A read on the read-only connection: never waits for a block."""
        await self.ready()
        _, reader = self._threads()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(reader, self._on_reader, work)

    async def data_version(self) -> int:
        await self.ready()
        return await self.step(_Writer.data_version)

    async def close(self) -> None:
        """Close both connections on their threads, then stop the threads."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        for thread, close in (
            (self._write_thread, self._close_writer),
            (self._read_thread, self._close_reader),
        ):
            if thread is not None:
                await loop.run_in_executor(thread, close)
                thread.shutdown(wait=True)
        self._write_thread = self._read_thread = None

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class _BlockView:
    """The committed data as the open block's transaction reads it (for `BufferedTransaction`)."""

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    async def has_seen(self, key: InstanceKey, event_id: str) -> bool:
        return await self._conn.step(partial(_Writer.has_seen, key=key, event_id=event_id))

    async def queue_head(self, key: InstanceKey, skip: frozenset[str]) -> QueueItem | None:
        return await self._conn.step(partial(_Writer.queue_head, key=key, skip=skip))

    async def queue_has(self, key: InstanceKey, event_id: str) -> bool:
        return await self._conn.step(partial(_Writer.queue_has, key=key, event_id=event_id))

    async def queue_size(self, key: InstanceKey) -> int:
        return await self._conn.step(partial(_Writer.queue_size, key=key))

    async def max_seq(self) -> int:
        return await self._conn.step(_Writer.max_seq)


class _SqliteBlock:
    """`async with storage.instance(key) as tx`: BEGIN IMMEDIATE, buffer, COMMIT or ROLLBACK."""

    def __init__(self, conn: _Connection, key: InstanceKey) -> None:
        self._conn = conn
        self._key = key
        self._tx: BufferedTransaction | None = None

    async def __aenter__(self) -> InstanceTransaction:
        if self._tx is not None:
            msg = "a storage.instance(...) block cannot be entered twice"
            raise RuntimeError(msg)
        conn, key = self._conn, self._key
        await conn.ready()
        await conn.lock.acquire()
        try:
            record = await conn.step(partial(_Writer.begin, key=key))
        except BaseException:
            # BEGIN may still run after a cancellation: the rollback queued behind it ends it
            conn.rollback_soon()
            conn.lock.release()
            raise
        self._tx = BufferedTransaction(_BlockView(conn), key, record)
        return self._tx

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tx = self._tx
        if tx is None:
            return
        conn, key = self._conn, self._key
        ended = False
        try:
            changes = tx.close()
            if exc_type is None:
                await conn.step(partial(_Writer.commit, key=key, changes=changes))
            else:
                await conn.step(_Writer.rollback)
            ended = True
        finally:
            if not ended:  # a failed commit rolled back; a cancelled one may still be running
                conn.rollback_soon()
            conn.lock.release()


DEFAULT_DATABASE = "durable_jobs.db"
"""The file of the default storage, relative to the working directory."""


def default_storage() -> SqliteStorage:
    """The storage an engine or client uses when given none: `SqliteStorage("durable_jobs.db")`."""
    return SqliteStorage(DEFAULT_DATABASE)


if TYPE_CHECKING:
    # SqliteStorage is a `Storage` only structurally: make both checkers prove it here.
    _conforms: Storage = SqliteStorage(DEFAULT_DATABASE)
