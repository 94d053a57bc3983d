"""The Debounce handler: folds events into a batch and flushes it through the runner."""

from datetime import datetime
from typing import TYPE_CHECKING, Generic, Literal

import attrs
from typing_extensions import TypeVar

from .._contexts import DebounceEventContext, DebounceExecuteContext, FlushReason
from .._errors import ExecutionError
from .._observe import JobEvent
from .._serde import decode, encode
from .._storage._interface import InstanceKey, InstanceRecord, InstanceTransaction, JobKind
from ._common import execution_info, is_due, key_of, new_record, require_instance
from ._results import AddResult, ClearResult, DebounceStatus, FlushResult
from ._runner import Execution, FailedFinally, Succeeded, run_execution
from ._services import Services


if TYPE_CHECKING:
    from .._definitions._debounce import Debounce

I = TypeVar("I")
S = TypeVar("S")
E = TypeVar("E")
R = TypeVar("R")


@attrs.frozen(kw_only=True)
class DebounceMeta:
    """A batch's bookkeeping, stored in the record's `meta`."""

    event_count: int = 0
    started_at: datetime | None = None
    flush_reason: FlushReason | None = None


class DebounceHandler(Generic[I, S, E, R]):
    """
    Debounce operations for one definition (typed; built per registration and per client).

    Type parameters:
        I, S, E, R: those of the `Debounce` definition.
    """

    __slots__ = ("_deps", "_job", "_services")

    def __init__(self, job: "Debounce[I, S, E, R]", deps: R, services: Services) -> None:
        self._job = job
        self._deps = deps
        self._services = services

    def key(self, id: str) -> InstanceKey:
        """The instance key of `id`."""
        return key_of(JobKind.DEBOUNCE, self._job.name, id)

    async def add(self, id: str, event: I, event_id: str | None = None) -> AddResult:
        """Fold `event` into `id`'s batch (see `DebounceClient.add`)."""
        job = self._job
        require_instance("event", event, job.event)
        key = self.key(id)
        services = self._services
        async with services.storage.instance(key) as tx:
            now = services.clock.now()
            if event_id is not None and await tx.has_seen(event_id):
                record = tx.record
                meta = self._meta(record)
                return AddResult(
                    created=False,
                    event_count=meta.event_count,
                    will_flush_at=record.alarm_at if record else None,
                    duplicate=True,
                )
            stored = tx.record  # one copy of the stored record per add, not one per use
            record = stored or new_record(key, now)
            meta = self._meta(stored)
            created = meta.event_count == 0
            state = None if created else self._state(record)
            count = meta.event_count + 1
            context = DebounceEventContext(
                execution_info(key, record.attempt, now), self._deps, event, state, count
            )
            try:
                folded = job.fold(context)
            except Exception as exc:
                msg = f"debounce {job.name!r}: on_event raised for id {id!r}; nothing was stored"
                raise ExecutionError(msg, job=job.name, id=id) from exc
            meta = DebounceMeta(
                event_count=count,
                started_at=now if created else meta.started_at,
                flush_reason=meta.flush_reason,
            )
            alarm_at = record.alarm_at
            if created and alarm_at is None:
                alarm_at = now + job.flush_after
            record = attrs.evolve(
                record, state=encode(folded), meta=encode(meta), alarm_at=alarm_at, updated_at=now
            )
            tx.save(record)
            if event_id is not None:
                tx.remember(event_id, now)
            if created:
                self._emit("debounce.started", key, now, scheduled_at=alarm_at)
            if alarm_at is not None:
                services.wake(alarm_at)
            flush = None
            after: InstanceRecord | None = record
            if job.max_events is not None and count >= job.max_events:
                flush = await self._flush(tx, "max_events", now)
                after = tx.record
            return AddResult(
                created=created,
                event_count=self._meta(after).event_count if after else 0,
                will_flush_at=after.alarm_at if after else None,
                flush=flush,
            )

    async def flush(self, id: str) -> FlushResult:
        """Flush `id`'s batch now (reason `manual`)."""
        async with self._services.storage.instance(self.key(id)) as tx:
            return await self._flush(tx, "manual", self._services.clock.now())

    async def clear(self, id: str) -> ClearResult:
        """Discard `id`'s batch without executing it."""
        async with self._services.storage.instance(self.key(id)) as tx:
            record = tx.record
            if record is None:
                return ClearResult(cleared=False)
            count = self._meta(record).event_count
            tx.purge()
            return ClearResult(cleared=True, discarded_events=count)

    async def status(self, id: str) -> DebounceStatus:
        """Where `id`'s batch stands."""
        record = await self._services.storage.read(self.key(id))
        if record is None:
            return DebounceStatus(status="not_found")
        meta = self._meta(record)
        name: Literal["debouncing", "retrying", "failed"] = (
            "failed"
            if record.status.value == "failed"
            else "retrying"
            if record.attempt > 1 or record.defects > 0
            else "debouncing"
        )
        return DebounceStatus(
            status=name,
            event_count=meta.event_count,
            started_at=meta.started_at,
            will_flush_at=record.alarm_at,
            attempt=record.attempt,
            last_error=record.last_error,
        )

    async def get_state(self, id: str) -> S | None:
        """The batch so far, or None."""
        record = await self._services.storage.read(self.key(id))
        if record is None or record.state is None:
            return None
        return self._state(record)

    async def on_alarm(self, key: InstanceKey) -> None:
        """The batch's alarm fell due: flush it (or retry the flush)."""
        async with self._services.storage.instance(key) as tx:
            now = self._services.clock.now()
            record = tx.record
            if not is_due(record, now):
                if record is not None:
                    tx.save(record)  # releases the claim
                return
            reason = self._meta(record).flush_reason or "flush_after"
            await self._flush(tx, reason, now)

    async def _flush(
        self, tx: InstanceTransaction, reason: FlushReason, now: datetime
    ) -> FlushResult:
        record = tx.record
        meta = self._meta(record)
        if record is None or meta.event_count == 0 or record.state is None:
            if record is not None:
                tx.purge()
            return FlushResult(flushed=False)
        # a retry flushes for the reason the batch first flushed
        reason = meta.flush_reason or reason
        record = attrs.evolve(record, meta=encode(attrs.evolve(meta, flush_reason=reason)))
        state = self._state(record)
        job = self._job
        info = execution_info(record.key, record.attempt, now)
        context = DebounceExecuteContext(
            info,
            self._deps,
            state,
            meta.event_count,
            reason,
            meta.started_at or record.created_at,
        )
        outcome = await run_execution(
            self._services,
            tx,
            record,
            Execution(
                info=info,
                deps=self._deps,
                call=lambda: job.execute(context),
                retry=job.retry,
                on_error=job.on_error,
                error_state=state,
            ),
        )
        if isinstance(outcome, Succeeded):
            tx.purge()
            self._emit("debounce.flushed", record.key, now, count=meta.event_count, reason=reason)
        elif isinstance(outcome, FailedFinally) and outcome.rescheduled_at is None:
            tx.purge()
        return FlushResult(
            flushed=True, event_count=meta.event_count, reason=reason, outcome=outcome
        )

    def _meta(self, record: InstanceRecord | None) -> DebounceMeta:
        if record is None or record.meta is None:
            return DebounceMeta()
        return decode(record.meta, DebounceMeta)

    def _state(self, record: InstanceRecord) -> S:
        return decode(record.state, self._job.state_class)

    def _emit(
        self,
        type_: Literal["debounce.started", "debounce.flushed"],
        key: InstanceKey,
        now: datetime,
        *,
        scheduled_at: datetime | None = None,
        count: int | None = None,
        reason: str | None = None,
    ) -> None:
        self._services.events.emit(
            JobEvent(
                type=type_,
                kind=key.kind,
                job=key.job,
                id=key.id,
                at=now,
                scheduled_at=scheduled_at,
                event_count=count,
                reason=reason,
            )
        )
