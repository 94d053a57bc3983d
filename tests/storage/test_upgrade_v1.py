"""
The v1 -> v2 data upgrade (`_storage/_upgrade_v1.py`) on hand-made rows, one rule at a time.

Every meta it produces must be what the runtime of schema 2 reads and writes: the last
tests decode each one with the runtime's classes and encode it back unchanged.
"""

import itertools
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import attrs
import pytest

from durable_jobs import StorageError
from durable_jobs._runtime._continuous import ContinuousMeta
from durable_jobs._runtime._debounce import DebounceMeta, SealedBatch
from durable_jobs._runtime._task import TaskMeta
from durable_jobs._runtime._worker_pool import POOL_ID as RUNTIME_POOL_ID
from durable_jobs._serde import decode, encode
from durable_jobs._storage._upgrade_v1 import (
    POOL_ID,
    InstanceRow,
    ItemRow,
    LetterRow,
    SeenRow,
    V1ItemRow,
    V1Rows,
    V2Rows,
    upgrade,
)
from durable_jobs._types import JsonValue


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def iso(seconds: float) -> str:
    return at(seconds).isoformat()


def row(
    kind: str,
    id: str,
    meta: JsonValue,
    *,
    job: str = "job",
    status: str = "active",
    state: JsonValue = None,
    alarm: datetime | None = None,
    attempt: int = 1,
    retry_started_at: datetime | None = None,
    defects: int = 0,
    last_error: str | None = None,
    created: datetime = T0,
    updated: datetime = T0,
) -> InstanceRow:
    return InstanceRow(
        kind=kind,
        job=job,
        id=id,
        status=status,
        state=state,
        meta=meta,
        alarm_at=alarm,
        attempt=attempt,
        retry_started_at=retry_started_at,
        defects=defects,
        last_error=last_error,
        created_at=created,
        updated_at=updated,
    )


def partition(
    id: str, processed: int, *, job: str = "pool-job", current: str | None = None, **fields: object
) -> InstanceRow:
    in_flight: JsonValue = None
    if current is not None:
        # v1 kept the event as JSON text next to its id, key and priority
        in_flight = {"event_id": current, "event": "{}", "partition_key": None, "priority": 0}
    base = row("worker_pool", id, {"processed": processed, "current": in_flight}, job=job)
    return attrs.evolve(base, **fields)


def v1_item(
    seq: int,
    event_id: str,
    partition: str,
    *,
    job: str = "pool-job",
    priority: int = 0,
    key: str | None = None,
    enqueued: datetime = T0,
) -> V1ItemRow:
    return V1ItemRow(
        seq=seq,
        kind="worker_pool",
        job=job,
        id=partition,
        event_id=event_id,
        event={"n": seq},
        priority=priority,
        partition_key=key,
        enqueued_at=enqueued,
    )


def letter(
    seq: int, kind: str, id: str, meta: JsonValue, *, state: JsonValue = None, when: datetime = T0
) -> LetterRow:
    return LetterRow(
        seq=seq,
        letter_id=f"letter-{seq}",
        kind=kind,
        job="job",
        id=id,
        state=state,
        meta=meta,
        event=None,
        error="boom",
        reason="not_retryable",
        attempts=1,
        at=when,
    )


def batch_ids() -> Callable[[], str]:
    """Deterministic batch ids: batch-1, batch-2, ..."""
    counter = itertools.count(1)
    return lambda: f"batch-{next(counter)}"


def run(
    instances: Sequence[InstanceRow] = (),
    items: Sequence[V1ItemRow] = (),
    seen: Sequence[SeenRow] = (),
    letters: Sequence[LetterRow] = (),
) -> V2Rows:
    rows = V1Rows(instances=instances, items=items, seen=seen, letters=letters)
    return upgrade(rows, new_batch_id=batch_ids())


def only(rows: V2Rows) -> InstanceRow:
    (single,) = rows.instances
    return single


# -- worker pools --------------------------------------------------------------------------


def test_the_pool_id_is_the_runtime_one() -> None:
    assert POOL_ID == RUNTIME_POOL_ID


def test_pool_partitions_merge_into_one_record() -> None:
    upgraded = run(
        [
            partition("0", 2, status="paused", created_at=at(5), updated_at=at(50)),
            partition("1", 1, created_at=at(1), updated_at=at(20)),
            partition("2", 4, alarm_at=at(99), attempt=3, defects=1, last_error="x", current="e"),
        ],
        [v1_item(1, "e", "2")],
    )
    assert only(upgraded) == InstanceRow(
        kind="worker_pool",
        job="pool-job",
        id="pool",
        status="paused",  # one paused partition pauses the pool
        state=None,
        meta={"processed": 7},
        alarm_at=None,
        attempt=1,
        retry_started_at=None,
        defects=0,
        last_error=None,
        created_at=at(0),  # the third partition's
        updated_at=at(50),
    )


def test_a_pool_without_a_paused_partition_is_active() -> None:
    upgraded = run([partition("0", 0), partition("1", 0, status="failed")])
    assert only(upgraded).status == "active"


def test_pools_of_different_jobs_stay_apart() -> None:
    upgraded = run([partition("0", 1, job="a"), partition("0", 2, job="b", status="paused")])
    assert [(r.job, r.id, r.status, r.meta) for r in upgraded.instances] == [
        ("a", "pool", "active", {"processed": 1}),
        ("b", "pool", "paused", {"processed": 2}),
    ]


def test_pool_events_move_to_the_pool_keeping_seq_priority_and_key() -> None:
    upgraded = run(
        [partition("0", 0), partition("1", 0)],
        [
            v1_item(7, "late", "0", priority=5, key="k1", enqueued=at(7)),
            v1_item(3, "early", "1", key="k2", enqueued=at(3)),
            v1_item(5, "loose", "0", priority=-1, enqueued=at(5)),
        ],
    )
    assert upgraded.items == (
        ItemRow(
            seq=3,
            kind="worker_pool",
            job="pool-job",
            id="pool",
            event_id="early",
            event={"n": 3},
            priority=0,
            partition_key="k2",
            enqueued_at=at(3),
        ),
        ItemRow(
            seq=5,
            kind="worker_pool",
            job="pool-job",
            id="pool",
            event_id="loose",
            event={"n": 5},
            priority=-1,
            partition_key=None,
            enqueued_at=at(5),
        ),
        ItemRow(
            seq=7,
            kind="worker_pool",
            job="pool-job",
            id="pool",
            event_id="late",
            event={"n": 7},
            priority=5,
            partition_key="k1",
            enqueued_at=at(7),
        ),
    )


def test_the_event_a_partition_was_retrying_takes_its_bookkeeping() -> None:
    upgraded = run(
        [
            partition(
                "2",
                1,
                current="img-7",
                alarm_at=at(3000),
                attempt=2,
                retry_started_at=at(10),
                defects=1,
                last_error="RenderError: 503",
            )
        ],
        [v1_item(6, "img-7", "2", key="album-a"), v1_item(8, "img-8", "2", key="album-a")],
    )
    retried, waiting = upgraded.items
    assert (
        retried.event_id,
        retried.available_at,
        retried.attempt,
        retried.retry_started_at,
        retried.defects,
        retried.last_error,
    ) == ("img-7", at(3000), 2, at(10), 1, "RenderError: 503")
    # the next event of its key waits behind it, fresh
    assert (waiting.event_id, waiting.available_at, waiting.attempt, waiting.defects) == (
        "img-8",
        None,
        1,
        0,
    )


def test_a_current_event_of_another_partition_is_not_matched() -> None:
    upgraded = run(
        [partition("0", 0, current="e", attempt=2, alarm_at=at(60)), partition("1", 0)],
        [v1_item(1, "e", "1")],
    )
    (item,) = upgraded.items
    assert (item.attempt, item.available_at) == (1, None)


def test_one_event_id_in_two_partitions_keeps_both_events() -> None:
    upgraded = run(
        [partition("0", 0), partition("1", 0)],
        [v1_item(1, "dup", "0", key="a"), v1_item(2, "dup", "1", key="b")],
    )
    assert [(item.event_id, item.partition_key) for item in upgraded.items] == [
        ("dup", "a"),
        ("dup@v1-partition-1", "b"),
    ]


def test_a_pool_with_events_but_no_record_gets_one() -> None:
    upgraded = run([], [v1_item(4, "a", "0", enqueued=at(4)), v1_item(9, "b", "1", enqueued=at(9))])
    pool = only(upgraded)
    assert (pool.id, pool.status, pool.meta, pool.created_at, pool.updated_at) == (
        "pool",
        "active",
        {"processed": 0},
        at(4),
        at(9),
    )


def test_queue_items_of_other_kinds_keep_their_key() -> None:
    item = attrs.evolve(v1_item(1, "e", "x"), kind="task", job="orders")
    upgraded = run([], [item])
    assert [(i.kind, i.job, i.id, i.attempt) for i in upgraded.items] == [
        ("task", "orders", "x", 1)
    ]
    assert upgraded.instances == ()


def test_seen_ids_of_partitions_move_to_the_pool_once() -> None:
    upgraded = run(
        seen=[
            SeenRow(kind="worker_pool", job="p", id="0", event_id="a", at=at(1)),
            SeenRow(kind="worker_pool", job="p", id="1", event_id="b", at=at(2)),
            SeenRow(kind="worker_pool", job="p", id="1", event_id="a", at=at(3)),
            SeenRow(kind="task", job="t", id="x", event_id="a", at=at(4)),
        ]
    )
    assert upgraded.seen == (
        SeenRow(kind="worker_pool", job="p", id="pool", event_id="a", at=at(1)),
        SeenRow(kind="worker_pool", job="p", id="pool", event_id="b", at=at(2)),
        SeenRow(kind="task", job="t", id="x", event_id="a", at=at(4)),
    )


def test_pool_letters_move_to_the_pool_and_drop_partition_bookkeeping() -> None:
    v1 = attrs.evolve(
        letter(1, "worker_pool", "1", {"processed": 0, "current": None}), event={"image": "x"}
    )
    (upgraded,) = run(letters=[v1]).letters
    assert upgraded == attrs.evolve(v1, id="pool", meta=None)


# -- debounce ------------------------------------------------------------------------------


def debounce_meta(reason: str | None = None, count: int = 2) -> JsonValue:
    return {"event_count": count, "started_at": iso(0), "flush_reason": reason}


def test_a_batch_whose_flush_never_ran_is_the_open_batch() -> None:
    v1 = row("debounce", "a", debounce_meta(), state={"s": 1}, alarm=at(300))
    assert only(run([v1])) == attrs.evolve(
        v1,
        meta={
            "open": {
                "batch_id": "batch-1",
                "event_count": 2,
                "started_at": iso(0),
                "flush_requested_at": None,
                "last_event_at": None,
            },
            "queued": [],
            "flushing": None,
        },
    )


@pytest.mark.parametrize(
    ("fields", "reason", "expected_reason"),
    [
        ({"attempt": 2}, "max_events", "max_events"),
        ({"defects": 1}, "manual", "manual"),
        ({"status": "failed", "alarm_at": None}, "flush_after", "flush_after"),
        ({"attempt": 3}, None, "flush_after"),
    ],
    ids=["retrying", "defect", "parked", "no-reason"],
)
def test_a_batch_whose_flush_started_is_sealed_and_flushing(
    fields: dict[str, object], reason: str | None, expected_reason: str
) -> None:
    v1 = attrs.evolve(
        row("debounce", "a", debounce_meta(reason, 4), state={"s": 1}, alarm=at(3600)), **fields
    )
    assert only(run([v1])) == attrs.evolve(
        v1,
        state=None,  # the sealed batch holds it
        meta={
            "open": None,
            "queued": [],
            "flushing": {
                "batch_id": "batch-1",
                "event_count": 4,
                "started_at": iso(0),
                "reason": expected_reason,
                "state": {"s": 1},
            },
        },
    )


def test_every_batch_gets_its_own_id() -> None:
    upgraded = run(
        [row("debounce", "a", debounce_meta()), row("debounce", "b", debounce_meta(), attempt=2)]
    )
    metas = [r.meta for r in upgraded.instances]
    assert isinstance(metas[0], dict)
    assert isinstance(metas[1], dict)
    open_batch, flushing = metas[0]["open"], metas[1]["flushing"]
    assert isinstance(open_batch, dict)
    assert isinstance(flushing, dict)
    assert [open_batch["batch_id"], flushing["batch_id"]] == ["batch-1", "batch-2"]


def test_debounce_letters_become_sealed_batches() -> None:
    v1 = letter(1, "debounce", "a", debounce_meta("flush_after", 1), state={"s": 2})
    (upgraded,) = run(letters=[v1]).letters
    assert upgraded == attrs.evolve(
        v1,
        meta={
            "batch_id": "batch-1",
            "event_count": 1,
            "started_at": iso(0),
            "reason": "flush_after",
            "state": {"s": 2},
        },
    )


# -- task and continuous -------------------------------------------------------------------


def task_meta(scheduled_at: str | None) -> JsonValue:
    return {
        "event_count": 3,
        "execute_count": 1,
        "scheduled_at": scheduled_at,
        "idle": None,
        "idle_at": None,
        "queued_events": 0,
        "trigger_after_run": False,
    }


def test_a_task_is_scheduled_at_its_alarm() -> None:
    meta: JsonValue = {"event_count": 3, "execute_count": 1}
    upgraded = run(
        [
            row("task", "scheduled", meta, alarm=at(3600)),
            row("task", "idle", meta),
            row("task", "retrying", meta, alarm=at(60), attempt=2),
            row("task", "parked", meta, status="failed", alarm=at(10)),
        ]
    )
    assert {r.id: r.meta for r in upgraded.instances} == {
        "scheduled": task_meta(iso(3600)),
        "idle": task_meta(None),
        "retrying": task_meta(iso(60)),
        "parked": task_meta(None),
    }


def test_task_letters_are_not_scheduled() -> None:
    v1 = letter(1, "task", "a", {"event_count": 3, "execute_count": 1}, when=at(9))
    (upgraded,) = run(letters=[v1]).letters
    assert upgraded.meta == task_meta(None)


def continuous_meta(next_run_at: str) -> JsonValue:
    return {
        "run_count": 8,
        "last_run_at": iso(420),
        "next_run_at": next_run_at,
        "trigger_due": False,
        "trigger_after_run": False,
    }


def test_a_continuous_runs_next_at_its_alarm_else_when_last_updated() -> None:
    meta: JsonValue = {"run_count": 8, "last_run_at": iso(420)}
    upgraded = run(
        [
            row("continuous", "scheduled", meta, alarm=at(480)),
            row("continuous", "parked", meta, status="failed", updated=at(430)),
        ]
    )
    assert {r.id: r.meta for r in upgraded.instances} == {
        "parked": continuous_meta(iso(430)),
        "scheduled": continuous_meta(iso(480)),
    }


def test_continuous_letters_run_next_at_their_time() -> None:
    v1 = letter(1, "continuous", "a", {"run_count": 8, "last_run_at": iso(420)}, when=at(500))
    (upgraded,) = run(letters=[v1]).letters
    assert upgraded.meta == continuous_meta(iso(500))


def test_times_in_meta_are_written_in_utc() -> None:
    paris = datetime(2026, 1, 1, 1, 0, tzinfo=ZoneInfo("Europe/Paris"))
    meta: JsonValue = {"run_count": 1, "last_run_at": "2026-01-01T01:00:00+01:00"}
    upgraded = only(run([row("continuous", "a", meta, alarm=paris)]))
    assert isinstance(upgraded.meta, dict)
    assert upgraded.meta["last_run_at"] == "2026-01-01T00:00:00+00:00"
    assert upgraded.meta["next_run_at"] == "2026-01-01T00:00:00+00:00"


def test_letters_come_out_in_seq_order() -> None:
    meta: JsonValue = {"event_count": 1, "execute_count": 0}
    letters = [letter(seq, "task", "a", meta) for seq in (3, 1, 2)]
    assert [d.seq for d in run(letters=letters).letters] == [1, 2, 3]


# -- what it refuses -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        row("task", "a", None),
        row("task", "a", {"event_count": "3"}),
        row("continuous", "a", {"run_count": 1, "last_run_at": "yesterday"}),
        row("continuous", "a", {"run_count": 1, "last_run_at": "2026-01-01T00:00:00"}),
        row("debounce", "a", {"event_count": 1, "flush_reason": "because"}, attempt=2),
        row("worker_pool", "0", {"processed": 0, "current": {"event": "{}"}}),
        row("cron", "a", {}),
    ],
    ids=["no-meta", "text-count", "bad-time", "naive-time", "bad-reason", "no-event-id", "kind"],
)
def test_an_unreadable_row_is_a_storage_error_naming_it(bad: InstanceRow) -> None:
    with pytest.raises(StorageError, match=f"{bad.kind}:job:{bad.id}"):
        run([bad])


# -- the runtime reads what the upgrade writes ---------------------------------------------


def everything() -> V2Rows:
    """One upgraded database holding every shape of meta the upgrade writes."""
    task: JsonValue = {"event_count": 1, "execute_count": 0}
    continuous: JsonValue = {"run_count": 2, "last_run_at": iso(60)}
    return run(
        [
            row("continuous", "scheduled", continuous, alarm=at(120)),
            row("continuous", "parked", continuous, status="failed", defects=2),
            row("continuous", "never-ran", {"run_count": 0, "last_run_at": None}, alarm=at(1)),
            row("debounce", "open", debounce_meta(), alarm=at(300)),
            row("debounce", "retrying", debounce_meta("max_events"), attempt=2, alarm=at(9)),
            row("debounce", "parked", debounce_meta(), status="failed", defects=2),
            row("task", "scheduled", task, alarm=at(60)),
            row("task", "idle", task),
            partition("0", 3, current="e", attempt=2, alarm_at=at(30)),
        ],
        [v1_item(1, "e", "0")],
        letters=[
            letter(1, "continuous", "parked", continuous),
            letter(2, "debounce", "gone", debounce_meta("manual"), state={"s": 1}),
            letter(3, "task", "dead", task),
            letter(4, "worker_pool", "0", {"processed": 0, "current": None}),
        ],
    )


META_CLASSES: dict[str, type[object]] = {
    "continuous": ContinuousMeta,
    "debounce": DebounceMeta,
    "task": TaskMeta,
}
LETTER_META_CLASSES: dict[str, type[object]] = {**META_CLASSES, "debounce": SealedBatch}


def as_stored(value: JsonValue) -> JsonValue:
    """What a backend reads back: JSON text parsed again (tuples become lists)."""
    parsed: JsonValue = json.loads(json.dumps(value))
    return parsed


def test_every_instance_meta_decodes_with_the_runtime_classes_unchanged() -> None:
    checked = 0
    for upgraded in everything().instances:
        if upgraded.kind == "worker_pool":
            assert upgraded.meta == {"processed": 3}  # the pool reads only this integer
            continue
        cls = META_CLASSES[upgraded.kind]
        decoded = decode(upgraded.meta, cls)
        assert as_stored(encode(decoded)) == upgraded.meta, upgraded.id
        checked += 1
    assert checked == 8


def test_every_letter_meta_decodes_with_the_runtime_classes_unchanged() -> None:
    checked = 0
    for upgraded in everything().letters:
        if upgraded.kind == "worker_pool":
            assert upgraded.meta is None  # what the runtime writes for a pool event's letter
            continue
        cls = LETTER_META_CLASSES[upgraded.kind]
        decoded = decode(upgraded.meta, cls)
        assert as_stored(encode(decoded)) == upgraded.meta, upgraded.letter_id
        checked += 1
    assert checked == 3
