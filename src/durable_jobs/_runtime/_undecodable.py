"""
Work whose stored data does not decode is parked at once, never retried.

A class that changed shape in a deploy, or a row edited by hand, will not start decoding by
itself: retrying would only repeat the failure once per lease, and hold up whatever waits
behind it. So the worker that claimed it writes, in the claim's fenced write, a dead letter
(reason `undecodable`, naming the path) and parks the instance as `failed`, or, for a
worker-pool event, dead-letters that one event and drops it from the queue (the rest of the
pool and of its partition key keep flowing). Fix the class and resume the letter, or
discard it.
"""

import uuid
from datetime import datetime

import attrs

from .._errors import UndecodableDataError
from .._observe import EventType, JobEvent
from .._storage._interface import (
    Claim,
    DeadLetter,
    InstanceKey,
    InstanceStatus,
    ItemClaim,
    ItemFinish,
)
from ._common import emit_all, fenced
from ._services import Services


REASON = "undecodable"
"""The dead-letter reason (and `job.failed` reason) of undecodable stored data."""


async def park(services: Services, work: Claim | ItemClaim, error: UndecodableDataError) -> None:
    """Dead-letter `work` at once (raises `LeaseLostError` when its lease is gone)."""
    if isinstance(work, Claim):
        await _park_instance(services, work, error)
    else:
        await _drop_item(services, work, error)


async def _park_instance(services: Services, claim: Claim, error: UndecodableDataError) -> None:
    key = claim.key
    text = str(error)
    async with services.storage.instance(key) as tx:
        now = services.clock.now()
        record = fenced(tx, claim.token)
        tx.add_dead_letter(
            DeadLetter(
                id=uuid.uuid4().hex,
                key=key,
                state=record.state,
                meta=record.meta,
                error=text,
                reason=REASON,
                attempts=record.attempt,
                at=now,
            )
        )
        # state and meta are kept as stored: the fix is a code change, then `resume`
        tx.save(
            attrs.evolve(
                record,
                status=InstanceStatus.FAILED,
                alarm_at=None,
                last_error=text,
                updated_at=now,
            )
        )
    emit_all(services, _events(key, now, text, record.attempt, None))


async def _drop_item(services: Services, claim: ItemClaim, error: UndecodableDataError) -> None:
    item = claim.item
    text = str(error)
    now = services.clock.now()
    letter = DeadLetter(
        id=uuid.uuid4().hex,
        key=claim.pool,
        state=None,
        # what `resume` needs to queue the event again, like the letter of a defect
        meta={
            "event_id": item.event_id,
            "partition_key": item.partition_key,
            "priority": item.priority,
        },
        event=item.event,
        error=text,
        reason=REASON,
        attempts=item.attempt,
        at=now,
    )
    await services.storage.finish_item(
        claim.pool, ItemFinish(event_id=item.event_id, token=claim.token, letters=(letter,))
    )
    services.wake(now)  # the next event of its partition key may start now
    emit_all(services, _events(claim.pool, now, text, item.attempt, item.event_id))


def _events(
    key: InstanceKey, now: datetime, text: str, attempt: int, event_id: str | None
) -> list[JobEvent]:
    kinds: tuple[EventType, ...] = ("job.failed", "job.dead_lettered")
    return [
        JobEvent(
            type=kind,
            kind=key.kind,
            job=key.job,
            id=key.id,
            at=now,
            attempt=attempt,
            error=text,
            will_retry=False if kind == "job.failed" else None,
            reason=REASON,
            event_id=event_id,
        )
        for kind in kinds
    ]
