"""
Crash recovery on SQLite: a real worker process is killed with SIGKILL at random moments,
several rounds, while events keep arriving; after a restart nothing accepted is lost.
"""

import asyncio
import os
import random
import time
from pathlib import Path

import pytest

import crash_app
from crash_harness import Feeder, Workers, check_final_state, wait_until_done
from durable_jobs import SqliteStorage


ROUNDS = 5


async def test_sigkill_rounds_lose_no_accepted_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    db, sink = tmp_path / "jobs.db", tmp_path / "sink.db"
    # every flush runs on a worker (the feeding client runs no user code), but set the sink
    # anyway: were one to run here, its rows would show up and fail the checks
    monkeypatch.setenv("CRASH_SINK", str(sink))
    workers = Workers(storage=f"sqlite:{db}", sink=sink, logs=tmp_path)
    storage = SqliteStorage(db)
    feeder = Feeder(engine=crash_app.build_engine(storage), rng=rng, ids=12)
    try:
        await feeder.engine.client.continuous(crash_app.TICKER).start("clock", 0)
        await feeder.poison()
        for _ in range(ROUNDS):
            workers.start()
            # Kill at a random moment: sometimes while the worker is still starting,
            # sometimes mid-flush; events keep arriving the whole time.
            await feeder.feed(rng.uniform(0.2, 1.5))
            workers.kill_one(rng)
            await feeder.feed(rng.uniform(0.0, 0.3))  # accepted while no worker runs
        final_start = time.time()
        workers.start()
        await wait_until_done(feeder, sink, workers, within=30)
        await asyncio.sleep(0.5)  # a few more ticks of the recurring job
        assert workers.stop_all() == [0], workers.output()
        await check_final_state(feeder, sink, final_start)
    finally:
        workers.stop_all()
        await storage.close()
    assert workers.killed == ROUNDS
    assert len(feeder.events) > 50, f"seed {seed}: too little work to prove anything"
