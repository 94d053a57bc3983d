"""
The Continuous handler: client calls on instances, and a worker's run of one instance.

Client calls (`start`, `trigger`, `terminate`) are one short block each and never run user
code. A worker runs `execute` for an instance it claimed, holding only the claim's lease, and
writes the outcome in one fenced block.
"""

from datetime import datetime
from typing import TYPE_CHECKING, Generic

import attrs
from typing_extensions import TypeVar

from .._contexts import ContinuousContext, StateCell
from .._errors import UndecodableDataError
from .._observe import JobEvent
from .._serde import encode, read_stored, to_json
from .._storage._interface import Claim, InstanceKey, InstanceRecord, InstanceStatus, JobKind
from .._types import JsonValue
from ._common import (
    NotBefore,
    emit_all,
    execution_info,
    fenced,
    instance_name,
    key_of,
    new_record,
    not_before_time,
    require_instance,
    unreadable_record,
)
from ._invoke import RunHandle, bind
from ._results import (
    ContinuousStatus,
    ContinuousStatusName,
    StartResult,
    TerminateResult,
    TriggerResult,
)
from ._runner import Attempts, Execution, FailedFinally, Succeeded, Terminated, run_execution
from ._services import Services


if TYPE_CHECKING:
    from .._definitions._continuous import Continuous

I = TypeVar("I")
S = TypeVar("S")
E = TypeVar("E")
R = TypeVar("R")


@attrs.frozen(kw_only=True)
class ContinuousMeta:
    """A continuous instance's bookkeeping, stored in the record's `meta`."""

    run_count: int = 0
    last_run_at: datetime | None = None
    next_run_at: datetime | None = None
    """When the schedule wants the next run (the first one: when started)."""
    trigger_due: bool = False
    """A `trigger` asked for a run that has not started yet."""
    trigger_after_run: bool = False
    """A `trigger` arrived while a run was in progress: one more run right after it."""


def continuous_meta(record: InstanceRecord) -> ContinuousMeta:
    """The bookkeeping of a stored continuous instance (`UndecodableDataError` if unreadable)."""
    unreadable_record(record)
    if record.meta is None:
        return ContinuousMeta()
    return read_stored(record.meta, ContinuousMeta, field="meta", where=instance_name(record.key))


def _alarm(meta: ContinuousMeta, now: datetime) -> datetime | None:
    """When a worker should next run the instance (no retry pending)."""
    if meta.trigger_due:
        return now
    return meta.next_run_at


def _retrying(record: InstanceRecord) -> bool:
    return record.attempt > 1 or record.defects > 0


class ContinuousHandler(Generic[I, S, E, R]):
    """
    Continuous operations for one definition.

    Type parameters:
        I, S, E, R: those of the `Continuous` definition.
    """

    __slots__ = ("_job", "_services")

    def __init__(self, job: "Continuous[I, S, E, R]", services: Services) -> None:
        self._job = job
        self._services = services

    def key(self, id: str) -> InstanceKey:
        """The instance key of `id`."""
        return key_of(JobKind.CONTINUOUS, self._job.name, id)

    async def start(self, id: str, input: S, not_before: NotBefore | None = None) -> StartResult:
        """
        Create `id` with `input` as its state; due at once if `start_immediately`, and in
        any case not before `not_before`.
        """
        job = self._job
        require_instance("input", input, job.state)
        key = self.key(id)
        services = self._services
        state = to_json(input, job.state, field="input", limits=services.limits)
        async with services.storage.instance(key) as tx:
            now = services.clock.now()
            existing = tx.record
            if existing is not None:
                return StartResult(created=False, next_run_at=continuous_meta(existing).next_run_at)
            earliest = not_before_time(not_before, now) or now
            first = earliest if job.start_immediately else job.schedule.next_after(earliest)
            meta = ContinuousMeta(next_run_at=first)
            tx.save(
                attrs.evolve(new_record(key, now), state=state, meta=encode(meta), alarm_at=first)
            )
        services.events.emit(
            JobEvent(type="job.started", kind=key.kind, job=key.job, id=key.id, at=now)
        )
        services.wake(first)
        return StartResult(created=True, next_run_at=first)

    async def trigger(self, id: str) -> TriggerResult:
        """
        Ask for a run now, the schedule left as it is; during a run, one more right after it.

        A missing or parked instance is not triggered; a retry that is waiting keeps its
        delay (the retry is the run the trigger asked for).
        """
        services = self._services
        async with services.storage.instance(self.key(id)) as tx:
            now = services.clock.now()
            record = tx.record
            if record is None or record.status is not InstanceStatus.ACTIVE:
                return TriggerResult(triggered=False)
            meta = continuous_meta(record)
            running = record.lease is not None
            if running:
                meta = attrs.evolve(meta, trigger_after_run=True)
                alarm = record.alarm_at
            else:
                meta = attrs.evolve(meta, trigger_due=True)
                alarm = record.alarm_at if _retrying(record) else _alarm(meta, now)
            tx.save(attrs.evolve(record, meta=encode(meta), alarm_at=alarm, updated_at=now))
        if alarm is not None:
            services.wake(alarm)
        return TriggerResult(triggered=True, after_current_run=running)

    async def terminate(self, id: str, reason: str | None = None) -> TerminateResult:
        """Purge `id` (state and alarm); a run in progress is refused its result."""
        services = self._services
        async with services.storage.instance(self.key(id)) as tx:
            record = tx.record
            if record is None:
                return TerminateResult(terminated=False)
            tx.purge()
            now = services.clock.now()
        if record.lease is not None:
            services.wake(now)  # a local worker renews at once, learns the run lost its lease
        key = record.key
        services.events.emit(
            JobEvent(
                type="job.terminated", kind=key.kind, job=key.job, id=key.id, at=now, reason=reason
            )
        )
        return TerminateResult(terminated=True, reason=reason)

    async def status(self, id: str) -> ContinuousStatus:
        """Where `id` stands."""
        record = await self._services.storage.read(self.key(id))
        if record is None:
            return ContinuousStatus(status="not_found")
        try:
            meta = continuous_meta(record)
        except UndecodableDataError as error:  # parked at its next run; shown as failed now
            return ContinuousStatus(
                status="failed",
                next_run_at=None,
                attempt=record.attempt,
                last_error=record.last_error or str(error),
            )
        name: ContinuousStatusName = (
            "failed"
            if record.status is InstanceStatus.FAILED
            else "running"
            if record.lease is not None
            else "retrying"
            if _retrying(record)
            else "scheduled"
        )
        return ContinuousStatus(
            status=name,
            run_count=meta.run_count,
            next_run_at=record.alarm_at,
            attempt=record.attempt,
            last_error=record.last_error,
            abandoned=record.lease is not None and record.lease.abandoned,
        )

    async def get_state(self, id: str) -> S | None:
        """The state of `id`, or None."""
        record = await self._services.storage.read(self.key(id))
        if record is None:
            return None
        unreadable_record(record)
        if record.state is None:
            return None
        return read_stored(
            record.state, self._job.state, field="state", where=instance_name(record.key)
        )

    def _state_json(self, value: S) -> JsonValue:
        return to_json(value, self._job.state, field="state", limits=self._services.limits)

    async def run(self, claim: Claim, deps: R, run: RunHandle) -> None:
        """Run `execute` for a claimed instance and write the outcome (fenced)."""
        job = self._job
        services = self._services
        record = claim.record
        now = services.clock.now()
        meta = continuous_meta(record)
        # a retry (of an `Err` or of a defect) repeats its run: it keeps the run number
        run_count = meta.run_count if _retrying(record) and meta.run_count else meta.run_count + 1
        scheduled = meta.next_run_at is not None and meta.next_run_at <= now
        cell = StateCell(
            read_stored(record.state, job.state, field="state", where=instance_name(record.key))
        )
        info = execution_info(record.key, record.attempt, now)
        context = ContinuousContext(info, deps, cell, run_count)
        execute = job.execute
        result = await run_execution(
            services,
            Execution(
                info=info,
                key=record.key,
                deps=deps,
                call=bind(execute, lambda: execute(context)),
                retry=job.retry,
                on_error=job.on_error,
                error_state=cell.value,
                attempts=Attempts.of(record),
                state=cell,
                letter_state=record.state,
                letter_meta=record.meta,
                timeout=self._job.timeout,
                encode_state=self._state_json,
            ),
            run,
        )
        outcome = result.outcome
        run.finish()
        async with services.storage.instance(record.key) as tx:
            current = fenced(tx, claim.token)
            for letter in result.letters:
                tx.add_dead_letter(letter)
            final = isinstance(outcome, FailedFinally) and outcome.rescheduled_at is None
            if isinstance(outcome, Terminated) or final:
                tx.purge()
            else:
                after = continuous_meta(current)
                after = attrs.evolve(after, run_count=run_count, last_run_at=now)
                saved = result.applied_to(current)
                if isinstance(outcome, Succeeded):
                    if scheduled:
                        after = attrs.evolve(
                            after, next_run_at=job.schedule.next_after(result.ended_at)
                        )
                    after = attrs.evolve(after, trigger_due=False)
                    saved = attrs.evolve(saved, alarm_at=_alarm(after, result.ended_at))
                if after.trigger_after_run and saved.status is InstanceStatus.ACTIVE:
                    after = attrs.evolve(after, trigger_due=True, trigger_after_run=False)
                    if isinstance(outcome, Succeeded):
                        saved = attrs.evolve(saved, alarm_at=result.ended_at)
                tx.save(attrs.evolve(saved, meta=encode(after)))
                if saved.alarm_at is not None:
                    services.wake(saved.alarm_at)
        emit_all(services, result.events)
