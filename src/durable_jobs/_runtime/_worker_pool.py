"""
The WorkerPool handler: a durable queue whose events run at most `concurrency` at a time.

Every event is a queue item of the pool's one instance, with its own lease and retry
bookkeeping. `concurrency` bounds the events of the pool that hold a live lease, across
every worker process (the storage counts them in the claim). An event with a
`partition_key` runs only when no earlier event of that key is still queued: one key, one
event at a time, strict FIFO, and an event waiting for its retry holds its key.
"""

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Generic

import attrs
from typing_extensions import TypeVar

from .._contexts import WorkerPoolContext
from .._errors import UndecodableDataError
from .._observe import JobEvent
from .._serde import check_id, check_priority, read_stored, to_json
from .._storage._interface import (
    InstanceKey,
    InstanceRecord,
    InstanceStatus,
    ItemClaim,
    ItemFinish,
    ItemRetry,
    JobKind,
    QueueItem,
)
from ._common import (
    NotBefore,
    emit_all,
    execution_info,
    instance_name,
    new_record,
    not_before_time,
    require_instance,
)
from ._invoke import RunHandle, bind
from ._results import CancelResult, EnqueueResult, PoolStatus
from ._runner import Attempts, Cancelled, Execution, Succeeded, run_execution
from ._services import Services


if TYPE_CHECKING:
    from .._definitions._worker_pool import WorkerPool

I = TypeVar("I")
S = TypeVar("S")
E = TypeVar("E")
R = TypeVar("R")

POOL_ID = "pool"
"""The id of a worker pool's one instance (pools have no user ids)."""


def pool_key(name: str) -> InstanceKey:
    """The instance key of the pool named `name`."""
    return InstanceKey(JobKind.WORKER_POOL, name, POOL_ID)


def _count(record: InstanceRecord | None, field: str) -> int:
    """An integer counter of the pool record's meta (`processed`, `cancelled`)."""
    meta = None if record is None else record.meta
    count = meta.get(field, 0) if isinstance(meta, dict) else 0
    return count if isinstance(count, int) else 0


class WorkerPoolHandler(Generic[I, S, E, R]):
    """
    Worker-pool operations for one definition.

    Type parameters:
        I, S, E, R: those of the `WorkerPool` definition.
    """

    __slots__ = ("_job", "_key", "_services")

    def __init__(self, job: "WorkerPool[I, S, E, R]", services: Services) -> None:
        self._job = job
        self._services = services
        self._key = pool_key(job.name)

    @property
    def key(self) -> InstanceKey:
        """The pool's instance key."""
        return self._key

    def _item(
        self,
        event: I,
        partition_key: str | None,
        priority: int,
        event_id: str | None,
        field: str = "event",
        available_at: datetime | None = None,
    ) -> QueueItem:
        """One event checked at the data boundary (`ValidationError`: nothing is queued)."""
        require_instance(field, event, self._job.event)
        data = to_json(event, self._job.event, field=field, limits=self._services.limits)
        priority = check_priority(priority)
        if partition_key is not None:
            check_id("partition_key", partition_key)
        if event_id is not None:
            check_id("event_id", event_id)
        return QueueItem(
            event_id=event_id if event_id is not None else uuid.uuid4().hex,
            event=data,
            priority=priority,
            partition_key=partition_key,
            enqueued_at=self._services.clock.now(),
            available_at=available_at,
        )

    async def enqueue(
        self,
        event: I,
        *,
        partition_key: str | None = None,
        priority: int = 0,
        event_id: str | None = None,
        not_before: NotBefore | None = None,
    ) -> EnqueueResult:
        """
        Queue `event` (a repeated `event_id` is acknowledged, not queued again); with
        `not_before`, its first attempt waits until then (a retry waits for its own delay).
        """
        at = not_before_time(not_before, self._services.clock.now())
        (result,) = await self._push(
            [self._item(event, partition_key, priority, event_id, available_at=at)]
        )
        return result

    async def enqueue_many(
        self,
        events: Sequence[I],
        *,
        partition_key: str | None,
        priority: int,
        not_before: NotBefore | None = None,
    ) -> tuple[EnqueueResult, ...]:
        """Queue several events, in order, in one transaction (all or none)."""
        at = not_before_time(not_before, self._services.clock.now())
        items = [
            self._item(event, partition_key, priority, None, f"events[{index}]", at)
            for index, event in enumerate(events)
        ]
        return await self._push(items)

    async def _push(self, items: Sequence[QueueItem]) -> tuple[EnqueueResult, ...]:
        """Queue validated items in one transaction, in order."""
        services = self._services
        now = services.clock.now()
        accepted = await services.storage.push_items(self._key, items, now=now)
        key = self._key
        for item, fresh in zip(items, accepted, strict=True):
            if fresh:
                services.events.emit(
                    JobEvent(
                        type="pool.enqueued",
                        kind=key.kind,
                        job=key.job,
                        id=key.id,
                        at=now,
                        event_id=item.event_id,
                    )
                )
        if any(accepted):
            services.wake(now)
        return tuple(
            EnqueueResult(event_id=item.event_id, duplicate=not fresh)
            for item, fresh in zip(items, accepted, strict=True)
        )

    async def cancel(self, event_id: str) -> CancelResult:
        """Remove an event that waits (to start, or for a retry); ask a running one to stop."""
        check_id("event_id", event_id)
        services = self._services
        status = await services.storage.cancel_item(self._key, event_id)
        if status == "running":
            services.wake(services.clock.now())  # a local worker's lease keeper asks at once
        return CancelResult(cancelled=status == "cancelled", status=status)

    async def is_pending(self, event_id: str) -> bool:
        """Whether the event is still queued, running or waiting for a retry."""
        check_id("event_id", event_id)
        return await self._services.storage.read_item(self._key, event_id) is not None

    async def pause(self) -> None:
        """Start no more events (running ones finish); queued events are kept."""
        await self._set_status(InstanceStatus.PAUSED)

    async def resume(self) -> None:
        """Start events again."""
        await self._set_status(InstanceStatus.ACTIVE)
        self._services.wake(self._services.clock.now())

    async def status(self) -> PoolStatus:
        """The pool's events across every worker process, and the processed total."""
        storage = self._services.storage
        record = await storage.read(self._key)
        counts = await storage.pool_counts(self._key, now=self._services.clock.now())
        return PoolStatus(
            queued=counts.queued,
            running=counts.running,
            retrying=counts.retrying,
            delayed=counts.delayed,
            abandoned=counts.abandoned,
            processed=_count(record, "processed"),
            cancelled=_count(record, "cancelled"),
            paused=record is not None and record.status is InstanceStatus.PAUSED,
            concurrency=self._job.concurrency,
        )

    def read_event(self, item: QueueItem) -> I:
        """A queued event as stored (`UndecodableDataError` when it does not decode)."""
        where = f"{instance_name(self._key)} (event {item.event_id})"
        if item.unreadable is not None:
            raise UndecodableDataError("row", item.unreadable, where=where)
        return read_stored(item.event, self._job.event, field="event", where=where)

    async def _set_status(self, status: InstanceStatus) -> None:
        services = self._services
        async with services.storage.instance(self._key) as tx:
            now = services.clock.now()
            record = tx.record or attrs.evolve(new_record(self._key, now), meta={"processed": 0})
            tx.save(attrs.evolve(record, status=status, updated_at=now))

    async def run(self, claim: ItemClaim, deps: R, run: RunHandle) -> None:
        """Run `execute` for one claimed event and write the outcome (fenced)."""
        job = self._job
        services = self._services
        item = claim.item
        now = services.clock.now()
        event = self.read_event(item)
        info = execution_info(self._key, item.attempt, now)
        context = WorkerPoolContext(
            info, deps, event, item.event_id, item.partition_key, item.priority, run.is_cancelled
        )
        execute = job.execute
        result = await run_execution(
            services,
            Execution(
                info=info,
                key=self._key,
                deps=deps,
                call=bind(execute, lambda: execute(context)),
                retry=job.retry,
                on_error=job.on_error,
                error_state=event,
                attempts=Attempts(
                    attempt=item.attempt,
                    retry_started_at=item.retry_started_at,
                    defects=item.defects,
                ),
                letter_state=None,
                letter_meta={
                    "event_id": item.event_id,
                    "partition_key": item.partition_key,
                    "priority": item.priority,
                },
                event=item.event,
                event_id=item.event_id,
                park_on_defect=False,
                timeout=job.timeout,
            ),
            run,
        )
        retry = None
        if result.alarm_at is not None:
            retry = ItemRetry(
                available_at=result.alarm_at,
                attempt=result.attempts.attempt,
                retry_started_at=result.attempts.retry_started_at,
                defects=result.attempts.defects,
                last_error=result.last_error,
            )
        run.finish()
        await services.storage.finish_item(
            self._key,
            ItemFinish(
                event_id=item.event_id,
                token=claim.token,
                retry=retry,
                letters=result.letters,
                processed=1 if isinstance(result.outcome, Succeeded) else 0,
                cancelled=isinstance(result.outcome, Cancelled),
            ),
        )
        services.wake(result.alarm_at or result.ended_at)
        emit_all(services, result.events)
