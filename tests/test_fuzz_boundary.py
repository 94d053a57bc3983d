"""
Fuzzing the data boundary: generated bad inputs through every client call, on every backend.

Each example draws one category of bad input (a wrong type from untyped code, NaN, a lone
surrogate, NUL, an integer out of range, too deep, too big, not JSON at all, a bad id /
event id / partition key, a bad priority, bad JSON text) and sends it through every client
call it fits (Debounce `add`, Task `send`, Continuous `start`, WorkerPool `enqueue` and
`enqueue_many`, the `*_json` entry points). Every call must end in `ValidationError` (or
another documented library error), or be accepted and read back; never a raw exception.
At the end, nothing refused is stored, no lease or lock is left, and everything accepted
runs on a worker without an undecodable dead letter.

The totals (over 10,000 refused inputs across the three backends) are printed with `-s`.
Most examples run on memory; SQLite and PostgreSQL get fewer (the boundary runs before any
storage call, so a refused input costs them nothing; their share checks exactly that).
"""

import asyncio
import itertools
import json
import math
import sqlite3
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durable_jobs import (
    Continuous,
    ContinuousContext,
    DataLimits,
    Debounce,
    DebounceEventContext,
    DebounceExecuteContext,
    DurableJobsError,
    Engine,
    MemoryStorage,
    Ok,
    Result,
    SqliteStorage,
    Task,
    TaskEventContext,
    TaskExecuteContext,
    ValidationError,
    WorkerPool,
    WorkerPoolContext,
    every,
)
from durable_jobs._storage._interface import Storage
from durable_jobs.postgres import PostgresStorage
from durable_jobs.testing import TestClock
from pg_server import postgres_dsn


@attrs.frozen
class Ev:
    name: str = "n"
    count: int = 0
    ratio: float = 0.0
    tags: list[str] = attrs.field(factory=list)
    note: Any = None


@attrs.frozen
class Bag:
    events: tuple[Ev, ...] = ()


def fold(ctx: DebounceEventContext[Ev, Bag]) -> Bag:
    return Bag((*(ctx.state.events if ctx.state else ()), ctx.event))


def keep(ctx: TaskEventContext[Ev, Bag]) -> None:
    ctx.set_state(Bag((*(ctx.state.events if ctx.state else ()), ctx.event)))


async def flushed(ctx: DebounceExecuteContext[Bag]) -> Result[None, Exception]:
    del ctx
    return Ok(None)


async def executed(ctx: TaskExecuteContext[Bag]) -> Result[None, Exception]:
    del ctx
    return Ok(None)


async def ticked(ctx: ContinuousContext[Ev]) -> Result[None, Exception]:
    del ctx
    return Ok(None)


async def shipped(ctx: WorkerPoolContext[Ev]) -> Result[None, Exception]:
    del ctx
    return Ok(None)


BATCHES = Debounce(
    name="batches", event=Ev, state=Bag, flush_after="1 minute", on_event=fold, execute=flushed
)
TASKS = Task(name="tasks", event=Ev, state=Bag, on_event=keep, execute=executed)
FEEDS = Continuous(name="feeds", state=Ev, schedule=every("1 hour"), execute=ticked)
POOL = WorkerPool(name="pool", event=Ev, concurrency=8, execute=shipped)
LIMITS = DataLimits(max_bytes=2048, max_depth=8)

# -- what bad input looks like -------------------------------------------------------------

NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
SURROGATE = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
CONTROL = st.sampled_from(["\x00", "\t", "\n", "\r", "\x1b", "\x7f", "\x85"])
SHORT = st.text(max_size=4)


def _around(middle: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(lambda a, m, b: a + m + b, SHORT, middle, SHORT)


def _nested(depth: int, leaf: object) -> object:
    value = leaf
    for index in range(depth):
        value = [value] if index % 2 else {"k": value}
    return value


def _in_note(leaf: st.SearchStrategy[object]) -> st.SearchStrategy[tuple[str, object]]:
    """`leaf` as the note, or inside a list or an object in the note."""
    return st.tuples(
        st.just("note"),
        st.one_of(
            leaf,
            st.builds(lambda x: [1, x], leaf),
            st.builds(lambda x: {"a": {"b": x}}, leaf),
        ),
    )


WRONG_TYPE = st.one_of(
    st.tuples(
        st.just("name"),
        st.one_of(
            st.integers(),
            st.floats(allow_nan=False),
            st.lists(SHORT, max_size=3),
            st.none(),
            st.booleans(),
            st.binary(max_size=4),
        ),
    ),
    st.tuples(
        st.just("count"),
        st.one_of(
            SHORT, st.floats(allow_nan=False), st.none(), st.booleans(), st.lists(st.integers())
        ),
    ),
    st.tuples(
        st.just("ratio"), st.one_of(SHORT, st.none(), st.booleans(), st.lists(st.integers()))
    ),
    st.tuples(
        st.just("tags"),
        st.one_of(
            st.text(min_size=1, max_size=5),
            st.dictionaries(SHORT, st.integers(), max_size=2),
            st.integers(),
            st.lists(st.integers(), min_size=1, max_size=3),
            st.tuples(st.none()),
        ),
    ),
)
NOT_FINITE = st.one_of(st.tuples(st.just("ratio"), NON_FINITE), _in_note(NON_FINITE))
LONE_SURROGATE = st.one_of(
    st.tuples(st.just("name"), _around(SURROGATE)),
    st.tuples(st.just("tags"), st.builds(lambda s: ["ok", s], _around(SURROGATE))),
    _in_note(_around(SURROGATE)),
    st.tuples(st.just("note"), st.builds(lambda s: {s: 1}, _around(SURROGATE))),
)
NUL = st.one_of(
    st.tuples(st.just("name"), _around(st.just("\x00"))),
    _in_note(_around(st.just("\x00"))),
    st.tuples(st.just("note"), st.builds(lambda s: {s: 1}, _around(st.just("\x00")))),
)
INT_RANGE = st.one_of(
    st.tuples(
        st.just("count"),
        st.one_of(st.integers(min_value=2**63), st.integers(max_value=-(2**63) - 1)),
    ),
    _in_note(st.one_of(st.integers(min_value=2**63), st.integers(max_value=-(2**63) - 1))),
)
TOO_DEEP = st.tuples(
    st.just("note"), st.builds(_nested, st.integers(min_value=9, max_value=60), st.integers())
)
TOO_BIG = st.tuples(
    st.sampled_from(["name", "note"]),
    st.builds(lambda c, n: c * n, st.characters(codec="utf-8", exclude_characters="\x00"),
              st.integers(min_value=2100, max_value=6000)),
)  # fmt: skip
NOT_JSON = _in_note(
    st.one_of(
        st.binary(),
        st.complex_numbers(allow_nan=False, allow_infinity=False),
        st.builds(object),
        st.datetimes(timezones=st.just(UTC)),
        st.dictionaries(st.integers(), st.integers(), min_size=1, max_size=2),
        st.frozensets(st.integers(), min_size=1, max_size=2).map(lambda f: {f: 1}),
        st.builds(lambda: (cycle := [], cycle.append(cycle))[0]),
    )
)
BAD_ID = st.one_of(
    st.just(""),
    st.text(alphabet=" \t\n\r\u00a0\u2003", min_size=1, max_size=4),
    _around(CONTROL),
    _around(SURROGATE),
    st.builds(lambda s: f" {s}", SHORT),
    st.builds(lambda c, n: c * n, st.sampled_from(["x", "é", "💥"]), st.integers(513, 700)),
    st.integers(),
    st.binary(min_size=1, max_size=4),
    st.lists(SHORT, max_size=2),
    st.floats(),
)
BAD_PRIORITY = st.one_of(
    st.integers(min_value=2**31),
    st.integers(max_value=-(2**31) - 1),
    st.booleans(),
    st.floats(),
    SHORT,
    st.none(),
)
_FIELD_VALUES = st.one_of(
    st.integers(), st.floats(), SHORT, st.none(), st.lists(st.integers(), max_size=2)
)
_EXTRA_KEY = SHORT.filter(lambda k: k not in attrs.fields_dict(Ev))
_FIELDS = st.sampled_from(["name", "count", "ratio", "tags"])
_ESCAPES = st.sampled_from(["\\ud800", "\\u0000", "a\\udfffb"])
BAD_JSON: st.SearchStrategy[str | bytes] = st.one_of(
    st.text(max_size=30),
    st.binary(max_size=30),
    st.sampled_from(["NaN", "Infinity", "-Infinity"]).map(
        lambda v: '{"name": "a", "ratio": ' + v + "}"
    ),
    st.integers(min_value=1, max_value=3000).map(lambda n: "[" * n),
    _EXTRA_KEY.map(lambda k: json.dumps({"name": "a", k: 1})),
    st.dictionaries(_FIELDS, _FIELD_VALUES, min_size=1).map(json.dumps),
    st.integers(min_value=2**63).map(lambda n: json.dumps({"name": "a", "count": n})),
    _ESCAPES.map(lambda s: '{"name": "' + s + '"}'),
    st.integers(min_value=2100, max_value=4000).map(lambda n: json.dumps({"name": "x" * n})),
)

FIELD_CATEGORIES: dict[str, st.SearchStrategy[tuple[str, object]]] = {
    "wrong type": WRONG_TYPE,
    "NaN/infinity": NOT_FINITE,
    "lone surrogate": LONE_SURROGATE,
    "NUL": NUL,
    "integer range": INT_RANGE,
    "too deep": TOO_DEEP,
    "too big": TOO_BIG,
    "not JSON": NOT_JSON,
}
CATEGORIES = [*FIELD_CATEGORIES, "id/event id/partition key", "priority", "JSON text"]


@st.composite
def bad_inputs(draw: st.DrawFn) -> tuple[str, object]:
    """(category, what to send): a field and its value, a bad id, priority or JSON text."""
    category = draw(st.sampled_from(CATEGORIES))
    if category in FIELD_CATEGORIES:
        return category, draw(FIELD_CATEGORIES[category])
    if category == "priority":
        return category, draw(BAD_PRIORITY)
    if category == "JSON text":
        return category, draw(BAD_JSON)
    return category, draw(BAD_ID)


# -- one backend's run -----------------------------------------------------------------------


@attrs.define
class Tally:
    """What happened to the cases of one backend."""

    cases: Counter[str] = attrs.field(factory=Counter)
    refused: Counter[str] = attrs.field(factory=Counter)
    other_library_errors: Counter[str] = attrs.field(factory=Counter)
    raw: Counter[str] = attrs.field(factory=Counter)
    accepted: Counter[str] = attrs.field(factory=Counter)
    unreadable: int = 0
    instance_ids: set[str] = attrs.field(factory=set)
    pool_events: int = 0


class Cases:
    """Sends one bad input through every call it fits; fresh ids for every call."""

    def __init__(self, engine: Engine, tally: Tally) -> None:
        self.engine = engine
        self.tally = tally
        self.numbers: Iterator[int] = itertools.count()

    def fresh(self, prefix: str) -> str:
        return f"{prefix}{next(self.numbers)}"

    async def send(self, category: str, bad: object) -> None:
        client = self.engine.client
        batches, tasks = client.debounce(BATCHES), client.task(TASKS)
        feeds, pool = client.continuous(FEEDS), client.worker_pool(POOL)
        value: Any = bad
        calls: list[tuple[str | None, Callable[[], Awaitable[object]], Callable[[str], Any]]]
        if category in FIELD_CATEGORIES:
            field, field_value = value
            event: Any = Ev(**{field: field_value})
            calls = [
                (self.fresh("d"), lambda i: batches.add(i, event), batches.get_state),
                (self.fresh("t"), lambda i: tasks.send(i, event), tasks.get_state),
                (self.fresh("c"), lambda i: feeds.start(i, event), feeds.get_state),
                (None, lambda _: pool.enqueue(event, event_id=self.fresh("e")), None),
                (None, lambda _: pool.enqueue_many([Ev(), event]), None),
            ]
        elif category == "priority":
            calls = [
                (None, lambda _: pool.enqueue(Ev(), priority=value), None),
                (None, lambda _: pool.enqueue_many([Ev()], priority=value), None),
            ]
        elif category == "JSON text":
            calls = [
                (self.fresh("d"), lambda i: batches.add_json(i, value), batches.get_state),
                (self.fresh("t"), lambda i: tasks.send_json(i, value), tasks.get_state),
                (None, lambda _: pool.enqueue_json(value), None),
            ]
        else:
            calls = [
                (value, lambda i: batches.add(i, Ev()), None),
                (value, lambda i: tasks.send(i, Ev()), None),
                (value, lambda i: feeds.start(i, Ev()), None),
                (self.fresh("d"), lambda i: batches.add(i, Ev(), event_id=value), None),
                (None, lambda _: pool.enqueue(Ev(), event_id=value), None),
                (None, lambda _: pool.enqueue(Ev(), partition_key=value), None),
            ]
        for id, call, read in calls:
            await self._one(category, id, call if id is None else _bind(call, id), read)

    async def _one(
        self,
        category: str,
        id: Any,
        call: Callable[[Any], Awaitable[object]],
        read: Callable[[str], Awaitable[object]] | None,
    ) -> None:
        tally = self.tally
        tally.cases[category] += 1
        try:
            result = await call(id)
        except ValidationError:
            tally.refused[category] += 1
            return
        except DurableJobsError as error:
            tally.other_library_errors[f"{category}: {type(error).__name__}"] += 1
            return
        except Exception as error:  # the boundary's only failure mode
            tally.raw[f"{category}: {type(error).__name__}"] += 1
            return
        tally.accepted[category] += 1
        if isinstance(id, str):
            tally.instance_ids.add(id)
        else:
            tally.pool_events += len(result) if isinstance(result, tuple) else 1
        if read is not None and isinstance(id, str):
            try:
                await read(id)  # an accepted value reads back
            except Exception:
                tally.unreadable += 1


def _bind(
    call: Callable[[Any], Awaitable[object]], id: object
) -> Callable[[Any], Awaitable[object]]:
    return lambda _: call(id)


async def _no_lease_or_lock(backend: str, storage: Storage, where: object) -> None:
    """No lease in any row, no write lock held (SQLite), no advisory lock (PostgreSQL)."""
    for record in await storage.list_instances():
        assert record.lease is None
    if backend == "sqlite":
        assert isinstance(where, Path)
        with sqlite3.connect(where, timeout=0) as raw:
            raw.execute("BEGIN IMMEDIATE")  # fails at once if anyone held the write lock
            for table in ("instances", "items"):
                leased = raw.execute(f"SELECT count(*) FROM {table} WHERE lease_token IS NOT NULL")
                assert leased.fetchone() == (0,)
            raw.rollback()
    if backend == "postgres":
        async with await psycopg.AsyncConnection.connect(postgres_dsn(), autocommit=True) as raw:
            for table in ("instances", "items"):
                cursor = await raw.execute(
                    f"SELECT count(*) FROM {where}.{table} WHERE lease_token IS NOT NULL"
                )
                assert await cursor.fetchone() == (0,)
            cursor = await raw.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
            assert await cursor.fetchone() == (0,)


TOTALS: dict[str, Tally] = {}
EXAMPLES = {"memory": 1600, "sqlite": 400, "postgres": 400}
"""Examples per backend: over 10,000 refused cases in all (each example is 2 to 6 cases)."""


@pytest.mark.parametrize("backend", list(EXAMPLES))
def test_no_bad_input_is_stored_or_raises_raw(backend: str, tmp_path: Path) -> None:
    tally = TOTALS.setdefault(backend, Tally())
    with asyncio.Runner() as runner:
        storage: Storage
        where: object = None
        if backend == "memory":
            storage = MemoryStorage()
        elif backend == "sqlite":
            where = tmp_path / "jobs.db"
            storage = SqliteStorage(where)
        else:
            where = f"f_{datetime.now(UTC).strftime('%H%M%S%f')}"
            storage = PostgresStorage(postgres_dsn(), schema=str(where))
        clock = TestClock()
        engine = runner.run(_engine(storage, clock))
        cases = Cases(engine, tally)

        @settings(
            max_examples=EXAMPLES[backend],
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(bad_inputs())
        def one_example(bad: tuple[str, object]) -> None:
            runner.run(cases.send(*bad))

        one_example()

        async def check() -> None:
            records = await engine.instances()
            # the pool's own record appears with its first accepted event
            stored = {record.key.id for record in records if record.key.job != POOL.name}
            assert stored <= tally.instance_ids, "a refused value was stored"
            pool = await engine.client.worker_pool(POOL).status()
            assert pool.pending == tally.pool_events, "a refused event was queued"
            await _no_lease_or_lock(backend, storage, where)
            # everything accepted runs on a worker and reads back there
            await clock.advance("2 minutes")
            letters = await engine.dead_letters()
            tally.unreadable += len(letters)
            await storage.close()

        runner.run(check())
    _print(backend, tally)
    assert not tally.raw, f"raw exceptions: {dict(tally.raw)}"
    assert tally.unreadable == 0
    assert (
        sum(tally.refused.values()) >= {"memory": 6800, "sqlite": 1600, "postgres": 1600}[backend]
    )


async def _engine(storage: Storage, clock: TestClock) -> Engine:
    return Engine(jobs=[BATCHES, TASKS, FEEDS, POOL], storage=storage, clock=clock, limits=LIMITS)


def _print(backend: str, tally: Tally) -> None:
    print(f"\n{backend}: cases / refused (ValidationError) / other library error / raw / accepted")
    for category in CATEGORIES:
        others = sum(n for k, n in tally.other_library_errors.items() if k.startswith(category))
        raws = sum(n for k, n in tally.raw.items() if k.startswith(category))
        print(
            f"  {category:28} {tally.cases[category]:6} {tally.refused[category]:6}"
            f" {others:6} {raws:6} {tally.accepted[category]:6}"
        )
    print(
        f"  total {sum(tally.cases.values())} cases, {sum(tally.refused.values())} refused,"
        f" {sum(tally.raw.values())} raw, {tally.unreadable} accepted-but-unreadable,"
        f" {len(tally.instance_ids)} accepted instance ids, {tally.pool_events} accepted events"
    )
