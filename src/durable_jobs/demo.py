"""
`durable-jobs demo`: every kind at work for a few seconds, on a SQLite file, in real time.

Webhook events are debounced into batches per account; a flaky sender fails and is retried
with backoff (one account's failures are not retryable and reach `on_error`); a recurring
report runs every half second; an order moves through a task state machine; a worker pool
renders thumbnails. A live log shows what happens, then a summary. Exit code 0 when every
piece of work reached its expected end.
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
    TaskEventContext,
    TaskExecuteContext,
    TaskIdleContext,
    WorkerPool,
    WorkerPoolContext,
    every,
)


ACCOUNTS = ("acme", "globex", "initech")
BROKEN = "umbrella"  # its endpoint is gone: 410, not worth retrying
THUMBNAILS = 9
REPORTS = 4


@attrs.frozen
class Webhook:
    """An incoming webhook event: a contact changed in an account."""

    contact: str


@attrs.frozen
class Batch:
    """The contacts collected in one debounce window."""

    contacts: tuple[str, ...]


class SendError(Exception):
    """The downstream API refused a batch."""

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


@attrs.define
class Board:
    """What the jobs did, shared with them as `ctx.deps` (the demo's dependencies)."""

    started: float = attrs.field(factory=time.monotonic)
    quiet: bool = False
    delivered: list[str] = attrs.field(factory=list[str])
    gave_up: list[str] = attrs.field(factory=list[str])
    reports: int = 0
    shipped: list[str] = attrs.field(factory=list[str])
    rendered: list[str] = attrs.field(factory=list[str])
    counts: Counter[tuple[str, str]] = attrs.field(factory=Counter[tuple[str, str]])
    progress: asyncio.Event = attrs.field(factory=asyncio.Event)

    def say(self, who: str, what: str) -> None:
        self.progress.set()  # the scenario re-checks whether all work is done
        if not self.quiet:
            print(f"{time.monotonic() - self.started:6.2f}s  {who:<22} {what}")


# -- webhooks: Debounce + a flaky sender ------------------------------------------------


def collect(ctx: DebounceEventContext[Webhook, Batch, Board]) -> Batch:
    """Fold a webhook into its account's batch."""
    return Batch((*(ctx.state.contacts if ctx.state else ()), ctx.event.contact))


async def send(ctx: DebounceExecuteContext[Batch, Board]) -> Result[None, SendError]:
    """Send a batch: a flaky API (two 503s per batch), and one account that is gone (410)."""
    if ctx.id == BROKEN:
        return Err(SendError(410))
    if ctx.attempt < 3:  # the API is overloaded: the first two attempts of a batch fail
        return Err(SendError(503))
    await asyncio.sleep(0.01)
    ctx.deps.delivered.extend(ctx.state.contacts)
    ctx.deps.say(f"webhooks/{ctx.id}", f"sent {len(ctx.state.contacts)} contacts")
    return Ok(None)


def give_up(e: SendError, ctx: ErrorContext[Batch, Board]) -> None:
    """A batch failed finally: record it (the instance is then purged)."""
    # `e` is the SendError that `send` returned, typed without annotations on a lambda too
    ctx.deps.gave_up.append(ctx.id)
    ctx.deps.say(f"webhooks/{ctx.id}", f"gave up ({ctx.reason}, HTTP {e.status})")


webhooks: Debounce[Webhook, Batch, SendError, Board] = Debounce(
    name="webhooks",
    event=Webhook,
    state=Batch,
    flush_after="400 milliseconds",
    max_events=5,
    on_event=collect,
    execute=send,
    retry=Retry(
        max_attempts=4,
        delay=Backoff.exponential("100 milliseconds", max="400 milliseconds"),
        should_retry=lambda e: e.status >= 500,
    ),
    on_error=give_up,
)


# -- report: Continuous ----------------------------------------------------------------


def report(ctx: ContinuousContext[int, Board]) -> Ok[None]:
    """Report progress; the fourth run terminates the job."""
    ctx.deps.reports = ctx.run_count
    ctx.set_state(len(ctx.deps.delivered))
    ctx.deps.say("report", f"run {ctx.run_count}: {ctx.state} contacts delivered so far")
    if ctx.run_count >= REPORTS:
        ctx.terminate("enough reports")
    return Ok(None)


reports: Continuous[int, int, Never, Board] = Continuous(
    name="report", state=int, schedule=every("500 milliseconds"), execute=report
)


# -- orders: Task state machine --------------------------------------------------------


def on_order(ctx: TaskEventContext[str, Order, Board]) -> None:
    """Move the order to the event's status and schedule what comes next."""
    ctx.set_state(Order(ctx.event))
    ctx.deps.say(f"orders/{ctx.id}", f"-> {ctx.event}")
    if ctx.event == "placed":
        ctx.schedule("300 milliseconds")  # remind about payment unless paid by then
    elif ctx.event == "paid":
        ctx.schedule("200 milliseconds")  # ship shortly after payment


def advance_order(ctx: TaskExecuteContext[Order, Board]) -> Ok[None]:
    """The order's alarm: remind about payment, or ship a paid order."""
    if ctx.state is not None and ctx.state.status == "placed":
        ctx.deps.say(f"orders/{ctx.id}", "payment reminder sent")
    elif ctx.state is not None and ctx.state.status == "paid":
        ctx.set_state(Order("shipped"))
        ctx.deps.shipped.append(ctx.id)
        ctx.deps.say(f"orders/{ctx.id}", "-> shipped")
    return Ok(None)


def on_order_idle(ctx: TaskIdleContext[Order, Board]) -> None:
    """A shipped order with nothing scheduled is finished."""
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
    await asyncio.sleep(0.05)
    ctx.deps.rendered.append(ctx.event.image)
    ctx.deps.say(f"thumbnails/{ctx.partition}", f"rendered {ctx.event.image}")
    return Ok(None)


thumbnails: WorkerPool[Thumbnail, Thumbnail, Never, Board] = WorkerPool(
    name="thumbnails", event=Thumbnail, concurrency=3, execute=render
)


# -- the scenario ----------------------------------------------------------------------


def _observer(board: Board) -> Callable[[JobEvent], None]:
    def observe(event: JobEvent) -> None:
        board.counts[(event.job, event.type)] += 1
        if event.type == "job.failed" and not event.will_retry:
            board.counts[(event.job, "final")] += 1
        who = f"{event.job}/{event.id}"
        if event.type == "debounce.flushed":
            board.say(who, f"batch of {event.event_count} events done ({event.reason})")
        elif event.type == "job.failed" and event.will_retry and event.retry_at is not None:
            wait = (event.retry_at - event.at).total_seconds() * 1000
            board.say(who, f"attempt {event.attempt} failed: {event.error}; retry in {wait:.0f} ms")
        elif event.type == "job.dead_lettered":
            board.say(who, f"dead letter: {event.error}")

    return observe


async def _scenario(board: Board, db: Path, within: float) -> bool:
    engine = Engine(
        jobs=[webhooks, reports, orders, thumbnails],
        deps=board,
        storage=SqliteStorage(db),
        observers=[_observer(board)],
    )
    client = engine.client
    contacts: list[str] = []
    async with engine:  # the worker runs alarms while this block is open
        await client.continuous(reports).start("daily", 0)
        await client.task(orders).send("order-17", "placed")
        await client.worker_pool(thumbnails).enqueue_many(
            [Thumbnail(f"photo-{n}.jpg") for n in range(THUMBNAILS)]
        )
        for n in range(5):  # a burst: the fifth event reaches max_events and flushes at once
            contact = f"hooli-contact-{n}"
            contacts.append(contact)
            await client.debounce(webhooks).add("hooli", Webhook(contact), event_id=contact)
        for n in range(12):
            account = ACCOUNTS[n % len(ACCOUNTS)]
            contact = f"{account}-contact-{n}"
            contacts.append(contact)
            await client.debounce(webhooks).add(account, Webhook(contact), event_id=contact)
            if n == 6:
                await client.task(orders).send("order-17", "paid")
            await asyncio.sleep(0.05)
        await client.debounce(webhooks).add(BROKEN, Webhook("umbrella-contact"))

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while not _finished(board, contacts):
                    await board.progress.wait()
                    board.progress.clear()
        letters = await engine.dead_letters()
    done = _finished(board, contacts)
    _summary(board, db, contacts, len(letters), done)
    return done


def _finished(board: Board, contacts: Sequence[str]) -> bool:
    return (
        sorted(board.delivered) == sorted(contacts)
        and board.gave_up == [BROKEN]
        and board.shipped == ["order-17"]
        and len(board.rendered) == THUMBNAILS
        and board.reports >= REPORTS
    )


def _summary(board: Board, db: Path, contacts: Sequence[str], letters: int, done: bool) -> None:
    print()
    print(f"{'job':<12} {'executions':>10} {'retries':>8} {'final failures':>15}")
    for job in ("webhooks", "report", "orders", "thumbnails"):
        failed, final = board.counts[(job, "job.failed")], board.counts[(job, "final")]
        runs = board.counts[(job, "job.executed")] + board.counts[(job, "job.terminated")] + failed
        print(f"{job:<12} {runs:>10} {failed - final:>8} {final:>15}")
    print()
    print(f"contacts delivered: {len(board.delivered)} of {len(contacts)}")
    print(f"batches given up:   {', '.join(board.gave_up) or 'none'} (handled by on_error)")
    print(f"orders shipped:     {', '.join(board.shipped) or 'none'}")
    print(f"thumbnails:         {len(board.rendered)} of {THUMBNAILS}")
    print(f"reports:            {board.reports} of {REPORTS}")
    print(f"dead letters:       {letters}")
    print(f"storage:            {db}")
    print("all work done" if done else "NOT all work done before the timeout")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options (shared by `durable-jobs demo` and `python -m durable_jobs.demo`)."""
    parser.add_argument("--db", type=Path, help="keep the SQLite file here (default: a temp dir)")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the end")


def run(args: argparse.Namespace) -> int:
    """Run the demo with parsed options; returns the exit code (0 when all work ended)."""
    db: Path | None = args.db
    quiet: bool = args.quiet
    within: float = args.timeout
    board = Board(quiet=quiet)
    # The live log comes from an observer; the library's own log lines would repeat it.
    logging.getLogger("durable_jobs").setLevel(logging.CRITICAL)
    if db is not None:
        done = asyncio.run(_scenario(board, db, within))
        print(f"kept; look at it with: durable-jobs status --db {db}")
    else:
        with tempfile.TemporaryDirectory(prefix="durable-jobs-demo-") as folder:
            done = asyncio.run(_scenario(board, Path(folder) / "demo.db", within))
        print("(the temporary database was deleted; pass --db PATH to keep it)")
    return 0 if done else 1


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m durable_jobs.demo [--db PATH] [--quiet] [--timeout S]`; the exit code."""
    parser = argparse.ArgumentParser(prog="python -m durable_jobs.demo", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
