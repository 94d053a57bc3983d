"""The jobs and the event stream the benchmarks share."""

from collections.abc import Iterator

import attrs

from durable_jobs import Debounce, DebounceEventContext, DebounceExecuteContext, Ok, Result


@attrs.frozen
class Click:
    """One debounce event: small, like a typical webhook payload after validation."""

    user: str
    n: int


@attrs.frozen
class Batch:
    """The debounce state: every event of the batch so far."""

    clicks: tuple[Click, ...]


def fold(ctx: DebounceEventContext[Click, Batch]) -> Batch:
    """Append the event to the batch (the same work the minimal sqlite3 loop does)."""
    return Batch((*(ctx.state.clicks if ctx.state is not None else ()), ctx.event))


def flush_nothing(ctx: DebounceExecuteContext[Batch]) -> Result[None, Exception]:
    """A flush that succeeds at once."""
    return Ok(None)


def debounce_job(*, max_events: int | None = None) -> Debounce[Click, Batch, Exception]:
    """A debounce job whose window (1 hour) never ends during a benchmark."""
    return Debounce(
        name="clicks",
        event=Click,
        state=Batch,
        flush_after="1 hour",
        max_events=max_events,
        on_event=fold,
        execute=flush_nothing,
    )


def id_of(index: int) -> str:
    """The debounce id number `index`."""
    return f"batch-{index:04d}"


def stream(ids: int, events_per_id: int) -> Iterator[tuple[str, Click]]:
    """`events_per_id` rounds over `ids` ids: each id's batch grows by one event per round."""
    for round_ in range(events_per_id):
        for index in range(ids):
            yield id_of(index), Click(user=f"user-{index}", n=round_)


def shard(ids: int, events_per_id: int, adder: int, adders: int) -> Iterator[tuple[str, Click]]:
    """The part of `stream` that concurrent adder `adder` of `adders` owns (disjoint ids)."""
    for id, click in stream(ids, events_per_id):
        if int(id.rsplit("-", 1)[1]) % adders == adder:
            yield id, click
