"""
Operator actions on stored instances and dead letters (the CLI and `Engine` use these).

They work on storage alone, so they run against a database whose jobs are not registered
in this process (the CLI's `--db`). None of them runs user code or decides about retries.
"""

from datetime import datetime
from typing import Literal, TypeAlias

import attrs

from .._clock import Clock
from .._errors import ConflictError, DeadLetterNotFoundError, InstanceNotFoundError
from .._serde import decode, encode
from .._storage._interface import (
    DeadLetter,
    InstanceKey,
    InstanceRecord,
    InstanceStatus,
    InstanceTransaction,
    JobKind,
    QueueItem,
    Storage,
)
from .._types import JsonValue
from ._common import new_record
from ._debounce import SealedBatch, debounce_meta, queue_sealed
from ._task import task_meta


ResumeAction: TypeAlias = Literal["reactivated", "recreated", "requeued", "rescheduled"]
"""What `resume` did: see `ResumeResult.action`."""


@attrs.frozen(kw_only=True)
class ResumeResult:
    """The outcome of resuming a dead letter (the letter is gone once this is returned)."""

    letter_id: str
    key: InstanceKey
    action: ResumeAction
    """
    `reactivated`: a parked (failed) instance is active again, its alarm due now.
    `recreated`: the purged instance was rebuilt from the letter's state, due now.
    `requeued`: the letter's pool event, task event or debounce batch is queued again.
    `rescheduled`: the task (which kept its state) is due now.
    """
    run_at: datetime


async def find_instance(storage: Storage, job: str, id: str) -> InstanceRecord:
    """The record of `job`'s instance `id` (any kind); `InstanceNotFoundError` if none."""
    for record in await storage.list_instances(job):
        if record.key.id == id:
            return record
    msg = f"no instance {id!r} of job {job!r} is stored"
    raise InstanceNotFoundError(msg)


async def find_dead_letter(storage: Storage, letter_id: str) -> DeadLetter:
    """The dead letter `letter_id`; `DeadLetterNotFoundError` if none."""
    for letter in await storage.dead_letters():
        if letter.id == letter_id:
            return letter
    msg = f"no dead letter {letter_id!r} is stored"
    raise DeadLetterNotFoundError(msg)


async def resume(storage: Storage, clock: Clock, letter_id: str) -> ResumeResult:
    """
    Run a dead letter's work again and delete the letter, in one transaction.

    Raises `DeadLetterNotFoundError`, or `ConflictError` when a new instance with the same
    id is alive (its state would be overwritten); nothing changes then.
    """
    letter = await find_dead_letter(storage, letter_id)
    key = letter.key
    if key.kind is JobKind.WORKER_POOL:
        return await _requeue_pool_event(storage, clock, letter)
    async with storage.instance(key) as tx:
        now = clock.now()
        record = tx.record
        action: ResumeAction
        if record is not None and record.status is InstanceStatus.FAILED:
            action = "reactivated"
            record = _due(record, now)
            if key.kind is JobKind.TASK:
                record = attrs.evolve(
                    record, meta=encode(attrs.evolve(task_meta(record), scheduled_at=now))
                )
            tx.revoke_lease()
        elif key.kind is JobKind.DEBOUNCE:
            action = "requeued"
            record = await _requeue_batch(tx, record or new_record(key, now), letter, now)
        elif key.kind is JobKind.TASK and letter.reason == "on_event":
            action = "requeued"
            record = _requeue_task_event(tx, record, letter, now)
        elif key.kind is JobKind.TASK:
            action = "rescheduled" if record is not None else "recreated"
            base = record or attrs.evolve(new_record(key, now), state=letter.state)
            meta = task_meta(base if record is not None else _with_meta(base, letter.meta))
            record = attrs.evolve(
                base, meta=encode(attrs.evolve(meta, scheduled_at=now)), alarm_at=now
            )
        elif record is None:
            action = "recreated"
            record = attrs.evolve(
                new_record(key, now), state=letter.state, meta=letter.meta, alarm_at=now
            )
        else:
            msg = (
                f"{key.kind.value} instance {key.id!r} of job {key.job!r} is alive again;"
                " resuming the letter would overwrite it (discard the letter instead)"
            )
            raise ConflictError(msg)
        tx.save(record)
        tx.remove_dead_letter(letter.id)
    return ResumeResult(letter_id=letter.id, key=key, action=action, run_at=now)


async def _requeue_pool_event(storage: Storage, clock: Clock, letter: DeadLetter) -> ResumeResult:
    now = clock.now()
    meta = letter.meta if isinstance(letter.meta, dict) else {}
    key, priority = meta.get("partition_key"), meta.get("priority")
    item = QueueItem(
        event_id=f"resumed-{letter.id}",
        event=letter.event,
        # back at the end of its key's line, with its priority (letters from 0.1.0 have none)
        partition_key=key if isinstance(key, str) else None,
        priority=priority if isinstance(priority, int) and not isinstance(priority, bool) else 0,
        enqueued_at=now,
    )
    # the letter goes only once the event is queued: a crash in between leaves both, and a
    # second resume is recognised by the event id (it was seen), so nothing runs twice
    await storage.push_items(letter.key, [item], now=now)
    await storage.delete_dead_letter(letter.id)
    return ResumeResult(letter_id=letter.id, key=letter.key, action="requeued", run_at=now)


async def _requeue_batch(
    tx: InstanceTransaction, record: InstanceRecord, letter: DeadLetter, now: datetime
) -> InstanceRecord:
    """Put a debounce batch that failed finally back in its id's chain, to flush again."""
    batch = attrs.evolve(decode(letter.meta, SealedBatch), state=letter.state)
    meta = queue_sealed(tx, debounce_meta(record), batch)
    alarm = record.alarm_at if meta.flushing is not None else now
    return attrs.evolve(record, meta=encode(meta), alarm_at=alarm, updated_at=now)


def _requeue_task_event(
    tx: InstanceTransaction, record: InstanceRecord | None, letter: DeadLetter, now: datetime
) -> InstanceRecord:
    """Queue a task event whose `on_event` raised, to be folded again by a worker."""
    base = record or new_record(letter.key, now)
    tx.queue_push(QueueItem(event_id=f"resumed-{letter.id}", event=letter.event, enqueued_at=now))
    meta = task_meta(base)
    meta = attrs.evolve(meta, queued_events=meta.queued_events + 1)
    alarm = base.alarm_at if base.lease is not None else now
    return attrs.evolve(base, meta=encode(meta), alarm_at=alarm, updated_at=now)


def _with_meta(record: InstanceRecord, meta: JsonValue) -> InstanceRecord:
    return attrs.evolve(record, meta=meta)


async def discard(storage: Storage, letter_id: str) -> None:
    """Delete a dead letter; `DeadLetterNotFoundError` if there is none."""
    if not await storage.delete_dead_letter(letter_id):
        msg = f"no dead letter {letter_id!r} is stored"
        raise DeadLetterNotFoundError(msg)


def _due(record: InstanceRecord, now: datetime) -> InstanceRecord:
    return attrs.evolve(
        record,
        status=InstanceStatus.ACTIVE,
        alarm_at=now,
        attempt=1,
        retry_started_at=None,
        defects=0,
        updated_at=now,
    )


async def prune(
    storage: Storage,
    *,
    letters_before: datetime | None,
    failed_before: datetime | None,
) -> tuple[int, int]:
    """
    Delete dead letters written before `letters_before` and instances that failed finally
    and were last updated before `failed_before` (None: keep them all); returns how many
    of each. An instance is checked again inside its own block: one that was resumed or
    is leased meanwhile is kept.
    """
    letters = 0
    if letters_before is not None:
        for letter in await storage.dead_letters():
            if letter.at < letters_before and await storage.delete_dead_letter(letter.id):
                letters += 1
    instances = 0
    if failed_before is not None:
        for listed in await storage.list_instances():
            if listed.status is not InstanceStatus.FAILED or listed.updated_at >= failed_before:
                continue
            async with storage.instance(listed.key) as tx:
                record = tx.record
                if (
                    record is not None
                    and record.status is InstanceStatus.FAILED
                    and record.updated_at < failed_before
                    and record.lease is None
                ):
                    tx.purge()  # its remembered event ids and dead letters stay
                    instances += 1
    return letters, instances
