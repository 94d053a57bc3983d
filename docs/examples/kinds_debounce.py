"""Debounce: a window from the first event, sealed batches, `max_events`, flush and clear."""

import asyncio
from datetime import timedelta

import attrs

from durable_jobs import (
    Debounce,
    DebounceEventContext,
    DebounceExecuteContext,
    Engine,
    Err,
    FlushReason,
    MemoryStorage,
    Ok,
    Result,
    Retry,
)
from durable_jobs.testing import TestClock


@attrs.frozen
class Location:
    lat: float
    lon: float


saved: list[Location] = []


def save_location(ctx: DebounceExecuteContext[Location]) -> Ok[None]:
    saved.append(ctx.state)
    return Ok(None)


# Without on_event the batch is the latest event: S is I (Debounce[Location, Location, ...]).
locations = Debounce(
    name="locations", event=Location, flush_after="10 seconds", execute=save_location
)


@attrs.frozen
class Edits:
    lines: tuple[str, ...] = ()


class DiskFull(Exception):
    pass


@attrs.define
class Disk:
    full: bool = False


disk = Disk()
flushes: list[tuple[FlushReason, int, Edits]] = []
tries: list[tuple[str, int]] = []  # (batch id, attempt) of every flush attempt


def add_line(ctx: DebounceEventContext[str, Edits]) -> Edits:
    before = ctx.state or Edits()
    return Edits((*before.lines, ctx.event))


def save_edits(ctx: DebounceExecuteContext[Edits]) -> Result[None, DiskFull]:
    tries.append((ctx.batch_id, ctx.attempt))
    if disk.full:
        return Err(DiskFull())
    flushes.append((ctx.flush_reason, ctx.event_count, ctx.state))
    return Ok(None)


edits = Debounce(
    name="edits",
    event=str,
    state=Edits,
    flush_after="1 minute",
    max_events=3,
    on_event=add_line,
    execute=save_edits,
    retry=Retry(max_attempts=3, delay="10 seconds"),
)


async def main() -> None:
    clock = TestClock()
    engine = Engine(
        jobs=[locations, edits], storage=MemoryStorage(), clock=clock, random=lambda: 0.5
    )
    start = clock.now()

    where = engine.client.debounce(locations)
    first = await where.add("van-1", Location(48.85, 2.35))
    assert first.created
    assert first.will_flush_at == start + timedelta(seconds=10)
    await clock.advance("8 seconds")
    later = await where.add("van-1", Location(48.86, 2.34))  # the window does not move
    assert not later.created
    assert later.will_flush_at == start + timedelta(seconds=10)
    await clock.advance("2 seconds")  # the flush is due: a worker runs it
    assert saved == [Location(48.86, 2.34)]  # the latest event

    doc = engine.client.debounce(edits)
    a = await doc.add("doc-1", "a", event_id="edit-1")
    repeat = await doc.add("doc-1", "a", event_id="edit-1")  # a redelivery
    assert repeat.duplicate
    await doc.add("doc-1", "b")
    c = await doc.add("doc-1", "c")  # the third event: the batch is sealed, due now
    assert (c.sealed, c.batch_id, c.event_count) == (True, a.batch_id, 3)
    assert c.will_flush_at == clock.now()
    d = await doc.add("doc-1", "d")  # the next event opens the next batch
    assert d.created
    assert d.batch_id != a.batch_id
    chain = (await doc.status("doc-1")).batches  # oldest first
    assert [(batch.stage, batch.event_count) for batch in chain] == [("queued", 3), ("open", 1)]
    assert flushes == []  # `add` never runs `execute`
    await clock.run_due()  # a worker flushes the sealed batch
    assert flushes == [("max_events", 3, Edits(("a", "b", "c")))]
    assert await doc.get_state("doc-1") == Edits(("d",))  # the open batch
    cleared = await doc.clear("doc-1")  # discarded, never executed
    assert (cleared.cleared, cleared.discarded_batches, cleared.discarded_events) == (True, 1, 1)
    assert (await doc.status("doc-1")).status == "not_found"

    disk.full = True
    x = await doc.add("doc-2", "x")
    await clock.advance("1 minute")  # the flush of [x] fails: retried in 10 s
    y = await doc.add("doc-2", "y")  # not in the batch being retried: the next batch
    assert y.batch_id != x.batch_id
    asked = await doc.flush("doc-2")  # [y] is due now, yet flushes after the retry
    assert (asked.requested, asked.batch_id) == (True, y.batch_id)
    status = await doc.status("doc-2")
    assert [batch.stage for batch in status.batches] == ["retrying", "open"]
    assert status.next_flush_at == clock.now() + timedelta(seconds=10)  # the retry's delay
    disk.full = False
    await clock.advance("10 seconds")  # the retry sends [x], then [y] flushes right after
    assert flushes[1:] == [("flush_after", 1, Edits(("x",))), ("manual", 1, Edits(("y",)))]
    assert tries[-3:] == [(x.batch_id, 1), (x.batch_id, 2), (y.batch_id, 1)]


if __name__ == "__main__":
    asyncio.run(main())
