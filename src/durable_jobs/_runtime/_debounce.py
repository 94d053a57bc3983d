"""
The Debounce handler: events fold into batches; a worker flushes them, one at a time per id.

The batches of one id form a chain, oldest first: at most one `flushing` batch (its flush
has started: running, or waiting for a retry), sealed batches `queued` behind it, and one
`open` batch taking events. The record holds the open batch's state; `meta` holds the
chain's bookkeeping and the flushing batch's state (so a retry reads everything from its
claim); each queued batch's state is a queue item keyed by its batch id.

A batch is sealed when its first flush starts, or as soon as it reaches `max_events`;
sealed batches never change, so every retry sees the same batch and batch id.
"""

import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Generic

import attrs
from typing_extensions import TypeVar

from .._contexts import DebounceEventContext, DebounceExecuteContext, FlushReason
from .._errors import ExecutionError, UndecodableDataError
from .._observe import JobEvent
from .._serde import check_id, encode, read_stored, to_json
from .._storage._interface import (
    Claim,
    InstanceKey,
    InstanceRecord,
    InstanceStatus,
    InstanceTransaction,
    JobKind,
    QueueItem,
)
from .._types import JsonValue
from ._common import (
    emit_all,
    execution_info,
    fenced,
    instance_name,
    key_of,
    new_record,
    require_instance,
    unreadable_record,
)
from ._invoke import RunHandle, bind
from ._results import (
    AddResult,
    BatchStage,
    BatchStatus,
    ClearResult,
    DebounceStatus,
    DebounceStatusName,
    FlushResult,
)
from ._runner import Attempts, Execution, FailedFinally, Succeeded, Terminated, run_execution
from ._services import Services


if TYPE_CHECKING:
    from .._definitions._debounce import Debounce

I = TypeVar("I")
S = TypeVar("S")
E = TypeVar("E")
R = TypeVar("R")


@attrs.frozen(kw_only=True)
class OpenBatch:
    """The batch taking events (its state is the record's state)."""

    batch_id: str
    event_count: int
    started_at: datetime
    flush_requested_at: datetime | None = None
    """When `flush()` made it due (now, instead of at the end of its window)."""
    last_event_at: datetime | None = None
    """When its latest event arrived (a quiet-period window ends `flush_after` later)."""


@attrs.frozen(kw_only=True)
class SealedBatch:
    """A batch that takes no more events; `state` is its folded state, encoded."""

    batch_id: str
    event_count: int
    started_at: datetime
    reason: FlushReason
    state: JsonValue = None


@attrs.frozen(kw_only=True)
class QueuedBatch:
    """A sealed batch waiting for the one before it (its state is its queue item)."""

    batch_id: str
    event_count: int
    started_at: datetime
    reason: FlushReason


@attrs.frozen(kw_only=True)
class DebounceMeta:
    """The chain of one Debounce id, stored in the record's `meta`."""

    open: OpenBatch | None = None
    queued: tuple[QueuedBatch, ...] = ()
    flushing: SealedBatch | None = None


def debounce_meta(record: InstanceRecord | None) -> DebounceMeta:
    """The chain of a stored debounce instance (empty for none; `UndecodableDataError`)."""
    if record is None:
        return DebounceMeta()
    unreadable_record(record)
    if record.meta is None:
        return DebounceMeta()
    return read_stored(record.meta, DebounceMeta, field="meta", where=instance_name(record.key))


def _sealed(queued: QueuedBatch, state: JsonValue) -> SealedBatch:
    return SealedBatch(
        batch_id=queued.batch_id,
        event_count=queued.event_count,
        started_at=queued.started_at,
        reason=queued.reason,
        state=state,
    )


def queue_sealed(tx: InstanceTransaction, meta: DebounceMeta, batch: SealedBatch) -> DebounceMeta:
    """Append a sealed batch to the chain (its state becomes a queue item)."""
    tx.queue_push(
        QueueItem(event_id=batch.batch_id, event=batch.state, enqueued_at=batch.started_at)
    )
    queued = QueuedBatch(
        batch_id=batch.batch_id,
        event_count=batch.event_count,
        started_at=batch.started_at,
        reason=batch.reason,
    )
    return attrs.evolve(meta, queued=(*meta.queued, queued))


def open_due_at(
    batch: OpenBatch, flush_after: timedelta, max_wait: timedelta | None = None
) -> datetime:
    """
    When the open batch may flush: when flushed by hand, else at its window's end: its
    first event plus `flush_after` (a fixed window), or with `max_wait` (a quiet period)
    its latest event plus `flush_after`, at the latest its first event plus `max_wait`.
    """
    if batch.flush_requested_at is not None:
        return batch.flush_requested_at
    if max_wait is None:
        return batch.started_at + flush_after
    last = batch.last_event_at or batch.started_at
    return min(last + flush_after, batch.started_at + max_wait)


class DebounceHandler(Generic[I, S, E, R]):
    """
    Debounce operations for one definition (typed; built per registration and per client).

    Type parameters:
        I, S, E, R: those of the `Debounce` definition.
    """

    __slots__ = ("_job", "_services")

    def __init__(self, job: "Debounce[I, S, E, R]", services: Services) -> None:
        self._job = job
        self._services = services

    def key(self, id: str) -> InstanceKey:
        """The instance key of `id`."""
        return key_of(JobKind.DEBOUNCE, self._job.name, id)

    def _due(self, batch: OpenBatch) -> datetime:
        """When the open batch is due, in the job's window mode (see `open_due_at`)."""
        job = self._job
        return open_due_at(batch, job.flush_after, job.max_wait if job.quiet else None)

    def _alarm(self, record: InstanceRecord, meta: DebounceMeta, now: datetime) -> datetime | None:
        """When the next flush of the chain is due (the flushing batch's own alarm stands)."""
        if meta.flushing is not None:
            return record.alarm_at
        if meta.queued:
            return now
        if meta.open is not None:
            return self._due(meta.open)
        return None

    async def add(self, id: str, event: I, event_id: str | None = None) -> AddResult:
        """Fold `event` into `id`'s open batch (see `DebounceClient.add`)."""
        job = self._job
        require_instance("event", event, job.event)
        key = self.key(id)
        services = self._services
        limits = services.limits
        # the event itself is not stored (its fold is), but it must be storable data too
        to_json(event, job.event, field="event", limits=limits)
        if event_id is not None:
            check_id("event_id", event_id)
        started = False
        async with services.storage.instance(key) as tx:
            now = services.clock.now()
            stored = tx.record  # one copy of the stored record per add, not one per use
            meta = debounce_meta(stored)
            if event_id is not None and await tx.has_seen(event_id):
                return AddResult(
                    created=False,
                    batch_id=None,
                    event_count=0,
                    will_flush_at=None,
                    duplicate=True,
                )
            record = stored or new_record(key, now)
            batch = meta.open
            started = batch is None
            if batch is None:
                batch = OpenBatch(batch_id=uuid.uuid4().hex, event_count=0, started_at=now)
                state = None
            else:
                state = self._state(record)
            count = batch.event_count + 1
            context: DebounceEventContext[I, S, R] = DebounceEventContext(
                execution_info(key, 1, now), event, state, count
            )
            try:
                folded = job.fold(context)
            except Exception as exc:
                msg = f"debounce {job.name!r}: on_event raised for id {id!r}; nothing was stored"
                raise ExecutionError(msg, job=job.name, id=id) from exc
            # a fold that would not read back is refused here, before anything is written
            folded_json = to_json(folded, job.state_class, field="state", limits=limits)
            full = job.max_events is not None and count >= job.max_events
            if full:
                meta = queue_sealed(
                    tx,
                    attrs.evolve(meta, open=None),
                    SealedBatch(
                        batch_id=batch.batch_id,
                        event_count=count,
                        started_at=batch.started_at,
                        reason="max_events",
                        state=folded_json,
                    ),
                )
                state_json: JsonValue = None
                due = now
            else:
                batch = attrs.evolve(batch, event_count=count, last_event_at=now)
                meta = attrs.evolve(meta, open=batch)
                state_json = folded_json
                due = self._due(batch)
            alarm = self._alarm(record, meta, now)
            tx.save(
                attrs.evolve(
                    record, state=state_json, meta=encode(meta), alarm_at=alarm, updated_at=now
                )
            )
            if event_id is not None:
                tx.remember(event_id, now)
        if started:
            services.events.emit(
                JobEvent(
                    type="debounce.started",
                    kind=key.kind,
                    job=key.job,
                    id=key.id,
                    at=now,
                    scheduled_at=due,
                    batch_id=batch.batch_id,
                )
            )
        if alarm is not None:
            services.wake(alarm)
        return AddResult(
            created=started,
            batch_id=batch.batch_id,
            event_count=count,
            will_flush_at=due,
            sealed=full,
        )

    async def flush(self, id: str) -> FlushResult:
        """Make `id`'s open batch due now (reason `manual`); a retry's delay is never cut."""
        services = self._services
        async with services.storage.instance(self.key(id)) as tx:
            now = services.clock.now()
            record = tx.record
            meta = debounce_meta(record)
            batch = meta.open
            if record is None or batch is None:
                return FlushResult(requested=False)
            if batch.flush_requested_at is None:
                batch = attrs.evolve(batch, flush_requested_at=now)
            meta = attrs.evolve(meta, open=batch)
            alarm = self._alarm(record, meta, now)
            tx.save(attrs.evolve(record, meta=encode(meta), alarm_at=alarm, updated_at=now))
        if alarm is not None:
            services.wake(alarm)
        return FlushResult(requested=True, batch_id=batch.batch_id, event_count=batch.event_count)

    async def clear(self, id: str) -> ClearResult:
        """Discard `id`'s batches that have not started; a flush in progress goes on."""
        services = self._services
        async with services.storage.instance(self.key(id)) as tx:
            now = services.clock.now()
            record = tx.record
            if record is None:
                return ClearResult(cleared=False)
            meta = debounce_meta(record)
            batches = len(meta.queued) + (0 if meta.open is None else 1)
            events = sum(batch.event_count for batch in meta.queued)
            events += 0 if meta.open is None else meta.open.event_count
            if meta.flushing is None:
                tx.purge()
            else:
                for queued in meta.queued:
                    await tx.queue_remove(queued.batch_id)
                kept = DebounceMeta(flushing=meta.flushing)
                tx.save(attrs.evolve(record, state=None, meta=encode(kept), updated_at=now))
        return ClearResult(cleared=batches > 0, discarded_batches=batches, discarded_events=events)

    async def status(self, id: str) -> DebounceStatus:
        """Where `id`'s chain of batches stands."""
        record = await self._services.storage.read(self.key(id))
        if record is None:
            return DebounceStatus(status="not_found")
        try:
            meta = debounce_meta(record)
        except UndecodableDataError as error:  # parked at its next flush; shown as failed now
            return DebounceStatus(
                status="failed", attempt=record.attempt, last_error=record.last_error or str(error)
            )
        batches: list[BatchStatus] = []
        name: DebounceStatusName = "debouncing"
        flushing = meta.flushing
        if flushing is not None:
            stage: BatchStage
            if record.status is InstanceStatus.FAILED:
                name = stage = "failed"
            elif record.lease is not None:
                name = stage = "flushing"
            else:
                name = stage = "retrying"
            batches.append(
                BatchStatus(
                    batch_id=flushing.batch_id,
                    stage=stage,
                    event_count=flushing.event_count,
                    started_at=flushing.started_at,
                    due_at=record.alarm_at if stage == "retrying" else None,
                    reason=flushing.reason,
                )
            )
        batches.extend(
            BatchStatus(
                batch_id=queued.batch_id,
                stage="queued",
                event_count=queued.event_count,
                started_at=queued.started_at,
                due_at=None,
                reason=queued.reason,
            )
            for queued in meta.queued
        )
        if meta.open is not None:
            batch = meta.open
            batches.append(
                BatchStatus(
                    batch_id=batch.batch_id,
                    stage="open",
                    event_count=batch.event_count,
                    started_at=batch.started_at,
                    due_at=self._due(batch),
                    reason=None if batch.flush_requested_at is None else "manual",
                )
            )
        return DebounceStatus(
            status=name,
            batches=tuple(batches),
            next_flush_at=None if record.lease is not None else record.alarm_at,
            attempt=record.attempt,
            last_error=record.last_error,
            abandoned=record.lease is not None and record.lease.abandoned,
        )

    async def get_state(self, id: str) -> S | None:
        """The open batch so far, or None."""
        record = await self._services.storage.read(self.key(id))
        if record is None:
            return None
        return self._state(record)

    def _state(self, record: InstanceRecord) -> S | None:
        """The open batch's state as stored (`UndecodableDataError` when it does not decode)."""
        unreadable_record(record)
        if record.state is None:
            return None
        return read_stored(
            record.state, self._job.state_class, field="state", where=instance_name(record.key)
        )

    async def run(self, claim: Claim, deps: R, run: RunHandle) -> None:
        """Flush the id's oldest batch (sealing it first if it is the open one)."""
        services = self._services
        key = claim.key
        meta = debounce_meta(claim.record)
        record = claim.record
        flushing = meta.flushing
        if flushing is None:
            # the flush starts now: seal the batch, so a retry sees exactly this one
            async with services.storage.instance(key) as tx:
                current = fenced(tx, claim.token, release=False)
                flushing = await self._seal_next(tx, current, services.clock.now())
                if flushing is None:  # nothing is due after all: give the claim back
                    fenced(tx, claim.token)
                    return
                record = current
        await self._flush(claim, record, flushing, deps, run)

    async def _seal_next(
        self, tx: InstanceTransaction, record: InstanceRecord, now: datetime
    ) -> SealedBatch | None:
        meta = debounce_meta(record)
        if meta.flushing is not None:
            return meta.flushing
        if meta.queued:
            head = meta.queued[0]
            item = await tx.queue_peek()
            if item is not None and item.unreadable is not None:
                where = f"{instance_name(record.key)} (batch {item.event_id})"
                raise UndecodableDataError("state", item.unreadable, where=where)
            state = item.event if item is not None and item.event_id == head.batch_id else None
            await tx.queue_remove(head.batch_id)
            sealed = _sealed(head, state)
            meta = attrs.evolve(meta, queued=meta.queued[1:], flushing=sealed)
            tx.save(attrs.evolve(record, meta=encode(meta), updated_at=now))
            return sealed
        batch = meta.open
        if batch is None or self._due(batch) > now:
            tx.save(attrs.evolve(record, alarm_at=self._alarm(record, meta, now)))
            return None
        sealed = SealedBatch(
            batch_id=batch.batch_id,
            event_count=batch.event_count,
            started_at=batch.started_at,
            reason="flush_after" if batch.flush_requested_at is None else "manual",
            state=record.state,
        )
        meta = attrs.evolve(meta, open=None, flushing=sealed)
        tx.save(attrs.evolve(record, state=None, meta=encode(meta), updated_at=now))
        return sealed

    async def _flush(
        self,
        claim: Claim,
        record: InstanceRecord,
        batch: SealedBatch,
        deps: R,
        run: RunHandle,
    ) -> None:
        job = self._job
        services = self._services
        key = claim.key
        now = services.clock.now()
        state = read_stored(
            batch.state,
            job.state_class,
            field="state",
            where=f"{instance_name(key)} (batch {batch.batch_id})",
        )
        info = execution_info(key, record.attempt, now)
        context = DebounceExecuteContext(
            info, deps, state, batch.event_count, batch.reason, batch.started_at, batch.batch_id
        )
        execute = job.execute
        result = await run_execution(
            services,
            Execution(
                info=info,
                key=key,
                deps=deps,
                call=bind(execute, lambda: execute(context)),
                retry=job.retry,
                on_error=job.on_error,
                error_state=state,
                attempts=Attempts.of(record),
                letter_state=batch.state,
                letter_meta=encode(batch),
                timeout=self._job.timeout,
            ),
            run,
        )
        outcome = result.outcome
        done = isinstance(outcome, Succeeded | Terminated) or (
            isinstance(outcome, FailedFinally) and outcome.rescheduled_at is None
        )
        run.finish()
        async with services.storage.instance(key) as tx:
            current = fenced(tx, claim.token)
            for letter in result.letters:
                tx.add_dead_letter(letter)
            meta = debounce_meta(current)
            saved = result.applied_to(current)
            if done:
                meta = attrs.evolve(meta, flushing=None)
                saved = attrs.evolve(saved, alarm_at=self._alarm(saved, meta, result.ended_at))
            if meta.flushing is None and not meta.queued and meta.open is None:
                tx.purge()  # nothing left of the id (its seen event ids stay)
                alarm = None
            else:
                tx.save(attrs.evolve(saved, meta=encode(meta)))
                alarm = saved.alarm_at
        if alarm is not None:
            services.wake(alarm)
        emit_all(services, result.events)
        if isinstance(outcome, Succeeded):
            services.events.emit(
                JobEvent(
                    type="debounce.flushed",
                    kind=key.kind,
                    job=key.job,
                    id=key.id,
                    at=result.ended_at,
                    event_count=batch.event_count,
                    reason=batch.reason,
                    batch_id=batch.batch_id,
                    attempt=record.attempt,
                )
            )
