"""
The Task handler: `send` folds events at once; a worker runs `execute` and `on_idle`.

`send` runs the pure `on_event` inside its own short block, unless the task is running (a
worker holds its lease) or earlier events still wait: then the event is queued and the
worker folds the queue, in arrival order, in the same write that finishes the run. A task
left without an alarm by `on_event` gets `on_idle` from a worker shortly after, since
`on_idle` may need the job's dependencies and a client has none.
"""

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Generic, Literal, Never

import attrs
from typing_extensions import TypeVar

from .._contexts import (
    IdleReason,
    ScheduleCell,
    StateCell,
    TaskEventContext,
    TaskExecuteContext,
    TaskIdleContext,
    TerminateSignal,
)
from .._errors import ExecutionError, UndecodableDataError, ValidationError
from .._observe import JobEvent
from .._result import Ok, Result
from .._serde import check_id, encode, read_stored, to_json
from .._storage._interface import (
    Claim,
    DeadLetter,
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
from ._invoke import Call, RunHandle, bind
from ._results import SendResult, TaskStatus, TaskStatusName, TerminateResult, TriggerResult
from ._runner import (
    Attempts,
    Execution,
    FailedFinally,
    RunResult,
    Succeeded,
    Terminated,
    describe_error,
    run_execution,
)
from ._services import Services


if TYPE_CHECKING:
    from .._definitions._task import Task

I = TypeVar("I")
S = TypeVar("S")
E = TypeVar("E")
R = TypeVar("R")

_Action = Literal["execute", "idle", "drain"]


@attrs.frozen(kw_only=True)
class TaskMeta:
    """A task's bookkeeping, stored in the record's `meta`."""

    event_count: int = 0
    execute_count: int = 0
    scheduled_at: datetime | None = None
    """The task's one alarm: what its callbacks scheduled, or a retry of `execute`."""
    idle: IdleReason | None = None
    """`on_idle` is owed for this reason (a worker runs it)."""
    idle_at: datetime | None = None
    """Not before this time (a defect of `on_idle` is retried later)."""
    queued_events: int = 0
    """Events sent during a run, folded right after it."""
    trigger_after_run: bool = False
    """`trigger` arrived during a run: `execute` is due right after it."""


def task_meta(record: InstanceRecord | None) -> TaskMeta:
    """The bookkeeping of a stored task (empty for none; `UndecodableDataError`)."""
    if record is None:
        return TaskMeta()
    unreadable_record(record)
    if record.meta is None:
        return TaskMeta()
    return read_stored(record.meta, TaskMeta, field="meta", where=instance_name(record.key))


def _alarm(meta: TaskMeta, now: datetime) -> datetime | None:
    """When a worker should next look at the task: its alarm, owed `on_idle`, queued events."""
    times = [meta.scheduled_at]
    if meta.idle is not None:
        times.append(meta.idle_at or now)
    if meta.queued_events:
        times.append(now)
    return min((at for at in times if at is not None), default=None)


def _retrying(record: InstanceRecord) -> bool:
    return record.attempt > 1 or record.defects > 0


@attrs.frozen(kw_only=True)
class _Folded:
    """A task after one event: its record (None: `on_event` terminated it) and bookkeeping."""

    record: InstanceRecord | None
    meta: TaskMeta
    scheduled: bool
    """`on_event` set or moved the alarm."""


class TaskHandler(Generic[I, S, E, R]):
    """
    Task operations for one definition.

    Type parameters:
        I, S, E, R: those of the `Task` definition.
    """

    __slots__ = ("_job", "_services")

    def __init__(self, job: "Task[I, S, E, R]", services: Services) -> None:
        self._job = job
        self._services = services

    def key(self, id: str) -> InstanceKey:
        """The instance key of `id`."""
        return key_of(JobKind.TASK, self._job.name, id)

    async def send(self, id: str, event: I, event_id: str | None = None) -> SendResult:
        """Fold `event` with `on_event` now, or queue it while the task runs."""
        job = self._job
        require_instance("event", event, job.event)
        key = self.key(id)
        services = self._services
        event_json = to_json(event, job.event, field="event", limits=services.limits)
        if event_id is not None:
            check_id("event_id", event_id)
        async with services.storage.instance(key) as tx:
            now = services.clock.now()
            existing = tx.record
            meta = task_meta(existing)
            if event_id is not None and await tx.has_seen(event_id):
                return SendResult(status="duplicate", created=False, scheduled_at=meta.scheduled_at)
            if existing is not None and (existing.lease is not None or meta.queued_events):
                tx.queue_push(
                    QueueItem(
                        event_id=event_id or uuid.uuid4().hex,
                        event=event_json,
                        enqueued_at=now,
                    )
                )
                meta = attrs.evolve(meta, queued_events=meta.queued_events + 1)
                alarm = existing.alarm_at if existing.lease is not None else _alarm(meta, now)
                tx.save(attrs.evolve(existing, meta=encode(meta), alarm_at=alarm, updated_at=now))
                if event_id is not None:
                    tx.remember(event_id, now)
                if alarm is not None:
                    services.wake(alarm)
                return SendResult(status="queued", created=False, scheduled_at=meta.scheduled_at)
            try:
                folded = await self._fold(key, existing, meta, event, now)
            except TerminateSignal as signal:
                tx.purge()  # seen event ids survive a purge: a redelivery is a duplicate
                if event_id is not None:
                    tx.remember(event_id, now)
                later = [self._terminated(key, now, signal.reason)]
                result = SendResult(status="terminated", created=existing is None)
                alarm = None
            except (ValidationError, UndecodableDataError):
                raise  # the fold's state would not read back, or the stored one does not
            except Exception as exc:
                msg = f"task {job.name!r}: on_event raised for id {id!r}; nothing was stored"
                raise ExecutionError(msg, job=job.name, id=id) from exc
            else:
                later, result, alarm = self._save_folded(tx, key, existing, folded, now)
                if event_id is not None:
                    tx.remember(event_id, now)
        emit_all(services, later)
        if alarm is not None:
            services.wake(alarm)
        return result

    def _save_folded(
        self,
        tx: InstanceTransaction,
        key: InstanceKey,
        existing: InstanceRecord | None,
        folded: "_Folded",
        now: datetime,
    ) -> tuple[list[JobEvent], SendResult, datetime | None]:
        record = folded.record
        if record is None:  # pragma: no cover - _fold raises on terminate
            msg = "a folded task without a record"
            raise RuntimeError(msg)
        alarm = _alarm(folded.meta, now)
        tx.save(attrs.evolve(record, meta=encode(folded.meta), alarm_at=alarm, updated_at=now))
        later: list[JobEvent] = []
        if folded.scheduled and folded.meta.scheduled_at is not None:
            later.append(self._scheduled(key, now, folded.meta.scheduled_at, "event"))
        result = SendResult(
            status="applied", created=existing is None, scheduled_at=folded.meta.scheduled_at
        )
        return later, result, alarm

    async def _fold(
        self,
        key: InstanceKey,
        record: InstanceRecord | None,
        meta: TaskMeta,
        event: I,
        now: datetime,
    ) -> _Folded:
        """Run `on_event` for one event; raises what it raises (TerminateSignal included)."""
        job = self._job
        base = record if record is not None else new_record(key, now)
        cell = StateCell(self._state(base))
        schedule = ScheduleCell(meta.scheduled_at)
        count = meta.event_count + 1
        info = execution_info(key, base.attempt, now)
        context: TaskEventContext[I, S, R] = TaskEventContext(info, cell, schedule, event, count)
        returned = job.on_event(context)
        if returned is not None:
            await returned
        idle: IdleReason | None = None
        if schedule.at is None and job.on_idle is not None:
            idle = "on_event"
        meta = attrs.evolve(
            meta, event_count=count, scheduled_at=schedule.at, idle=idle, idle_at=None
        )
        state = self._state_json(cell.value) if cell.changed else base.state
        return _Folded(
            record=attrs.evolve(base, state=state), meta=meta, scheduled=schedule.changed
        )

    async def trigger(self, id: str) -> TriggerResult:
        """
        Make `execute` due now; during a run, due right after it (a missing id stays so).

        A retry that is waiting keeps its delay: the retry is the `execute` the trigger asked
        for (backoff is never cut short).
        """
        services = self._services
        async with services.storage.instance(self.key(id)) as tx:
            now = services.clock.now()
            record = tx.record
            if record is None or record.status is not InstanceStatus.ACTIVE:
                return TriggerResult(triggered=False)
            meta = task_meta(record)
            running = record.lease is not None
            if running:
                meta = attrs.evolve(meta, trigger_after_run=True)
                alarm = record.alarm_at
            elif _retrying(record):
                alarm = record.alarm_at
            else:
                meta = attrs.evolve(meta, scheduled_at=now)
                alarm = _alarm(meta, now)
            tx.save(attrs.evolve(record, meta=encode(meta), alarm_at=alarm, updated_at=now))
        if alarm is not None:
            services.wake(alarm)
        return TriggerResult(triggered=True, after_current_run=running)

    async def terminate(self, id: str) -> TerminateResult:
        """Purge the task (events waiting for it too); a run in progress is refused its result."""
        services = self._services
        async with services.storage.instance(self.key(id)) as tx:
            record = tx.record
            if record is None:
                return TerminateResult(terminated=False)
            tx.purge()
            now = services.clock.now()
        if record.lease is not None:
            services.wake(now)  # a local worker renews at once, learns the run lost its lease
        self._services.events.emit(self._terminated(record.key, now, None))
        return TerminateResult(terminated=True)

    async def status(self, id: str) -> TaskStatus:
        """Where the task stands."""
        record = await self._services.storage.read(self.key(id))
        if record is None:
            return TaskStatus(status="not_found")
        try:
            meta = task_meta(record)
        except UndecodableDataError as error:  # parked at its next run; shown as failed now
            return TaskStatus(
                status="failed", attempt=record.attempt, last_error=record.last_error or str(error)
            )
        name: TaskStatusName = (
            "failed"
            if record.status is InstanceStatus.FAILED
            else "running"
            if record.lease is not None
            else "retrying"
            if _retrying(record)
            else "scheduled"
            if meta.scheduled_at is not None
            else "idle"
        )
        return TaskStatus(
            status=name,
            scheduled_at=meta.scheduled_at,
            event_count=meta.event_count,
            execute_count=meta.execute_count,
            attempt=record.attempt,
            last_error=record.last_error,
            queued_events=meta.queued_events,
            abandoned=record.lease is not None and record.lease.abandoned,
        )

    async def get_state(self, id: str) -> S | None:
        """The task's state, or None."""
        record = await self._services.storage.read(self.key(id))
        return None if record is None else self._state(record)

    async def run(self, claim: Claim, deps: R, run: RunHandle) -> None:
        """A worker's turn: `execute`, or the owed `on_idle`, then the events queued meanwhile."""
        record = claim.record
        now = self._services.clock.now()
        meta = task_meta(record)
        action: _Action = "drain"
        if meta.scheduled_at is not None and meta.scheduled_at <= now:
            action = "execute"
        elif meta.idle is not None and (meta.idle_at is None or meta.idle_at <= now):
            action = "idle"
        cell = StateCell(self._state(record))
        schedule = ScheduleCell(None)
        result: RunResult | None = None
        if action == "execute":
            result = await self._execute(record, meta, cell, schedule, deps, run, now)
        elif action == "idle" and meta.idle is not None:
            schedule = ScheduleCell(meta.scheduled_at)
            result = await self._run_idle(record, meta.idle, cell, schedule, deps, run, now)
        run.finish()
        await self._finish(claim, meta, action, result, schedule)

    async def _execute(
        self,
        record: InstanceRecord,
        meta: TaskMeta,
        cell: StateCell[S | None],
        schedule: ScheduleCell,
        deps: R,
        run: RunHandle,
        now: datetime,
    ) -> RunResult:
        job = self._job
        info = execution_info(record.key, record.attempt, now)
        context = TaskExecuteContext(info, deps, cell, schedule, meta.execute_count + 1)
        invoker = self._services.invoker
        on_idle = job.on_idle

        async def idle_after(reason: IdleReason, state: StateCell[S | None]) -> None:
            hook = on_idle
            if hook is None or schedule.at is not None:
                return
            idle_context = TaskIdleContext(info, deps, state, schedule, reason)
            returned = await invoker.invoke(bind(hook, lambda: hook(idle_context)), run)
            if returned is not None:
                await returned

        # after a final failure `on_idle` sees the state as it was before this attempt
        before = StateCell(cell.value)

        async def idle_after_failure() -> None:
            # the failed attempt's schedule is discarded with its state: the alarm that
            # fired is consumed, so `on_idle` starts from none and decides the next one
            schedule.at = None
            schedule.changed = False
            await idle_after("on_error", before)

        execute = job.execute
        result = await run_execution(
            self._services,
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
                encode_state=self._state_json,
                after_success=lambda: idle_after("execute", cell),
                after_final_failure=idle_after_failure,
                timeout=job.timeout,
            ),
            run,
        )
        if result.alarm_at is not None:
            # a retry or an `on_error` reschedule: the attempt's schedule was discarded with
            # its state (the task's alarm is the retry's), so it is not reported either
            schedule.changed = False
        return result

    async def _run_idle(
        self,
        record: InstanceRecord,
        reason: IdleReason,
        cell: StateCell[S | None],
        schedule: ScheduleCell,
        deps: R,
        run: RunHandle,
        now: datetime,
    ) -> RunResult:
        on_idle = self._job.on_idle
        info = execution_info(record.key, 1 + record.defects, now)
        invoker = self._services.invoker

        async def idle() -> Result[None, Never]:
            hook = on_idle
            if hook is not None:
                context = TaskIdleContext(info, deps, cell, schedule, reason)
                returned = await invoker.invoke(bind(hook, lambda: hook(context)), run)
                if returned is not None:
                    await returned
            return Ok(None)

        idle_call: Call[Result[None, Never]] = Call(idle, blocking=False)
        return await run_execution(
            self._services,
            Execution(
                info=info,
                key=record.key,
                deps=deps,
                call=idle_call,
                retry=None,
                on_error=None,
                error_state=cell.value,
                attempts=Attempts.of(record),
                state=cell,
                letter_state=record.state,
                letter_meta=record.meta,
                encode_state=self._state_json,
            ),
            run,
        )

    async def _finish(
        self,
        claim: Claim,
        before: TaskMeta,
        action: _Action,
        result: RunResult | None,
        schedule: ScheduleCell,
    ) -> None:
        """The run's one write: its outcome, then the events that were queued meanwhile."""
        services = self._services
        key = claim.key
        later: list[JobEvent] = []
        async with services.storage.instance(key) as tx:
            # folds and the next alarm count from now (the run ended), not from its start
            now = services.clock.now()
            current = fenced(tx, claim.token)
            meta = task_meta(current)
            queued: list[QueueItem] = []
            while (item := await tx.queue_peek()) is not None:
                await tx.queue_remove(item.event_id)
                queued.append(item)
            meta = attrs.evolve(meta, queued_events=0)
            record: InstanceRecord | None = current
            if result is not None:
                for letter in result.letters:
                    tx.add_dead_letter(letter)
                record, meta = self._outcome(current, meta, before, action, result, schedule)
                if record is not None and schedule.changed and meta.scheduled_at is not None:
                    later.append(self._scheduled(key, now, meta.scheduled_at, action))
            if record is not None and meta.trigger_after_run:
                meta = attrs.evolve(meta, trigger_after_run=False, scheduled_at=now)
            for item in queued:
                record, meta = await self._fold_queued(tx, key, record, meta, item, now, later)
            if record is None:
                tx.purge()
                alarm = None
            else:
                alarm = None if record.status is InstanceStatus.FAILED else _alarm(meta, now)
                tx.save(attrs.evolve(record, meta=encode(meta), alarm_at=alarm, updated_at=now))
        if result is not None:
            # an `on_idle` run of its own is not an execution of `execute`: no job.executed
            emit_all(
                services,
                (e for e in result.events if action != "idle" or e.type != "job.executed"),
            )
        emit_all(services, later)
        if alarm is not None:
            services.wake(alarm)

    def _outcome(
        self,
        current: InstanceRecord,
        meta: TaskMeta,
        before: TaskMeta,
        action: _Action,
        result: RunResult,
        schedule: ScheduleCell,
    ) -> tuple[InstanceRecord | None, TaskMeta]:
        """Apply a run's result; None when the task ended."""
        outcome = result.outcome
        if isinstance(outcome, Terminated):
            return None, TaskMeta()
        saved = result.applied_to(current)
        if action == "execute":
            meta = attrs.evolve(meta, execute_count=before.execute_count + 1)
        if isinstance(outcome, Succeeded):
            return saved, attrs.evolve(meta, scheduled_at=schedule.at, idle=None, idle_at=None)
        if result.parked:
            return saved, attrs.evolve(meta, scheduled_at=None, idle=None, idle_at=None)
        if action == "idle":
            return saved, attrs.evolve(meta, idle_at=result.alarm_at)
        if isinstance(outcome, FailedFinally) and outcome.rescheduled_at is None:
            # a final failure keeps the task and its state; `on_idle` may have scheduled
            return saved, attrs.evolve(meta, scheduled_at=schedule.at, idle=None, idle_at=None)
        # a retry, a defect retry, or `on_error` rescheduled: the task's one alarm. Like every
        # other outcome of `execute` it supersedes an `on_idle` still owed from an event (the
        # task has an alarm now); run later, that `on_idle` would reset the attempt count
        return saved, attrs.evolve(meta, scheduled_at=result.alarm_at, idle=None, idle_at=None)

    async def _fold_queued(
        self,
        tx: InstanceTransaction,
        key: InstanceKey,
        record: InstanceRecord | None,
        meta: TaskMeta,
        item: QueueItem,
        now: datetime,
        later: list[JobEvent],
    ) -> tuple[InstanceRecord | None, TaskMeta]:
        """Fold one queued event; one that cannot be folded gets a dead letter of its own."""
        reason = "on_event"
        try:
            event = self._event(item, key)
        except UndecodableDataError as exc:
            reason, error = "undecodable", str(exc)
        else:
            try:
                folded = await self._fold(key, record, meta, event, now)
            except TerminateSignal as signal:
                later.append(self._terminated(key, now, signal.reason))
                return None, TaskMeta()
            except Exception as exc:
                error = describe_error(exc)
            else:
                if folded.scheduled and folded.meta.scheduled_at is not None:
                    later.append(self._scheduled(key, now, folded.meta.scheduled_at, "event"))
                return folded.record, folded.meta
        tx.add_dead_letter(
            DeadLetter(
                id=uuid.uuid4().hex,
                key=key,
                state=None if record is None else record.state,
                meta=None if record is None else encode(meta),
                event=item.event,
                error=error,
                reason=reason,
                attempts=1,
                at=now,
            )
        )
        return record, meta

    def _scheduled(self, key: InstanceKey, now: datetime, at: datetime, trigger: str) -> JobEvent:
        return JobEvent(
            type="task.scheduled",
            kind=key.kind,
            job=key.job,
            id=key.id,
            at=now,
            scheduled_at=at,
            reason=trigger,
        )

    def _terminated(self, key: InstanceKey, now: datetime, reason: str | None) -> JobEvent:
        return JobEvent(
            type="job.terminated", kind=key.kind, job=key.job, id=key.id, at=now, reason=reason
        )

    def _state(self, record: InstanceRecord) -> S | None:
        unreadable_record(record)
        if record.state is None:
            return None
        return read_stored(
            record.state, self._job.state, field="state", where=instance_name(record.key)
        )

    def _state_json(self, value: S | None) -> JsonValue:
        """The boundary for a state an `on_event`, `execute` or `on_idle` left."""
        if value is None:
            return None
        return to_json(value, self._job.state, field="state", limits=self._services.limits)

    def _event(self, item: QueueItem, key: InstanceKey) -> I:
        """A queued event as stored (`UndecodableDataError` when it does not decode)."""
        where = f"{instance_name(key)} (event {item.event_id})"
        if item.unreadable is not None:
            raise UndecodableDataError("row", item.unreadable, where=where)
        return read_stored(item.event, self._job.event, field="event", where=where)
