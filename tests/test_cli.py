"""The `durable-jobs` command: operator commands in-process, the worker as a subprocess."""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from durable_jobs import (
    Debounce,
    DebounceExecuteContext,
    Engine,
    Err,
    Ok,
    Result,
    SqliteStorage,
    Task,
    TaskEventContext,
    TaskExecuteContext,
    WorkerPool,
)
from durable_jobs._cli import main
from durable_jobs._storage._sqlite import SCHEMA_VERSION
from durable_jobs.testing import TestClock


V1_SQLITE = Path(__file__).resolve().parent / "data" / "schema_v1" / "jobs.sqlite"


class Rejected(Exception):
    pass


def failing(ctx: DebounceExecuteContext[str]) -> Result[None, Rejected]:
    return Err(Rejected(f"no to {ctx.state}"))


FEED = Debounce(name="feed", event=str, flush_after=1, execute=failing)


def on_event(ctx: TaskEventContext[str, str]) -> None:
    ctx.set_state(ctx.event)


def never(ctx: TaskExecuteContext[str]) -> Result[None, Rejected]:
    return Err(Rejected("unreachable"))


ORDERS = Task(name="orders", event=str, state=str, on_event=on_event, execute=never)


def prepare(db: Path) -> str:
    """A database with one dead letter (feed/a) and one task instance (orders/o1)."""

    async def go() -> str:
        clock = TestClock()
        storage = SqliteStorage(db)
        engine = Engine(jobs=[FEED, ORDERS], storage=storage, clock=clock)
        await engine.client.debounce(FEED).add("a", "x")
        await engine.client.task(ORDERS).send("o1", "placed")
        await clock.advance(2)
        (letter,) = await engine.dead_letters()
        await storage.close()
        return letter.id

    return asyncio.run(go())


def test_status_counts_instances_per_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "jobs.db"
    prepare(db)
    assert main(["status", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines() if line.strip()]
    assert ["orders", "task", "active", "1"] in lines
    assert "1 instances, 1 dead letters" in out


def test_inspect_prints_the_state_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "jobs.db"
    prepare(db)
    assert main(["inspect", "--db", str(db), "orders", "o1"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["kind"], shown["state"], shown["attempt"]) == ("task", "placed", 1)


def test_missing_instance_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "jobs.db"
    prepare(db)
    assert main(["inspect", "--db", str(db), "orders", "nope"]) == 3
    assert "no instance 'nope' of job 'orders'" in capsys.readouterr().err


def test_dead_letters_list_show_resume_discard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "jobs.db"
    letter_id = prepare(db)
    assert main(["dead-letters", "list", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert letter_id in out
    assert "Rejected: no to x" in out
    assert main(["dead-letters", "show", "--db", str(db), letter_id]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["job"], shown["instance"], shown["state"]) == ("feed", "a", "x")
    assert main(["dead-letters", "resume", "--db", str(db), letter_id]) == 0
    assert "requeued: debounce feed a" in capsys.readouterr().out
    assert main(["dead-letters", "discard", "--db", str(db), letter_id]) == 3
    assert main(["inspect", "--db", str(db), "feed", "a"]) == 0
    # the failed batch is back in the id's chain, sealed, due now; no batch is open
    shown = json.loads(capsys.readouterr().out)
    assert shown["state"] is None
    assert [batch["event_count"] for batch in shown["meta"]["queued"]] == [1]


def test_unreadable_database_exits_4(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "jobs.db"
    db.write_bytes(b"this is not a database, just some bytes " * 100)
    assert main(["status", "--db", str(db)]) == 4
    assert "file is not a database" in capsys.readouterr().err
    assert main(["status", "--db", str(tmp_path / "absent.db")]) == 4


def test_bad_module_path_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--app", "no_such_module_here:engine"]) == 2
    assert "cannot import module 'no_such_module_here'" in capsys.readouterr().err
    assert main(["status", "--app", "durable_jobs:nothing"]) == 2
    assert main(["status", "--app", "durable_jobs:Ok"]) == 2
    assert "not a durable_jobs.Engine" in capsys.readouterr().err
    assert main(["worker", "nocolon"]) == 2


APP = """
from durable_jobs import Continuous, ContinuousContext, Engine, Ok, SqliteStorage, every

def tick(ctx: ContinuousContext[int]):
    ctx.set_state(ctx.state + 1)
    return Ok(None)

ticker = Continuous(name="ticker", state=int, schedule=every("50 milliseconds"), execute=tick)
engine = Engine(jobs=[ticker], storage=SqliteStorage({db!r}))
"""


def test_worker_runs_alarms_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    (tmp_path / "tick_app.py").write_text(textwrap.dedent(APP.format(db=str(db))))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "durable_jobs", "worker", "tick_app:engine"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        sys.path.insert(0, str(tmp_path))
        import tick_app

        async def start_and_read() -> int | None:
            engine = tick_app.engine
            await engine.client.continuous(tick_app.ticker).start("t", 0)
            deadline = time.monotonic() + 20
            state: int | None = 0
            while time.monotonic() < deadline:
                state = await engine.client.continuous(tick_app.ticker).get_state("t")
                if state is not None and state >= 3:
                    break
                await asyncio.sleep(0.05)
            await engine.storage.close()
            return state

        state = asyncio.run(start_and_read())
        assert state is not None
        assert state >= 3  # the worker process ran the alarms written by this process
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=20)
        sys.path.remove(str(tmp_path))
        sys.modules.pop("tick_app", None)
    assert worker.returncode == 0, err
    assert "serving ticker" in err
    assert "stopping after in-flight work" in err


def test_an_old_database_is_refused_until_migrated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "old.db"
    shutil.copyfile(V1_SQLITE, db)
    assert main(["status", "--db", str(db)]) == 4
    refused = capsys.readouterr().err
    assert "durable-jobs migrate" in refused
    assert main(["migrate", "--db", str(db)]) == 0
    assert f"schema version 1 -> {SCHEMA_VERSION}: migrated" in capsys.readouterr().out
    assert main(["migrate", "--db", str(db)]) == 0
    assert f"schema version {SCHEMA_VERSION}: up to date" in capsys.readouterr().out
    assert main(["status", "--db", str(db)]) == 0
    assert main(["migrate", "--db", str(tmp_path / "absent.db")]) == 4


def test_a_worker_stops_on_a_database_it_must_not_run_against(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    shutil.copyfile(V1_SQLITE, db)
    (tmp_path / "tick_app.py").write_text(textwrap.dedent(APP.format(db=str(db))))
    worker = subprocess.run(
        [sys.executable, "-m", "durable_jobs", "worker", "tick_app:engine"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert worker.returncode == 4, worker.stderr
    assert "durable-jobs migrate" in worker.stderr


def test_inspect_of_a_pool_counts_its_delayed_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "jobs.db"
    mail = WorkerPool(name="mail", event=str, concurrency=1, execute=lambda ctx: Ok(None))

    async def go() -> None:
        storage = SqliteStorage(db)
        clock = TestClock(datetime.now(UTC))  # the command reads the wall clock
        client = Engine(jobs=[mail], storage=storage, clock=clock).client.worker_pool(mail)
        await client.enqueue("now")
        await client.enqueue("later", not_before="1 hour")
        await storage.close()

    asyncio.run(go())
    assert main(["inspect", "--db", str(db), "mail", "pool"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["events"] == {
        "queued": 1,
        "delayed": 1,
        "running": 0,
        "retrying": 0,
        "abandoned": 0,
    }
