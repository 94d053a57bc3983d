"""
Security of the stored data: private SQLite files, and operator commands that never create a
database (a typo in `--db`, `--dsn`/`--schema` or `--app` must not show an empty one).
"""

import asyncio
import stat
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from durable_jobs import (
    Continuous,
    ContinuousContext,
    DefectPolicy,
    Engine,
    Ok,
    Result,
    SqliteStorage,
    WorkerPool,
    WorkerPoolContext,
    every,
)
from durable_jobs._cli import main
from durable_jobs.testing import TestClock
from pg_server import postgres_dsn


async def ship(ctx: WorkerPoolContext[str]) -> Result[None, Exception]:
    del ctx
    return Ok(None)


pool = WorkerPool(name="pool", event=str, concurrency=1, execute=ship)


async def test_a_new_sqlite_database_is_private_to_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    storage = SqliteStorage(path)
    engine = Engine(jobs=[pool], storage=storage, clock=TestClock())
    await engine.client.worker_pool(pool).enqueue("x")
    for file in (path, path.with_name("jobs.db-wal"), path.with_name("jobs.db-shm")):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    await storage.close()


def test_operator_commands_never_create_a_sqlite_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = tmp_path / "typo.db"
    for command in (["status"], ["dead-letters", "list"], ["migrate"]):
        assert main([*command, "--db", str(absent)]) == 4
    module = tmp_path / "typo_app.py"
    module.write_text(
        "from durable_jobs import Engine, SqliteStorage\n"
        f"engine = Engine(jobs=[], storage=SqliteStorage({str(absent)!r}))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["status", "--app", "typo_app:engine"]) == 4
    assert "no durable-jobs database" in capsys.readouterr().err
    assert not absent.exists()


def test_operator_commands_never_create_a_postgres_schema(
    capsys: pytest.CaptureFixture[str],
) -> None:
    schema = f"typo_{uuid.uuid4().hex[:12]}"
    for command in (["status"], ["inspect", "job", "id"], ["migrate"]):
        assert main([*command, "--dsn", postgres_dsn(), "--schema", schema]) == 4
    assert f"no durable-jobs database at PostgreSQL schema {schema!r}" in capsys.readouterr().err
    with psycopg.connect(postgres_dsn()) as conn:
        found = conn.execute(
            "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (schema,)
        ).fetchone()
    assert found is None


async def explode(ctx: ContinuousContext[int]) -> Result[None, Exception]:
    del ctx
    raise RuntimeError("boom")


broken = Continuous(name="broken", state=int, schedule=every("1 hour"), execute=explode)


async def test_prune_deletes_old_dead_letters_and_failed_instances_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "jobs.db"
    now = datetime.now(UTC)
    clock = TestClock(now - timedelta(days=60))
    storage = SqliteStorage(path)
    engine = Engine(
        jobs=[broken], storage=storage, clock=clock, defect_policy=DefectPolicy(max_retries=0)
    )
    await engine.client.continuous(broken).start("old", 1)
    await clock.run_due()
    clock.set(now - timedelta(days=1))
    await engine.client.continuous(broken).start("new", 1)
    await clock.run_due()
    assert len(await engine.dead_letters()) == 2
    await storage.close()

    assert await cli(["prune", "--db", str(path)]) == 2  # nothing to prune: say what to give
    command = ["prune", "--db", str(path), "--dead-letters-older-than", "30 days"]
    assert await cli([*command, "--failed-older-than", "30 days"]) == 0
    assert "pruned 1 dead letters and 1 failed instances" in capsys.readouterr().out

    storage = SqliteStorage(path)
    assert [letter.key.id for letter in await storage.dead_letters()] == ["new"]
    assert [record.key.id for record in await storage.list_instances()] == ["new"]
    await storage.close()


async def cli(argv: list[str]) -> int:
    return await asyncio.to_thread(main, argv)
