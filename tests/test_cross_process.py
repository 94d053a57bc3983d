"""
The execution model across processes: a client process never waits for, nor runs, user code;
a worker's run holds a lease, not a lock; a run that lost its lease writes nothing.

Workers are `durable-jobs worker xproc_app:engine` subprocesses; this process is only a client
(`Client(jobs=..., storage=...)`, no deps, no worker). Every callback writes what it did and in
which process to a SQLite sink file, which the tests read. Nothing asserts on durations: "the
add returned while the flush was still running" is read off the sink.
"""

import asyncio
import bisect
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from pathlib import Path

import attrs
import psycopg
import pytest

import xproc_app
from durable_jobs import Client, SqliteStorage, Storage
from durable_jobs.postgres import PostgresStorage
from pg_server import postgres_dsn


TESTS = Path(__file__).resolve().parent
WAIT = 30.0
"""How long any single expected effect may take before the test fails (not a measurement)."""


@attrs.define
class Setup:
    """One backend's storage for the client, and how workers reach it."""

    kind: str
    storage: Storage
    where: str
    schema: str
    sink: Path
    logs: Path
    workers: list[subprocess.Popen[bytes]] = attrs.field(factory=list)

    def start_worker(self, *, lease: str, hold: float, name: str) -> subprocess.Popen[bytes]:
        where = self.where
        if self.kind == "postgres":
            where = psycopg.conninfo.make_conninfo(where, application_name=name)
        env = {
            **os.environ,
            "XPROC_STORAGE": f"{self.kind}:{where}",
            "XPROC_SCHEMA": self.schema,
            "XPROC_SINK": str(self.sink),
            "XPROC_LEASE": lease,
            "XPROC_HOLD": str(hold),
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        }
        log = (self.logs / f"{name}.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "durable_jobs", "worker", "xproc_app:engine"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.workers.append(worker)
        return worker

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs_text(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
            for path in sorted(self.logs.glob("*.log"))
        )

    def runs(self, job: str) -> list[tuple[str, str, int, int, float, float | None]]:
        """(instance, batch, events, pid, started, ended) of every run of `job`, in order."""
        try:
            db = sqlite3.connect(self.sink, timeout=30)
        except sqlite3.Error:
            return []
        try:
            rows = db.execute(
                "SELECT instance, batch, events, pid, started, ended FROM runs"
                " WHERE job = ? ORDER BY started",
                (job,),
            ).fetchall()
        except sqlite3.OperationalError:  # no worker has written yet
            return []
        finally:
            db.close()
        return [(str(a), str(b), int(c), int(d), float(e), f) for a, b, c, d, e, f in rows]

    def client(self) -> Client:
        return Client(jobs=list(xproc_app.JOBS), storage=self.storage)


async def eventually(what: str, check: Callable[[], bool], setup: Setup) -> None:
    """Wait until `check()` holds; fail with the workers' logs after `WAIT` seconds."""
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {WAIT} s\n{setup.logs_text()}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def _setup(kind: str, tmp_path: Path) -> AsyncGenerator[Setup]:
    schema = f"x_{uuid.uuid4().hex[:16]}"
    if kind == "sqlite":
        db = tmp_path / "jobs.db"
        storage: Storage = SqliteStorage(db)
        where = str(db)
    else:
        where = postgres_dsn()
        storage = PostgresStorage(where, schema=schema, pool_size=4)
    logs = tmp_path / "logs"
    logs.mkdir()
    made = Setup(kind, storage, where, schema, tmp_path / "sink.db", logs)
    try:
        yield made
    finally:
        for worker in made.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGKILL)
                worker.wait(timeout=10)
        await storage.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def setup(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncGenerator[Setup]:
    """Workers and a client on SQLite, then on PostgreSQL."""
    kind: str = request.param
    async with _setup(kind, tmp_path) as made:
        yield made


@pytest.fixture
async def pg_setup(tmp_path: Path) -> AsyncGenerator[Setup]:
    """Workers and a client on PostgreSQL (server connections are a PostgreSQL matter)."""
    async with _setup("postgres", tmp_path) as made:
        yield made


async def test_add_during_a_running_flush_returns_while_the_flush_runs(setup: Setup) -> None:
    """
    An `add` to an id whose flush is running commits at once into the next batch.

    Before, the flush held the instance (a lock row on SQLite, a row lock and a transaction
    on PostgreSQL) for the whole `execute`, and the add waited for it to end.
    """
    setup.start_worker(lease="30 seconds", hold=3, name="worker")
    slow = setup.client().debounce(xproc_app.SLOW)
    first = await slow.add("acct", "e1")
    await slow.flush("acct")
    await eventually("the first flush started", lambda: len(setup.runs("slow")) == 1, setup)

    second = await slow.add("acct", "e2")

    ((_, batch, events, _, _, finished),) = setup.runs("slow")
    assert finished is None, "the add waited for the flush to end"
    assert (batch, events) == (first.batch_id, 1)
    assert second.created
    assert second.batch_id not in (None, first.batch_id)
    status = await slow.status("acct")
    assert [(b.batch_id, b.stage) for b in status.batches] == [
        (first.batch_id, "flushing"),
        (second.batch_id, "open"),
    ]
    # the second batch flushes after the first, never at the same time
    await slow.flush("acct")
    await eventually(
        "both flushes ended",
        lambda: [run[5] is not None for run in setup.runs("slow")] == [True, True],
        setup,
    )
    one, two = setup.runs("slow")
    assert (one[1], two[1]) == (first.batch_id, second.batch_id)
    assert one[5] is not None
    assert two[4] >= one[5]


async def test_max_events_is_flushed_by_a_worker_not_by_the_adding_process(setup: Setup) -> None:
    """
    Reaching `max_events` makes the batch due; a worker flushes it, never the caller.

    Before, the `add` that reached `max_events` ran `execute` (with its deps) in the process
    that called it: a web request ended up sending the batch itself.
    """
    worker = setup.start_worker(lease="30 seconds", hold=0.05, name="worker")
    slow = setup.client().debounce(xproc_app.SLOW)
    for n in range(3):  # max_events=3
        added = await slow.add("burst", f"e{n}")
    assert added.sealed
    await eventually("the full batch was flushed", lambda: len(setup.runs("slow")) == 1, setup)
    ((_, batch, events, pid, _, _),) = setup.runs("slow")
    assert (batch, events) == (added.batch_id, 3)
    assert pid == worker.pid
    assert pid != os.getpid()


async def test_a_blocking_sync_execute_longer_than_the_lease_never_runs_twice(
    setup: Setup,
) -> None:
    """
    A sync `execute` blocks a thread of the pool, not the worker's loop: its lease keeps
    being renewed, so a second worker never takes the instance while it runs.

    Before, a sync `execute` ran on the event loop; one longer than the lock lease starved
    the heartbeat and another process ran the same instance at the same time.
    """
    for name in ("worker-a", "worker-b"):
        setup.start_worker(lease="1 second", hold=2.5, name=name)
    ticks = setup.client().continuous(xproc_app.BLOCKING)
    await ticks.start("t", 0)  # due now

    async def done() -> bool:
        return await ticks.get_state("t") == 1

    deadline = time.monotonic() + WAIT
    while not await done():
        if time.monotonic() > deadline:
            pytest.fail(f"the run did not finish\n{setup.logs_text()}")
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.5)  # more than a lease: a wrongly expired claim would run again
    runs = setup.runs("blocking")
    assert len(runs) == 1, runs
    assert runs[0][5] is not None
    assert "job.lease_lost" not in setup.logs_text()


async def test_a_sync_execute_past_its_timeout_holds_its_instance_until_it_returns(
    setup: Setup,
) -> None:
    """
    A sync `execute` past its `timeout` (1 s) cannot be stopped: its result is discarded and
    its instance stays held, marked abandoned, until the thread returns; no other worker
    runs it meanwhile. The timeout is a defect: the defect policy's retry runs it again.
    """
    for name in ("worker-a", "worker-b"):
        setup.start_worker(lease="1 second", hold=2.5, name=name)
    sleepy = setup.client().continuous(xproc_app.SLEEPY)
    await sleepy.start("s", 0)
    await eventually("the first run started", lambda: len(setup.runs("sleepy")) == 1, setup)
    deadline = time.monotonic() + WAIT
    while not (await sleepy.status("s")).abandoned:
        if time.monotonic() > deadline:
            pytest.fail(f"the run was not marked abandoned\n{setup.logs_text()}")
        await asyncio.sleep(0.02)
    assert setup.runs("sleepy")[0][5] is None  # its thread still runs
    while await sleepy.get_state("s") != 1:
        if time.monotonic() > deadline:
            pytest.fail(f"the retry did not run\n{setup.logs_text()}")
        await asyncio.sleep(0.05)
    first, second = setup.runs("sleepy")
    assert first[5] is not None
    assert second[4] >= first[5]  # never beside the abandoned thread
    assert "reason=timeout" in setup.logs_text()


def _backends(setup: Setup, name: str) -> int:
    """Terminate every server connection of the worker named `name`; how many there were."""
    with psycopg.connect(setup.where, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (name,),
        ).fetchall()
    return len(rows)


async def test_killed_backends_for_less_than_the_lease_do_not_give_the_run_away(
    pg_setup: Setup,
) -> None:
    """
    Every server connection of a worker killed once while its run is in progress: the lease
    is a row, not a connection, so the run keeps it, finishes and is applied, once.

    Before, the run's row lock went with its connection and another worker ran the
    instance again while the first run was still going.
    """
    setup = pg_setup
    setup.start_worker(lease="2 seconds", hold=1.5, name="victim")
    setup.start_worker(lease="2 seconds", hold=1.5, name="bystander")
    stamp = setup.client().continuous(xproc_app.STAMP)
    await stamp.start("s", 0)
    await eventually("the run started", lambda: len(setup.runs("stamp")) == 1, setup)
    runner = setup.runs("stamp")[0][3]
    name = "victim" if runner == setup.workers[0].pid else "bystander"
    assert _backends(setup, name) >= 1
    await eventually(
        "the run ended and was applied",
        lambda: setup.runs("stamp")[0][5] is not None,
        setup,
    )
    deadline = time.monotonic() + WAIT
    while await stamp.get_state("s") != runner:
        if time.monotonic() > deadline:
            pytest.fail(f"the run's result was not applied\n{setup.logs_text()}")
        await asyncio.sleep(0.05)
    await asyncio.sleep(2.5)  # more than a lease: a claim wrongly given up would run again
    assert len(setup.runs("stamp")) == 1
    assert "job.lease_lost" not in setup.logs_text()


async def test_killed_backends_for_longer_than_the_lease_refuse_the_stale_finish(
    pg_setup: Setup,
) -> None:
    """
    A worker cut off from the server for longer than the lease loses its run: another worker
    runs the instance, and the cut-off run's result (a sync run cannot be stopped) is
    discarded and reported, never applied.
    """
    setup = pg_setup
    victim = setup.start_worker(lease="1 second", hold=4, name="victim")
    stamp = setup.client().continuous(xproc_app.STAMP)
    await stamp.start("s", 0)
    await eventually("the victim's run started", lambda: len(setup.runs("stamp")) == 1, setup)
    assert setup.runs("stamp")[0][3] == victim.pid
    rescuer = setup.start_worker(lease="1 second", hold=0.2, name="rescuer")
    cut_until = time.monotonic() + 3.0  # three leases
    while time.monotonic() < cut_until:
        _backends(setup, "victim")
        await asyncio.sleep(0.02)
    await eventually(
        "the rescuer ran the instance",
        lambda: any(run[3] == rescuer.pid and run[5] is not None for run in setup.runs("stamp")),
        setup,
    )
    await eventually("the victim's run ended", lambda: setup.runs("stamp")[0][5] is not None, setup)
    await eventually(
        "the victim reported its lost lease", lambda: "job.lease_lost" in setup.log("victim"), setup
    )
    assert await stamp.get_state("s") == rescuer.pid


def _most_in_a_period(times: list[float], period: float) -> int:
    """The most of `times` in any half-open window [t, t + period) starting at one of them."""
    ordered = sorted(times)
    return max(
        (bisect.bisect_left(ordered, t + period) - i for i, t in enumerate(ordered)), default=0
    )


async def test_a_rate_limit_holds_across_three_workers(setup: Setup) -> None:
    """
    `RateLimit(limit=3, period="1 second")` on a pool with `concurrency=10`, served by three
    worker processes (on SQLite, then on PostgreSQL): in any period at most 3 events start,
    counted on the claims (the engine times the storage's budget uses, recorded by every
    worker) and every event runs.
    An execution starts a moment after its claim (the worker's own scheduling), so execute
    start times, printed beside, can bunch more closely than the claims.
    """
    for n in range(3):
        setup.start_worker(lease="30 seconds", hold=0, name=f"worker-{n}")
    pool = setup.client().worker_pool(xproc_app.RATED)
    await pool.enqueue_many([f"e{n}" for n in range(15)])
    await eventually("every event ran", lambda: len(setup.runs("rated")) == 15, setup)

    with contextlib.closing(sqlite3.connect(setup.sink, timeout=30)) as db:
        claims = db.execute("SELECT pid, at FROM claims WHERE job = 'rated'").fetchall()
    assert len(claims) == 15
    assert len({pid for pid, _ in claims}) > 1, "one worker took every claim"
    most = _most_in_a_period([at for _, at in claims], 1.0)
    runs = _most_in_a_period([run[4] for run in setup.runs("rated")], 1.0)
    print(f"rate limit 3/s, 3 workers: at most {most} claims ({runs} execute starts) in 1 s")
    assert most <= 3
