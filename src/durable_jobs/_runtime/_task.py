"""The Task handler: `on_event` on send, `execute` on its alarm, `on_idle` when no alarm."""

import inspect
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Generic, Literal

import attrs
from typing_extensions import TypeVar

from .._contexts import (
    ExecutionInfo,
    IdleReason,
    ScheduleCell,
    StateCell,
    TaskEventContext,
    TaskExecuteContext,
    TaskIdleContext,
    TerminateSignal,
)
from .._errors import ExecutionError
from .._observe import JobEvent
from .._result import Err, Ok, Result
from .._serde import decode, encode
from .._storage._interface import InstanceKey, InstanceRecord, InstanceTransaction, JobKind
from ._common import execution_info, is_due, key_of, new_record, require_instance
from ._results import SendResult, TaskStatus, TerminateResult, TriggerResult
from ._runner import Execution, FailedFinally, Outcome, Succeeded, run_execution
from ._services import Services


if TYPE_CHECKING:
    from .._definitions._task import Task

I = TypeVar("I")
S = TypeVar("S")
E = TypeVar("E")
R = TypeVar("R")


@attrs.frozen(kw_only=True)
class TaskMeta:
    """A task's bookkeeping, stored in the record's `meta`."""

    event_count: int = 0
    execute_count: int = 0


class TaskHandler(Generic[I, S, E, R]):
    """
    Task operations for one definition.

    Type parameters:
        I, S, E, R: those of the `Task` definition.
    """

    __slots__ = ("_deps", "_job", "_services")

    def __init__(self, job: "Task[I, S, E, R]", deps: R, services: Services) -> None:
        self._job = job
        self._deps = deps
        self._services = services

    def key(self, id: str) -> InstanceKey:
        """The instance key of `id`."""
        return key_of(JobKind.TASK, self._job.name, id)

    async def send(self, id: str, event: I, event_id: str | None = None) -> SendResult:
        """Run `on_event` for `event` (then `on_idle` if no alarm is left)."""
        job = self._job
        require_instance("event", event, job.event)
        key = self.key(id)
        services = self._services
        async with services.storage.instance(key) as tx:
            now = services.clock.now()
            existing = tx.record
            if event_id is not None and await tx.has_seen(event_id):
                return SendResult(
                    created=False,
                    scheduled_at=existing.alarm_at if existing else None,
                    duplicate=True,
                )
            record = existing or new_record(key, now)
            meta = self._meta(existing)
            meta = attrs.evolve(meta, event_count=meta.event_count + 1)
            cell = StateCell(self._state(record))
            schedule = ScheduleCell(record.alarm_at)
            info = execution_info(key, record.attempt, now)
            context = TaskEventContext(info, self._deps, cell, schedule, event, meta.event_count)
            try:
                await _call(lambda: job.on_event(context))
                if schedule.at is None:
                    await self._idle(cell, schedule, info, "on_event")
            except TerminateSignal as signal:
                tx.purge()  # seen event ids survive a purge: a redelivery is a duplicate
                if event_id is not None:
                    tx.remember(event_id, now)
                self._terminated(key, now, signal.reason)
                return SendResult(created=existing is None, scheduled_at=None, terminated=True)
            except Exception as exc:
                msg = f"task {job.name!r}: on_event raised for id {id!r}; nothing was stored"
                raise ExecutionError(msg, job=job.name, id=id) from exc
            self._commit(tx, record, meta, cell, schedule, now, "event")
            if event_id is not None:
                tx.remember(event_id, now)
            return SendResult(created=existing is None, scheduled_at=schedule.at)

    async def trigger(self, id: str) -> TriggerResult:
        """Run `execute` now (the alarm, if any, is replaced by what `execute` leaves)."""
        async with self._services.storage.instance(self.key(id)) as tx:
            record = tx.record
            if record is None or record.status.value == "failed":
                return TriggerResult(triggered=False)
            outcome = await self._execute(tx, record, self._services.clock.now())
            return TriggerResult(triggered=True, outcome=outcome)

    async def terminate(self, id: str) -> TerminateResult:
        """Purge the task."""
        async with self._services.storage.instance(self.key(id)) as tx:
            record = tx.record
            if record is None:
                return TerminateResult(terminated=False)
            tx.purge()
            self._terminated(record.key, self._services.clock.now(), None)
            return TerminateResult(terminated=True)

    async def status(self, id: str) -> TaskStatus:
        """Where the task stands."""
        record = await self._services.storage.read(self.key(id))
        if record is None:
            return TaskStatus(status="not_found")
        meta = self._meta(record)
        name: Literal["scheduled", "idle", "retrying", "failed"] = (
            "failed"
            if record.status.value == "failed"
            else "retrying"
            if record.attempt > 1 or record.defects > 0
            else "scheduled"
            if record.alarm_at is not None
            else "idle"
        )
        return TaskStatus(
            status=name,
            scheduled_at=record.alarm_at,
            event_count=meta.event_count,
            execute_count=meta.execute_count,
            attempt=record.attempt,
            last_error=record.last_error,
        )

    async def get_state(self, id: str) -> S | None:
        """The task's state, or None."""
        record = await self._services.storage.read(self.key(id))
        return None if record is None else self._state(record)

    async def on_alarm(self, key: InstanceKey) -> None:
        """The task's alarm fell due: run `execute`."""
        async with self._services.storage.instance(key) as tx:
            now = self._services.clock.now()
            record = tx.record
            if record is None or not is_due(record, now):
                if record is not None:
                    tx.save(record)
                return
            await self._execute(tx, record, now)

    async def _execute(
        self, tx: InstanceTransaction, record: InstanceRecord, now: datetime
    ) -> Outcome:
        job = self._job
        meta = self._meta(record)
        meta = attrs.evolve(meta, execute_count=meta.execute_count + 1)
        # the alarm that fired is consumed: what execute schedules is the next one
        record = attrs.evolve(record, alarm_at=None, meta=encode(meta))
        state = self._state(record)
        cell = StateCell(state)
        schedule = ScheduleCell(None)
        info = execution_info(record.key, record.attempt, now)
        context = TaskExecuteContext(info, self._deps, cell, schedule, meta.execute_count)

        async def execute_then_idle() -> Result[None, E]:
            # `on_idle` after a success is part of this execution, so the runner treats it
            # like `execute`: if it raises, that is a defect (retried by the defect policy,
            # then parked, never lost); if it terminates, the task is purged
            returned = job.execute(context)
            result = returned if isinstance(returned, Ok | Err) else await returned
            if isinstance(result, Ok) and schedule.at is None:
                await self._idle(cell, schedule, info, "execute")
            return result

        # after a final failure `on_idle` sees the state as it was before this attempt; the
        # runner calls it, so raising parks the task and terminating purges it
        idle_cell = StateCell(state)
        idle_schedule = ScheduleCell(None)
        outcome = await run_execution(
            self._services,
            tx,
            record,
            Execution(
                info=info,
                deps=self._deps,
                call=execute_then_idle,
                retry=job.retry,
                on_error=job.on_error,
                error_state=state,
                state=cell,
                after_final_failure=lambda: self._idle(idle_cell, idle_schedule, info, "on_error"),
            ),
        )
        after = tx.record
        if after is None:
            return outcome
        if isinstance(outcome, Succeeded):
            self._commit(tx, after, self._meta(after), cell, schedule, now, "execute")
        elif isinstance(outcome, FailedFinally) and outcome.rescheduled_at is None:
            self._commit(tx, after, self._meta(after), idle_cell, idle_schedule, now, "on_error")
        return outcome

    async def _after(
        self,
        tx: InstanceTransaction,
        record: InstanceRecord,
        cell: StateCell[S | None],
        schedule: ScheduleCell,
        info: ExecutionInfo,
        reason: IdleReason,
        now: datetime,
    ) -> None:
        try:
            if schedule.at is None:
                await self._idle(cell, schedule, info, reason)
        except TerminateSignal as signal:
            tx.purge()
            self._terminated(record.key, now, signal.reason)
            return
        self._commit(tx, record, self._meta(record), cell, schedule, now, reason)

    async def _idle(
        self,
        cell: StateCell[S | None],
        schedule: ScheduleCell,
        info: ExecutionInfo,
        reason: IdleReason,
    ) -> None:
        on_idle = self._job.on_idle
        if on_idle is None:
            return
        context = TaskIdleContext(info, self._deps, cell, schedule, reason)
        await _call(lambda: on_idle(context))

    def _commit(
        self,
        tx: InstanceTransaction,
        record: InstanceRecord,
        meta: TaskMeta,
        cell: StateCell[S | None],
        schedule: ScheduleCell,
        now: datetime,
        trigger: str,
    ) -> None:
        state = encode(cell.value) if cell.changed else record.state
        tx.save(
            attrs.evolve(
                record, state=state, meta=encode(meta), alarm_at=schedule.at, updated_at=now
            )
        )
        if schedule.at is not None and schedule.changed:
            key = record.key
            self._services.events.emit(
                JobEvent(
                    type="task.scheduled",
                    kind=key.kind,
                    job=key.job,
                    id=key.id,
                    at=now,
                    scheduled_at=schedule.at,
                    reason=trigger,
                )
            )
            self._services.wake(schedule.at)

    def _terminated(self, key: InstanceKey, now: datetime, reason: str | None) -> None:
        self._services.events.emit(
            JobEvent(
                type="job.terminated", kind=key.kind, job=key.job, id=key.id, at=now, reason=reason
            )
        )

    def _meta(self, record: InstanceRecord | None) -> TaskMeta:
        if record is None or record.meta is None:
            return TaskMeta()
        return decode(record.meta, TaskMeta)

    def _state(self, record: InstanceRecord) -> S | None:
        if record.state is None:
            return None
        return decode(record.state, self._job.state)


async def _call(fn: Callable[[], None | Awaitable[None]]) -> None:
    """Call a callback that may be sync or async."""
    result = fn()
    if result is not None and inspect.isawaitable(result):
        await result
