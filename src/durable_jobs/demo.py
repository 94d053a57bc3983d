"""
`durable-jobs demo`: every kind at work for a couple of seconds, on a SQLite file, in real time.

Webhook events are debounced into one batch per account (a burst reaches `max_events` and
is flushed early); a flaky sender fails twice per batch with a typed `SendError(503)` and is
retried with exponential backoff, and one account's endpoint is gone (410, not retryable),
so its batch fails finally and reaches `on_error`. A recurring report runs every half second
and terminates itself after four runs; an order moves placed -> paid -> shipped through a task
state machine with alarms; a worker pool renders thumbnails three at a time, each album's
photos one at a time in order, an urgent cover jumping the queue by priority. A live log
shows what happens, then a summary and the checks. Exit code 0 when every piece of work
reached its expected end.
"""

import argparse
import asyncio
import contextlib
import logging
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Never

import attrs

from . import (
    Backoff,
    Continuous,
    ContinuousContext,
    Debounce,
    DebounceEventContext,
    DebounceExecuteContext,
    Engine,
    Err,
    ErrorContext,
    JobEvent,
    Ok,
    Result,
    Retry,
    SqliteStorage,
    Task,
    TaskClient,
    TaskEventContext,
    TaskExecuteContext,
    TaskIdleContext,
    WorkerPool,
    WorkerPoolContext,
    every,
)


ACCOUNTS = ("acme", "globex", "initech")
"""Accounts whose webhooks trickle in and are flushed by `flush_after`."""
BURST = "hooli"
"""An account posting five events at once: `max_events` seals its batch, due at once."""
BROKEN = "umbrella"
"""An account whose endpoint is gone: 410, not worth retrying, so its batch reaches `on_error`."""
FLAKY_ATTEMPTS = 2
"""How many attempts of every batch the overloaded API refuses with a 503."""
ALBUMS = ("beach", "city", "forest")
"""Thumbnail partition keys: one album renders one photo at a time, in order."""
PHOTOS = 3
"""Photos per album."""
COVER = "cover.jpg"
"""Queued last, with no album and a higher priority: the first to start once resumed."""
THUMBNAILS = len(ALBUMS) * PHOTOS + 1
REPORTS = 4
"""Runs of the recurring report before it terminates itself."""
ORDER = "order-17"
ORDER_PATH = ("placed", "paid", "shipped")


@attrs.frozen
class Webhook:
    """An incoming webhook event: a contact changed in an account."""

    contact: str


@attrs.frozen
class Batch:
    """The contacts collected in one debounce window."""

    contacts: tuple[str, ...]


class SendError(Exception):
    """The downstream API refused a batch; `status` is its HTTP status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


@attrs.frozen
class Order:
    """The state of one order."""

    status: str


@attrs.frozen
class Thumbnail:
    """One image to render."""

    image: str


@attrs.frozen
class Check:
    """One expected end state of the scenario, and whether it was reached."""

    ok: bool
    text: str


@attrs.define
class Board:
    """What the jobs did, shared with them as `ctx.deps` (the demo's dependencies)."""

    started: float = attrs.field(factory=time.monotonic)
    quiet: bool = False
    delivered: list[str] = attrs.field(factory=list[str])
    batches: list[str] = attrs.field(factory=list[str])
    gave_up: list[str] = attrs.field(factory=list[str])
    reports: int = 0
    order_path: list[str] = attrs.field(factory=list[str])
    rendered: list[str] = attrs.field(factory=list[str])
    render_starts: list[str] = attrs.field(factory=list[str])
    counts: Counter[tuple[str, str]] = attrs.field(factory=Counter[tuple[str, str]])
    last_attempt: dict[tuple[str, str], int] = attrs.field(factory=dict[tuple[str, str], int])

    def albums_in_order(self) -> bool:
        """Whether every album's photos rendered in the order they were queued."""
        for album in ALBUMS:
            photos = [image for image in self.rendered if image.startswith(f"{album}/")]
            if photos != sorted(photos):
                return False
        return True

    def say(self, job: str, id: str, what: str) -> None:
        """Print one live-log line: seconds since the start, job, instance, what happened."""
        if self.quiet:
            return
        try:
            print(f"{time.monotonic() - self.started:5.2f}s  {job:<10} {id:<9} {what}", flush=True)
        except BrokenPipeError:
            # `durable-jobs demo | head`: the reader left; a callback raising here would
            # become the job's failure and change the scenario, so the log just stops.
            self.quiet = True


# -- webhooks: Debounce + a flaky sender ------------------------------------------------


def collect(ctx: DebounceEventContext[Webhook, Batch, Board]) -> Batch:
    """Fold a webhook into its account's batch."""
    return Batch((*(ctx.state.contacts if ctx.state else ()), ctx.event.contact))


async def send(ctx: DebounceExecuteContext[Batch, Board]) -> Result[None, SendError]:
    """Send a batch to a flaky API: overloaded for two attempts; one account's endpoint is gone."""
    if ctx.id == BROKEN:
        return Err(SendError(410))
    if ctx.attempt <= FLAKY_ATTEMPTS:
        return Err(SendError(503))
    await asyncio.sleep(0.01)  # the request itself
    ctx.deps.delivered.extend(ctx.state.contacts)
    ctx.deps.batches.append(ctx.id)
    return Ok(None)


def give_up(e: SendError, ctx: ErrorContext[Batch, Board]) -> None:
    """A batch failed finally: log it and drop it (returning purges the instance)."""
    # `e` is exactly the SendError that `send` returned: `e.status` needs no isinstance
    ctx.deps.gave_up.append(ctx.id)
    contacts = len(ctx.state.contacts)
    ctx.deps.say("webhooks", ctx.id, f"on_error: HTTP {e.status}, dropped {contacts} contact(s)")


webhooks: Debounce[Webhook, Batch, SendError, Board] = Debounce(
    name="webhooks",
    event=Webhook,
    state=Batch,
    flush_after="300 milliseconds",
    max_events=5,
    on_event=collect,
    execute=send,
    retry=Retry(
        max_attempts=4,
        delay=Backoff.exponential("100 milliseconds", max="400 milliseconds"),
        should_retry=lambda e: e.status >= 500,  # a 4xx will not get better by waiting
    ),
    on_error=give_up,
)


# -- report: Continuous ----------------------------------------------------------------


def report(ctx: ContinuousContext[int, Board]) -> Ok[None]:
    """Report progress; the fourth run terminates the job."""
    ctx.deps.reports = ctx.run_count
    ctx.set_state(len(ctx.deps.delivered))
    ctx.deps.say("report", ctx.id, f"run {ctx.run_count}: {ctx.state} contacts delivered so far")
    if ctx.run_count >= REPORTS:
        ctx.terminate("enough reports")
    return Ok(None)


reports: Continuous[int, int, Never, Board] = Continuous(
    name="report", state=int, schedule=every("500 milliseconds"), execute=report
)


# -- orders: Task state machine --------------------------------------------------------


def on_order(ctx: TaskEventContext[str, Order, Board]) -> None:
    """Move the order to the event's status and set the alarm for what comes next."""
    # a fold: it runs inside `send`, so it only decides (the caller logs what happened)
    ctx.set_state(Order(ctx.event))
    if ctx.event in ("placed", "paid"):
        # placed: remind about payment unless paid by then; paid: ship shortly after
        ctx.schedule("200 milliseconds")


def advance_order(ctx: TaskExecuteContext[Order, Board]) -> Ok[None]:
    """The order's alarm: remind about payment, or ship a paid order."""
    if ctx.state is not None and ctx.state.status == "placed":
        ctx.deps.say("orders", ctx.id, "alarm: payment reminder sent, still placed")
    elif ctx.state is not None and ctx.state.status == "paid":
        ctx.set_state(Order("shipped"))
        ctx.deps.order_path.append("shipped")
        ctx.deps.say("orders", ctx.id, "alarm: paid -> shipped")
    return Ok(None)


def on_order_idle(ctx: TaskIdleContext[Order, Board]) -> None:
    """A shipped order with nothing scheduled is finished; an unpaid one waits for payment."""
    if ctx.state is not None and ctx.state.status == "shipped":
        ctx.terminate("delivered")


orders: Task[str, Order, Never, Board] = Task(
    name="orders",
    event=str,
    state=Order,
    on_event=on_order,
    execute=advance_order,
    on_idle=on_order_idle,
)


# -- thumbnails: WorkerPool ------------------------------------------------------------


async def render(ctx: WorkerPoolContext[Thumbnail, Board]) -> Ok[None]:
    """Render one thumbnail (a short sleep stands in for the work)."""
    ctx.deps.render_starts.append(ctx.event.image)
    await asyncio.sleep(0.05)
    ctx.deps.rendered.append(ctx.event.image)
    urgent = f" (priority {ctx.priority}, queued last)" if ctx.priority else ""
    album = ctx.partition_key or "-"
    ctx.deps.say("thumbnails", album, f"rendered {ctx.event.image}{urgent}")
    return Ok(None)


thumbnails: WorkerPool[Thumbnail, Thumbnail, Never, Board] = WorkerPool(
    name="thumbnails", event=Thumbnail, concurrency=3, execute=render
)

JOBS = (webhooks, reports, orders, thumbnails)


# -- the live log ----------------------------------------------------------------------


def _observer(board: Board) -> Callable[[JobEvent], None]:
    """One log line per significant engine event; every event is counted for the summary."""

    def observe(event: JobEvent) -> None:
        job, id = event.job, event.id
        board.counts[(job, event.type)] += 1
        if event.type == "job.executed" and event.attempt is not None:
            board.last_attempt[(job, id)] = event.attempt
        if event.type == "debounce.flushed":
            attempt = board.last_attempt.get((job, id), 1)
            board.say(
                job, id, f"sent batch of {event.event_count} ({event.reason}) on attempt {attempt}"
            )
        elif event.type == "job.failed" and event.will_retry and event.retry_at is not None:
            wait = (event.retry_at - event.at).total_seconds() * 1000
            board.say(
                job, id, f"attempt {event.attempt} failed: {event.error} -> retry in {wait:.0f} ms"
            )
        elif event.type == "job.failed":
            board.counts[(job, "final")] += 1
            board.say(
                job,
                id,
                f"attempt {event.attempt} failed: {event.error} -> final ({event.reason})",
            )
        elif event.type == "job.terminated":
            board.say(job, id, f"terminated ({event.reason})")
        elif event.type == "job.dead_lettered":
            board.say(job, id, f"dead letter: {event.error}")

    return observe


# -- the scenario ----------------------------------------------------------------------


async def _scenario(board: Board, db: Path, within: float) -> list[Check]:
    engine = Engine(
        jobs=list(JOBS),
        deps=board,
        storage=SqliteStorage(db),
        observers=[_observer(board)],
    )
    client = engine.client
    pool = client.worker_pool(thumbnails)
    contacts: list[str] = []
    board.say("demo", "", f"4 jobs on {db}")
    async with engine:  # the worker runs alarms while this block is open
        await client.continuous(reports).start("daily", 0)
        await _send_order(client.task(orders), board, "placed")

        # Queue while paused, so that priority (not timing) decides the order within an album.
        await pool.pause()
        for album in ALBUMS:
            photos = [Thumbnail(f"{album}/photo-{n}.jpg") for n in range(1, PHOTOS + 1)]
            await pool.enqueue_many(photos, partition_key=album)
        await pool.enqueue(Thumbnail(COVER), priority=10)
        board.say("demo", "", f"queued {THUMBNAILS} thumbnails in {len(ALBUMS)} albums; resume")
        await pool.resume()

        for n in range(5):  # a burst: the fifth event fills the batch: sealed, due at once
            contact = f"{BURST}-contact-{n}"
            contacts.append(contact)
            await client.debounce(webhooks).add(BURST, Webhook(contact), event_id=contact)
        for n in range(12):  # a trickle: each account's batch is flushed by flush_after
            account = ACCOUNTS[n % len(ACCOUNTS)]
            contact = f"{account}-contact-{n}"
            contacts.append(contact)
            await client.debounce(webhooks).add(account, Webhook(contact), event_id=contact)
            await asyncio.sleep(0.02)  # well inside flush_after: one batch per account
        await client.debounce(webhooks).add(BROKEN, Webhook(f"{BROKEN}-contact-0"))
        await _send_order(client.task(orders), board, "paid")  # after the payment reminder
        board.say("demo", "", f"{len(contacts) + 1} webhooks posted for 5 accounts; waiting")

        # Poll the counters and the instances' own status until everything reached its end.
        checks = await _checks(engine, board, contacts)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while not all(check.ok for check in checks):
                    await asyncio.sleep(0.05)
                    checks = await _checks(engine, board, contacts)
        checks = await _checks(engine, board, contacts)
    await engine.storage.close()
    return checks


_ALARMS = {"placed": "payment reminder", "paid": "shipping"}
"""What an order's alarm means after each event."""


async def _send_order(client: TaskClient[str, Order], board: Board, status: str) -> None:
    """Send an order event; its fold runs in this call, so the result says what it did."""
    before = await client.get_state(ORDER)
    sent_at = datetime.now(UTC)
    sent = await client.send(ORDER, status)
    board.order_path.append(status)
    then = "no alarm"
    if sent.scheduled_at is not None:
        ms = round((sent.scheduled_at - sent_at).total_seconds() * 10) * 100
        then = f"{_ALARMS.get(status, 'alarm')} in {ms} ms"
    board.say("orders", ORDER, f"{before.status if before else 'new'} -> {status} ({then})")


async def _checks(engine: Engine[Board], board: Board, contacts: Sequence[str]) -> list[Check]:
    """The scenario's expected end states, from what the jobs did and what storage says."""
    client = engine.client
    accounts = (*ACCOUNTS, BURST, BROKEN)
    left = [
        account
        for account in accounts
        if (await client.debounce(webhooks).status(account)).status != "not_found"
    ]
    order = await client.task(orders).status(ORDER)
    report = await client.continuous(reports).status("daily")
    pool = await client.worker_pool(thumbnails).status()
    letters = await engine.dead_letters()
    return [
        Check(
            sorted(board.delivered) == sorted(contacts) and not left,
            f"webhooks: {len(board.delivered)} of {len(contacts)} contacts delivered in"
            f" {len(board.batches)} batches; batches still open: {', '.join(left) or 'none'}",
        ),
        Check(
            board.gave_up == [BROKEN],
            f"webhooks: failed finally and handled by on_error: {', '.join(board.gave_up) or '-'}",
        ),
        Check(
            tuple(board.order_path) == ORDER_PATH and order.status == "not_found",
            f"orders: {ORDER} went {' -> '.join(board.order_path) or 'nowhere'};"
            f" {'finished' if order.status == 'not_found' else order.status}",
        ),
        Check(
            board.reports >= REPORTS and report.status == "not_found",
            f"report: ran {board.reports} of {REPORTS} times;"
            f" {'terminated itself' if report.status == 'not_found' else report.status}",
        ),
        Check(
            len(board.rendered) == THUMBNAILS
            and pool.pending == 0
            and board.render_starts[:1] == [COVER]
            and board.albums_in_order(),
            f"thumbnails: {len(board.rendered)} of {THUMBNAILS} rendered, {pool.pending} pending;"
            f" first to start: {board.render_starts[0] if board.render_starts else '-'};"
            f" albums in order: {'yes' if board.albums_in_order() else 'no'}",
        ),
        Check(not letters, f"dead letters: {len(letters)}"),
    ]


# -- the summary -----------------------------------------------------------------------


def _summary(board: Board, checks: Sequence[Check]) -> None:
    print()
    header = ("job", "kind", "executions", "retries", "final failures")
    print(f"{header[0]:<11} {header[1]:<12} {header[2]:>10} {header[3]:>8} {header[4]:>15}")
    for job in JOBS:
        failed = board.counts[(job.name, "job.failed")]
        final = board.counts[(job.name, "final")]
        # Every attempt ends as executed, failed or terminated (from inside execute/on_idle).
        runs = sum(board.counts[(job.name, t)] for t in ("job.executed", "job.terminated"))
        kind = job.kind.value
        print(f"{job.name:<11} {kind:<12} {runs + failed:>10} {failed - final:>8} {final:>15}")
    print()
    for check in checks:
        print(f"[{'ok' if check.ok else '!!'}] {check.text}")
    print("all work done" if all(check.ok for check in checks) else "NOT all work done")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options (shared by `durable-jobs demo` and `python -m durable_jobs.demo`)."""
    parser.add_argument(
        "--db", type=Path, help="keep the SQLite file here (a new file; default: a temp dir)"
    )
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the end")


def run(args: argparse.Namespace) -> int:
    """Run the demo with parsed options; returns the exit code (0 when all work ended)."""
    db: Path | None = args.db
    quiet: bool = args.quiet
    within: float = args.timeout
    if db is not None and db.exists():
        # Its instances and seen event ids would change the scenario, and it is not ours to delete.
        print(f"durable-jobs demo: {db} exists; give a new path to --db", file=sys.stderr)
        return 2
    board = Board(quiet=quiet)
    # The live log comes from an observer; the library's own log lines would repeat it.
    library_log = logging.getLogger("durable_jobs")
    level = library_log.level
    library_log.setLevel(logging.CRITICAL)
    try:
        if db is not None:
            checks = asyncio.run(_scenario(board, db, within))
        else:
            with tempfile.TemporaryDirectory(prefix="durable-jobs-demo-") as folder:
                checks = asyncio.run(_scenario(board, Path(folder) / "demo.db", within))
    finally:
        library_log.setLevel(level)
    _summary(board, checks)
    elapsed = time.monotonic() - board.started
    if db is not None:
        print(f"{elapsed:.1f} s; the database is kept: durable-jobs status --db {db}")
    else:
        print(f"{elapsed:.1f} s; the temporary database was deleted (--db PATH keeps it)")
    if all(check.ok for check in checks):
        return 0
    missing = "; ".join(check.text for check in checks if not check.ok)
    print(f"durable-jobs demo: not done within {within:g} s: {missing}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m durable_jobs.demo [--db PATH] [--quiet] [--timeout S]`; the exit code."""
    parser = argparse.ArgumentParser(prog="python -m durable_jobs.demo", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
