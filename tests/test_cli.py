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
    WorkerPoolContext,
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


def upload(ctx: WorkerPoolContext[str]) -> Ok[None]:
    return Ok(None)


UPLOADS = WorkerPool(name="uploads", event=str, concurrency=2, execute=upload)


def prepare(db: Path, feeds: tuple[str, ...] = ("a",)) -> str:
    """A database with a dead letter per feed (feed/a) and one task instance (orders/o1)."""

    async def go() -> str:
        clock = TestClock()
        storage = SqliteStorage(db)
        engine = Engine(jobs=[FEED, ORDERS], storage=storage, clock=clock)
        for feed in feeds:
            await engine.client.debounce(FEED).add(feed, "x")
        await engine.client.task(ORDERS).send("o1", "placed")
        await clock.advance(2)
        letters = await engine.dead_letters()
        await storage.close()
        return letters[0].id

    return asyncio.run(go())


def test_status_counts_instances_per_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "jobs.db"
    prepare(db)
    assert main(["status", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines() if line.strip()]
    assert lines[0] == [
        *("JOB", "KIND", "INSTANCES", "RUNNING", "RETRYING", "FAILED", "PAUSED"),
        *("BACKLOG", "LAG", "NEXT", "ALARM"),
    ]
    assert ["orders", "task", "1", "0", "0", "0", "0", "0", "-", "-"] in lines
    assert "1 instance, 1 dead letter" in out


def test_status_shows_backlog_and_lag_per_job_as_a_table_or_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "jobs.db"

    async def go() -> None:
        clock = TestClock()  # 2026-01-01: the command's clock (the host's) is later
        storage = SqliteStorage(db)
        engine = Engine(jobs=[FEED, UPLOADS], storage=storage, clock=clock)
        await engine.client.debounce(FEED).add("a", "x")
        await engine.client.debounce(FEED).add("b", "y")
        await engine.client.worker_pool(UPLOADS).enqueue_many(["1.png", "2.png", "3.png"])
        # delayed past the host's clock too: waiting for its time is not backlog
        await engine.client.worker_pool(UPLOADS).enqueue("4.png", not_before="10000 days")
        await storage.close()

    asyncio.run(go())
    assert main(["status", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:] if line.strip()}
    feed, uploads = rows["feed"], rows["uploads"]
    assert feed[1:8] == ["debounce", "2", "0", "0", "0", "0", "2"]
    assert feed[8] != "-"  # both batches have been due for months: that is the lag
    assert uploads[1:8] == ["worker_pool", "-", "0", "0", "0", "0", "3"]
    assert "2 instances, 0 dead letters" in out

    assert main(["status", "--db", str(db), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["instances"], shown["dead_letters"]) == (2, 0)
    jobs = {job["job"]: job for job in shown["jobs"]}
    assert jobs["feed"]["backlog"] == 2
    assert jobs["feed"]["lag_seconds"] > 0
    assert jobs["feed"]["oldest_due_at"] == "2026-01-01T00:00:01+00:00"
    assert jobs["uploads"]["pool"] == {
        "queued": 3,
        "delayed": 1,
        "running": 0,
        "retrying": 0,
        "abandoned": 0,
    }
    assert jobs["uploads"]["lag_seconds"] is None


def test_status_watch_prints_a_snapshot_per_interval_until_interrupted(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    prepare(db)
    command = [sys.executable, "-m", "durable_jobs", "status", "--db", str(db)]
    watching = subprocess.Popen(
        [*command, "--watch", "0.05", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watching.stdout is not None
        snapshots = [json.loads(watching.stdout.readline()) for _ in range(2)]
    finally:
        watching.send_signal(signal.SIGINT)
        _, err = watching.communicate(timeout=30)
    assert watching.returncode == 0, err
    assert [snapshot["instances"] for snapshot in snapshots] == [1, 1]
    assert snapshots[0]["at"] <= snapshots[1]["at"]
    with pytest.raises(SystemExit) as bad:
        main(["status", "--db", str(db), "--watch", "0"])
    assert bad.value.code == 2


def test_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "durable_jobs", "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.startswith("durable-jobs 0.")


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
    assert "\n1 dead letter\n" in out
    assert main(["dead-letters", "list", "--db", str(db), "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)["dead_letters"]
    assert (listed["id"], listed["job"], listed["reason"]) == (letter_id, "feed", "no_retry")
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


def test_dead_letters_resume_or_discard_every_letter_of_a_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "jobs.db"
    prepare(db, feeds=("a", "b", "c"))
    assert main(["dead-letters", "resume", "--db", str(db), "--job", "feed"]) == 0
    out = capsys.readouterr().out
    assert out.count("requeued: debounce feed") == 3
    assert "resumed 3 dead letters of feed" in out
    assert main(["dead-letters", "discard", "--db", str(db), "--job", "feed"]) == 0
    assert "discarded 0 dead letters of feed" in capsys.readouterr().out

    other = tmp_path / "other.db"
    prepare(other, feeds=("a", "b"))
    assert main(["dead-letters", "discard", "--db", str(other), "--job", "feed"]) == 0
    assert "discarded 2 dead letters of feed" in capsys.readouterr().out
    assert main(["dead-letters", "list", "--db", str(other), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"dead_letters": []}
    # one letter or a job, never both, never neither
    with pytest.raises(SystemExit):
        main(["dead-letters", "discard", "--db", str(other)])
    with pytest.raises(SystemExit):
        main(["dead-letters", "discard", "--db", str(other), "x", "--job", "feed"])


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
import logging
from durable_jobs import Continuous, ContinuousContext, Engine, Ok, SqliteStorage, every

def tick(ctx: ContinuousContext[int]):
    logging.getLogger("tick_app").info("tick %d", ctx.state)
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
        [
            *(sys.executable, "-m", "durable_jobs", "worker", "tick_app:engine"),
            *("--log-format", "json", "--log-level", "debug"),
        ],
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
    lines = [json.loads(line) for line in err.splitlines()]
    messages = [line["message"] for line in lines]
    assert "serving ticker" in messages
    assert "stopping after in-flight work" in messages
    assert all(line["worker"] and line["pid"] == worker.pid and line["time"] for line in lines)
    # a line the user's code logs during a run names that run
    (first_tick,) = [line for line in lines if line["message"] == "tick 0"]
    assert first_tick["level"] == "INFO"
    assert (first_tick["job"], first_tick["instance"], first_tick["attempt"]) == ("ticker", "t", 1)
    # so does the engine's line for each event, with the event's timing
    executed = [line for line in lines if line.get("event", {}).get("type") == "job.executed"]
    assert executed
    assert executed[0]["event"]["duration"] >= 0
    assert executed[0]["event"]["worker_id"] == first_tick["worker"]
    assert executed[0]["event"]["run_count"] == 1


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
        [sys.executable, "-m", "durable_jobs", "worker", "tick_app:engine", "--log-format", "text"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert worker.returncode == 4, worker.stderr
    assert "durable-jobs migrate" in worker.stderr
    # text log lines: time, level, then the worker's fields, key=value
    (serving,) = [line for line in worker.stderr.splitlines() if line.endswith("serving ticker")]
    time_, level, worker_, pid, job, instance, attempt, *_ = serving.split(" ")
    assert time_.endswith("Z")
    assert level == "INFO"
    assert worker_.startswith("worker=")
    assert pid == f"pid={worker_.split(':')[1]}"
    assert (job, instance, attempt) == ("job=-", "instance=-", "attempt=-")


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
