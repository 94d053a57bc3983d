"""
The data upgrade from storage schema 1 (release 0.1.0) to schema 2, shared by the SQL backends.

Pure functions on plain rows: a backend reads every v1 row into the classes below (JSON
already parsed, times as aware datetimes), calls `upgrade`, and writes the v2 rows back in
the migration's transaction. What changes, by kind:

- worker pools: v1 split a pool into hash partitions (ids "0".."N-1"), each with a record
  and a queue. v2 has one instance per pool (id "pool") whose queue holds every event with
  its own retry bookkeeping. The partitions' records merge into one, their queues into one
  (each event keeps its `seq`, so FIFO order and priorities survive), the event a partition
  was retrying (`meta.current`) takes over the partition's attempt, error and alarm, and
  seen event ids and dead letters move to the pool's key.
- debounce: v1 kept one batch per id, with `{event_count, started_at, flush_reason}`. A
  batch whose flush had started (a retry or a defect pending, or parked) becomes the
  sealed, flushing batch of v2, with a new batch id; any other becomes the open batch.
- task and continuous: their meta gains the fields v2 added, set from the record's alarm.

The v2 meta values are written out by hand rather than by encoding the runtime's classes:
this module is frozen history, and must keep producing schema 2 when those classes move
on. A test decodes its output with the runtime classes of the release that introduced
schema 2, so the two agree.
"""

import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Final

import attrs

from .._errors import StorageError
from .._types import JsonValue


_POOL: Final = "worker_pool"
_DEBOUNCE: Final = "debounce"
_TASK: Final = "task"
_CONTINUOUS: Final = "continuous"
_ACTIVE: Final = "active"
_PAUSED: Final = "paused"
_FAILED: Final = "failed"

POOL_ID: Final = "pool"
"""The id of a pool's one instance in schema 2 (the runtime's `POOL_ID` when it was written)."""


@attrs.frozen(kw_only=True)
class InstanceRow:
    """
    A row of `instances`, in either schema.

    The columns are the same in both but for the lease: v1's `lease_until` is dropped and
    v2's `lease_token`/`lease_expires_at` are empty after the upgrade (no run survives it).
    """

    kind: str
    job: str
    id: str
    status: str
    state: JsonValue
    meta: JsonValue
    alarm_at: datetime | None
    attempt: int
    retry_started_at: datetime | None
    defects: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime


@attrs.frozen(kw_only=True)
class V1ItemRow:
    """A row of v1's `queue_items`."""

    seq: int
    kind: str
    job: str
    id: str
    event_id: str
    event: JsonValue
    priority: int
    partition_key: str | None
    enqueued_at: datetime


@attrs.frozen(kw_only=True)
class ItemRow:
    """A row of v2's `items` (the lease columns are empty after the upgrade)."""

    seq: int
    kind: str
    job: str
    id: str
    event_id: str
    event: JsonValue
    priority: int
    partition_key: str | None
    enqueued_at: datetime
    available_at: datetime | None = None
    attempt: int = 1
    retry_started_at: datetime | None = None
    defects: int = 0
    last_error: str | None = None


@attrs.frozen(kw_only=True)
class SeenRow:
    """A row of `seen_events`, in either schema."""

    kind: str
    job: str
    id: str
    event_id: str
    at: datetime


@attrs.frozen(kw_only=True)
class LetterRow:
    """A row of `dead_letters`, in either schema (`seq` keeps their order)."""

    seq: int
    letter_id: str
    kind: str
    job: str
    id: str
    state: JsonValue
    meta: JsonValue
    event: JsonValue
    error: str
    reason: str
    attempts: int
    at: datetime


@attrs.frozen(kw_only=True)
class V1Rows:
    """Every row of a schema-1 database."""

    instances: Sequence[InstanceRow]
    items: Sequence[V1ItemRow]
    seen: Sequence[SeenRow]
    letters: Sequence[LetterRow]


@attrs.frozen(kw_only=True)
class V2Rows:
    """Every row of the same database in schema 2."""

    instances: tuple[InstanceRow, ...]
    items: tuple[ItemRow, ...]
    """In `seq` order."""
    seen: tuple[SeenRow, ...]
    letters: tuple[LetterRow, ...]
    """In `seq` order."""


def _new_batch_id() -> str:
    return uuid.uuid4().hex


def upgrade(rows: V1Rows, *, new_batch_id: Callable[[], str] = _new_batch_id) -> V2Rows:
    """
    The schema-2 rows of a schema-1 database (see the module docstring for the rules).

    `new_batch_id` names the debounce batches v1 left unnamed (a uuid4 hex by default).
    Raises `StorageError` for a row this upgrade cannot read (a meta of the wrong shape).
    """
    partitions: dict[str, list[InstanceRow]] = {}
    instances: list[InstanceRow] = []
    for row in rows.instances:
        if row.kind == _POOL:
            partitions.setdefault(row.job, []).append(row)
        else:
            instances.append(_upgrade_instance(row, new_batch_id))
    items = _pool_items(rows.items, partitions)
    events: dict[str, list[ItemRow]] = {}
    for item in items:
        if item.kind == _POOL:
            events.setdefault(item.job, []).append(item)
    for job in {**partitions, **events}:  # v1 allowed a pool with events but no record
        instances.append(_merge_pool(job, partitions.get(job, []), events.get(job, [])))
    return V2Rows(
        instances=tuple(sorted(instances, key=lambda row: (row.kind, row.job, row.id))),
        items=tuple(items),
        seen=_upgrade_seen(rows.seen),
        letters=tuple(
            _upgrade_letter(letter, new_batch_id)
            for letter in sorted(rows.letters, key=lambda letter: letter.seq)
        ),
    )


# -- instances -----------------------------------------------------------------------------


def _upgrade_instance(row: InstanceRow, new_batch_id: Callable[[], str]) -> InstanceRow:
    if row.kind == _DEBOUNCE:
        return _upgrade_debounce(row, new_batch_id)
    if row.kind == _TASK:
        scheduled = None if row.status == _FAILED else row.alarm_at
        return attrs.evolve(row, meta=_task_meta(row.meta, scheduled, _what(row)))
    if row.kind == _CONTINUOUS:
        next_run = row.alarm_at if row.alarm_at is not None else row.updated_at
        return attrs.evolve(row, meta=_continuous_meta(row.meta, next_run, _what(row)))
    msg = f"v1 instance {_what(row)} has a kind this upgrade does not know: {row.kind!r}"
    raise StorageError(msg)


def _upgrade_debounce(row: InstanceRow, new_batch_id: Callable[[], str]) -> InstanceRow:
    what = _what(row)
    meta = _object(row.meta, what)
    event_count = _int(meta, "event_count", what)
    started_at = _time_text(meta, "started_at", what) or _iso(row.created_at)
    started = row.attempt > 1 or row.defects > 0 or row.status == _FAILED
    if started:
        # its first flush ran: from now on it is sealed, and every retry sees this batch
        flushing: dict[str, JsonValue] = {
            "batch_id": new_batch_id(),
            "event_count": event_count,
            "started_at": started_at,
            "reason": _flush_reason(meta, what),
            "state": row.state,
        }
        chain: dict[str, JsonValue] = {"open": None, "queued": [], "flushing": flushing}
        return attrs.evolve(row, state=None, meta=chain)
    open_batch: dict[str, JsonValue] = {
        "batch_id": new_batch_id(),
        "event_count": event_count,
        "started_at": started_at,
        "flush_requested_at": None,
        "last_event_at": None,
    }
    return attrs.evolve(row, meta={"open": open_batch, "queued": [], "flushing": None})


def _task_meta(meta: JsonValue, scheduled_at: datetime | None, what: str) -> JsonValue:
    v1 = _object(meta, what)
    return {
        "event_count": _int(v1, "event_count", what),
        "execute_count": _int(v1, "execute_count", what),
        "scheduled_at": None if scheduled_at is None else _iso(scheduled_at),
        "idle": None,
        "idle_at": None,
        "queued_events": 0,
        "trigger_after_run": False,
    }


def _continuous_meta(meta: JsonValue, next_run_at: datetime, what: str) -> JsonValue:
    v1 = _object(meta, what)
    return {
        "run_count": _int(v1, "run_count", what),
        "last_run_at": _time_text(v1, "last_run_at", what),
        "next_run_at": _iso(next_run_at),
        "trigger_due": False,
        "trigger_after_run": False,
    }


# -- worker pools --------------------------------------------------------------------------


def _merge_pool(
    job: str, partitions: Sequence[InstanceRow], events: Sequence[ItemRow]
) -> InstanceRow:
    """One pool record from its v1 partitions: paused if any was, processed summed."""
    processed = sum(_int(_object(p.meta, _what(p)), "processed", _what(p)) for p in partitions)
    paused = any(p.status == _PAUSED for p in partitions)
    if partitions:
        created = min(p.created_at for p in partitions)
        updated = max(p.updated_at for p in partitions)
    else:  # only events: the pool is as old as its first one
        created = min(event.enqueued_at for event in events)
        updated = max(event.enqueued_at for event in events)
    return InstanceRow(
        kind=_POOL,
        job=job,
        id=POOL_ID,
        status=_PAUSED if paused else _ACTIVE,
        state=None,
        meta={"processed": processed},
        alarm_at=None,
        attempt=1,
        retry_started_at=None,
        defects=0,
        last_error=None,
        created_at=created,
        updated_at=updated,
    )


def _pool_items(
    v1_items: Iterable[V1ItemRow], pools: dict[str, list[InstanceRow]]
) -> list[ItemRow]:
    """Every queue item in v2 form, pool events moved to their pool's one queue."""
    # (job, partition id) -> (event id, the partition whose retry it is)
    current: dict[tuple[str, str], tuple[str, InstanceRow]] = {}
    for job, partitions in pools.items():
        for partition in partitions:
            event_id = _current_event_id(partition)
            if event_id is not None:
                current[(job, partition.id)] = (event_id, partition)
    items: list[ItemRow] = []
    taken: set[tuple[str, str]] = set()  # (job, event id) of the pool events kept so far
    for v1 in sorted(v1_items, key=lambda row: row.seq):
        item = ItemRow(
            seq=v1.seq,
            kind=v1.kind,
            job=v1.job,
            id=v1.id,
            event_id=v1.event_id,
            event=v1.event,
            priority=v1.priority,
            partition_key=v1.partition_key,
            enqueued_at=v1.enqueued_at,
        )
        if v1.kind == _POOL:
            retried = current.get((v1.job, v1.id))
            if retried is not None and retried[0] == v1.event_id:
                partition = retried[1]
                item = attrs.evolve(
                    item,
                    available_at=partition.alarm_at,
                    attempt=partition.attempt,
                    retry_started_at=partition.retry_started_at,
                    defects=partition.defects,
                    last_error=partition.last_error,
                )
            event_id = v1.event_id
            if (v1.job, event_id) in taken:
                # two partitions accepted one event id (different partition keys): both
                # events stay, the later under a name of its own
                event_id = f"{event_id}@v1-partition-{v1.id}"
            taken.add((v1.job, event_id))
            item = attrs.evolve(item, id=POOL_ID, event_id=event_id)
        items.append(item)
    return items


def _current_event_id(partition: InstanceRow) -> str | None:
    """The event a v1 partition was retrying (its `meta.current`), if any."""
    what = _what(partition)
    current = _object(partition.meta, what).get("current")
    if current is None:
        return None
    event_id = _object(current, what).get("event_id")
    if not isinstance(event_id, str):
        msg = f"v1 instance {what} has a meta.current without an event_id: {current!r}"
        raise StorageError(msg)
    return event_id


# -- satellites ----------------------------------------------------------------------------


def _upgrade_seen(rows: Iterable[SeenRow]) -> tuple[SeenRow, ...]:
    """Seen ids of pool partitions move to the pool; one id seen twice keeps its first time."""
    seen: dict[tuple[str, str, str, str], SeenRow] = {}
    for row in rows:
        moved = attrs.evolve(row, id=POOL_ID) if row.kind == _POOL else row
        key = (moved.kind, moved.job, moved.id, moved.event_id)
        earlier = seen.get(key)
        if earlier is None or moved.at < earlier.at:
            seen[key] = moved
    return tuple(seen.values())


def _upgrade_letter(letter: LetterRow, new_batch_id: Callable[[], str]) -> LetterRow:
    what = f"dead letter {letter.letter_id}"
    if letter.kind == _POOL:
        # a pool event's letter carries the event; v2 keeps no pool bookkeeping with it
        return attrs.evolve(letter, id=POOL_ID, meta=None)
    if letter.kind == _DEBOUNCE:
        meta = _object(letter.meta, what)
        sealed: dict[str, JsonValue] = {
            "batch_id": new_batch_id(),
            "event_count": _int(meta, "event_count", what),
            "started_at": _time_text(meta, "started_at", what) or _iso(letter.at),
            "reason": _flush_reason(meta, what),
            "state": letter.state,
        }
        return attrs.evolve(letter, meta=sealed)
    if letter.kind == _TASK:
        return attrs.evolve(letter, meta=_task_meta(letter.meta, None, what))
    if letter.kind == _CONTINUOUS:
        return attrs.evolve(letter, meta=_continuous_meta(letter.meta, letter.at, what))
    msg = f"v1 {what} has a kind this upgrade does not know: {letter.kind!r}"
    raise StorageError(msg)


# -- reading v1 meta -----------------------------------------------------------------------


def _what(row: InstanceRow) -> str:
    return f"{row.kind}:{row.job}:{row.id}"


def _iso(when: datetime) -> str:
    """A time as the converter writes it: ISO 8601 in UTC."""
    return when.astimezone(UTC).isoformat()


def _object(meta: JsonValue, what: str) -> dict[str, JsonValue]:
    if not isinstance(meta, dict):
        msg = f"v1 meta of {what} is not a JSON object: {meta!r}"
        raise StorageError(msg)
    return meta


def _int(meta: dict[str, JsonValue], name: str, what: str) -> int:
    value = meta.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"v1 meta of {what} has a {name} that is not an integer: {value!r}"
        raise StorageError(msg)
    return value


def _time_text(meta: dict[str, JsonValue], name: str, what: str) -> str | None:
    """A stored time, normalised to the converter's form (UTC ISO 8601), or None."""
    value = meta.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return _iso(parsed)
    msg = f"v1 meta of {what} has a {name} that is not an aware ISO 8601 time: {value!r}"
    raise StorageError(msg)


def _flush_reason(meta: dict[str, JsonValue], what: str) -> str:
    reason = meta.get("flush_reason")
    if reason is None:
        return "flush_after"
    if isinstance(reason, str) and reason in ("flush_after", "max_events", "manual"):
        return reason
    msg = f"v1 meta of {what} has an unknown flush_reason: {reason!r}"
    raise StorageError(msg)
