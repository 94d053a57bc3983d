"""The WorkerPool handler: N partitions, each draining its queue one event at a time."""

import itertools
import json
import uuid
import zlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Generic

import attrs
from typing_extensions import TypeVar

from .._contexts import (
    ErrorContext,
    ExecutionInfo,
    ScheduleCell,
    TerminateSignal,
    WorkerPoolContext,
)
from .._observe import JobEvent
from .._serde import decode, encode
from .._storage._interface import (
    InstanceKey,
    InstanceRecord,
    InstanceStatus,
    InstanceTransaction,
    JobKind,
    QueueItem,
)
from .._types import JsonValue
from ._common import execution_info, key_of, new_record, require_instance
from ._results import (
    CancelResult,
    EnqueueResult,
    PartitionStatus,
    PartitionStatusName,
    PoolStatus,
)
from ._runner import Defect, Execution, FailedFinally, Outcome, Succeeded, run_execution
from ._services import Services


if TYPE_CHECKING:
    from .._definitions._worker_pool import WorkerPool

I = TypeVar("I")
S = TypeVar("S")
E = TypeVar("E")
R = TypeVar("R")

_BATCH = 100
"""Events one alarm claim may process back to back before yielding to other instances."""


@attrs.frozen(kw_only=True)
class InFlight:
    """
    The event a partition has started and not finished (a retry or a defect retry is pending).

    The partition is blocked behind it: its next run is this event's next attempt, even when
    an event of higher priority arrived meanwhile (the attempt counter belongs to it).
    """

    event_id: str
    event: str
    """The event as JSON text."""
    priority: int = 0
    partition_key: str | None = None

    @classmethod
    def of(cls, item: QueueItem) -> "InFlight":
        """The in-flight record of a queued item."""
        return cls(
            event_id=item.event_id,
            event=json.dumps(item.event, separators=(",", ":")),
            priority=item.priority,
            partition_key=item.partition_key,
        )

    def event_json(self) -> JsonValue:
        """The event as a JSON value."""
        value: JsonValue = json.loads(self.event)
        return value


@attrs.frozen(kw_only=True)
class PoolMeta:
    """A partition's bookkeeping, stored in the record's `meta`."""

    processed: int = 0
    current: InFlight | None = None
    """The event whose retry is pending, if any: it runs before anything else."""


def partition_of(partition_key: str, concurrency: int) -> int:
    """The stable partition of a key: same key, same partition, in every process."""
    return zlib.crc32(partition_key.encode()) % concurrency


class WorkerPoolHandler(Generic[I, S, E, R]):
    """
    Worker-pool operations for one definition.

    Type parameters:
        I, S, E, R: those of the `WorkerPool` definition.
    """

    __slots__ = ("_deps", "_job", "_round_robin", "_services")

    def __init__(
        self,
        job: "WorkerPool[I, S, E, R]",
        deps: R,
        services: Services,
        round_robin: "itertools.count[int] | None" = None,
    ) -> None:
        self._job = job
        self._deps = deps
        self._services = services
        self._round_robin = round_robin if round_robin is not None else itertools.count()

    def key(self, partition: int) -> InstanceKey:
        """The instance key of one partition."""
        return key_of(JobKind.WORKER_POOL, self._job.name, str(partition))

    async def enqueue(
        self,
        event: I,
        *,
        partition_key: str | None = None,
        priority: int = 0,
        event_id: str | None = None,
    ) -> EnqueueResult:
        """
        Queue `event` on its partition and wake it.

        Routing: by `partition_key` when given (stable hash), else by the caller's `event_id`
        when given (stable hash, so a repeated id is always detected as a duplicate), else
        round-robin.
        """
        job = self._job
        require_instance("event", event, job.event)
        require_instance("priority", priority, int)
        if partition_key is not None:
            require_instance("partition_key", partition_key, str)
            partition = partition_of(partition_key, job.concurrency)
        elif event_id is not None:
            # a caller's id routes by its hash, so a repeat lands on the partition that
            # remembers it and is recognised as a duplicate in one atomic operation
            require_instance("event_id", event_id, str)
            partition = partition_of(event_id, job.concurrency)
        else:
            partition = next(self._round_robin) % job.concurrency
        event_id = event_id if event_id is not None else uuid.uuid4().hex
        services = self._services
        key = self.key(partition)
        async with services.storage.instance(key) as tx:
            now = services.clock.now()
            if await tx.has_seen(event_id):
                return EnqueueResult(event_id=event_id, partition=partition, duplicate=True)
            tx.queue_push(
                QueueItem(
                    event_id=event_id,
                    event=encode(event),
                    priority=priority,
                    partition_key=partition_key,
                    enqueued_at=now,
                )
            )
            tx.remember(event_id, now)
            record = tx.record or attrs.evolve(new_record(key, now), meta=encode(PoolMeta()))
            if record.status is InstanceStatus.ACTIVE and record.alarm_at is None:
                record = attrs.evolve(record, alarm_at=now)
                services.wake(now)
            tx.save(attrs.evolve(record, updated_at=now))
            services.events.emit(
                JobEvent(
                    type="pool.enqueued",
                    kind=key.kind,
                    job=key.job,
                    id=key.id,
                    at=now,
                    event_id=event_id,
                )
            )
            return EnqueueResult(event_id=event_id, partition=partition)

    async def cancel(self, event_id: str) -> CancelResult:
        """
        Remove a queued event from whichever partition holds it.

        An event waiting for a retry can be cancelled too: its remaining attempts are dropped.
        """
        services = self._services
        for partition in range(self._job.concurrency):
            async with services.storage.instance(self.key(partition)) as tx:
                if not await tx.queue_remove(event_id):
                    continue
                record = tx.record
                if record is not None:
                    await self._forget_in_flight(tx, record, event_id)
                return CancelResult(cancelled=True, partition=partition)
        return CancelResult(cancelled=False)

    async def _forget_in_flight(
        self, tx: InstanceTransaction, record: InstanceRecord, event_id: str
    ) -> None:
        """After cancelling `event_id`: if it was waiting for a retry, move on to the next."""
        meta = self._meta(record)
        if meta.current is None or meta.current.event_id != event_id:
            return
        services = self._services
        now = services.clock.now()
        due = record.status is InstanceStatus.ACTIVE and await tx.queue_size() > 0
        tx.save(
            attrs.evolve(
                record,
                meta=encode(attrs.evolve(meta, current=None)),
                alarm_at=now if due else None,
                attempt=1,
                defects=0,
                retry_started_at=None,
                updated_at=now,
            )
        )
        if due:
            services.wake(now)

    async def pause(self) -> None:
        """Stop dequeuing on every partition; queued events are kept."""
        await self._set_paused(paused=True)

    async def resume(self) -> None:
        """Dequeue again."""
        await self._set_paused(paused=False)

    async def status(self) -> PoolStatus:
        """Every partition's state and the totals."""
        partitions: list[PartitionStatus] = []
        for partition in range(self._job.concurrency):
            async with self._services.storage.instance(self.key(partition)) as tx:
                record = tx.record
                pending = await tx.queue_size()
            processed = 0 if record is None else self._meta(record).processed
            name: PartitionStatusName
            if record is None:
                name = "idle"
            elif record.status is InstanceStatus.PAUSED:
                name = "paused"
            elif record.status is InstanceStatus.FAILED:
                name = "failed"
            else:
                name = "processing" if pending else "idle"
            partitions.append(
                PartitionStatus(
                    partition=partition, status=name, pending=pending, processed=processed
                )
            )
        return PoolStatus(
            partitions=tuple(partitions),
            pending=sum(p.pending for p in partitions),
            processed=sum(p.processed for p in partitions),
            paused=all(p.status == "paused" for p in partitions),
        )

    async def on_alarm(self, key: InstanceKey) -> None:
        """A partition's alarm fell due: process queued events, one at a time."""
        for _ in range(_BATCH):
            if not await self._process_one(key):
                return

    async def _process_one(self, key: InstanceKey) -> bool:
        """Process the head event; True when another one is due right away."""
        services = self._services
        job = self._job
        async with services.storage.instance(key) as tx:
            now = services.clock.now()
            record = tx.record
            if record is None:
                return False
            if (
                record.status is not InstanceStatus.ACTIVE
                or record.alarm_at is None
                or record.alarm_at > now
            ):
                tx.save(record)
                return False
            meta = self._meta(record)
            current = meta.current
            if current is None:
                item = await tx.queue_peek()
                if item is None:
                    tx.save(attrs.evolve(record, alarm_at=None, updated_at=now))
                    return False
                current = InFlight.of(item)
            event_json = current.event_json()
            event = decode(event_json, job.event)
            info = execution_info(key, record.attempt, now)
            context = WorkerPoolContext(
                info,
                self._deps,
                event,
                current.event_id,
                int(key.id),
                current.partition_key,
                current.priority,
            )
            outcome = await run_execution(
                services,
                tx,
                record,
                Execution(
                    info=info,
                    deps=self._deps,
                    call=lambda: job.execute(context),
                    retry=job.retry,
                    on_error=self._on_error(key, info, event),
                    error_state=event,
                    event=event_json,
                    park_on_defect=False,
                ),
            )
            after = tx.record
            if after is None:
                return False
            after_meta = self._meta(after)
            if not _event_done(outcome):
                # a retry, a defect retry or an `on_error` reschedule is pending: the
                # partition stays blocked behind this event until it is done
                tx.save(attrs.evolve(after, meta=encode(attrs.evolve(after_meta, current=current))))
                return False
            await tx.queue_remove(current.event_id)
            processed = after_meta.processed + (1 if isinstance(outcome, Succeeded) else 0)
            more = await tx.queue_size() > 0
            tx.save(
                attrs.evolve(
                    after,
                    meta=encode(attrs.evolve(after_meta, processed=processed, current=None)),
                    alarm_at=now if more else None,
                    attempt=1,
                    defects=0,
                    retry_started_at=None,
                    updated_at=now,
                )
            )
            return more

    def _on_error(
        self, key: InstanceKey, info: ExecutionInfo, event: I
    ) -> "Callable[[E, ErrorContext[I, R]], Awaitable[None]] | None":
        """
        The user's `on_error`, where `ctx.terminate()` drops only the failed event.

        For a pool, terminating must not purge the partition (other callers' queued events
        live there): it ends the event without a dead letter, like a handled failure.
        """
        user = self._job.on_error
        if user is None:
            return None
        services = self._services
        deps = self._deps

        async def handle(error: E, ctx: ErrorContext[I, R]) -> None:
            cell = ScheduleCell(None)
            own: ErrorContext[I, R] = ErrorContext(
                info, deps, event, ctx.attempts, ctx.reason, cell
            )
            try:
                handled = user(error, own)
                if handled is not None:
                    await handled
            except TerminateSignal as signal:
                services.events.emit(
                    JobEvent(
                        type="job.terminated",
                        kind=key.kind,
                        job=key.job,
                        id=key.id,
                        at=services.clock.now(),
                        attempt=info.attempt,
                        reason=signal.reason,
                    )
                )
                return
            if cell.at is not None:
                ctx.reschedule(cell.at - info.now)

        return handle

    async def _set_paused(self, *, paused: bool) -> None:
        services = self._services
        for partition in range(self._job.concurrency):
            key = self.key(partition)
            async with services.storage.instance(key) as tx:
                now = services.clock.now()
                record = tx.record or attrs.evolve(new_record(key, now), meta=encode(PoolMeta()))
                if paused:
                    tx.save(
                        attrs.evolve(
                            record, status=InstanceStatus.PAUSED, alarm_at=None, updated_at=now
                        )
                    )
                else:
                    pending = await tx.queue_size()
                    tx.save(
                        attrs.evolve(
                            record,
                            status=InstanceStatus.ACTIVE,
                            alarm_at=now if pending else None,
                            updated_at=now,
                        )
                    )
                    if pending:
                        services.wake(now)

    def _meta(self, record: InstanceRecord) -> PoolMeta:
        if record.meta is None:
            return PoolMeta()
        return decode(record.meta, PoolMeta)


def _event_done(outcome: Outcome) -> bool:
    """Whether the partition is finished with its event (success, or given up on)."""
    if isinstance(outcome, Succeeded):
        return True
    if isinstance(outcome, FailedFinally):
        return outcome.rescheduled_at is None
    if isinstance(outcome, Defect):
        return outcome.retry_at is None
    # retry scheduled; a terminated partition never gets here (its record is gone)
    return False
