"""
Stored data that does not decode is parked at once, on every backend.

A class that changed shape in a deploy (state or event of an old shape), or a row edited by
hand (invalid JSON, an unknown status), must not be retried once per lease forever nor hold
up other work: the first worker that claims it parks it with a dead letter (reason
`undecodable`, naming the path), other instances and the rest of the pool partition keep
flowing, and `status` / `inspect` / `dead-letters` keep working.
"""

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest

from durable_jobs import (
    Continuous,
    ContinuousContext,
    Debounce,
    DebounceEventContext,
    DebounceExecuteContext,
    Engine,
    MemoryStorage,
    Ok,
    Result,
    SqliteStorage,
    Task,
    TaskEventContext,
    TaskExecuteContext,
    WorkerPool,
    WorkerPoolContext,
    every,
)
from durable_jobs._cli import main
from durable_jobs._storage._interface import Storage
from durable_jobs.postgres import PostgresStorage
from durable_jobs.testing import TestClock
from pg_server import postgres_dsn


@attrs.frozen
class OldFeed:
    n: int
    tags: Any = None


@attrs.frozen
class Feed:
    n: int
    tags: list[str] = attrs.field(factory=list)


@attrs.frozen
class OldMail:
    to: Any


@attrs.frozen
class Mail:
    to: str


ran: list[str] = []


async def tick(ctx: ContinuousContext[Any]) -> Result[None, Exception]:
    ran.append(f"feed:{ctx.id}")
    return Ok(None)


async def send(ctx: WorkerPoolContext[Any]) -> Result[None, Exception]:
    ran.append(f"mail:{ctx.event_id}")
    return Ok(None)


OLD_FEEDS = Continuous(name="feeds", state=OldFeed, schedule=every("1 hour"), execute=tick)
FEEDS = Continuous(name="feeds", state=Feed, schedule=every("1 hour"), execute=tick)
OLD_MAILS = WorkerPool(name="mails", event=OldMail, concurrency=4, execute=send)
MAILS = WorkerPool(name="mails", event=Mail, concurrency=4, execute=send)


async def cli(argv: list[str]) -> int:
    """The `durable-jobs` command, as an operator runs it (its own event loop)."""
    return await asyncio.to_thread(main, argv)


@contextlib.asynccontextmanager
async def _memory(tmp: Path) -> AsyncGenerator[Callable[[], Storage]]:
    del tmp
    storage = MemoryStorage()
    yield lambda: storage


@contextlib.asynccontextmanager
async def _sqlite(tmp: Path) -> AsyncGenerator[Callable[[], Storage]]:
    yield lambda: SqliteStorage(tmp / "jobs.db")


@contextlib.asynccontextmanager
async def _postgres(tmp: Path) -> AsyncGenerator[Callable[[], Storage]]:
    schema = f"u_{tmp.name.lower()[-30:]}_{id(tmp) % 10**6}"
    yield lambda: PostgresStorage(postgres_dsn(), schema=schema)


BACKENDS: dict[str, Callable[[Path], AbstractAsyncContextManager[Callable[[], Storage]]]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "postgres": _postgres,
}


@pytest.fixture(params=list(BACKENDS))
async def opener(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncGenerator[Callable[[], Storage]]:
    """Opens the one database of the test (a new storage object each call, same data)."""
    async with BACKENDS[request.param](tmp_path) as factory:
        yield factory


async def test_old_shapes_are_parked_at_once_and_the_rest_flows(
    opener: Callable[[], Storage],
) -> None:
    ran.clear()
    old_storage = opener()
    old = Engine(jobs=[OLD_FEEDS, OLD_MAILS], storage=old_storage, clock=TestClock())
    await old.client.continuous(OLD_FEEDS).start("bad", OldFeed(1, tags=5))
    await old.client.continuous(OLD_FEEDS).start("good", OldFeed(2, tags=["a"]))
    queue = old.client.worker_pool(OLD_MAILS)
    await queue.enqueue(OldMail(["x@example.com"]), partition_key="k", event_id="m1")
    await queue.enqueue(OldMail("y@example.com"), partition_key="k", event_id="m2")
    await old_storage.close()

    clock = TestClock()
    storage = opener()
    engine = Engine(jobs=[FEEDS, MAILS], storage=storage, clock=clock)
    await clock.run_due()  # one pass, no lease expiry: parked within one lease
    assert sorted(ran) == ["feed:good", "mail:m2"]  # the next event of key "k" ran
    feeds = engine.client.continuous(FEEDS)
    assert (await feeds.status("bad")).status == "failed"
    assert (await feeds.status("good")).status == "scheduled"
    letters = {letter.key.id: letter for letter in await engine.dead_letters()}
    assert set(letters) == {"bad", "pool"}
    assert letters["bad"].reason == "undecodable"
    assert "state.tags" in letters["bad"].error
    assert letters["pool"].reason == "undecodable"
    assert "event.to" in letters["pool"].error
    assert (await engine.client.worker_pool(MAILS).status()).pending == 0

    # nothing is retried: a day later the same two letters, no more runs
    ran.clear()
    await clock.advance("1 day")
    assert "feed:bad" not in ran
    assert len(await engine.dead_letters()) == 2

    # fixed code (a class that reads the old shape) resumes; a letter can be discarded
    await storage.close()
    clock.detach(engine.run_due)
    storage = opener()
    fixed = Engine(jobs=[OLD_FEEDS, MAILS], storage=storage, clock=clock)
    await fixed.resume(letters["bad"].id)
    await fixed.discard(letters["pool"].id)
    ran.clear()
    await clock.run_due()
    assert ran == ["feed:bad"]
    assert await fixed.dead_letters() == []
    await storage.close()


async def test_a_hand_corrupted_sqlite_row_is_parked_and_the_cli_keeps_working(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ran.clear()
    path = tmp_path / "jobs.db"
    clock = TestClock()
    storage = SqliteStorage(path)
    engine = Engine(jobs=[FEEDS, MAILS], storage=storage, clock=clock)
    feeds = engine.client.continuous(FEEDS)
    for name in ("a", "b", "c"):
        await feeds.start(name, Feed(1))
    await engine.client.worker_pool(MAILS).enqueue(Mail("z"), event_id="m")
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE instances SET state = '{oops' WHERE id = 'a'")
        raw.execute("UPDATE instances SET status = 'zombie' WHERE id = 'b'")
        raw.execute("UPDATE items SET event = '[1,', enqueued_at = 'x' WHERE event_id = 'm'")
    # the CLI reads every row, even broken ones, before and after the worker parks them
    assert await cli(["status", "--db", str(path)]) == 0
    assert await cli(["inspect", "feeds", "a", "--db", str(path)]) == 0
    assert "invalid JSON" in capsys.readouterr().out
    await clock.run_due()
    assert ran == ["feed:c"]
    letters = {letter.key.id: letter for letter in await engine.dead_letters()}
    assert {key: letter.reason for key, letter in letters.items()} == {
        "a": "undecodable",
        "pool": "undecodable",
    }
    assert "state: invalid JSON" in letters["a"].error
    # an unknown status reads as failed (never claimed); inspect says why
    assert (await feeds.status("b")).status == "failed"
    assert "event: invalid JSON" in letters["pool"].error
    assert (await feeds.status("a")).status == "failed"
    for command in (["status"], ["inspect", "feeds", "c"], ["dead-letters", "list"]):
        assert await cli([*command, "--db", str(path)]) == 0
    assert await cli(["dead-letters", "show", letters["pool"].id, "--db", str(path)]) == 0
    assert "[1," in capsys.readouterr().out
    # the stored text is kept for repair: fixed by hand, resumed, it runs
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT state FROM instances WHERE id = 'a'").fetchone() == ("{oops",)
        raw.execute("""UPDATE instances SET state = '{"n": 5, "tags": []}' WHERE id = 'a'""")
    await engine.resume(letters["a"].id)
    ran.clear()
    await clock.run_due()
    assert ran == ["feed:a"]
    await storage.close()


async def test_a_hand_corrupted_postgres_row_is_parked(tmp_path: Path) -> None:
    ran.clear()
    schema = f"c_{tmp_path.name.lower()[-30:]}_{id(tmp_path) % 10**6}"
    clock = TestClock()
    storage = PostgresStorage(postgres_dsn(), schema=schema)
    engine = Engine(jobs=[FEEDS, MAILS], storage=storage, clock=clock)
    feeds = engine.client.continuous(FEEDS)
    for name in ("a", "b", "c"):
        await feeds.start(name, Feed(1))
    await engine.client.worker_pool(MAILS).enqueue(Mail("z"), event_id="m")
    # JSONB holds only valid JSON: corrupt it with JSON of the wrong shape instead
    async with await psycopg.AsyncConnection.connect(postgres_dsn(), autocommit=True) as raw:
        await raw.execute(f"UPDATE {schema}.instances SET state = '\"x\"' WHERE id = 'a'")
        await raw.execute(f"UPDATE {schema}.instances SET status = 'zombie' WHERE id = 'b'")
        await raw.execute(f"UPDATE {schema}.items SET event = '[1]' WHERE event_id = 'm'")
    await clock.run_due()
    assert ran == ["feed:c"]
    letters = {letter.key.id: letter.reason for letter in await engine.dead_letters()}
    assert letters == {"a": "undecodable", "pool": "undecodable"}
    assert (await feeds.status("b")).status == "failed"  # an unknown status reads as failed
    assert len(await engine.instances()) == 4
    where = ["--dsn", postgres_dsn(), "--schema", schema]
    for command in (["status"], ["inspect", "feeds", "a"], ["inspect", "feeds", "b"]):
        assert await cli([*command, *where]) == 0
    assert await cli(["dead-letters", "list", *where]) == 0
    await storage.close()


@attrs.frozen
class OldBag:
    items: Any


@attrs.frozen
class Bag:
    items: list[str]


def old_fold(ctx: DebounceEventContext[OldFeed, OldBag]) -> OldBag:
    return OldBag(items=ctx.event.tags)


def new_fold(ctx: DebounceEventContext[OldFeed, Bag]) -> Bag:
    return Bag(items=[*(ctx.state.items if ctx.state else ()), "x"])


def old_keep(ctx: TaskEventContext[OldFeed, OldBag]) -> None:
    ctx.set_state(OldBag(items=ctx.event.tags))


def new_keep(ctx: TaskEventContext[OldFeed, Bag]) -> None:
    ctx.set_state(Bag(items=[*(ctx.state.items if ctx.state else ()), "x"]))


async def flush(ctx: DebounceExecuteContext[Any]) -> Result[None, Exception]:
    ran.append(f"flush:{ctx.id}")
    return Ok(None)


async def execute(ctx: TaskExecuteContext[Any]) -> Result[None, Exception]:
    ran.append(f"task:{ctx.id}")
    return Ok(None)


def debounce(fold: Any, state: type[object]) -> Any:
    return Debounce(
        name="digests", event=OldFeed, state=state, flush_after="1 minute", on_event=fold,
        execute=flush,
    )  # fmt: skip


def task(keep: Any, state: type[object]) -> Any:
    return Task(name="tasks", event=OldFeed, state=state, on_event=keep, execute=execute)


async def test_old_debounce_and_task_states_are_parked_and_resumable() -> None:
    ran.clear()
    storage = MemoryStorage()
    old_digests, old_tasks = debounce(old_fold, OldBag), task(old_keep, OldBag)
    old = Engine(jobs=[old_digests, old_tasks], storage=storage, clock=TestClock())
    for id, tags in (("bad", 5), ("good", ["a"])):
        await old.client.debounce(old_digests).add(id, OldFeed(1, tags))
        await old.client.task(old_tasks).send(id, OldFeed(1, tags))
        await old.client.task(old_tasks).trigger(id)

    clock = TestClock()
    digests, tasks = debounce(new_fold, Bag), task(new_keep, Bag)
    engine = Engine(jobs=[digests, tasks], storage=storage, clock=clock)
    await clock.advance("2 minutes")
    assert sorted(ran) == ["flush:good", "task:good"]
    letters = await engine.dead_letters()
    assert sorted((letter.key.kind.value, letter.key.id, letter.reason) for letter in letters) == [
        ("debounce", "bad", "undecodable"),
        ("task", "bad", "undecodable"),
    ]
    assert all("state.items" in letter.error for letter in letters)
    assert (await engine.client.task(tasks).status("bad")).status == "failed"
    # the parked batch is in its letter: a new event to that id opens a fresh batch
    await engine.client.debounce(digests).add("bad", OldFeed(2))
    assert await engine.client.debounce(digests).get_state("bad") == Bag(["x"])
    # after a fix (a state class reading the old shape), resuming runs them
    clock.detach(engine.run_due)
    fixed = Engine(jobs=[old_digests, old_tasks], storage=storage, clock=clock)
    for letter in letters:
        await fixed.resume(letter.id)
    ran.clear()
    await clock.advance("2 minutes")
    assert sorted(ran) == ["flush:bad", "flush:bad", "task:bad"]  # the new batch, the old
