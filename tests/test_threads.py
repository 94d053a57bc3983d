"""
Clients from many threads and many event loops, on every backend: nothing lost, nothing hung.

Eight threads make 200 calls each while a worker on the test's own loop keeps running due
work on the same storage. `SyncClient` calls run on the process's portal loop; the async
client is also called with one `asyncio.run` per call, as a WSGI view wrapping it would
(0.1.0 failed there: "bound to a different event loop" errors, and threads that hung). At
the end every accepted event has run exactly once.
"""

import asyncio
import contextlib
import inspect
import itertools
import threading
import time
from collections import Counter
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Never

import pytest

from durable_jobs import (
    ContinuousClient,
    Debounce,
    DebounceClient,
    DebounceExecuteContext,
    Engine,
    MemoryStorage,
    Ok,
    SqliteStorage,
    Storage,
    SyncClient,
    SyncContinuousClient,
    SyncDebounceClient,
    SyncTaskClient,
    SyncWorkerPoolClient,
    TaskClient,
    WorkerPool,
    WorkerPoolClient,
    WorkerPoolContext,
)
from durable_jobs.postgres import PostgresStorage
from durable_jobs.testing import TestClock
from pg_server import postgres_dsn


THREADS = 8
CALLS = 200
LOOP_PER_CALL = 50
HANG_GUARD = 120.0
"""Seconds before a thread that never returns fails the test (never reached when right)."""


class Seen:
    """What the jobs ran, counted across threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: Counter[str] = Counter()
        self.flushed = 0

    def work(self, ctx: WorkerPoolContext[str]) -> Ok[None]:
        with self.lock:
            self.events[ctx.event] += 1
        return Ok(None)

    def flush(self, ctx: DebounceExecuteContext[int]) -> Ok[None]:
        with self.lock:
            self.flushed += ctx.event_count
        return Ok(None)


def jobs(
    seen: Seen,
) -> tuple[WorkerPool[str, None, Never, object], Debounce[int, int, Never, object]]:
    pool = WorkerPool(name="uploads", event=str, concurrency=4, execute=seen.work)
    digest = Debounce(
        name="digest", event=int, flush_after="1 hour", max_events=10_000, execute=seen.flush
    )
    return pool, digest


@contextlib.asynccontextmanager
async def opened(backend: str, tmp: Path) -> AsyncGenerator[Storage]:
    storage: Storage
    if backend == "memory":
        storage = MemoryStorage()
    elif backend == "sqlite":
        storage = SqliteStorage(tmp / "jobs.db")
    else:
        storage = PostgresStorage(postgres_dsn(), schema=f"threads_{next(_SCHEMAS)}")
    try:
        yield storage
    finally:
        await storage.close()


BACKENDS = ["memory", "sqlite", "postgres"]
_SCHEMAS = itertools.count()


async def in_threads(
    call: Callable[[int, int], None], worker: Engine[None], calls: int = CALLS
) -> list[str]:
    """Run `call(thread, n)` `calls` times in each of THREADS threads while `worker` serves."""
    errors: list[str] = []

    def thread_main(thread: int) -> None:
        for n in range(calls):
            try:
                call(thread, n)
            except Exception as exc:  # counted and reported, never lost
                errors.append(f"{type(exc).__name__}: {exc}")

    # daemon threads: one that hangs fails the test (HANG_GUARD) and cannot block the exit
    threads = [threading.Thread(target=thread_main, args=(t,), daemon=True) for t in range(THREADS)]
    # a worker on this loop, woken by the threads' calls, runs what they make due
    async with worker:
        for thread in threads:
            thread.start()
        # bounded joins: a hung thread is counted, and no helper thread waits for it forever
        deadline = time.monotonic() + HANG_GUARD
        for thread in threads:
            await asyncio.to_thread(thread.join, max(deadline - time.monotonic(), 0.0))
    hung = [thread.name for thread in threads if thread.is_alive()]
    assert hung == [], f"hung threads: {hung}"
    return errors


async def check_all_ran(
    engine: Engine[None], clock: TestClock, seen: Seen, calls: int = CALLS
) -> None:
    await clock.advance("1 hour")  # the debounce batches fall due, and anything left runs
    expected = {f"e{t}-{n}": 1 for t in range(THREADS) for n in range(0, calls, 2)}
    assert seen.events == Counter(expected)
    assert seen.flushed == THREADS * calls // 2
    assert (await engine.dead_letters()) == []


@pytest.mark.parametrize("backend", BACKENDS)
async def test_sync_client_from_eight_threads(backend: str, tmp_path: Path) -> None:
    seen = Seen()
    pool, digest = jobs(seen)
    clock = TestClock()
    async with opened(backend, tmp_path) as storage:
        engine = Engine(jobs=[pool, digest], storage=storage, clock=clock)
        client = engine.sync_client

        def call(thread: int, n: int) -> None:
            if n % 2 == 0:
                assert not client.worker_pool(pool).enqueue(f"e{thread}-{n}").duplicate
            else:
                client.debounce(digest).add(f"team-{thread}", n, event_id=f"a{thread}-{n}")

        errors = await in_threads(call, engine)
        assert errors == []
        await check_all_ran(engine, clock, seen)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_async_client_with_a_loop_per_call(backend: str, tmp_path: Path) -> None:
    seen = Seen()
    pool, digest = jobs(seen)
    clock = TestClock()
    async with opened(backend, tmp_path) as storage:
        engine = Engine(jobs=[pool, digest], storage=storage, clock=clock)
        client = engine.client

        def call(thread: int, n: int) -> None:
            if n % 2 == 0:
                asyncio.run(client.worker_pool(pool).enqueue(f"e{thread}-{n}"))
            else:
                coroutine = client.debounce(digest).add(f"team-{thread}", n, f"a{thread}-{n}")
                asyncio.run(coroutine)

        # fewer calls: a new event loop per call costs more than the call
        errors = await in_threads(call, engine, calls=LOOP_PER_CALL)
        assert errors == []
        await check_all_ran(engine, clock, seen, calls=LOOP_PER_CALL)


async def test_a_sync_client_works_without_an_engine(tmp_path: Path) -> None:
    seen = Seen()
    pool, digest = jobs(seen)
    storage = SqliteStorage(tmp_path / "jobs.db")
    try:
        sync = SyncClient(jobs=[pool, digest], storage=storage)
        added = await asyncio.to_thread(sync.debounce(digest).add, "team", 1)
        assert added.created
        status = await asyncio.to_thread(sync.debounce(digest).status, "team")
        assert [batch.event_count for batch in status.batches] == [1]
        with pytest.raises(TimeoutError):
            await asyncio.to_thread(
                sync.debounce(digest).wait_flushed, "team", added.batch_id or "", "10 ms"
            )
    finally:
        await storage.close()


@pytest.mark.parametrize(
    ("async_class", "sync_class"),
    [
        (ContinuousClient, SyncContinuousClient),
        (DebounceClient, SyncDebounceClient),
        (TaskClient, SyncTaskClient),
        (WorkerPoolClient, SyncWorkerPoolClient),
    ],
)
def test_sync_clients_take_what_the_async_clients_take(
    async_class: type[object], sync_class: type[object]
) -> None:
    # the sync client is a hand-written mirror: a parameter added to an async method must
    # reach it too (`wait` and `wait_flushed` add a `timeout` of their own)
    for name, method in inspect.getmembers(async_class, inspect.isfunction):
        if name.startswith("_"):
            continue
        mirrored = getattr(sync_class, name, None)
        assert mirrored is not None, f"{sync_class.__name__} lacks {name}"
        wanted = list(inspect.signature(method).parameters.values())
        got = list(inspect.signature(mirrored).parameters.values())
        if name in {"wait", "wait_flushed"}:
            assert got[-1].name == "timeout"
            got = got[:-1]
        assert [(p.name, p.kind, p.default) for p in got] == [
            (p.name, p.kind, p.default) for p in wanted
        ], f"{sync_class.__name__}.{name}"
