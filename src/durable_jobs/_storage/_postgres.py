"""
`PostgresStorage`: the storage protocol on PostgreSQL, for many workers on many hosts.

Design, briefly (PostgreSQL's own guarantees, no home-made coordinator):
- An instance block holds one pooled connection and one transaction for its whole life.
  It takes a transaction-scoped advisory lock on the instance's key (this covers instances
  that have no row yet) and reads the row `FOR UPDATE`; its changes are buffered and
  written in the same transaction on clean exit. A worker that dies mid-block loses its
  connection, so PostgreSQL rolls the transaction back and releases the lock.
- Due alarms are claimed with `FOR UPDATE SKIP LOCKED` and a lease (`lease_until`), so two
  workers never claim one alarm and a dead worker's claim expires.
- A commit that sets an alarm sends `NOTIFY`; idle workers `LISTEN` and look again at once.
- Connection failures outside a block's commit are retried with backoff; one that persists
  surfaces as `StorageError`. A commit whose outcome is unknown is never retried.
- Tables live in a schema of their own (default `durable_jobs`), versioned in
  `durable_jobs_schema`; migrations run under an advisory lock when a storage opens.
"""

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Final, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from .._duration import DurationInput, to_timedelta
from .._errors import StorageError
from ._buffered import BufferedTransaction, Changes
from ._interface import (
    DeadLetter,
    InstanceKey,
    InstanceRecord,
    InstanceTransaction,
    QueueItem,
    Storage,
)
from ._rows import RECORD_COLUMNS as _RECORD_COLUMNS
from ._rows import key_of as _key_of
from ._rows import key_params as _key_params
from ._rows import status_of as _status_of


T = TypeVar("T")

_Connection = psycopg.AsyncConnection[TupleRow]

_SCHEMA_NAME: Final = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_RETRY_PAUSES: Final = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
"""Pauses between tries of an operation whose connection failed (about 4 s in all)."""

# (version, statements); append only: a released migration never changes.
_MIGRATIONS: Final[tuple[tuple[int, tuple[str, ...]], ...]] = (
    (
        1,
        (
            """CREATE TABLE instances (
                kind TEXT COLLATE "C" NOT NULL, job TEXT COLLATE "C" NOT NULL,
                id TEXT COLLATE "C" NOT NULL,
                status TEXT NOT NULL, state JSONB NOT NULL, meta JSONB NOT NULL,
                alarm_at TIMESTAMPTZ, lease_until TIMESTAMPTZ,
                attempt INTEGER NOT NULL, retry_started_at TIMESTAMPTZ,
                defects INTEGER NOT NULL, last_error TEXT,
                created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (kind, job, id)
            )""",
            "CREATE INDEX instances_alarm ON instances (alarm_at) WHERE alarm_at IS NOT NULL",
            """CREATE TABLE dead_letters (
                seq BIGSERIAL PRIMARY KEY, letter_id TEXT NOT NULL UNIQUE,
                kind TEXT NOT NULL, job TEXT NOT NULL, id TEXT NOT NULL,
                state JSONB NOT NULL, meta JSONB NOT NULL, event JSONB NOT NULL,
                error TEXT NOT NULL, reason TEXT NOT NULL, attempts INTEGER NOT NULL,
                at TIMESTAMPTZ NOT NULL
            )""",
            "CREATE INDEX dead_letters_at ON dead_letters (at, seq)",
            """CREATE TABLE seen_events (
                kind TEXT NOT NULL, job TEXT NOT NULL, id TEXT NOT NULL,
                event_id TEXT NOT NULL, at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (kind, job, id, event_id)
            )""",
            "CREATE INDEX seen_events_at ON seen_events (at)",
            """CREATE TABLE queue_items (
                seq BIGSERIAL PRIMARY KEY,
                kind TEXT NOT NULL, job TEXT NOT NULL, id TEXT NOT NULL,
                event_id TEXT NOT NULL, event JSONB NOT NULL, priority INTEGER NOT NULL,
                partition_key TEXT, enqueued_at TIMESTAMPTZ NOT NULL,
                UNIQUE (kind, job, id, event_id)
            )""",
            "CREATE INDEX queue_items_order ON queue_items (kind, job, id, priority DESC, seq)",
        ),
    ),
)
SCHEMA_VERSION: Final = _MIGRATIONS[-1][0]
"""The schema version this library writes."""

_KEY: Final = "kind = %s AND job = %s AND id = %s"


def _time(value: object) -> datetime:
    if not isinstance(value, datetime):
        msg = f"stored time is a {type(value).__name__}, not a timestamp"
        raise StorageError(msg)
    return value


def _time_or_none(value: object) -> datetime | None:
    return None if value is None else _time(value)


def _int(value: object) -> int:
    if not isinstance(value, int):
        msg = f"stored number is a {type(value).__name__}"
        raise StorageError(msg)
    return value


def _text_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def _record_of(row: TupleRow) -> InstanceRecord:
    # JSONB columns come decoded by psycopg's json loader: JSON values by construction
    kind, job, id, status, state, meta, alarm, attempt, retry_started, defects = row[:10]
    last_error, created, updated = row[10:13]
    return InstanceRecord(
        key=_key_of(kind, job, id),
        status=_status_of(status, f"{kind}:{job}:{id}"),
        state=state,
        meta=meta,
        alarm_at=_time_or_none(alarm),
        attempt=_int(attempt),
        retry_started_at=_time_or_none(retry_started),
        defects=_int(defects),
        last_error=_text_or_none(last_error),
        created_at=_time(created),
        updated_at=_time(updated),
    )


def _item_of(row: TupleRow) -> QueueItem:
    seq, event_id, event, priority, partition_key, enqueued = row
    return QueueItem(
        event_id=str(event_id),
        event=event,
        priority=_int(priority),
        partition_key=_text_or_none(partition_key),
        enqueued_at=_time(enqueued),
        seq=_int(seq),
    )


def _letter_of(row: TupleRow) -> DeadLetter:
    letter_id, kind, job, id, state, meta, event, error, reason, attempts, at = row
    return DeadLetter(
        id=str(letter_id),
        key=_key_of(kind, job, id),
        state=state,
        meta=meta,
        event=event,
        error=str(error),
        reason=str(reason),
        attempts=_int(attempts),
        at=_time(at),
    )


class PostgresStorage:
    """
    Storage on PostgreSQL: many workers and clients on many hosts share one database.

    Give a connection string (`PostgresStorage("postgresql://app@db/jobs")`) or a
    `psycopg_pool.AsyncConnectionPool` you manage. Tables are created in `schema` on first
    use. Size the pool for the worker's concurrency plus your clients: an instance block
    holds one connection while it runs (an `execute` included).

    Args:
        dsn_or_pool: a libpq connection string, or an open or unopened async pool.
        schema: the PostgreSQL schema of the tables (lowercase letters, digits, `_`).
        pool_size: the maximum connections of the pool this storage creates.
        open_timeout: how long opening waits for the server before `StorageError`.
    """

    def __init__(
        self,
        dsn_or_pool: "str | AsyncConnectionPool[_Connection]",
        *,
        schema: str = "durable_jobs",
        pool_size: int = 20,
        open_timeout: DurationInput = "30 seconds",
    ) -> None:
        if not _SCHEMA_NAME.match(schema):
            msg = f"schema: expected lowercase letters, digits and '_', got {schema!r}"
            raise ValueError(msg)
        self._schema = schema
        self._open_timeout = to_timedelta(open_timeout, field="open_timeout").total_seconds()
        self._channel = f"durable_jobs_{schema}"
        if isinstance(dsn_or_pool, str):
            self._dsn: str | None = dsn_or_pool
            self._pool: AsyncConnectionPool[_Connection] = AsyncConnectionPool(
                dsn_or_pool,
                min_size=1,
                max_size=pool_size,
                open=False,
                kwargs={"options": f"-c search_path={schema}"},
            )
            self._owns_pool = True
        else:
            self._dsn = None
            self._pool = dsn_or_pool
            self._owns_pool = False
        # A pool we created sets search_path on connect; a caller's pool is shared with other
        # code, so each transaction sets it locally instead of changing the session.
        self._scoped: sql.Composed | None = (
            None
            if self._owns_pool
            else sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema))
        )
        self._ready = False
        self._opening = asyncio.Lock()

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding the tables."""
        return self._schema

    async def open(self) -> None:
        """Open the pool and apply pending migrations now (otherwise done on first use)."""
        await self._ensure_open()

    def instance(self, key: InstanceKey) -> AbstractAsyncContextManager[InstanceTransaction]:
        """Serialized, atomic access to one instance (an advisory lock and one transaction)."""
        return _PostgresBlock(self._connect_block, self._release, self._channel, key, self._scoped)

    async def read(self, key: InstanceKey) -> InstanceRecord | None:
        """A committed snapshot of one record, without taking the instance."""

        async def work(conn: _Connection) -> InstanceRecord | None:
            cursor = await conn.execute(
                f"SELECT {_RECORD_COLUMNS} FROM instances WHERE {_KEY}", _key_params(key)
            )
            row = await cursor.fetchone()
            return None if row is None else _record_of(row)

        return await self._run(work)

    async def claim_due(
        self, now: datetime, *, limit: int, lease: timedelta
    ) -> Sequence[InstanceKey]:
        """Lease up to `limit` due, unleased alarms (`FOR UPDATE SKIP LOCKED`)."""
        if limit <= 0:
            return []

        async def work(conn: _Connection) -> list[InstanceKey]:
            cursor = await conn.execute(
                "UPDATE instances SET lease_until = %s WHERE (kind, job, id) IN ("
                " SELECT kind, job, id FROM instances"
                " WHERE alarm_at <= %s AND (lease_until IS NULL OR lease_until <= %s)"
                " ORDER BY alarm_at, kind, job, id LIMIT %s FOR UPDATE SKIP LOCKED)"
                " RETURNING alarm_at, kind, job, id",
                (now + lease, now, now, limit),
            )
            rows = await cursor.fetchall()
            ordered = sorted((_time(at), str(k), str(j), str(i)) for at, k, j, i in rows)
            return [_key_of(k, j, i) for _, k, j, i in ordered]

        return await self._run(work)

    async def next_alarm_at(self) -> datetime | None:
        """When `claim_due` can next return something (leases counted), or None."""

        async def work(conn: _Connection) -> datetime | None:
            cursor = await conn.execute(
                "SELECT min(GREATEST(alarm_at, COALESCE(lease_until, alarm_at)))"
                " FROM instances WHERE alarm_at IS NOT NULL"
            )
            row = await cursor.fetchone()
            return None if row is None else _time_or_none(row[0])

        return await self._run(work)

    async def list_instances(self, job: str | None = None) -> Sequence[InstanceRecord]:
        """Every record, optionally of one job, in key order."""

        async def work(conn: _Connection) -> list[InstanceRecord]:
            where, params = ("", ()) if job is None else (" WHERE job = %s", (job,))
            cursor = await conn.execute(
                f"SELECT {_RECORD_COLUMNS} FROM instances{where} ORDER BY kind, job, id",
                params,
            )
            return [_record_of(row) for row in await cursor.fetchall()]

        return await self._run(work)

    async def dead_letters(self, job: str | None = None) -> Sequence[DeadLetter]:
        """Dead letters, oldest first (then in commit order), optionally of one job."""

        async def work(conn: _Connection) -> list[DeadLetter]:
            where, params = ("", ()) if job is None else (" WHERE job = %s", (job,))
            cursor = await conn.execute(
                "SELECT letter_id, kind, job, id, state, meta, event, error, reason,"
                f" attempts, at FROM dead_letters{where} ORDER BY at, seq",
                params,
            )
            return [_letter_of(row) for row in await cursor.fetchall()]

        return await self._run(work)

    async def delete_dead_letter(self, letter_id: str) -> bool:
        """Remove one dead letter; False when there is none with that id."""

        async def work(conn: _Connection) -> bool:
            cursor = await conn.execute(
                "DELETE FROM dead_letters WHERE letter_id = %s", (letter_id,)
            )
            return cursor.rowcount == 1

        return await self._run(work)

    async def forget_seen_before(self, cutoff: datetime) -> int:
        """Drop remembered event ids accepted before `cutoff` (strictly); returns how many."""

        async def work(conn: _Connection) -> int:
            cursor = await conn.execute("DELETE FROM seen_events WHERE at < %s", (cutoff,))
            return cursor.rowcount

        return await self._run(work)

    async def wait_for_change(self) -> None:
        """Return when another connection announced a new alarm (`LISTEN`/`NOTIFY`)."""
        await self._ensure_open()
        pause = 0
        while True:
            try:
                async with self._pool.connection() as conn:
                    await conn.set_autocommit(True)
                    try:
                        await conn.execute(
                            sql.SQL("LISTEN {}").format(sql.Identifier(self._channel))
                        )
                        async for _ in conn.notifies(stop_after=1):
                            return
                    finally:
                        with contextlib.suppress(psycopg.Error):
                            await conn.execute(
                                sql.SQL("UNLISTEN {}").format(sql.Identifier(self._channel))
                            )
                        await conn.set_autocommit(False)
            except psycopg.OperationalError:
                await asyncio.sleep(_RETRY_PAUSES[min(pause, len(_RETRY_PAUSES) - 1)])
                pause += 1

    async def close(self) -> None:
        """Close the pool (when this storage created it)."""
        if self._owns_pool:
            await self._pool.close()

    # -- plumbing -------------------------------------------------------------------------

    async def _ensure_open(self) -> None:
        if self._ready:
            return
        async with self._opening:
            if self._is_ready():  # another task opened it while we waited
                return
            try:
                await self._pool.open(wait=True, timeout=self._open_timeout)
                await self._migrate()
            except psycopg.Error as exc:
                msg = f"cannot open PostgreSQL storage (schema {self._schema!r}): {exc}"
                raise StorageError(msg) from exc
            self._ready = True

    def _is_ready(self) -> bool:
        return self._ready

    async def _migrate(self) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            # one migrator at a time across every process opening this database
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"durable_jobs migrate {self._schema}",),
            )
            await conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self._schema))
            )
            await conn.execute(
                sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(self._schema))
            )
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS durable_jobs_schema"
                " (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            cursor = await conn.execute("SELECT max(version) FROM durable_jobs_schema")
            row = await cursor.fetchone()
            current = 0 if row is None or row[0] is None else _int(row[0])
            if current > SCHEMA_VERSION:
                msg = (
                    f"the PostgreSQL schema {self._schema!r} has version {current}, newer than"
                    f" this version of durable-jobs supports ({SCHEMA_VERSION}); upgrade"
                    " durable-jobs"
                )
                raise StorageError(msg)
            for version, statements in _MIGRATIONS:
                if version <= current:
                    continue
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO durable_jobs_schema (version) VALUES (%s)", (version,)
                )

    async def _run(self, work: Callable[[_Connection], Awaitable[T]]) -> T:
        """Run `work` in its own transaction; a failed connection is retried with backoff."""
        await self._ensure_open()
        tries = 0
        while True:
            try:
                async with self._pool.connection() as conn, conn.transaction():
                    if self._scoped is not None:
                        await conn.execute(self._scoped)
                    return await work(conn)
            except psycopg.OperationalError as exc:
                if tries == len(_RETRY_PAUSES):
                    msg = f"PostgreSQL storage failed after retries: {exc}"
                    raise StorageError(msg) from exc
                await asyncio.sleep(_RETRY_PAUSES[tries])
                tries += 1
            except psycopg.Error as exc:
                msg = f"PostgreSQL storage failed: {exc}"
                raise StorageError(msg) from exc

    async def _connect_block(self) -> _Connection:
        """A pooled connection for one block (retried with backoff while it fails)."""
        await self._ensure_open()
        tries = 0
        while True:
            try:
                return await self._pool.getconn()
            except psycopg.OperationalError as exc:
                if tries == len(_RETRY_PAUSES):
                    msg = f"PostgreSQL storage unreachable: {exc}"
                    raise StorageError(msg) from exc
                await asyncio.sleep(_RETRY_PAUSES[tries])
                tries += 1

    async def _release(self, conn: _Connection) -> None:
        await self._pool.putconn(conn)


class _ConnectionView:
    """The committed data, read on the block's connection (writes are buffered)."""

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    async def has_seen(self, key: InstanceKey, event_id: str) -> bool:
        cursor = await self._conn.execute(
            f"SELECT 1 FROM seen_events WHERE {_KEY} AND event_id = %s",
            (*_key_params(key), event_id),
        )
        return await cursor.fetchone() is not None

    async def queue_head(self, key: InstanceKey, skip: frozenset[str]) -> QueueItem | None:
        cursor = await self._conn.execute(
            "SELECT seq, event_id, event, priority, partition_key, enqueued_at"
            f" FROM queue_items WHERE {_KEY} AND NOT (event_id = ANY(%s))"
            " ORDER BY priority DESC, seq LIMIT 1",
            (*_key_params(key), list(skip)),
        )
        row = await cursor.fetchone()
        return None if row is None else _item_of(row)

    async def queue_has(self, key: InstanceKey, event_id: str) -> bool:
        cursor = await self._conn.execute(
            f"SELECT 1 FROM queue_items WHERE {_KEY} AND event_id = %s",
            (*_key_params(key), event_id),
        )
        return await cursor.fetchone() is not None

    async def queue_size(self, key: InstanceKey) -> int:
        cursor = await self._conn.execute(
            f"SELECT count(*) FROM queue_items WHERE {_KEY}", _key_params(key)
        )
        row = await cursor.fetchone()
        return 0 if row is None else _int(row[0])

    async def max_seq(self) -> int:
        cursor = await self._conn.execute("SELECT coalesce(max(seq), 0) FROM queue_items")
        row = await cursor.fetchone()
        return 0 if row is None else _int(row[0])


class _PostgresBlock:
    """`async with storage.instance(key) as tx`: lock, read, buffer, write, commit."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[_Connection]],
        release: Callable[[_Connection], Awaitable[None]],
        channel: str,
        key: InstanceKey,
        scoped: sql.Composed | None,
    ) -> None:
        self._connect = connect
        self._release = release
        self._channel = channel
        self._key = key
        self._scoped = scoped
        self._conn: _Connection | None = None
        self._tx: BufferedTransaction | None = None

    async def __aenter__(self) -> InstanceTransaction:
        if self._conn is not None:
            msg = "a storage.instance(...) block cannot be entered twice"
            raise RuntimeError(msg)
        tries = 0
        while True:
            conn = await self._connect()
            try:
                record = await self._lock_and_read(conn)
            except psycopg.OperationalError as exc:
                # Nothing was written yet, so a connection that died (a restarted server, a
                # killed backend, a failover) is replaced and the opening tried again.
                await self._give_back(conn, commit=False)
                if tries == len(_RETRY_PAUSES):
                    msg = f"PostgreSQL storage failed opening {self._key}: {exc}"
                    raise StorageError(msg) from exc
                await asyncio.sleep(_RETRY_PAUSES[tries])
                tries += 1
                continue
            except BaseException as exc:
                await self._give_back(conn, commit=False)
                if isinstance(exc, psycopg.Error):
                    msg = f"PostgreSQL storage failed opening {self._key}: {exc}"
                    raise StorageError(msg) from exc
                raise
            break
        self._conn = conn
        self._tx = BufferedTransaction(_ConnectionView(conn), self._key, record)
        return self._tx

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, tx = self._conn, self._tx
        if conn is None or tx is None:
            return
        changes = tx.close()
        if exc_type is not None:
            await self._give_back(conn, commit=False)
            return
        try:
            notify = await _apply(conn, self._key, changes)
            if notify:
                await conn.execute("SELECT pg_notify(%s, '')", (self._channel,))
        except BaseException as error:
            await self._give_back(conn, commit=False)
            if isinstance(error, psycopg.Error):
                msg = f"PostgreSQL storage failed writing {self._key}: {error}"
                raise StorageError(msg) from error
            raise
        try:
            # a cancelled caller must not leave the commit half-known: wait for its end
            await asyncio.shield(self._give_back(conn, commit=True))
        except psycopg.Error as error:
            msg = f"PostgreSQL storage failed committing {self._key}: {error}"
            raise StorageError(msg) from error

    async def _lock_and_read(self, conn: _Connection) -> InstanceRecord | None:
        if self._scoped is not None:
            await conn.execute(self._scoped)
        params = _key_params(self._key)
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ("\x1f".join(params),)
        )
        cursor = await conn.execute(
            f"SELECT {_RECORD_COLUMNS} FROM instances WHERE {_KEY} FOR UPDATE", params
        )
        row = await cursor.fetchone()
        return None if row is None else _record_of(row)

    async def _give_back(self, conn: _Connection, *, commit: bool) -> None:
        try:
            if commit:
                await conn.commit()
            else:
                with contextlib.suppress(psycopg.Error):
                    await conn.rollback()
        finally:
            await self._release(conn)


async def _apply(conn: _Connection, key: InstanceKey, changes: Changes) -> bool:
    """Write one block's changes; True when an alarm was set (others should look again)."""
    params = _key_params(key)
    notify = False
    if changes.record_changed:
        record = changes.record
        if record is None:
            await conn.execute(f"DELETE FROM instances WHERE {_KEY}", params)
        else:
            notify = record.alarm_at is not None
            await conn.execute(
                f"INSERT INTO instances ({_RECORD_COLUMNS}, lease_until)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, NULL)"
                " ON CONFLICT (kind, job, id) DO UPDATE SET status = EXCLUDED.status,"
                " state = EXCLUDED.state, meta = EXCLUDED.meta, alarm_at = EXCLUDED.alarm_at,"
                " attempt = EXCLUDED.attempt, retry_started_at = EXCLUDED.retry_started_at,"
                " defects = EXCLUDED.defects, last_error = EXCLUDED.last_error,"
                " created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,"
                " lease_until = NULL",
                (
                    *params,
                    record.status.value,
                    Jsonb(record.state),
                    Jsonb(record.meta),
                    record.alarm_at,
                    record.attempt,
                    record.retry_started_at,
                    record.defects,
                    record.last_error,
                    record.created_at,
                    record.updated_at,
                ),
            )
    async with conn.cursor() as cursor:
        if changes.queue_purged:
            await cursor.execute(f"DELETE FROM queue_items WHERE {_KEY}", params)
        if changes.removed:
            await cursor.execute(
                f"DELETE FROM queue_items WHERE {_KEY} AND event_id = ANY(%s)",
                (*params, list(changes.removed)),
            )
        if changes.pushed:
            notify = True
            await cursor.executemany(
                "INSERT INTO queue_items (kind, job, id, event_id, event, priority,"
                " partition_key, enqueued_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        *params,
                        item.event_id,
                        Jsonb(item.event),
                        item.priority,
                        item.partition_key,
                        item.enqueued_at,
                    )
                    for item in changes.pushed
                ],
            )
        replaced = [*changes.letters_removed, *(letter.id for letter in changes.letters)]
        if replaced:
            await cursor.execute("DELETE FROM dead_letters WHERE letter_id = ANY(%s)", (replaced,))
        if changes.letters:
            await cursor.executemany(
                "INSERT INTO dead_letters (letter_id, kind, job, id, state, meta, event,"
                " error, reason, attempts, at) VALUES"
                " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        letter.id,
                        *_key_params(letter.key),
                        Jsonb(letter.state),
                        Jsonb(letter.meta),
                        Jsonb(letter.event),
                        letter.error,
                        letter.reason,
                        letter.attempts,
                        letter.at,
                    )
                    for letter in changes.letters
                ],
            )
        if changes.remembered:
            await cursor.executemany(
                "INSERT INTO seen_events VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (kind, job, id, event_id) DO UPDATE SET at = EXCLUDED.at",
                [(*params, event_id, at) for event_id, at in changes.remembered],
            )
    return notify


if TYPE_CHECKING:
    # PostgresStorage is a `Storage` only structurally: make both checkers prove it here.
    _conforms: Storage = PostgresStorage("")
