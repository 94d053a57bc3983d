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
from .._storage._interface import (
    DeadLetter,
    InstanceKey,
    InstanceRecord,
    InstanceStatus,
    JobKind,
    QueueItem,
    Storage,
)
from ._common import new_record


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
    `requeued`: the letter's event is queued again in its worker-pool partition.
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
    Run a dead letter's work again and delete the letter, in one instance transaction.

    Raises `DeadLetterNotFoundError`, or `ConflictError` when a new instance with the same
    id is alive (its state would be overwritten); nothing changes then.
    """
    letter = await find_dead_letter(storage, letter_id)
    key = letter.key
    async with storage.instance(key) as tx:
        now = clock.now()
        record = tx.record
        action: ResumeAction
        if record is not None and record.status is InstanceStatus.FAILED:
            action = "reactivated"
            record = _due(record, now)
        elif key.kind is JobKind.WORKER_POOL:
            action = "requeued"
            tx.queue_push(
                QueueItem(event_id=f"resumed-{letter.id}", event=letter.event, enqueued_at=now)
            )
            base = record if record is not None else new_record(key, now)
            record = attrs.evolve(
                base,
                alarm_at=now if base.alarm_at is None else min(base.alarm_at, now),
                updated_at=now,
            )
        elif record is None:
            action = "recreated"
            record = attrs.evolve(
                new_record(key, now), state=letter.state, meta=letter.meta, alarm_at=now
            )
        elif key.kind is JobKind.TASK:
            action = "rescheduled"
            record = _due(record, now)
        else:
            msg = (
                f"{key.kind.value} instance {key.id!r} of job {key.job!r} is alive again;"
                " resuming the letter would overwrite it (discard the letter instead)"
            )
            raise ConflictError(msg)
        tx.save(record)
        tx.remove_dead_letter(letter.id)
    return ResumeResult(letter_id=letter.id, key=key, action=action, run_at=now)


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
