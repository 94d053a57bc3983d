"""
The baseline of the per-kind throughput rows: a minimal claim -> run -> finish loop.

Written by hand on the same database, it does per execution the least a fenced-lease
worker must do: one short claim transaction that leases the earliest due row with a new
random token (and reads its state), a no-op "run" (the state is decoded, nothing else),
and one fenced finish transaction that writes the state back, clears the alarm and the
lease, and commits only if the token still holds a live lease (it checks the row count).
`items` rows are due when the loop starts; it runs until none is left.

SQLite: sqlite3 on the calling thread, one connection (WAL, `synchronous=NORMAL`, as the
storage uses), `BEGIN IMMEDIATE` ... `COMMIT` per transaction. PostgreSQL: psycopg async,
each statement its own (autocommit) transaction; `lanes` connections run the loop at once,
claims with `FOR UPDATE SKIP LOCKED`.
"""

import asyncio
import json
import sqlite3
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from ._harness import quiet


LEASE = timedelta(seconds=30)
"""The lease the loop takes (the engine's default); it never expires here."""
LEASE_US = LEASE // timedelta(microseconds=1)

_SQLITE_CLAIM = (
    "SELECT id, state FROM jobs WHERE alarm_at IS NOT NULL AND alarm_at <= ?"
    " AND (lease_token IS NULL OR lease_expires_at <= ?) ORDER BY alarm_at LIMIT 1"
)
_SQLITE_FINISH = (
    "UPDATE jobs SET state = ?, alarm_at = NULL, lease_token = NULL, lease_expires_at = NULL"
    " WHERE id = ? AND lease_token = ? AND lease_expires_at > ?"
)


def _now_us() -> int:
    return time.time_ns() // 1000


def _sqlite_table(conn: sqlite3.Connection, items: int) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, state TEXT NOT NULL, alarm_at INTEGER,"
        " lease_token TEXT, lease_expires_at INTEGER) WITHOUT ROWID"
    )
    conn.execute("CREATE INDEX jobs_alarm ON jobs (alarm_at) WHERE alarm_at IS NOT NULL")
    now = _now_us()
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO jobs VALUES (?, ?, ?, NULL, NULL)",
        [(f"job-{n:06d}", json.dumps({"n": n}), now) for n in range(items)],
    )
    conn.execute("COMMIT")


def _sqlite_step(conn: sqlite3.Connection) -> bool:
    """One claim -> run -> finish; False when nothing was due."""
    conn.execute("BEGIN IMMEDIATE")
    now = _now_us()
    row = conn.execute(_SQLITE_CLAIM, (now, now)).fetchone()
    if row is None:
        conn.execute("COMMIT")
        return False
    id, text = row
    token = uuid.uuid4().hex
    conn.execute(
        "UPDATE jobs SET lease_token = ?, lease_expires_at = ? WHERE id = ?",
        (token, now + LEASE_US, id),
    )
    conn.execute("COMMIT")
    state = json.loads(text)  # the "run"
    conn.execute("BEGIN IMMEDIATE")
    cursor = conn.execute(
        _SQLITE_FINISH, (json.dumps(state, separators=(",", ":")), id, token, _now_us())
    )
    if cursor.rowcount != 1:
        conn.execute("ROLLBACK")
        msg = f"the minimal loop lost its lease on {id}"
        raise RuntimeError(msg)
    conn.execute("COMMIT")
    return True


def sqlite_loop(items: int) -> float:
    """Executions per second of the minimal loop draining `items` due rows on SQLite."""
    with tempfile.TemporaryDirectory(prefix="bench-minimal-") as folder:
        conn = sqlite3.connect(Path(folder) / "minimal.db", isolation_level=None)
        try:
            _sqlite_table(conn, items)
            quiet()
            started = time.perf_counter()
            done = 0
            while _sqlite_step(conn):
                done += 1
            elapsed = time.perf_counter() - started
        finally:
            conn.close()
    if done != items:
        msg = f"the minimal loop ran {done} of {items} rows"
        raise RuntimeError(msg)
    return items / elapsed


_PG_CLAIM = (
    "UPDATE jobs SET lease_token = %s, lease_expires_at = now() + %s"
    " WHERE id = (SELECT id FROM jobs WHERE alarm_at <= %s"
    " AND (lease_token IS NULL OR lease_expires_at <= now())"
    " ORDER BY alarm_at LIMIT 1 FOR UPDATE SKIP LOCKED)"
    " RETURNING id, state"
)
_PG_FINISH = (
    "UPDATE jobs SET state = %s, alarm_at = NULL, lease_token = NULL, lease_expires_at = NULL"
    " WHERE id = %s AND lease_token = %s AND lease_expires_at > now()"
)


async def _pg_lane(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> int:
    done = 0
    while True:
        token = uuid.uuid4().hex
        cursor = await conn.execute(_PG_CLAIM, (token, LEASE, datetime.now(UTC)))
        row = await cursor.fetchone()
        if row is None:
            return done
        id, state = row
        # the "run": the state arrives decoded (jsonb); it is written back as it is
        cursor = await conn.execute(_PG_FINISH, (json.dumps(state), id, token))
        if cursor.rowcount != 1:
            msg = f"the minimal loop lost its lease on {id}"
            raise RuntimeError(msg)
        done += 1


async def postgres_loop(dsn: str, items: int, lanes: int) -> float:
    """Executions per second of `lanes` minimal loops draining `items` due rows on PostgreSQL."""
    schema = f"minimal_{uuid.uuid4().hex[:12]}"
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
        await admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        await admin.execute(
            sql.SQL(
                "CREATE TABLE {}.jobs (id text PRIMARY KEY, state jsonb NOT NULL,"
                " alarm_at timestamptz, lease_token text, lease_expires_at timestamptz)"
            ).format(sql.Identifier(schema))
        )
        await admin.execute(
            sql.SQL("CREATE INDEX ON {}.jobs (alarm_at) WHERE alarm_at IS NOT NULL").format(
                sql.Identifier(schema)
            )
        )
        await admin.execute(
            sql.SQL(
                "INSERT INTO {}.jobs SELECT 'job-' || n, jsonb_build_object('n', n), now(),"
                " NULL, NULL FROM generate_series(1, %s) AS n"
            ).format(sql.Identifier(schema)),
            (items,),
        )
    where = make_conninfo(dsn, options=f"-c search_path={schema}")
    connections = [
        await psycopg.AsyncConnection.connect(where, autocommit=True) for _ in range(lanes)
    ]
    try:
        quiet()
        started = time.perf_counter()
        done = await asyncio.gather(*(_pg_lane(conn) for conn in connections))
        elapsed = time.perf_counter() - started
    finally:
        for conn in connections:
            await conn.close()
    if sum(done) != items:
        msg = f"the minimal loops ran {sum(done)} of {items} rows"
        raise RuntimeError(msg)
    return items / elapsed
