"""
`PostgresStorage`: the storage protocol on PostgreSQL, for many workers on many hosts.

Design, briefly (PostgreSQL's own guarantees, no home-made coordinator):
- Every operation is one short transaction on a pooled connection, returned at once. User
  code never runs inside one: a worker *claims* work (a lease: a random token and an
  expiry, stored in the row), runs it holding no connection, and writes the outcome in a
  *fenced* transaction that commits only while its token still holds a live lease.
- Leases expire by the database server's clock: claims, renewals, fences and every read
  of a lease compare `lease_expires_at` with `now()`, and lease durations are intervals
  added to it, so clock skew between hosts cannot make two workers hold one lease.
- An instance block takes a transaction-scoped advisory lock on the instance's key (this
  covers instances that have no row yet) and reads the row `FOR UPDATE`; its changes are
  buffered and written in the same transaction on clean exit.
- Due alarms are claimed with `FOR UPDATE SKIP LOCKED`. Pool events are claimed under an
  advisory lock on the pool, so a pool's `concurrency` holds across every process.
- A commit that may give a worker something to do (an earlier alarm, pushed events, a
  finished, cancelled or released event, a released lease) or tell it its lease is gone (a
  revoked or purged lease) sends `NOTIFY`; each worker process `LISTEN`s on one connection.
- Connection failures before a commit are retried with backoff (nothing was written); one
  that persists surfaces as `StorageError`. A commit whose outcome is unknown is never
  retried. No `psycopg` exception escapes: they become `StorageError`.
- Tables live in a schema of their own (default `durable_jobs`), versioned in
  `durable_jobs_schema`. An empty schema is created at the latest version on first use; an
  older one is refused until `migrate()` (the `durable-jobs migrate` command) upgrades it,
  a newer one always.
"""

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Final, LiteralString, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from .._duration import DurationInput, to_timedelta
from .._errors import SchemaMismatchError, StorageError, ValidationError
from .._portal import Home, default_portal
from .._serde import truncate
from . import _upgrade_v1 as v1
from ._buffered import BufferedTransaction, Changes
from ._interface import (
    CancelOutcome,
    Claim,
    DeadLetter,
    InstanceKey,
    InstanceRecord,
    InstanceStatus,
    InstanceTransaction,
    ItemClaim,
    ItemFinish,
    JobKind,
    Lease,
    LeaseLostError,
    PoolCounts,
    PoolRate,
    QueueItem,
    Storage,
)
from ._rows import RECORD_COLUMNS as _RECORD_COLUMNS
from ._rows import key_of as _key_of
from ._rows import key_params as _key_params
from ._rows import lenient_status as _lenient_status


T = TypeVar("T")

_Connection = psycopg.AsyncConnection[TupleRow]

_CHANNEL_PREFIX: Final = "durable_jobs_"
"""The NOTIFY channel of a schema is this prefix and the schema's name."""
_SCHEMA_MAX: Final = 63 - len(_CHANNEL_PREFIX)
"""The longest schema name: its channel must fit PostgreSQL's 63-byte identifiers (a
longer channel is refused by `pg_notify` and truncated by `LISTEN`: no worker would wake)."""
_SCHEMA_NAME: Final = re.compile(rf"^[a-z_][a-z0-9_]{{0,{_SCHEMA_MAX - 1}}}$")
_RETRY_PAUSES: Final = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
_OWN_NOTIFY_MEMORY: Final = 60.0
"""Seconds a backend that sent this storage's notification is remembered as its own (its
notification arrives within milliseconds; the limit keeps a reused pid from being muted)."""
"""Pauses between tries of an operation whose connection failed (about 4 s in all)."""

# (version, statements); append only: a released migration never changes.
SCHEDULING_MIGRATION: Final = 3
"""The number of the scheduling migration in `_MIGRATIONS`."""
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
    (
        2,
        (
            # leases are a token and an expiry in the server's clock; the renames make a
            # worker of schema 1 fail instead of running on schema 2
            "ALTER TABLE instances RENAME COLUMN lease_until TO lease_expires_at",
            "ALTER TABLE instances ADD COLUMN lease_token TEXT",
            "CREATE INDEX instances_lease_token ON instances (lease_token)"
            " WHERE lease_token IS NOT NULL",
            "ALTER TABLE queue_items RENAME TO items",
            "ALTER SEQUENCE queue_items_seq_seq RENAME TO items_seq_seq",
            "ALTER TABLE items RENAME CONSTRAINT queue_items_pkey TO items_pkey",
            "ALTER TABLE items RENAME CONSTRAINT queue_items_kind_job_id_event_id_key"
            " TO items_kind_job_id_event_id_key",
            "ALTER INDEX queue_items_order RENAME TO items_order",
            """ALTER TABLE items
                ADD COLUMN available_at TIMESTAMPTZ,
                ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1,
                ADD COLUMN retry_started_at TIMESTAMPTZ,
                ADD COLUMN defects INTEGER NOT NULL DEFAULT 0,
                ADD COLUMN last_error TEXT,
                ADD COLUMN lease_token TEXT,
                ADD COLUMN lease_expires_at TIMESTAMPTZ""",
            # a pool event may start only when it is its partition key's head
            "CREATE INDEX items_key_head ON items (kind, job, id, partition_key, seq)",
            "CREATE INDEX items_lease_token ON items (lease_token) WHERE lease_token IS NOT NULL",
        ),
    ),
    (
        SCHEDULING_MIGRATION,
        (
            # scheduling: a lease can be marked abandoned (its run stopped while a thread of
            # it still runs), a running pool event can be asked to stop, and a rate-limited
            # pool records the starts of its events while they count against its budget
            "ALTER TABLE instances ADD COLUMN lease_abandoned BOOLEAN NOT NULL DEFAULT false",
            """ALTER TABLE items
                ADD COLUMN lease_abandoned BOOLEAN NOT NULL DEFAULT false,
                ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT false""",
            "CREATE INDEX items_cancel ON items (kind, job, id) WHERE cancel_requested",
            """CREATE TABLE rate_starts (
                kind TEXT NOT NULL, job TEXT NOT NULL, id TEXT NOT NULL,
                bucket TEXT NOT NULL, started_at TIMESTAMPTZ NOT NULL
            )""",
            "CREATE INDEX rate_starts_window ON rate_starts (kind, job, id, bucket, started_at)",
        ),
    ),
)
SCHEMA_VERSION: Final = _MIGRATIONS[-1][0]
"""The schema version this library writes."""

_KEY: Final = "kind = %s AND job = %s AND id = %s"
_LIVE: Final = "lease_expires_at > now()"
"""A lease is live while its expiry is ahead of the server's clock."""
_LIVE_LEASE: Final = (
    f"CASE WHEN {_LIVE} THEN lease_token END, CASE WHEN {_LIVE} THEN lease_expires_at END,"
    " lease_abandoned"
)
"""The lease columns as reads report them: an expired lease reads as none."""
_NEW_TOKEN: Final = "replace(gen_random_uuid()::text, '-', '')"
_V2_ITEM_COLUMNS: Final = (
    "seq, event_id, event, priority, partition_key, enqueued_at, available_at, attempt,"
    " retry_started_at, defects, last_error"
)
"""The item columns of schema 2 (the upgrade of schema 1's rows writes them)."""
_ITEM_COLUMNS: Final = f"{_V2_ITEM_COLUMNS}, cancel_requested"
_LETTER_COLUMNS: Final = "letter_id, kind, job, id, state, meta, event, error, reason, attempts, at"


_DATA_ERRORS: Final = (UnicodeEncodeError, OverflowError)
"""What psycopg raises in Python for a value it cannot send (with `psycopg.DataError`)."""


def map_driver_error(exc: BaseException, doing: str) -> StorageError | ValidationError | None:
    """
    The one mapping of driver errors to library errors (every storage call goes through it).

    A value PostgreSQL or psycopg refuses (`psycopg.DataError`: a NUL character, a number
    out of range, JSON that is not JSON; a Python `UnicodeEncodeError` or `OverflowError`
    while sending) becomes `ValidationError`, with only a truncated preview of the
    driver's message: the data is wrong, a retry would fail again (the data boundary
    refuses such values before any write, so this is a safety net). Any other
    `psycopg.Error` becomes `StorageError` (a lost connection, a timeout, a full disk:
    often transient). Anything else is not a driver error: None.
    """
    where = f" {doing}" if doing else ""
    if isinstance(exc, psycopg.DataError | UnicodeEncodeError | OverflowError):
        msg = f"PostgreSQL cannot store a value{where}: {truncate(str(exc))}"
        return ValidationError("$", msg)
    if isinstance(exc, psycopg.Error):
        return StorageError(f"PostgreSQL storage failed{where}: {exc}")
    return None


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


def _lease_of(token: object, expires: object, abandoned: object) -> Lease | None:
    if token is None or expires is None:
        return None
    return Lease(token=str(token), expires_at=_time(expires), abandoned=abandoned is True)


def _record_of(row: TupleRow) -> InstanceRecord:
    """A record from `RECORD_COLUMNS` followed by the three `_LIVE_LEASE` columns."""
    # JSONB columns come decoded by psycopg's json loader: JSON values by construction
    kind, job, id, status, state, meta, alarm, attempt, retry_started, defects = row[:10]
    last_error, created, updated, token, expires, abandoned = row[10:16]
    problems: list[str] = []
    return InstanceRecord(
        key=_key_of(kind, job, id),
        status=_lenient_status(status, problems),
        state=state,
        meta=meta,
        alarm_at=_time_or_none(alarm),
        attempt=_int(attempt),
        retry_started_at=_time_or_none(retry_started),
        defects=_int(defects),
        last_error=_text_or_none(last_error),
        created_at=_time(created),
        updated_at=_time(updated),
        lease=_lease_of(token, expires, abandoned),
        unreadable="; ".join(problems) or None,
    )


def _item_of(row: TupleRow) -> QueueItem:
    """An item from `_ITEM_COLUMNS` followed by the three `_LIVE_LEASE` columns."""
    seq, event_id, event, priority, partition_key, enqueued, available = row[:7]
    attempt, retry_started, defects, last_error, cancel = row[7:12]
    token, expires, abandoned = row[12:15]
    return QueueItem(
        event_id=str(event_id),
        event=event,
        priority=_int(priority),
        partition_key=_text_or_none(partition_key),
        enqueued_at=_time(enqueued),
        seq=_int(seq),
        available_at=_time_or_none(available),
        attempt=_int(attempt),
        retry_started_at=_time_or_none(retry_started),
        defects=_int(defects),
        last_error=_text_or_none(last_error),
        lease=_lease_of(token, expires, abandoned),
        cancel_requested=cancel is True,
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


def _letter_params(letter: DeadLetter) -> tuple[object, ...]:
    return (
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


def _lock_name(schema: str, what: str, key: InstanceKey) -> str:
    """The text hashed into an advisory lock's key (advisory locks span the database)."""
    return "\x1f".join((schema, what, *_key_params(key)))


class PostgresStorage:
    """
    Storage on PostgreSQL: many workers and clients on many hosts share one database.

    Give a connection string (`PostgresStorage("postgresql://app@db/jobs")`) or a
    `psycopg_pool.AsyncConnectionPool` you manage. Tables are created in `schema` on first
    use; a schema written by an older version is refused (`SchemaMismatchError`) until
    `migrate()` upgrades it. Every operation holds a pooled connection only for its own
    short transaction (a running execution holds none); a worker process also keeps one
    for `LISTEN`.

    Args:
        dsn_or_pool: a libpq connection string, or an open or unopened async pool.
        schema: the PostgreSQL schema of the tables (at most 50 lowercase letters, digits
            and `_`: its NOTIFY channel, `durable_jobs_<schema>`, must fit 63 bytes).
        pool_size: the maximum connections of the pool this storage creates (a worker
            keeps one of them for `LISTEN`: give a worker at least 2).
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
            msg = (
                f"schema: expected at most {_SCHEMA_MAX} lowercase letters, digits and '_'"
                f" (its NOTIFY channel must fit 63 bytes), got {truncate(repr(schema))}"
            )
            raise ValueError(msg)
        self._schema = schema
        self._open_timeout = to_timedelta(open_timeout, field="open_timeout").total_seconds()
        if isinstance(dsn_or_pool, str):
            pool: AsyncConnectionPool[_Connection] = AsyncConnectionPool(
                dsn_or_pool,
                min_size=1,
                max_size=pool_size,
                open=False,
                kwargs={"options": f"-c search_path={schema}"},
            )
            self._owns_pool = True
            # the pool opens on the process's portal loop, whatever loop or thread calls
            home = Home(default_portal())
        else:
            pool = dsn_or_pool
            self._owns_pool = False
            home = Home(None)  # a caller's pool stays on the loop that first uses it
        self._home = home
        self._db = _Database(pool, schema=schema, scoped=not self._owns_pool)
        self._ready = False
        self._pool_open = False
        self._closed = False
        self._opening = asyncio.Lock()
        self._listener: _Connection | None = None
        self._listening = asyncio.Lock()

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding the tables."""
        return self._schema

    async def exists(self) -> bool:
        """
        Whether the schema holds durable-jobs tables, checked without creating anything
        (operator commands refuse a schema that does not: a typo must not create one).
        """
        # the pool opens and is used on its home loop, whichever loop calls
        return await self._home.call(self._exists_now)

    async def _exists_now(self) -> bool:
        await self._open_pool()

        async def work(conn: _Connection) -> bool:
            cursor = await conn.execute(
                "SELECT 1 FROM information_schema.tables"
                " WHERE table_schema = %s AND table_name = 'durable_jobs_schema'",
                (self._schema,),
            )
            return await cursor.fetchone() is not None

        return await self._db.run(work)

    async def open(self) -> None:
        """
        Open the pool and check the schema now (otherwise done on first use).

        An empty schema is created at the latest version. Raises `SchemaMismatchError` when
        the schema was written by another version (an older one needs `migrate()`).
        """
        await self._home.call(self._ensure_open)

    async def migrate(self) -> tuple[int, int]:
        """
        Bring the schema to this version's: `(version before, version after)`.

        Every pending migration, and the upgrade of the stored data, runs in one
        transaction under an advisory lock, so two processes migrating at once are safe
        (the second finds nothing to do). Stop every worker first: a worker of the older
        version fails against the new schema. There is no downgrade: a newer schema raises
        `SchemaMismatchError`.
        """
        return await self._home.call(self._migrate_now)

    async def _migrate_now(self) -> tuple[int, int]:
        await self._open_pool()
        try:
            return await self._migrate(upgrade=True)
        except psycopg.Error as exc:
            msg = f"migrating PostgreSQL schema {self._schema!r} failed: {exc}"
            raise StorageError(msg) from exc

    def instance(self, key: InstanceKey) -> AbstractAsyncContextManager[InstanceTransaction]:
        """Serialized, atomic access to one instance (an advisory lock and one transaction)."""
        return _PostgresBlock(self._db, self._home, self._ensure_open, key)

    async def read(self, key: InstanceKey) -> InstanceRecord | None:
        """A committed snapshot of one record (its lease if live), without taking it."""

        async def work(conn: _Connection) -> InstanceRecord | None:
            cursor = await conn.execute(
                f"SELECT {_RECORD_COLUMNS}, {_LIVE_LEASE} FROM instances WHERE {_KEY}",
                _key_params(key),
            )
            row = await cursor.fetchone()
            return None if row is None else _record_of(row)

        return await self._run(work)

    async def claim_due(self, now: datetime, *, limit: int, lease: timedelta) -> Sequence[Claim]:
        """
        Lease up to `limit` active instances due at `now` that hold no live lease.

        Rows are taken `FOR UPDATE SKIP LOCKED`, so concurrent claims never take one
        instance twice; the lease expires `lease` after the server's `now()`.
        """

        async def work(conn: _Connection) -> list[Claim]:
            await self._check_version(conn)
            if limit <= 0:
                return []
            cursor = await conn.execute(
                "WITH due AS ("
                " SELECT kind AS due_kind, job AS due_job, id AS due_id FROM instances"
                " WHERE alarm_at <= %s AND status = 'active'"
                f" AND (lease_expires_at IS NULL OR NOT {_LIVE})"
                " ORDER BY alarm_at, kind, job, id LIMIT %s FOR UPDATE SKIP LOCKED)"
                f" UPDATE instances SET lease_token = {_NEW_TOKEN},"
                " lease_expires_at = now() + %s, lease_abandoned = false FROM due"
                " WHERE kind = due_kind AND job = due_job AND id = due_id"
                f" RETURNING {_RECORD_COLUMNS}, lease_token, lease_expires_at, lease_abandoned",
                (now, limit, lease),
            )
            records = [_record_of(row) for row in await cursor.fetchall()]
            records.sort(key=lambda r: (r.alarm_at, *_key_params(r.key)))
            return [
                Claim(key=r.key, token=r.lease.token, record=r)
                for r in records
                if r.lease is not None
            ]

        return await self._run(work)

    async def claim_items(
        self,
        pools: Mapping[InstanceKey, int],
        now: datetime,
        *,
        limit: int,
        lease: timedelta,
        rates: Mapping[InstanceKey, PoolRate] | None = None,
    ) -> Sequence[ItemClaim]:
        """
        Lease up to `limit` ready events of `pools` (see `Storage.claim_items`).

        Each pool's claim holds an advisory lock on the pool until it commits, so claims of
        one pool never overlap, and its `concurrency` and rate limit hold across every
        process.
        """
        limits = dict(rates or {})

        async def work(conn: _Connection) -> list[ItemClaim]:
            await self._check_version(conn)
            claimed: list[ItemClaim] = []
            wanted = [(pool, concurrency) for pool, concurrency in pools.items() if concurrency > 0]
            if limit <= 0 or not wanted:
                return claimed
            # one pool lock at a time, always in key order: claims never deadlock
            for name in sorted({_lock_name(self._schema, "claim", pool) for pool, _ in wanted}):
                await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (name,))
            for pool, concurrency in wanted:
                if len(claimed) >= limit:
                    break
                claimed.extend(
                    await _claim_pool(
                        conn, pool, concurrency, now, limit - len(claimed), lease, limits.get(pool)
                    )
                )
            return claimed

        return await self._run(work)

    async def renew(self, tokens: Collection[str], lease: timedelta) -> frozenset[str]:
        """Extend the live leases of `tokens` to `lease` after the server's `now()`."""
        if not tokens:
            return frozenset()

        async def work(conn: _Connection) -> frozenset[str]:
            cursor = await conn.execute(
                "WITH held AS ("
                " UPDATE instances SET lease_expires_at = now() + %(lease)s"
                f" WHERE lease_token = ANY(%(tokens)s) AND {_LIVE} RETURNING lease_token),"
                " items_held AS ("
                " UPDATE items SET lease_expires_at = now() + %(lease)s"
                f" WHERE lease_token = ANY(%(tokens)s) AND {_LIVE} RETURNING lease_token)"
                " SELECT lease_token FROM held UNION ALL SELECT lease_token FROM items_held",
                {"lease": lease, "tokens": list(tokens)},
            )
            return frozenset(str(token) for (token,) in await cursor.fetchall())

        return await self._run(work)

    async def release(self, tokens: Collection[str]) -> None:
        """End the leases of `tokens` (the work is claimable again at once)."""
        if not tokens:
            return

        async def work(conn: _Connection) -> None:
            cursor = await conn.execute(
                "WITH freed AS ("
                " UPDATE instances SET lease_token = NULL, lease_expires_at = NULL"
                " WHERE lease_token = ANY(%(tokens)s) RETURNING 1),"
                " items_freed AS ("
                " UPDATE items SET lease_token = NULL, lease_expires_at = NULL"
                " WHERE lease_token = ANY(%(tokens)s) RETURNING 1)"
                " SELECT (SELECT count(*) FROM freed) + (SELECT count(*) FROM items_freed)",
                {"tokens": list(tokens)},
            )
            row = await cursor.fetchone()
            if row is not None and _int(row[0]) > 0:
                await self._db.notify(conn)

        await self._run(work)

    async def next_alarm_at(
        self,
        pools: Mapping[InstanceKey, int],
        rates: Mapping[InstanceKey, PoolRate] | None = None,
    ) -> datetime | None:
        """
        When `claim_due` or `claim_items` (for `pools`) can next return something, or None.

        Work held by a live lease is not counted, nor a pool that is paused or whose
        `concurrency` is taken by live leases; a rate-limited pool's events count from when
        their budget allows a start.
        """
        limits = dict(rates or {})
        rated = {pool: pools[pool] for pool in pools if pool in limits}
        params = _pool_params({pool: c for pool, c in pools.items() if pool not in limits})

        async def work(conn: _Connection) -> datetime | None:
            cursor = await conn.execute(
                "SELECT min(at) FROM ("
                " (SELECT alarm_at AS at FROM instances"
                "  WHERE alarm_at IS NOT NULL AND status = 'active'"
                f"  AND (lease_expires_at IS NULL OR NOT {_LIVE}) ORDER BY alarm_at LIMIT 1)"
                " UNION ALL"
                " SELECT (SELECT min(coalesce(i.available_at, i.enqueued_at)) FROM items i"
                "  WHERE i.kind = p.kind AND i.job = p.job AND i.id = p.id"
                "  AND (i.lease_expires_at IS NULL OR i.lease_expires_at <= now())"
                f"  AND {_KEY_HEAD})"
                " FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[])"
                "  AS p(kind, job, id, concurrency)"
                f" WHERE {_POOL_ACTIVE} AND {_POOL_FREE}"
                ") AS candidates",
                params,
            )
            row = await cursor.fetchone()
            times = [] if row is None or row[0] is None else [_time(row[0])]
            for pool, concurrency in rated.items():
                times.extend(await _rated_ready_at(conn, pool, concurrency, limits[pool]))
            return min(times, default=None)

        return await self._run(work)

    async def push_items(
        self, pool: InstanceKey, items: Sequence[QueueItem], *, now: datetime
    ) -> Sequence[bool]:
        """
        Queue events on a pool in one transaction; False for an id the pool has seen.

        Remembering the ids is the dedupe: an id another transaction inserts at the same
        time waits for it and is refused once it commits.
        """
        fresh: dict[str, QueueItem] = {}
        for item in items:
            fresh.setdefault(item.event_id, item)  # a repeat within the batch is refused
        params = _key_params(pool)

        async def work(conn: _Connection) -> frozenset[str]:
            if not fresh:
                return frozenset()
            cursor = await conn.execute(
                "INSERT INTO seen_events (kind, job, id, event_id, at)"
                " SELECT %s, %s, %s, event_id, %s FROM unnest(%s::text[]) AS event_id"
                " ON CONFLICT (kind, job, id, event_id) DO NOTHING RETURNING event_id",
                (*params, now, list(fresh)),
            )
            accepted = frozenset(str(event_id) for (event_id,) in await cursor.fetchall())
            if not accepted:
                return accepted
            await conn.execute(
                f"INSERT INTO instances ({_RECORD_COLUMNS})"
                " VALUES (%s, %s, %s, 'active', 'null', %s, NULL, 1, NULL, 0, NULL, %s, %s)"
                " ON CONFLICT (kind, job, id) DO NOTHING",
                (*params, Jsonb({"processed": 0}), now, now),
            )
            async with conn.cursor() as cursor:
                # one row at a time in push order: seq numbers follow it
                await cursor.executemany(
                    "INSERT INTO items (kind, job, id, event_id, event, priority,"
                    " partition_key, enqueued_at, available_at, attempt, retry_started_at,"
                    " defects, last_error)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    [
                        _item_params(pool, item)
                        for item in fresh.values()
                        if item.event_id in accepted
                    ],
                )
            await self._db.notify(conn)
            return accepted

        accepted = await self._run(work)
        taken: set[str] = set()
        results: list[bool] = []
        for item in items:
            results.append(item.event_id in accepted and item.event_id not in taken)
            taken.add(item.event_id)
        return results

    async def finish_item(self, pool: InstanceKey, finish: ItemFinish) -> None:
        """
        The fenced write of a pool event's run.

        One transaction: the event is removed (or kept for its retry, lease ended) only
        while `finish.token` holds its live lease, else `LeaseLostError` and nothing is
        written; letters are added and `processed` is added to the pool's counter in SQL.
        """
        params = _key_params(pool)
        fenced = f"{_KEY} AND event_id = %s AND lease_token = %s AND {_LIVE}"

        async def work(conn: _Connection) -> None:
            # the pool's row before the event's, the order of a block on the pool (which
            # may delete events): the two never wait for each other in a cycle
            retry = None if finish.cancelled else finish.retry
            if finish.processed:
                await _count(conn, pool, "processed", finish.processed)
            elif finish.cancelled or retry is not None:
                await conn.execute(f"SELECT 1 FROM instances WHERE {_KEY} FOR UPDATE", params)
            kept = False
            if retry is not None:
                # an event asked to stop is never kept for a retry
                cursor = await conn.execute(
                    "UPDATE items SET available_at = %s, attempt = %s, retry_started_at = %s,"
                    " defects = %s, last_error = %s, lease_token = NULL, lease_expires_at = NULL"
                    f" WHERE {fenced} AND NOT cancel_requested RETURNING 1",
                    (
                        retry.available_at,
                        retry.attempt,
                        retry.retry_started_at,
                        retry.defects,
                        retry.last_error,
                        *params,
                        finish.event_id,
                        finish.token,
                    ),
                )
                kept = await cursor.fetchone() is not None
            if not kept:
                cursor = await conn.execute(
                    f"DELETE FROM items WHERE {fenced} RETURNING 1",
                    (*params, finish.event_id, finish.token),
                )
                if await cursor.fetchone() is None:
                    msg = (
                        f"the lease of event {finish.event_id!r} of {pool} was lost;"
                        " nothing written"
                    )
                    raise LeaseLostError(msg)
            # a retry refused while the lease held: its cancel was requested
            cancelled = finish.cancelled or (retry is not None and not kept)
            if cancelled:
                await _count(conn, pool, "cancelled", 1)
            await _write_letters(conn, finish.letters, ())
            await self._db.notify(conn)

        await self._run(work)

    async def read_item(self, pool: InstanceKey, event_id: str) -> QueueItem | None:
        """One of the pool's events as stored (with its lease while it is live), or None."""

        async def work(conn: _Connection) -> QueueItem | None:
            cursor = await conn.execute(
                f"SELECT {_ITEM_COLUMNS}, {_LIVE_LEASE} FROM items WHERE {_KEY} AND event_id = %s",
                (*_key_params(pool), event_id),
            )
            row = await cursor.fetchone()
            return None if row is None else _item_of(row)

        return await self._run(work)

    async def cancel_item(self, pool: InstanceKey, event_id: str) -> CancelOutcome:
        """Remove a pool event that holds no live lease; ask a running one to stop."""
        params = (*_key_params(pool), event_id)

        async def work(conn: _Connection) -> CancelOutcome:
            # the pool's row before the event's (see finish_item)
            await conn.execute(
                f"SELECT 1 FROM instances WHERE {_KEY} FOR UPDATE", _key_params(pool)
            )
            cursor = await conn.execute(
                f"DELETE FROM items WHERE {_KEY} AND event_id = %s"
                f" AND (lease_expires_at IS NULL OR NOT {_LIVE}) RETURNING 1",
                params,
            )
            if await cursor.fetchone() is not None:
                await _count(conn, pool, "cancelled", 1)
                await self._db.notify(conn)  # the next event of its key may start now
                return "cancelled"
            cursor = await conn.execute(
                f"UPDATE items SET cancel_requested = true WHERE {_KEY} AND event_id = %s"
                " RETURNING 1",
                params,
            )
            if await cursor.fetchone() is None:
                return "not_found"
            await self._db.notify(conn)  # its worker learns at once
            return "running"

        return await self._run(work)

    async def cancel_requests(self, tokens: Collection[str]) -> frozenset[str]:
        """Of `tokens`, those whose running pool event was asked to stop."""
        if not tokens:
            return frozenset()

        async def work(conn: _Connection) -> frozenset[str]:
            cursor = await conn.execute(
                f"SELECT lease_token FROM items WHERE lease_token = ANY(%s) AND {_LIVE}"
                " AND cancel_requested",
                (list(tokens),),
            )
            return frozenset(str(token) for (token,) in await cursor.fetchall())

        return await self._run(work)

    async def abandon(self, tokens: Collection[str]) -> None:
        """Mark the live leases of `tokens` abandoned (kept until their thread returns)."""
        if not tokens:
            return

        async def work(conn: _Connection) -> None:
            for table in ("instances", "items"):
                await conn.execute(
                    f"UPDATE {table} SET lease_abandoned = true"
                    f" WHERE lease_token = ANY(%s) AND {_LIVE}",
                    (list(tokens),),
                )

        await self._run(work)

    async def pool_counts(self, pool: InstanceKey, now: datetime | None = None) -> PoolCounts:
        """How many of the pool's events are queued, delayed, running and retrying."""

        async def work(conn: _Connection) -> PoolCounts:
            free = f"(lease_expires_at IS NULL OR NOT {_LIVE})"
            first = "attempt <= 1 AND defects <= 0"
            later = "coalesce(available_at > %(now)s, false)"
            cursor = await conn.execute(
                f"SELECT count(*) FILTER (WHERE {_LIVE}),"
                f" count(*) FILTER (WHERE {free} AND (attempt > 1 OR defects > 0)),"
                f" count(*) FILTER (WHERE {free} AND {first} AND NOT {later}),"
                f" count(*) FILTER (WHERE {free} AND {first} AND {later}),"
                f" count(*) FILTER (WHERE {_LIVE} AND lease_abandoned)"
                " FROM items WHERE kind = %(kind)s AND job = %(job)s AND id = %(id)s",
                {"now": now, "kind": pool.kind.value, "job": pool.job, "id": pool.id},
            )
            row = await cursor.fetchone()
            if row is None:
                return PoolCounts(queued=0, running=0, retrying=0)
            running, retrying, queued, delayed, abandoned = row
            return PoolCounts(
                queued=_int(queued),
                running=_int(running),
                retrying=_int(retrying),
                delayed=_int(delayed),
                abandoned=_int(abandoned),
            )

        return await self._run(work)

    async def list_instances(self, job: str | None = None) -> Sequence[InstanceRecord]:
        """Every record, optionally of one job, in key order (leases if live)."""

        async def work(conn: _Connection) -> list[InstanceRecord]:
            where, params = ("", ()) if job is None else (" WHERE job = %s", (job,))
            cursor = await conn.execute(
                f"SELECT {_RECORD_COLUMNS}, {_LIVE_LEASE} FROM instances{where}"
                " ORDER BY kind, job, id",
                params,
            )
            return [_record_of(row) for row in await cursor.fetchall()]

        return await self._run(work)

    async def dead_letters(self, job: str | None = None) -> Sequence[DeadLetter]:
        """Dead letters, oldest first (then in commit order), optionally of one job."""

        async def work(conn: _Connection) -> list[DeadLetter]:
            where, params = ("", ()) if job is None else (" WHERE job = %s", (job,))
            cursor = await conn.execute(
                f"SELECT {_LETTER_COLUMNS} FROM dead_letters{where} ORDER BY at, seq", params
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
        """Drop remembered event ids accepted before `cutoff` (strictly; see the protocol)."""

        async def work(conn: _Connection) -> int:
            cursor = await conn.execute(
                "DELETE FROM seen_events WHERE at < %s"
                " AND NOT EXISTS (SELECT 1 FROM items WHERE items.kind = seen_events.kind"
                " AND items.job = seen_events.job AND items.id = seen_events.id"
                " AND items.event_id = seen_events.event_id)"
                " AND NOT (seen_events.kind = 'debounce' AND EXISTS (SELECT 1 FROM instances"
                " WHERE instances.kind = seen_events.kind AND instances.job = seen_events.job"
                " AND instances.id = seen_events.id))",
                (cutoff,),
            )
            return cursor.rowcount

        return await self._run(work)

    async def wait_for_change(self) -> None:
        """
        Return when another process may have changed what is due (`LISTEN`/`NOTIFY`).

        The first call takes one pooled connection and keeps it, listening, until `close`:
        a notification sent between two calls is not lost. Notifications that arrived
        together wake the caller once; those of this storage's own commits do not wake it
        (the engine of this process knows of them already). A lost connection is replaced
        with backoff, and the call then returns, since a change may have been missed.
        """
        await self._home.call(self._wait_for_change)

    async def _wait_for_change(self) -> None:
        await self._ensure_open()
        async with self._listening:
            missed = False
            pause = 0
            while True:
                if self._closed:
                    msg = "the PostgreSQL storage is closed"
                    raise StorageError(msg)
                try:
                    conn = self._listener
                    if conn is None:
                        conn = self._listener = await self._listen()
                        if missed:
                            return
                    # this process's own commits wake its engine by themselves
                    foreign = False
                    async for note in conn.notifies(stop_after=1):
                        foreign = foreign or not self._db.sent_here(note.pid)
                    async for note in conn.notifies(timeout=0):  # the ones that came with it
                        foreign = foreign or not self._db.sent_here(note.pid)
                    if foreign:
                        return
                except psycopg.OperationalError:
                    # changes made while no connection listened are missed: look again
                    await self._drop_listener()
                    missed = True
                    await asyncio.sleep(_RETRY_PAUSES[min(pause, len(_RETRY_PAUSES) - 1)])
                    pause += 1
                except psycopg.Error as exc:
                    await self._drop_listener()
                    msg = f"PostgreSQL storage failed listening for changes: {exc}"
                    raise StorageError(msg) from exc

    async def close(self) -> None:
        """Close the listening connection and the pool (when this storage created it)."""
        self._closed = True
        await self._home.call(self._close)

    async def _close(self) -> None:
        await self._drop_listener()
        if self._owns_pool:
            await self._db.pool.close()

    # -- plumbing -------------------------------------------------------------------------

    async def _listen(self) -> _Connection:
        conn = await self._db.pool.getconn()
        try:
            await conn.set_autocommit(True)
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._db.channel)))
        except BaseException:
            await conn.close()
            await self._db.pool.putconn(conn)
            raise
        return conn

    async def _drop_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is None:
            return
        if self._listening.locked() or conn.closed:
            await conn.close()  # a waiter may be reading it: it fails, the pool replaces it
        else:
            try:  # nobody reads it: back to the pool, listening no more
                await conn.execute(sql.SQL("UNLISTEN {}").format(sql.Identifier(self._db.channel)))
                await conn.set_autocommit(False)
            except psycopg.Error:
                await conn.close()
        await self._db.pool.putconn(conn)

    async def _open_pool(self) -> None:
        async with self._opening:
            if self._pool_open:
                return
            try:
                await self._db.pool.open(wait=True, timeout=self._open_timeout)
            except psycopg.Error as exc:
                msg = f"cannot open PostgreSQL storage (schema {self._schema!r}): {exc}"
                raise StorageError(msg) from exc
            self._pool_open = True

    async def _ensure_open(self) -> None:
        if self._ready:
            return
        await self._open_pool()
        async with self._opening:
            if self._is_ready():  # another task opened it while we waited
                return
            try:
                # usually the schema is there: no lock, no DDL (nor the right to run it)
                stored = await self._db.run(_found_version)
                if stored != SCHEMA_VERSION:
                    await self._migrate(upgrade=False)
            except psycopg.Error as exc:
                msg = f"cannot open PostgreSQL storage (schema {self._schema!r}): {exc}"
                raise StorageError(msg) from exc
            self._ready = True

    def _is_ready(self) -> bool:
        return self._ready

    async def _migrate(self, *, upgrade: bool) -> tuple[int, int]:
        """
        Create an empty schema at the latest version, and with `upgrade` migrate an older
        one; any other version than the latest raises `SchemaMismatchError`.
        """
        async with self._db.pool.connection() as conn, conn.transaction():
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
            current = await _stored_version(conn)
            if current > SCHEMA_VERSION or (0 < current < SCHEMA_VERSION and not upgrade):
                raise SchemaMismatchError(self._mismatch(current))
            # the data is read as schema 1 wrote it, before the migrations rename its tables
            v1_rows = await _read_v1(conn) if current == 1 else None
            for version, statements in _MIGRATIONS:
                if version <= current:
                    continue
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO durable_jobs_schema (version) VALUES (%s)", (version,)
                )
            if v1_rows is not None:
                await _write_v2(conn, v1.upgrade(v1_rows))
        return (current, SCHEMA_VERSION)

    def _mismatch(self, stored: int) -> str:
        where = f"the PostgreSQL schema {self._schema!r} has version {stored}"
        if stored > SCHEMA_VERSION:
            return (
                f"{where}, newer than this version of durable-jobs supports"
                f" ({SCHEMA_VERSION}); upgrade durable-jobs (there is no downgrade)"
            )
        return (
            f"{where}, older than this version of durable-jobs needs ({SCHEMA_VERSION}):"
            " stop every worker, run `durable-jobs migrate --dsn DSN"
            f" --schema {self._schema}` (or `await storage.migrate()`), then start the"
            " workers of this version"
        )

    async def _check_version(self, conn: _Connection) -> None:
        """`SchemaMismatchError` unless the schema is still this version's (every claim)."""
        stored = await _stored_version(conn)
        if stored != SCHEMA_VERSION:
            self._ready = False
            raise SchemaMismatchError(self._mismatch(stored))

    async def _run(self, work: Callable[[_Connection], Awaitable[T]]) -> T:
        async def here() -> T:
            await self._ensure_open()
            return await self._db.run(work)

        # every operation runs on the loop the pool lives on, whichever loop calls
        return await self._home.call(here)


class _Database:
    """The pool and what every transaction of one storage needs (blocks share it)."""

    def __init__(
        self, pool: "AsyncConnectionPool[_Connection]", *, schema: str, scoped: bool
    ) -> None:
        self.pool = pool
        self.schema = schema
        self.channel = f"{_CHANNEL_PREFIX}{schema}"
        # A pool we created sets search_path on connect; a caller's pool is shared with other
        # code, so each transaction sets it locally instead of changing the session.
        self.scoped: sql.Composed | None = (
            sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema))
            if scoped
            else None
        )
        self.senders: dict[int, float] = {}
        """Backends that sent a notification lately, and when (local monotonic time)."""

    async def run(self, work: Callable[[_Connection], Awaitable[T]]) -> T:
        """
        Run `work` in one transaction (see `_Transaction`), then commit.

        A connection error before the commit is retried with backoff on a fresh connection
        (the transaction rolled back: nothing was written); one during the commit is not,
        since its outcome is unknown. Other errors roll back and propagate (psycopg's as
        `StorageError`).
        """
        tries = 0
        while True:
            tx = await self.begin()
            try:
                await self.scope(tx.conn)
                result = await work(tx.conn)
            except psycopg.OperationalError as exc:
                await tx.abort()
                if tries == len(_RETRY_PAUSES):
                    msg = f"PostgreSQL storage failed after retries: {exc}"
                    raise StorageError(msg) from exc
                await asyncio.sleep(_RETRY_PAUSES[tries])
                tries += 1
                continue
            except BaseException as exc:
                await tx.abort()
                mapped = map_driver_error(exc, "")
                if mapped is not None:
                    raise mapped from exc
                raise
            await tx.commit("a storage operation")
            return result

    async def begin(self) -> "_Transaction":
        """A transaction on a pooled connection (waiting, with backoff, while none comes)."""
        tries = 0
        while True:
            try:
                conn = await self.pool.getconn()
            except psycopg.OperationalError as exc:
                if tries == len(_RETRY_PAUSES):
                    msg = f"PostgreSQL storage unreachable: {exc}"
                    raise StorageError(msg) from exc
                await asyncio.sleep(_RETRY_PAUSES[tries])
                tries += 1
                continue
            return _Transaction(self.pool, conn)

    async def scope(self, conn: _Connection) -> None:
        """Point a transaction at the schema (on a caller's pool: see `scoped`)."""
        if self.scoped is not None:
            await conn.execute(self.scoped)

    async def notify(self, conn: _Connection) -> None:
        """Wake every listening worker of other processes when this transaction commits."""
        now = time.monotonic()
        for pid, sent in list(self.senders.items()):
            if now - sent > _OWN_NOTIFY_MEMORY:
                del self.senders[pid]
        self.senders[conn.info.backend_pid] = now
        await conn.execute("SELECT pg_notify(%s, '')", (self.channel,))

    def sent_here(self, pid: int) -> bool:
        """Whether a notification from backend `pid` came from this storage (a commit here)."""
        return pid in self.senders


class _Transaction:
    """One transaction on one pooled connection, given back to the pool when it ends."""

    def __init__(self, pool: "AsyncConnectionPool[_Connection]", conn: _Connection) -> None:
        self.conn = conn
        self._pool = pool

    async def commit(self, what: str) -> None:
        """Commit and give the connection back; `StorageError` unless it committed."""
        try:
            # a cancelled caller must not leave the commit half-known: wait for its end
            await asyncio.shield(self._commit())
        except psycopg.OperationalError as exc:
            msg = f"PostgreSQL storage lost its connection committing {what} (outcome unknown)"
            raise StorageError(f"{msg}: {exc}") from exc
        except (psycopg.Error, *_DATA_ERRORS) as exc:
            mapped = map_driver_error(exc, f"committing {what} (nothing was written)")
            raise (mapped or StorageError(str(exc))) from exc

    async def abort(self) -> None:
        """Roll back (as far as the connection still can) and give the connection back."""
        try:
            await _quietly(self.conn.rollback())
        finally:
            await self._pool.putconn(self.conn)

    async def _commit(self) -> None:
        try:
            await self.conn.commit()
        finally:
            await self._pool.putconn(self.conn)


async def _quietly(step: Awaitable[None]) -> None:
    """Run a clean-up step whose failure must not hide what the caller is reporting."""
    with contextlib.suppress(psycopg.Error):
        await step


# -- pool events ---------------------------------------------------------------------------

_KEY_HEAD: Final = (
    "(i.partition_key IS NULL OR NOT EXISTS (SELECT 1 FROM items e"
    " WHERE e.kind = i.kind AND e.job = i.job AND e.id = i.id"
    " AND e.partition_key = i.partition_key AND e.seq < i.seq))"
)
"""`items i` is its partition key's head: no earlier event of its key is still queued."""
_POOL_ACTIVE: Final = (
    "NOT EXISTS (SELECT 1 FROM instances r"
    " WHERE r.kind = p.kind AND r.job = p.job AND r.id = p.id AND r.status <> 'active')"
)
"""The pool `p` is not paused (a pool without a record is active)."""
_POOL_FREE: Final = (
    "(SELECT count(*) FROM items l WHERE l.lease_token IS NOT NULL"
    " AND l.kind = p.kind AND l.job = p.job AND l.id = p.id AND l.lease_expires_at > now())"
    " < p.concurrency"
)
"""Fewer of the pool `p`'s events than its concurrency hold a live lease."""


def _pool_params(
    pools: Mapping[InstanceKey, int],
) -> tuple[list[str], list[str], list[str], list[int]]:
    """The pools as four parallel arrays (kind, job, id, concurrency) for `unnest`."""
    keys = list(pools)
    return (
        [key.kind.value for key in keys],
        [key.job for key in keys],
        [key.id for key in keys],
        [pools[key] for key in keys],
    )


async def _count(conn: _Connection, pool: InstanceKey, field: str, amount: int) -> None:
    """Add `amount` to the integer `field` of the pool record's meta, in SQL."""
    if not amount:
        return
    # added in SQL: concurrent writes of one pool never lose a count
    await conn.execute(
        "UPDATE instances SET meta = CASE WHEN jsonb_typeof(meta) = 'object'"
        " THEN meta ELSE '{}'::jsonb END || jsonb_build_object(%s::text,"
        " CASE WHEN jsonb_typeof(meta -> %s) = 'number'"
        " THEN (meta ->> %s)::numeric ELSE 0 END + %s)"
        f" WHERE {_KEY}",
        (field, field, field, amount, *_key_params(pool)),
    )


_POOL_ITEMS: Final = "i.kind = %(kind)s AND i.job = %(job)s AND i.id = %(id)s"
_READY: Final = (
    f"{_POOL_ITEMS} AND NOT i.cancel_requested"
    " AND (i.lease_expires_at IS NULL OR i.lease_expires_at <= now())"
    " AND (i.available_at IS NULL OR i.available_at <= %(now)s)"
    f" AND {_KEY_HEAD}"
)
"""`items i` is a ready event of the pool (its slot and budget aside)."""


async def _claim_pool(
    conn: _Connection,
    pool: InstanceKey,
    concurrency: int,
    now: datetime,
    limit: int,
    lease: timedelta,
    rate: PoolRate | None,
) -> list[ItemClaim]:
    """Lease the ready events of one pool (the caller holds the pool's claim lock)."""
    kind, job, id = _key_params(pool)
    this_pool = "kind = %(kind)s AND job = %(job)s AND id = %(id)s"
    values: dict[str, object] = {
        "kind": kind,
        "job": job,
        "id": id,
        "concurrency": concurrency,
        "now": now,
        "limit": limit,
        "lease": lease,
    }
    cursor = await conn.execute(
        "WITH gone AS (DELETE FROM items i WHERE"
        f" {_POOL_ITEMS} AND i.cancel_requested AND (i.lease_expires_at IS NULL"
        " OR i.lease_expires_at <= now()) RETURNING 1) SELECT count(*) FROM gone",
        values,
    )
    row = await cursor.fetchone()
    await _count(conn, pool, "cancelled", 0 if row is None else _int(row[0]))
    if rate is not None and rate.per_key:
        return await _claim_per_key(conn, pool, rate, values)
    if rate is not None:
        budgets = await _budgets(conn, pool, rate, now)
        values["limit"] = min(limit, budgets.get("*", rate.limit))
    cursor = await conn.execute(
        "WITH ready AS (SELECT i.seq AS ready_seq FROM items i"
        f" WHERE {_READY}"
        f" AND NOT EXISTS (SELECT 1 FROM instances WHERE {this_pool} AND status <> 'active')"
        " ORDER BY i.priority DESC, i.seq"
        # the free slots: live leases are counted after the pool's lock was taken
        " LIMIT LEAST(%(limit)s, GREATEST(0, %(concurrency)s - (SELECT count(*) FROM items"
        f"  WHERE lease_token IS NOT NULL AND {this_pool} AND {_LIVE})))"
        " FOR UPDATE OF i SKIP LOCKED)"
        f" UPDATE items SET lease_token = {_NEW_TOKEN}, lease_expires_at = now() + %(lease)s,"
        " lease_abandoned = false FROM ready WHERE seq = ready_seq"
        f" RETURNING {_ITEM_COLUMNS}, lease_token, lease_expires_at, lease_abandoned",
        values,
    )
    return await _claimed(conn, pool, rate, now, cursor)


async def _claim_per_key(
    conn: _Connection, pool: InstanceKey, rate: PoolRate, values: dict[str, object]
) -> list[ItemClaim]:
    """Lease ready events of a pool whose rate limit is per partition key."""
    this_pool = "kind = %(kind)s AND job = %(job)s AND id = %(id)s"
    cursor = await conn.execute(
        f"SELECT NOT EXISTS (SELECT 1 FROM instances WHERE {this_pool} AND status <> 'active'),"
        f" (SELECT count(*) FROM items WHERE lease_token IS NOT NULL AND {this_pool}"
        f" AND {_LIVE})",
        values,
    )
    row = await cursor.fetchone()
    concurrency, limit = values["concurrency"], values["limit"]
    if row is None or row[0] is not True or not isinstance(concurrency, int):
        return []
    free = min(limit if isinstance(limit, int) else 0, concurrency - _int(row[1]))
    now = _time(values["now"])
    budgets = await _budgets(conn, pool, rate, now)
    spent = [b.removeprefix("k:") for b, left in budgets.items() if left <= 0 and b != "-"]
    keyless = min(free, budgets.get("-", rate.limit))
    candidates: list[tuple[int, int]] = []
    if free > 0:
        # each key has one ready event at most (its head): only keyless events share a budget
        kinds: tuple[tuple[LiteralString, int], ...] = (
            ("IS NOT NULL AND NOT (i.partition_key = ANY(%(spent)s))", free),
            ("IS NULL", keyless),
        )
        for partition, cap in kinds:
            if cap <= 0:
                continue
            cursor = await conn.execute(
                f"SELECT i.priority, i.seq FROM items i WHERE {_READY}"
                f" AND i.partition_key {partition}"
                " ORDER BY i.priority DESC, i.seq LIMIT %(cap)s FOR UPDATE OF i SKIP LOCKED",
                {**values, "spent": spent, "cap": cap},
            )
            candidates.extend((_int(p), _int(q)) for p, q in await cursor.fetchall())
    chosen = [seq for _, seq in sorted(candidates, key=lambda c: (-c[0], c[1]))[:free]]
    if not chosen:
        return []
    cursor = await conn.execute(
        f"UPDATE items SET lease_token = {_NEW_TOKEN}, lease_expires_at = now() + %(lease)s,"
        " lease_abandoned = false WHERE seq = ANY(%(chosen)s)"
        f" RETURNING {_ITEM_COLUMNS}, lease_token, lease_expires_at, lease_abandoned",
        {**values, "chosen": chosen},
    )
    return await _claimed(conn, pool, rate, now, cursor)


async def _claimed(
    conn: _Connection,
    pool: InstanceKey,
    rate: PoolRate | None,
    now: datetime,
    cursor: "psycopg.AsyncCursor[TupleRow]",
) -> list[ItemClaim]:
    """The claims a leasing statement returned; their starts recorded for a rate limit."""
    items = sorted((_item_of(row) for row in await cursor.fetchall()), key=_claim_order)
    if rate is not None and items:
        async with conn.cursor() as starts:
            await starts.executemany(
                "INSERT INTO rate_starts VALUES (%s, %s, %s, %s, %s)",
                [(*_key_params(pool), rate.bucket(item.partition_key), now) for item in items],
            )
    return [
        ItemClaim(pool=pool, token=item.lease.token, item=item)
        for item in items
        if item.lease is not None
    ]


async def _budgets(
    conn: _Connection, pool: InstanceKey, rate: PoolRate, now: datetime
) -> dict[str, int]:
    """How many more starts each budget of the pool allows at `now` (others: all)."""
    params = _key_params(pool)
    await conn.execute(
        f"DELETE FROM rate_starts WHERE {_KEY} AND started_at <= %s",
        (*params, rate.forget_before(now)),
    )
    cursor = await conn.execute(
        f"SELECT bucket, count(*) FROM rate_starts WHERE {_KEY} AND started_at > %s"
        " GROUP BY bucket",
        (*params, now - rate.period),
    )
    return {str(bucket): rate.limit - _int(used) for bucket, used in await cursor.fetchall()}


async def _rated_ready_at(
    conn: _Connection, pool: InstanceKey, concurrency: int, rate: PoolRate
) -> list[datetime]:
    """When each budget of a rate-limited pool can start its first waiting event."""
    kind, job, id = _key_params(pool)
    values = {"kind": kind, "job": job, "id": id, "concurrency": concurrency, "nth": rate.limit}
    bucket = (
        "CASE WHEN i.partition_key IS NULL THEN '-' ELSE 'k:' || i.partition_key END"
        if rate.per_key
        else "'*'"
    )
    # an event asked to stop (its worker gone) is due for removal, whatever the budget
    cursor = await conn.execute(
        f"SELECT CASE WHEN i.cancel_requested THEN NULL ELSE {bucket} END,"
        " min(coalesce(i.available_at, i.enqueued_at)) FROM items i"
        f" WHERE {_POOL_ITEMS} AND (i.lease_expires_at IS NULL OR i.lease_expires_at <= now())"
        f" AND {_KEY_HEAD}"
        " AND (SELECT p.concurrency FROM (SELECT %(kind)s AS kind, %(job)s AS job,"
        " %(id)s AS id, %(concurrency)s::int AS concurrency) AS p"
        f" WHERE {_POOL_ACTIVE} AND {_POOL_FREE}) IS NOT NULL"
        " GROUP BY 1",
        values,
    )
    ready = await cursor.fetchall()
    # the `limit`-th latest start of a budget holds it until it is `period` old
    cursor = await conn.execute(
        "SELECT bucket, started_at FROM (SELECT bucket, started_at, row_number() OVER"
        " (PARTITION BY bucket ORDER BY started_at DESC) AS nth FROM rate_starts"
        " WHERE kind = %(kind)s AND job = %(job)s AND id = %(id)s) AS latest"
        " WHERE nth = %(nth)s",
        values,
    )
    full = {str(b): _time(at) + rate.period for b, at in await cursor.fetchall()}
    times: list[datetime] = []
    for name, first in ready:
        reopens = None if name is None else full.get(str(name))
        at = _time(first)
        times.append(at if reopens is None else max(at, reopens))
    return times


def _claim_order(item: QueueItem) -> tuple[int, int]:
    return (-item.priority, item.seq)


def _item_params(key: InstanceKey, item: QueueItem) -> tuple[object, ...]:
    return (
        *_key_params(key),
        item.event_id,
        Jsonb(item.event),
        item.priority,
        item.partition_key,
        item.enqueued_at,
        item.available_at,
        item.attempt,
        item.retry_started_at,
        item.defects,
        item.last_error,
    )


async def _write_letters(
    conn: _Connection, letters: Sequence[DeadLetter], removed: Collection[str]
) -> None:
    """Add `letters` (replacing letters of the same ids) and delete `removed`."""
    replaced = [*removed, *(letter.id for letter in letters)]
    async with conn.cursor() as cursor:
        if replaced:
            await cursor.execute("DELETE FROM dead_letters WHERE letter_id = ANY(%s)", (replaced,))
        if letters:
            await cursor.executemany(
                f"INSERT INTO dead_letters ({_LETTER_COLUMNS})"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [_letter_params(letter) for letter in letters],
            )


async def _found_version(conn: _Connection) -> int:
    """The stored schema version, or 0 when there is no schema yet."""
    cursor = await conn.execute("SELECT to_regclass('durable_jobs_schema') IS NOT NULL")
    row = await cursor.fetchone()
    return 0 if row is None or not row[0] else await _stored_version(conn)


async def _stored_version(conn: _Connection) -> int:
    cursor = await conn.execute("SELECT max(version) FROM durable_jobs_schema")
    row = await cursor.fetchone()
    return 0 if row is None or row[0] is None else _int(row[0])


# -- the v1 -> v2 data upgrade -------------------------------------------------------------


async def _read_v1(conn: _Connection) -> v1.V1Rows:
    """Every row of a schema-1 database, as the shared upgrade reads them."""
    instances = await conn.execute(f"SELECT {_RECORD_COLUMNS} FROM instances")
    items = await conn.execute(
        "SELECT seq, kind, job, id, event_id, event, priority, partition_key, enqueued_at"
        " FROM queue_items"
    )
    seen = await conn.execute("SELECT kind, job, id, event_id, at FROM seen_events")
    letters = await conn.execute(f"SELECT seq, {_LETTER_COLUMNS} FROM dead_letters")
    return v1.V1Rows(
        instances=[_v1_instance(row) for row in await instances.fetchall()],
        items=[_v1_item(row) for row in await items.fetchall()],
        seen=[
            v1.SeenRow(kind=str(k), job=str(j), id=str(i), event_id=str(e), at=_time(at))
            for k, j, i, e, at in await seen.fetchall()
        ],
        letters=[_v1_letter(row) for row in await letters.fetchall()],
    )


def _v1_instance(row: TupleRow) -> v1.InstanceRow:
    kind, job, id, status, state, meta, alarm, attempt, retry_started, defects = row[:10]
    last_error, created, updated = row[10:13]
    return v1.InstanceRow(
        kind=str(kind),
        job=str(job),
        id=str(id),
        status=str(status),
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


def _v1_item(row: TupleRow) -> v1.V1ItemRow:
    seq, kind, job, id, event_id, event, priority, partition_key, enqueued = row
    return v1.V1ItemRow(
        seq=_int(seq),
        kind=str(kind),
        job=str(job),
        id=str(id),
        event_id=str(event_id),
        event=event,
        priority=_int(priority),
        partition_key=_text_or_none(partition_key),
        enqueued_at=_time(enqueued),
    )


def _v1_letter(row: TupleRow) -> v1.LetterRow:
    letter = _letter_of(row[1:])
    kind, job, id = _key_params(letter.key)
    return v1.LetterRow(
        seq=_int(row[0]),
        letter_id=letter.id,
        kind=kind,
        job=job,
        id=id,
        state=letter.state,
        meta=letter.meta,
        event=letter.event,
        error=letter.error,
        reason=letter.reason,
        attempts=letter.attempts,
        at=letter.at,
    )


async def _write_v2(conn: _Connection, rows: v1.V2Rows) -> None:
    """Replace every row with the upgraded ones (same transaction as the migration)."""
    for table in ("instances", "items", "seen_events", "dead_letters"):
        await conn.execute(f"DELETE FROM {table}")
    async with conn.cursor() as cursor:
        await cursor.executemany(
            f"INSERT INTO instances ({_RECORD_COLUMNS})"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    r.kind,
                    r.job,
                    r.id,
                    r.status,
                    Jsonb(r.state),
                    Jsonb(r.meta),
                    r.alarm_at,
                    r.attempt,
                    r.retry_started_at,
                    r.defects,
                    r.last_error,
                    r.created_at,
                    r.updated_at,
                )
                for r in rows.instances
            ],
        )
        await cursor.executemany(
            f"INSERT INTO items (kind, job, id, {_V2_ITEM_COLUMNS})"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    i.kind,
                    i.job,
                    i.id,
                    i.seq,
                    i.event_id,
                    Jsonb(i.event),
                    i.priority,
                    i.partition_key,
                    i.enqueued_at,
                    i.available_at,
                    i.attempt,
                    i.retry_started_at,
                    i.defects,
                    i.last_error,
                )
                for i in rows.items
            ],
        )
        await cursor.executemany(
            "INSERT INTO seen_events (kind, job, id, event_id, at) VALUES (%s, %s, %s, %s, %s)",
            [(s.kind, s.job, s.id, s.event_id, s.at) for s in rows.seen],
        )
        await cursor.executemany(
            f"INSERT INTO dead_letters (seq, {_LETTER_COLUMNS})"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    d.seq,
                    d.letter_id,
                    d.kind,
                    d.job,
                    d.id,
                    Jsonb(d.state),
                    Jsonb(d.meta),
                    Jsonb(d.event),
                    d.error,
                    d.reason,
                    d.attempts,
                    d.at,
                )
                for d in rows.letters
            ],
        )


# -- instance blocks -----------------------------------------------------------------------


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
            f"SELECT {_ITEM_COLUMNS}, {_LIVE_LEASE}"
            f" FROM items WHERE {_KEY} AND NOT (event_id = ANY(%s))"
            " ORDER BY priority DESC, seq LIMIT 1",
            (*_key_params(key), list(skip)),
        )
        row = await cursor.fetchone()
        return None if row is None else _item_of(row)

    async def queue_has(self, key: InstanceKey, event_id: str) -> bool:
        cursor = await self._conn.execute(
            f"SELECT 1 FROM items WHERE {_KEY} AND event_id = %s",
            (*_key_params(key), event_id),
        )
        return await cursor.fetchone() is not None

    async def queue_size(self, key: InstanceKey) -> int:
        cursor = await self._conn.execute(
            f"SELECT count(*) FROM items WHERE {_KEY}", _key_params(key)
        )
        row = await cursor.fetchone()
        return 0 if row is None else _int(row[0])

    async def max_seq(self) -> int:
        cursor = await self._conn.execute("SELECT coalesce(max(seq), 0) FROM items")
        row = await cursor.fetchone()
        return 0 if row is None else _int(row[0])


class _ViewAtHome:
    """A block's reads, run on the loop of its connection (the body may run on any loop)."""

    def __init__(self, view: _ConnectionView, home: Home) -> None:
        self._view = view
        self._home = home

    async def has_seen(self, key: InstanceKey, event_id: str) -> bool:
        return await self._home.call(lambda: self._view.has_seen(key, event_id))

    async def queue_head(self, key: InstanceKey, skip: frozenset[str]) -> QueueItem | None:
        return await self._home.call(lambda: self._view.queue_head(key, skip))

    async def queue_has(self, key: InstanceKey, event_id: str) -> bool:
        return await self._home.call(lambda: self._view.queue_has(key, event_id))

    async def queue_size(self, key: InstanceKey) -> int:
        return await self._home.call(lambda: self._view.queue_size(key))

    async def max_seq(self) -> int:
        return await self._home.call(self._view.max_seq)


class _PostgresBlock:
    """`async with storage.instance(key) as tx`: lock, read, buffer, write, commit."""

    def __init__(
        self,
        db: _Database,
        home: Home,
        ensure_open: Callable[[], Awaitable[None]],
        key: InstanceKey,
    ) -> None:
        self._db = db
        self._home = home
        self._ensure_open = ensure_open
        self._key = key
        self._open: _Transaction | None = None
        self._committed: InstanceRecord | None = None
        self._tx: BufferedTransaction | None = None

    async def __aenter__(self) -> InstanceTransaction:
        # the block's connection lives on the pool's loop: open and end it there
        try:
            return await self._home.call(self._enter)
        except asyncio.CancelledError:
            if self._open is not None:  # it opened as the caller was cancelled: end it
                await asyncio.shield(self._home.call(self._open.abort))
                self._open = None
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._home.call(lambda: self._exit(exc_type))

    async def _enter(self) -> InstanceTransaction:
        if self._open is not None:
            msg = "a storage.instance(...) block cannot be entered twice"
            raise RuntimeError(msg)
        await self._ensure_open()
        tries = 0
        while True:
            opened = await self._db.begin()
            try:
                record = await self._lock_and_read(opened.conn)
            except psycopg.OperationalError as exc:
                # Nothing was written yet, so a connection that died (a restarted server, a
                # killed backend, a failover) is replaced and the opening tried again.
                await opened.abort()
                if tries == len(_RETRY_PAUSES):
                    msg = f"PostgreSQL storage failed opening {self._key}: {exc}"
                    raise StorageError(msg) from exc
                await asyncio.sleep(_RETRY_PAUSES[tries])
                tries += 1
                continue
            except BaseException as exc:
                await opened.abort()
                mapped = map_driver_error(exc, f"opening {self._key}")
                if mapped is not None:
                    raise mapped from exc
                raise
            break
        self._open = opened
        self._committed = record
        view = _ViewAtHome(_ConnectionView(opened.conn), self._home)
        self._tx = BufferedTransaction(view, self._key, record)
        return self._tx

    async def _exit(self, exc_type: type[BaseException] | None) -> None:
        opened, tx = self._open, self._tx
        if opened is None or tx is None:
            return
        changes = tx.close()
        if exc_type is not None:
            await opened.abort()
            return
        try:
            if await _apply(opened.conn, self._key, changes, self._committed):
                await self._db.notify(opened.conn)
        except BaseException as error:
            await opened.abort()
            mapped = map_driver_error(error, f"writing {self._key}")
            if mapped is not None:
                raise mapped from error
            raise
        await opened.commit(str(self._key))

    async def _lock_and_read(self, conn: _Connection) -> InstanceRecord | None:
        await self._db.scope(conn)
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            (_lock_name(self._db.schema, "instance", self._key),),
        )
        cursor = await conn.execute(
            f"SELECT {_RECORD_COLUMNS}, {_LIVE_LEASE} FROM instances WHERE {_KEY} FOR UPDATE",
            _key_params(self._key),
        )
        row = await cursor.fetchone()
        return None if row is None else _record_of(row)


async def _apply(
    conn: _Connection, key: InstanceKey, changes: Changes, committed: InstanceRecord | None
) -> bool:
    """
    Write one block's changes; True when other workers should look again.

    They should when the block gives them something to do (an alarm earlier than they
    know of, an instance made active, a lease released, events pushed) or ends a lease
    somebody else holds (revoked or purged: its worker learns at once).
    """
    params = _key_params(key)
    if changes.fence is not None:
        fenced = f"{_KEY} AND lease_token = %s AND {_LIVE}"
        if changes.release:
            cursor = await conn.execute(
                "UPDATE instances SET lease_token = NULL, lease_expires_at = NULL"
                f" WHERE {fenced} RETURNING 1",
                (*params, changes.fence),
            )
            held = await cursor.fetchone() is not None
        else:
            cursor = await conn.execute(
                f"SELECT 1 FROM instances WHERE {fenced}", (*params, changes.fence)
            )
            held = await cursor.fetchone() is not None
        if not held:
            msg = f"the lease of {key} was lost before its finish; nothing was written"
            raise LeaseLostError(msg)
    if changes.revoke:
        await conn.execute(
            f"UPDATE instances SET lease_token = NULL, lease_expires_at = NULL WHERE {_KEY}",
            params,
        )
    if changes.record_changed:
        await _write_record(conn, key, changes.record)
    async with conn.cursor() as cursor:
        if changes.queue_purged:
            await cursor.execute(f"DELETE FROM items WHERE {_KEY}", params)
        if changes.removed:
            await cursor.execute(
                f"DELETE FROM items WHERE {_KEY} AND event_id = ANY(%s)",
                (*params, list(changes.removed)),
            )
        if changes.pushed:
            await cursor.executemany(
                "INSERT INTO items (kind, job, id, event_id, event, priority,"
                " partition_key, enqueued_at, available_at, attempt, retry_started_at,"
                " defects, last_error)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [_item_params(key, item) for item in changes.pushed],
            )
        if changes.remembered:
            await cursor.executemany(
                "INSERT INTO seen_events VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (kind, job, id, event_id) DO UPDATE SET at = EXCLUDED.at",
                [(*params, event_id, at) for event_id, at in changes.remembered],
            )
    await _write_letters(conn, changes.letters, changes.letters_removed)
    return _wakes_workers(changes, committed)


def _wakes_workers(changes: Changes, committed: InstanceRecord | None) -> bool:
    if changes.pushed:
        return True
    held = None if committed is None else committed.lease
    purged = changes.record_changed and changes.record is None
    if held is not None and held.token != changes.fence and (changes.revoke or purged):
        return True  # a lease someone else holds is gone: its worker must learn at once
    final = changes.record if changes.record_changed else committed
    if final is None or final.status is not InstanceStatus.ACTIVE:
        return False
    if committed is None or committed.status is not InstanceStatus.ACTIVE:
        # claimable from now on: its alarm, or a resumed pool's events
        return final.alarm_at is not None or final.key.kind is JobKind.WORKER_POOL
    if final.alarm_at is None:
        return False
    if held is not None:
        # workers do not count a leased alarm: they learn of it when the lease ends
        return changes.revoke or (changes.fence is not None and changes.release)
    # they know every other alarm, and a later one finds them awake in time
    return committed.alarm_at is None or final.alarm_at < committed.alarm_at


async def _write_record(conn: _Connection, key: InstanceKey, record: InstanceRecord | None) -> None:
    """Insert, replace or delete the record; its lease is left as it is."""
    params = _key_params(key)
    if record is None:
        await conn.execute(f"DELETE FROM instances WHERE {_KEY}", params)
        return
    await conn.execute(
        f"INSERT INTO instances ({_RECORD_COLUMNS})"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (kind, job, id) DO UPDATE SET status = EXCLUDED.status,"
        " state = EXCLUDED.state, meta = EXCLUDED.meta, alarm_at = EXCLUDED.alarm_at,"
        " attempt = EXCLUDED.attempt, retry_started_at = EXCLUDED.retry_started_at,"
        " defects = EXCLUDED.defects, last_error = EXCLUDED.last_error,"
        " created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at",
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


if TYPE_CHECKING:
    # PostgresStorage is a `Storage` only structurally: make both checkers prove it here.
    _conforms: Storage = PostgresStorage("")
