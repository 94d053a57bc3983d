"""
Migrating a database written by release 0.1.0 (schema 1, `tests/data/schema_v1/`).

Each test gets a fresh copy of the fixture in one backend (`V1_BACKENDS`: a backend adds
one factory) and checks, through the public API where it can, that every fact of
`manifest.json` survives in its schema-2 form, and that the work goes on where 0.1.0 left
it. The job definitions below are equivalent to the fixture's (same names, kinds, types,
schedules and retry policies); their callbacks only record what they are given.
"""

import asyncio
import contextlib
import json
import random
import re
import shutil
import sqlite3
import uuid
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import attrs
import psycopg
import pytest

from durable_jobs import (
    Backoff,
    Continuous,
    ContinuousContext,
    Debounce,
    DebounceEventContext,
    DebounceExecuteContext,
    DefectPolicy,
    Engine,
    InstanceNotFoundError,
    Ok,
    Retry,
    SchemaMismatchError,
    SqliteStorage,
    Task,
    TaskEventContext,
    TaskExecuteContext,
    WorkerPool,
    WorkerPoolContext,
    cron,
    every,
)
from durable_jobs._serde import decode
from durable_jobs._storage._interface import InstanceKey, JobKind, Storage
from durable_jobs._storage._sqlite import SCHEMA_VERSION
from durable_jobs.postgres import PostgresStorage
from durable_jobs.testing import TestClock
from pg_server import postgres_dsn


FIXTURES = Path(__file__).resolve().parents[1] / "data" / "schema_v1"
MANIFEST: dict[str, Any] = json.loads((FIXTURES / "manifest.json").read_text(encoding="utf-8"))
STOPPED_AT = datetime.fromisoformat(MANIFEST["clock"]["end"])
LATEST = SCHEMA_VERSION


def when(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


# -- backends ------------------------------------------------------------------------------


class Migratable(Storage, Protocol):
    """A storage that can migrate its schema."""

    async def migrate(self) -> tuple[int, int]:
        """Apply pending migrations: (from, to)."""
        ...


class V1Copy(Protocol):
    """A fresh copy of the schema-1 fixture in one backend."""

    @property
    def letter_ids(self) -> Sequence[str]:
        """The fixture's dead-letter ids in this backend, oldest first."""
        ...

    def storage(self) -> Migratable:
        """A new storage object on the copy (closed with the copy)."""
        ...

    async def record_version(self, version: int) -> None:
        """Record schema `version` as applied, like a newer release's migration would."""
        ...


class _SqliteCopy:
    def __init__(self, path: Path) -> None:
        self._path = path
        self.storages: list[SqliteStorage] = []

    @property
    def letter_ids(self) -> Sequence[str]:
        ids: list[str] = MANIFEST["dead_letter_ids"]["sqlite"]
        return ids

    def storage(self) -> Migratable:
        storage = SqliteStorage(self._path)
        self.storages.append(storage)
        return storage

    async def record_version(self, version: int) -> None:
        with contextlib.closing(sqlite3.connect(self._path)) as raw, raw:
            raw.execute("INSERT INTO durable_jobs_schema VALUES (?, 0)", (version,))


@contextlib.asynccontextmanager
async def _sqlite(tmp: Path) -> AsyncGenerator[V1Copy]:
    # a copy: opening writes -wal/-shm files next to it and migrating rewrites it
    path = tmp / "jobs.sqlite"
    shutil.copyfile(FIXTURES / "jobs.sqlite", path)
    copy = _SqliteCopy(path)
    try:
        yield copy
    finally:
        for storage in copy.storages:
            await storage.close()


class _PostgresCopy:
    def __init__(self, schema: str) -> None:
        self._schema = schema
        self.storages: list[PostgresStorage] = []

    @property
    def letter_ids(self) -> Sequence[str]:
        ids: list[str] = MANIFEST["dead_letter_ids"]["postgres"]
        return ids

    def storage(self) -> Migratable:
        storage = PostgresStorage(postgres_dsn(), schema=self._schema)
        self.storages.append(storage)
        return storage

    async def record_version(self, version: int) -> None:
        async with await psycopg.AsyncConnection.connect(postgres_dsn()) as raw:
            await raw.execute(
                f"INSERT INTO {self._schema}.durable_jobs_schema (version) VALUES (%s)", (version,)
            )
            await raw.commit()


@contextlib.asynccontextmanager
async def _postgres(tmp: Path) -> AsyncGenerator[V1Copy]:
    del tmp
    # the dump in a schema of its own, loaded as tests/data/schema_v1/README.md says
    schema = f"v1_{uuid.uuid4().hex}"
    text = (FIXTURES / "postgres.sql").read_text(encoding="utf-8")
    text = re.sub(r"\bdurable_jobs(?=[.;])", schema, text)
    async with await psycopg.AsyncConnection.connect(postgres_dsn()) as raw:
        await raw.execute(text.encode())
        await raw.commit()
    copy = _PostgresCopy(schema)
    try:
        yield copy
    finally:
        for storage in copy.storages:
            await storage.close()


V1_BACKENDS: dict[str, Callable[[Path], AbstractAsyncContextManager[V1Copy]]] = {
    "sqlite": _sqlite,
    "postgres": _postgres,
}


@pytest.fixture(params=list(V1_BACKENDS))
async def v1_copy(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncGenerator[V1Copy]:
    """A fresh copy of the fixture, not migrated."""
    async with V1_BACKENDS[request.param](tmp_path) as copy:
        yield copy


# -- the fixture's jobs, recording what they run -------------------------------------------


@attrs.frozen
class Source:
    name: str
    region: str


@attrs.frozen
class Feed:
    url: str
    mode: str
    polls: int
    tags: tuple[str, ...]
    source: Source
    last_polled: datetime | None = None


@attrs.frozen
class Report:
    title: str
    recipients: tuple[str, ...]
    since: datetime
    owner: Source


@attrs.frozen
class Signup:
    email: str
    status: int
    at: datetime


@attrs.frozen
class Digest:
    emails: tuple[str, ...]
    statuses: tuple[int, ...]
    first_at: datetime
    last: Signup


@attrs.frozen
class Location:
    vehicle: str
    lat_e6: int
    lon_e6: int
    seen_at: datetime
    driver: Source


@attrs.frozen
class Customer:
    name: str
    tier: int


@attrs.frozen
class OrderEvent:
    action: str
    customer: Customer
    amount: int
    due_in: int = 0
    items: tuple[str, ...] = ()
    ship_status: int = 200


@attrs.frozen
class Order:
    customer: Customer
    status: str
    total: int
    items: tuple[str, ...]
    history: tuple[str, ...]
    ship_status: int
    updated_at: datetime
    shipments: int = 0


@attrs.frozen
class Thumbnail:
    image: str
    sizes: tuple[int, ...]
    album: Source
    requested_at: datetime
    outcome: int = 200


@attrs.frozen
class Export:
    table: str
    rows: int
    requested_at: datetime
    columns: tuple[str, ...] = ()


class ServerError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"answered {status}")
        self.status = status


@attrs.frozen
class Ran:
    """One callback run: which, when, and what it was given."""

    job: str
    id: str
    at: datetime
    attempt: int
    detail: Any = None


Runs = list[Ran]


def poll_feed(ctx: ContinuousContext[Feed, Runs]) -> Ok[None]:
    ctx.deps.append(Ran("feeds", ctx.id, ctx.now, ctx.attempt, ctx.run_count))
    return Ok(None)


def write_report(ctx: ContinuousContext[Report, Runs]) -> Ok[None]:
    ctx.deps.append(Ran("nightly_report", ctx.id, ctx.now, ctx.attempt, ctx.run_count))
    return Ok(None)


def add_signup(ctx: DebounceEventContext[Signup, Digest, Runs]) -> Digest:
    event, before = ctx.event, ctx.state
    if before is None:
        return Digest((event.email,), (event.status,), event.at, event)
    return Digest(
        (*before.emails, event.email), (*before.statuses, event.status), before.first_at, event
    )


def send_digest(ctx: DebounceExecuteContext[Digest, Runs]) -> Ok[None]:
    batch = (ctx.batch_id, ctx.event_count, ctx.flush_reason, ctx.state)
    ctx.deps.append(Ran("digests", ctx.id, ctx.now, ctx.attempt, batch))
    return Ok(None)


def save_location(ctx: DebounceExecuteContext[Location, Runs]) -> Ok[None]:
    batch = (ctx.batch_id, ctx.event_count, ctx.flush_reason, ctx.state)
    ctx.deps.append(Ran("locations", ctx.id, ctx.now, ctx.attempt, batch))
    return Ok(None)


def on_order_event(ctx: TaskEventContext[OrderEvent, Order, Runs]) -> None:
    event = ctx.event
    before = ctx.state or Order(
        customer=event.customer,
        status="new",
        total=0,
        items=(),
        history=(),
        ship_status=event.ship_status,
        updated_at=ctx.now,
    )
    ctx.set_state(
        attrs.evolve(
            before,
            total=before.total + event.amount,
            items=(*before.items, *event.items),
            history=(*before.history, event.action),
            updated_at=ctx.now,
        )
    )
    if event.action in ("place", "pay"):
        ctx.schedule(event.due_in)


def ship_order(ctx: TaskExecuteContext[Order, Runs]) -> Ok[None]:
    ctx.deps.append(Ran("orders", ctx.id, ctx.now, ctx.attempt, ctx.state))
    return Ok(None)


def render(ctx: WorkerPoolContext[Thumbnail, Runs]) -> Ok[None]:
    ctx.deps.append(Ran("thumbnails", ctx.event_id, ctx.now, ctx.attempt, ctx.event))
    return Ok(None)


def export(ctx: WorkerPoolContext[Export, Runs]) -> Ok[None]:
    ctx.deps.append(Ran("exports", ctx.event_id, ctx.now, ctx.attempt, ctx.event))
    return Ok(None)


def server_error(error: ServerError) -> bool:
    return error.status >= 500


FEEDS = Continuous(
    name="feeds",
    state=Feed,
    schedule=every("1 minute"),
    execute=poll_feed,
    retry=Retry(max_attempts=5, delay=Backoff.exponential("1 hour"), should_retry=server_error),
)
NIGHTLY = Continuous(
    name="nightly_report",
    state=Report,
    schedule=cron("0 3 * * *", tz="Europe/Paris"),
    execute=write_report,
    start_immediately=False,
)
DIGESTS = Debounce(
    name="digests",
    event=Signup,
    state=Digest,
    flush_after="5 minutes",
    max_events=4,
    on_event=add_signup,
    execute=send_digest,
    retry=Retry(max_attempts=3, delay=Backoff.fixed("1 hour"), should_retry=server_error),
)
LOCATIONS = Debounce(
    name="locations", event=Location, flush_after="10 minutes", execute=save_location
)
ORDERS = Task(
    name="orders",
    event=OrderEvent,
    state=Order,
    on_event=on_order_event,
    execute=ship_order,
    retry=Retry(max_attempts=3, delay=Backoff.fixed("1 hour"), should_retry=server_error),
)
THUMBNAILS = WorkerPool(
    name="thumbnails",
    event=Thumbnail,
    concurrency=3,
    execute=render,
    retry=Retry(max_attempts=3, delay=Backoff.fixed("1 hour"), should_retry=server_error),
)
EXPORTS = WorkerPool(name="exports", event=Export, concurrency=2, execute=export)

STATE_CLASSES: dict[str, type[object]] = {
    "feeds": Feed,
    "nightly_report": Report,
    "digests": Digest,
    "locations": Location,
    "orders": Order,
}


@attrs.define
class Migrated:
    """A migrated copy with an engine of the fixture's jobs, at the time 0.1.0 stopped."""

    engine: Engine[Runs]
    clock: TestClock
    runs: Runs
    storage: Migratable
    copy: V1Copy


@pytest.fixture
async def migrated(v1_copy: V1Copy) -> Migrated:
    storage = v1_copy.storage()
    assert await storage.migrate() == (1, LATEST)
    clock = TestClock(STOPPED_AT)
    runs: Runs = []
    engine = Engine(
        jobs=[FEEDS, NIGHTLY, DIGESTS, LOCATIONS, ORDERS, THUMBNAILS, EXPORTS],
        deps=runs,
        storage=storage,
        clock=clock,
        random=random.Random(7).random,
        defect_policy=DefectPolicy(max_retries=1, backoff=Backoff.fixed("10 seconds")),
    )
    return Migrated(engine=engine, clock=clock, runs=runs, storage=storage, copy=v1_copy)


def instances(kind: str) -> Iterator[dict[str, Any]]:
    """The manifest's instances of one kind."""
    return (entry for entry in MANIFEST["instances"] if entry["kind"] == kind)


# -- the schema ----------------------------------------------------------------------------


async def test_a_v1_database_is_refused_until_migrated(v1_copy: V1Copy) -> None:
    storage = v1_copy.storage()
    with pytest.raises(SchemaMismatchError, match="durable-jobs migrate"):
        await storage.list_instances()
    with pytest.raises(SchemaMismatchError, match="durable-jobs migrate"):
        await storage.claim_due(STOPPED_AT, limit=10, lease=timedelta(seconds=30))
    assert await storage.migrate() == (1, LATEST)
    assert len(await storage.list_instances()) == 16
    assert await storage.migrate() == (LATEST, LATEST)  # a second migration is a no-op
    again = v1_copy.storage()
    assert await again.migrate() == (LATEST, LATEST)
    assert await again.list_instances() == await storage.list_instances()


async def test_two_storages_migrating_at_once_migrate_once(v1_copy: V1Copy) -> None:
    first, second = v1_copy.storage(), v1_copy.storage()
    outcomes = await asyncio.gather(first.migrate(), second.migrate())
    assert sorted(outcomes) == [(1, LATEST), (LATEST, LATEST)]
    assert len(await second.list_instances()) == 16


async def test_a_newer_schema_is_refused(v1_copy: V1Copy) -> None:
    storage = v1_copy.storage()
    await storage.migrate()
    await v1_copy.record_version(LATEST + 1)  # what a later release's migration leaves
    older_code = v1_copy.storage()
    with pytest.raises(SchemaMismatchError, match="newer than this version"):
        await older_code.list_instances()
    with pytest.raises(SchemaMismatchError, match="newer than this version"):
        await older_code.migrate()  # no downgrade
    with pytest.raises(SchemaMismatchError):
        await storage.claim_due(STOPPED_AT, limit=10, lease=timedelta(seconds=30))


# -- every fact survives -------------------------------------------------------------------


async def test_every_record_survives(migrated: Migrated) -> None:
    engine = migrated.engine
    checked = 0
    for entry in MANIFEST["instances"]:
        if entry["kind"] == "worker_pool":
            continue  # pools have one record now: see test_pools_keep_their_events_in_order
        stored = entry["record"]
        if stored is None:
            with pytest.raises(InstanceNotFoundError):
                await engine.inspect(entry["job"], entry["id"])
            continue
        record = await engine.inspect(entry["job"], entry["id"])
        what = f"{entry['job']}:{entry['id']}"
        assert record.key == InstanceKey(JobKind(entry["kind"]), entry["job"], entry["id"])
        assert record.status.value == stored["status"], what
        assert record.alarm_at == when(stored["alarm_at"]), what
        assert record.attempt == stored["attempt"], what
        assert record.retry_started_at == when(stored["retry_started_at"]), what
        assert record.defects == stored["defects"], what
        assert record.last_error == stored["last_error"], what
        assert record.created_at == when(stored["created_at"]), what
        assert record.updated_at == when(stored["updated_at"]), what
        assert record.lease is None, what
        if entry["kind"] == "debounce" and record.attempt == 1:
            assert record.state == stored["state"], what  # the open batch
        elif entry["kind"] != "debounce":
            assert record.state == stored["state"], what
        checked += 1
    assert checked == 14


_CONTINUOUS_STATUS = {"running": "scheduled", "retrying": "retrying", "failed": "failed"}


async def test_continuous_status_and_state(migrated: Migrated) -> None:
    feeds = migrated.engine.client.continuous(FEEDS)
    nightly = migrated.engine.client.continuous(NIGHTLY)
    for entry in instances("continuous"):
        client = feeds if entry["job"] == "feeds" else nightly
        v1 = entry["status"]
        status = await client.status(entry["id"])
        assert status.status == _CONTINUOUS_STATUS[v1["status"]]
        assert status.run_count == v1["run_count"]
        assert status.next_run_at == when(v1["next_run_at"])
        assert status.attempt == v1["attempt"]
        assert status.last_error == v1["last_error"]
        expected = decode(entry["state"], STATE_CLASSES[entry["job"]])
        assert await client.get_state(entry["id"]) == expected


async def test_debounce_status_and_state(migrated: Migrated) -> None:
    digests = migrated.engine.client.debounce(DIGESTS)
    locations = migrated.engine.client.debounce(LOCATIONS)
    for entry in instances("debounce"):
        client = digests if entry["job"] == "digests" else locations
        v1 = entry["status"]
        status = await client.status(entry["id"])
        assert status.status == v1["status"]
        if v1["status"] == "not_found":
            assert await client.get_state(entry["id"]) is None
            continue
        (batch,) = status.batches
        assert batch.event_count == v1["event_count"]
        assert batch.started_at == when(v1["started_at"])
        assert status.attempt == v1["attempt"]
        assert status.last_error == v1["last_error"]
        assert status.next_flush_at == when(v1["will_flush_at"])
        state = await client.get_state(entry["id"])
        if v1["status"] == "debouncing":
            assert (batch.stage, batch.due_at) == ("open", when(v1["will_flush_at"]))
            assert state == decode(entry["state"], STATE_CLASSES[entry["job"]])
        else:  # its flush had started: the batch is sealed, no batch is open
            assert (batch.stage, batch.due_at) == ("retrying", when(v1["will_flush_at"]))
            assert batch.reason == entry["record"]["meta"]["flush_reason"]
            assert state is None


async def test_task_status_and_state(migrated: Migrated) -> None:
    orders = migrated.engine.client.task(ORDERS)
    for entry in instances("task"):
        v1 = entry["status"]
        status = await orders.status(entry["id"])
        assert status.status == v1["status"]
        assert status.scheduled_at == when(v1["scheduled_at"])
        assert status.event_count == v1["event_count"]
        assert status.execute_count == v1["execute_count"]
        assert status.attempt == v1["attempt"]
        assert status.last_error == v1["last_error"]
        assert status.queued_events == 0
        assert await orders.get_state(entry["id"]) == decode(entry["state"], Order)


def a_signup() -> Signup:
    return Signup("again@example.com", 200, STOPPED_AT)


def an_order() -> OrderEvent:
    return OrderEvent("note", Customer("again", 1), 0)


async def test_seen_event_ids_stay_seen(migrated: Migrated) -> None:
    client = migrated.engine.client
    digests, orders = client.debounce(DIGESTS), client.task(ORDERS)
    pools = {"thumbnails": client.worker_pool(THUMBNAILS), "exports": client.worker_pool(EXPORTS)}
    thumbnail = Thumbnail("again.png", (1,), Source("again", "eu"), STOPPED_AT)
    export_event = Export("again", 1, STOPPED_AT)
    checked = 0
    for entry in MANIFEST["instances"]:
        for seen in entry["seen_event_ids"]:
            event_id = seen["event_id"]
            if entry["kind"] == "debounce":
                added = await digests.add(entry["id"], a_signup(), event_id=event_id)
                assert added.duplicate, event_id
            elif entry["kind"] == "task":
                sent = await orders.send(entry["id"], an_order(), event_id=event_id)
                assert sent.status == "duplicate", event_id
            elif entry["job"] == "thumbnails":
                queued = await pools["thumbnails"].enqueue(thumbnail, event_id=event_id)
                assert queued.duplicate, event_id
            else:
                queued = await pools["exports"].enqueue(export_event, event_id=event_id)
                assert queued.duplicate, event_id
            checked += 1
    assert checked == 34
    # nothing was folded or queued by the duplicates
    assert (await digests.status("team-done")).status == "not_found"
    assert (await digests.status("team-open")).batches[0].event_count == 3
    assert (await orders.status("order-many")).event_count == 3
    assert (await pools["thumbnails"].status()).queued == 5


async def test_pools_keep_their_events_in_order(migrated: Migrated) -> None:
    client = migrated.engine.client
    thumbnails = await client.worker_pool(THUMBNAILS).status()
    exports = await client.worker_pool(EXPORTS).status()
    assert (thumbnails.queued, thumbnails.retrying, thumbnails.running) == (5, 1, 0)
    assert (thumbnails.processed, thumbnails.paused) == (
        MANIFEST["pools"]["thumbnails"]["processed"],
        False,
    )
    assert (exports.queued, exports.retrying, exports.processed, exports.paused) == (3, 0, 1, True)

    storage = migrated.storage
    for job in ("thumbnails", "exports"):
        pool = InstanceKey(JobKind.WORKER_POOL, job, "pool")
        queued: list[tuple[int, int, str]] = []
        for partition in (e for e in instances("worker_pool") if e["job"] == job):
            current = partition["record"]["meta"]["current"]
            for v1 in partition["queue"]:
                item = await storage.read_item(pool, v1["event_id"])
                assert item is not None
                assert item.seq == v1["seq"]
                assert item.priority == v1["priority"]
                assert item.partition_key == v1["partition_key"]
                assert item.event == v1["event"]
                assert item.enqueued_at == when(v1["enqueued_at"])
                assert item.lease is None
                retrying = current is not None and current["event_id"] == v1["event_id"]
                record = partition["record"]
                # the event a partition was retrying keeps its attempt, error and time
                assert item.attempt == (record["attempt"] if retrying else 1)
                assert item.last_error == (record["last_error"] if retrying else None)
                assert item.retry_started_at == (
                    when(record["retry_started_at"]) if retrying else None
                )
                assert item.available_at == (when(record["alarm_at"]) if retrying else None)
                queued.append((-v1["priority"], v1["seq"], v1["event_id"]))
        if job == "exports":
            assert (
                await storage.claim_items({pool: 10}, STOPPED_AT, limit=10, lease=timedelta(0))
                == []
            )
            continue
        # claimed highest priority first, then in v1's FIFO order; the retry waits its time
        claims = await storage.claim_items({pool: 10}, STOPPED_AT, limit=10, lease=timedelta(0))
        assert [c.item.event_id for c in claims] == [
            event_id for _, _, event_id in sorted(queued) if event_id != "img-007"
        ]


async def test_dead_letters_survive_and_resume(migrated: Migrated) -> None:
    engine, runs = migrated.engine, migrated.runs
    letters = await engine.dead_letters()
    assert [d.id for d in letters] == list(migrated.copy.letter_ids)
    for letter, v1 in zip(letters, MANIFEST["dead_letters"], strict=True):
        pool = v1["kind"] == "worker_pool"
        assert letter.key == InstanceKey(
            JobKind(v1["kind"]), v1["job"], "pool" if pool else v1["id"]
        )
        assert (letter.reason, letter.attempts, letter.error) == (
            v1["reason"],
            v1["attempts"],
            v1["error"],
        )
        assert (letter.event, letter.state, letter.at) == (v1["event"], v1["state"], when(v1["at"]))
    acct_gone = letters[3].meta
    assert isinstance(acct_gone, dict)

    actions = [(await engine.resume(letter.id)).action for letter in letters]
    assert actions == ["requeued", "reactivated", "rescheduled", "requeued"]
    assert await engine.dead_letters() == []
    await migrated.clock.run_due()
    ran = {(run.job, run.id): run for run in runs}
    assert ran[("thumbnails", f"resumed-{letters[0].id}")].detail == decode(
        letters[0].event, Thumbnail
    )
    assert ran[("feeds", "feed-broken")].detail == 2  # its second run
    assert ran[("orders", "order-dead")].detail == decode(letters[2].state, Order)
    batch_id, count, reason, state = ran[("digests", "acct-gone")].detail
    assert (batch_id, count, reason) == (acct_gone["batch_id"], 1, "flush_after")
    assert state == decode(letters[3].state, Digest)


# -- the work goes on ----------------------------------------------------------------------


def first(runs: Runs, job: str, id: str) -> Ran:
    return next(run for run in runs if (run.job, run.id) == (job, id))


async def test_the_work_goes_on_where_v1_left_it(migrated: Migrated) -> None:
    client, clock, runs = migrated.engine.client, migrated.clock, migrated.runs
    digests = client.debounce(DIGESTS)
    batches = {
        id: (await digests.status(id)).batches[0].batch_id
        for id in ("acct-retry", "acct-burst", "team-open")
    }
    await clock.advance_to(STOPPED_AT.replace(hour=2, minute=10))

    # debounce: a retried batch flushes with the batch id, count and state it had
    for id, reason, attempt in [
        ("acct-retry", "flush_after", 2),
        ("acct-burst", "max_events", 2),
        ("team-open", "flush_after", 1),
    ]:
        entry = next(e for e in instances("debounce") if e["id"] == id)
        run = first(runs, "digests", id)
        assert run.at == when(entry["record"]["alarm_at"])
        assert run.attempt == attempt
        assert run.detail == (
            batches[id],
            entry["status"]["event_count"],
            reason,
            decode(entry["state"], Digest),
        )
        assert (await digests.status(id)).status == "not_found"
    truck = first(runs, "locations", "truck-7")
    assert (truck.at, truck.detail[1]) == (when("2026-01-01T00:16:00+00:00"), 2)

    # tasks run at their alarms, a retry with its attempt
    for id, attempt in [("order-retry", 2), ("order-many", 1), ("order-scheduled", 1)]:
        entry = next(e for e in instances("task") if e["id"] == id)
        run = first(runs, "orders", id)
        assert (run.at, run.attempt) == (when(entry["record"]["alarm_at"]), attempt)
        assert run.detail == decode(entry["state"], Order)
    assert not [run for run in runs if run.id in ("order-idle", "order-dead")]

    # continuous: the schedules and the retries go on, a retry keeps its run number
    shaky, flaky = first(runs, "feeds", "feed-shaky"), first(runs, "feeds", "feed-flaky")
    assert (shaky.at, shaky.attempt, shaky.detail) == (when("2026-01-01T00:07:10+00:00"), 1, 1)
    assert (flaky.at, flaky.attempt, flaky.detail) == (
        when("2026-01-01T01:12:18.424892+00:00"),
        2,
        1,
    )
    ok = [run for run in runs if run.id == "feed-ok"]
    assert ok[0].at == when("2026-01-01T00:08:00+00:00")
    assert [run.detail for run in ok[:3]] == [9, 10, 11]
    daily = first(runs, "nightly_report", "daily")
    assert (daily.at, daily.detail) == (when("2026-01-01T02:00:00+00:00"), 1)
    assert not [run for run in runs if run.id == "feed-broken"]  # parked

    # the pool: every event ran once, the in-flight retry at its time with its attempt
    rendered = [run for run in runs if run.job == "thumbnails"]
    assert sorted(run.id for run in rendered) == [
        "img-007",
        "img-008",
        "img-009",
        "img-010",
        "img-011",
        "img-014",
    ]
    img_007 = first(runs, "thumbnails", "img-007")
    assert (img_007.at, img_007.attempt) == (when("2026-01-01T00:54:32.196379+00:00"), 2)
    thumbnails = await client.worker_pool(THUMBNAILS).status()
    assert (thumbnails.queued, thumbnails.retrying, thumbnails.processed) == (0, 0, 10)

    # the paused pool ran nothing until resumed
    exports = client.worker_pool(EXPORTS)
    assert not [run for run in runs if run.job == "exports"]
    await exports.resume()
    await clock.run_due()
    assert sorted(run.id for run in runs if run.job == "exports") == [
        "exp-002",
        "exp-003",
        "exp-004",
    ]
    assert (await exports.status()).processed == 4
