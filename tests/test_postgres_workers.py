"""
Three worker processes on one PostgreSQL database, one killed with SIGKILL mid-run: every
alarm still runs (the survivors take over the dead worker's expired claims), no instance
ever runs in two workers at once, no accepted event is lost.
"""

import asyncio
import os
import random
import time
import uuid
from pathlib import Path

import pytest

import crash_app
from crash_harness import Feeder, Workers, check_final_state, wait_until_done
from durable_jobs.postgres import PostgresStorage
from pg_server import postgres_dsn


WORKERS = 3


async def test_three_workers_one_killed_lose_nothing_and_never_overlap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    dsn, schema, sink = postgres_dsn(), f"w_{uuid.uuid4().hex}", tmp_path / "sink.db"
    # every flush runs on a worker (the feeding client runs no user code), but set the sink
    # anyway: were one to run here, its rows would show up and fail the checks
    monkeypatch.setenv("CRASH_SINK", str(sink))
    workers = Workers(storage=f"postgres:{dsn}", sink=sink, logs=tmp_path, schema=schema)
    storage = PostgresStorage(dsn, schema=schema, pool_size=24)
    feeder = Feeder(engine=crash_app.build_engine(storage), rng=rng, ids=300)
    try:
        await feeder.engine.client.continuous(crash_app.TICKER).start("clock", 0)
        await feeder.poison()
        for _ in range(WORKERS):
            workers.start()
        await feeder.feed(operations=rng.randrange(800, 1600), concurrency=16)
        workers.kill_one(rng)  # mid-run: its claims and in-flight runs are abandoned
        await feeder.feed(operations=2500 - feeder.counter, concurrency=16)
        final_start = time.time()
        await wait_until_done(feeder, sink, workers, within=60)
        await asyncio.sleep(0.5)  # a few more ticks of the recurring job
        assert workers.stop_all() == [0] * (WORKERS - 1), workers.output()
        await check_final_state(feeder, sink, final_start)
    finally:
        workers.stop_all()
        await storage.close()
    assert workers.killed == 1
    assert len(feeder.events) + len(feeder.items) > 2000, f"seed {seed}: too little work"
