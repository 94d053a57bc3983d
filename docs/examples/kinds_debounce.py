"""Debounce: a fixed window from the first event, `max_events`, `event_id`, flush and clear."""

import asyncio
from datetime import timedelta

import attrs

from durable_jobs import (
    Debounce,
    DebounceEventContext,
    DebounceExecuteContext,
    Engine,
    FlushReason,
    MemoryStorage,
    Ok,
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


flushes: list[tuple[FlushReason, int, Edits]] = []


def add_line(ctx: DebounceEventContext[str, Edits]) -> Edits:
    before = ctx.state or Edits()
    return Edits((*before.lines, ctx.event))


def save_edits(ctx: DebounceExecuteContext[Edits]) -> Ok[None]:
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
)


async def main() -> None:
    clock = TestClock()
    engine = Engine(jobs=[locations, edits], storage=MemoryStorage(), clock=clock)
    start = clock.now()

    where = engine.client.debounce(locations)
    first = await where.add("van-1", Location(48.85, 2.35))
    assert first.created
    assert first.will_flush_at == start + timedelta(seconds=10)
    await clock.advance("8 seconds")
    later = await where.add("van-1", Location(48.86, 2.34))  # the window does not move
    assert not later.created
    assert later.will_flush_at == start + timedelta(seconds=10)
    await clock.advance("2 seconds")
    assert saved == [Location(48.86, 2.34)]  # the latest event

    doc = engine.client.debounce(edits)
    await doc.add("doc-1", "a", event_id="edit-1")
    repeat = await doc.add("doc-1", "a", event_id="edit-1")  # a redelivery
    assert repeat.duplicate
    assert repeat.event_count == 1
    await doc.add("doc-1", "b")
    third = await doc.add("doc-1", "c")  # reaches max_events: flushed inside this call
    assert third.flush is not None
    assert third.flush.flushed
    assert flushes == [("max_events", 3, Edits(("a", "b", "c")))]

    await doc.add("doc-2", "x")
    manual = await doc.flush("doc-2")
    assert (manual.flushed, manual.reason) == (True, "manual")
    await doc.add("doc-3", "y")
    cleared = await doc.clear("doc-3")  # discarded, never executed
    assert (cleared.cleared, cleared.discarded_events) == (True, 1)
    assert (await doc.status("doc-3")).status == "not_found"
    assert len(flushes) == 2


if __name__ == "__main__":
    asyncio.run(main())
