"""
The contexts handed to user callbacks.

Each context is a thin view over cells the engine owns for one execution (`StateCell`,
`ScheduleCell`): state changes and schedule requests are recorded there, termination is
raised as `TerminateSignal`, and they only take effect when the run's outcome is written.
The type parameters are documented per class; `R` (the dependencies) defaults to `object`,
so `DebounceExecuteContext[Batch]` is valid.
"""

from collections.abc import Callable
from datetime import datetime
from typing import Generic, Literal, NoReturn, TypeAlias

import attrs
from typing_extensions import TypeVar

from . import _covariant
from ._duration import DurationInput, to_timedelta


I = TypeVar("I", covariant=True)
S = TypeVar("S")
R = TypeVar("R", covariant=True, default=object)

FlushReason: TypeAlias = Literal["flush_after", "max_events", "manual"]
"""Why a debounce batch is being flushed."""

FailureReason: TypeAlias = Literal["no_retry", "not_retryable", "max_attempts", "max_duration"]
"""Why a failure is final: no `retry` set, `should_retry` said no, attempts or time ran out."""

IdleReason: TypeAlias = Literal["on_event", "execute", "on_error"]
"""Which callback left a task without an alarm."""


class TerminateSignal(BaseException):
    """
    Raised by `ctx.terminate()`; the engine catches it and purges the instance.

    It derives from `BaseException` so that a user's `except Exception:` cannot swallow it.
    """

    def __init__(self, reason: str | None) -> None:
        super().__init__(reason)
        self.reason = reason


@attrs.frozen(kw_only=True)
class ExecutionInfo:
    """Who and when: the immutable facts of one execution (engine-internal)."""

    job_name: str
    id: str
    instance_id: str
    attempt: int
    now: datetime


class StateCell(Generic[S]):
    """
    The state as user code sees and changes it during one execution (engine-internal).

    Type parameters:
        S: the type of the value held (a job's `S`, or `S | None` where its kind says so).
    """

    __slots__ = ("changed", "value")

    def __init__(self, value: S) -> None:
        self.value: S = value
        self.changed: bool = False

    def set(self, value: S) -> None:
        """Replace the value; the engine commits it only if the execution succeeds."""
        self.value = value
        self.changed = True


class ScheduleCell:
    """A task's alarm as user code leaves it during one execution (engine-internal)."""

    __slots__ = ("at", "changed")

    def __init__(self, at: datetime | None) -> None:
        self.at: datetime | None = at
        self.changed: bool = False

    def set(self, at: datetime | None) -> None:
        """Request an alarm at `at` (None cancels it)."""
        self.at = at
        self.changed = True


class _Info(Generic[R]):
    """
    What every context exposes except `deps`.

    Type parameters:
        R: the job's requirements (exposed as `deps` by the contexts that have them).
    """

    __slots__ = ("_info",)

    def __init__(self, info: ExecutionInfo) -> None:
        self._info = info

    @property
    def job_name(self) -> str:
        """The job's name."""
        return self._info.job_name

    @property
    def id(self) -> str:
        """The user's id of this instance (as passed to the client)."""
        return self._info.id

    @property
    def instance_id(self) -> str:
        """A globally unique name of this instance: `kind:job:id`."""
        return self._info.instance_id

    @property
    def attempt(self) -> int:
        """The number of this attempt: 1 on the first try, 2 on the first retry, ..."""
        return self._info.attempt

    @property
    def is_retry(self) -> bool:
        """Whether this is a retry (`attempt > 1`)."""
        return self._info.attempt > 1

    @property
    def now(self) -> datetime:
        """
        The engine clock's time when this execution started (timezone-aware).

        `on_error`, and a task's `on_idle` after `execute`, see the time `execute` started; a
        task event folded after a run sees the time that run started.
        """
        return self._info.now


class _Deps(Generic[R]):
    """
    The `deps` of a context whose callback runs on a worker (never in a client's call).

    Type parameters:
        R: the type of `deps` (the job's requirements).
    """

    __slots__ = ()

    def _dependencies(self) -> R:
        raise NotImplementedError

    @property
    def deps(self) -> R:
        """The engine's dependencies, typed by the job's requirement `R`."""
        return self._dependencies()


class _BaseContext(_Info[R], _Deps[R]):
    """
    What every context of a worker callback exposes.

    Type parameters:
        R: the type of `deps` (the job's requirements).
    """

    __slots__ = ("_deps",)

    def __init__(self, info: ExecutionInfo, deps: R) -> None:
        super().__init__(info)
        self._deps = deps

    def _dependencies(self) -> R:
        return self._deps


def _terminate(reason: str | None) -> NoReturn:
    raise TerminateSignal(reason)


class ContinuousContext(_BaseContext[R], Generic[S, R]):
    """
    The context of a `Continuous` job's `execute`.

    Type parameters:
        S: the job's state (always present for a running continuous job).
        R: the type of `deps`.
    """

    __slots__ = ("_run_count", "_state")

    def __init__(self, info: ExecutionInfo, deps: R, state: StateCell[S], run_count: int) -> None:
        super().__init__(info, deps)
        self._state = state
        self._run_count = run_count

    @property
    def state(self) -> S:
        """The current state, including changes made earlier in this execution."""
        return self._state.value

    def set_state(self, state: S) -> None:
        """Replace the state; committed only if this execution succeeds."""
        self._state.set(state)

    def update_state(self, fn: Callable[[S], S]) -> None:
        """Replace the state with `fn(state)`."""
        self._state.set(fn(self._state.value))

    @property
    def run_count(self) -> int:
        """Which run this is (1-indexed); retries of one run share its number."""
        return self._run_count

    def terminate(self, reason: str | None = None) -> NoReturn:
        """Stop the job for good: purge state and alarm; no retry, no `on_error`."""
        _terminate(reason)


class DebounceEventContext(_Info[R], Generic[I, S, R]):
    """
    The context of a `Debounce` job's `on_event` (the fold of one event into the batch).

    The fold runs inside the `add` call that brought the event, in the caller's process and
    transaction: it must be pure and fast, and it has no `deps`.

    Type parameters:
        I: the event type.
        S: the batch state; `state` is None for the first event of a batch.
        R: the job's requirements (not exposed here: a fold needs none).
    """

    __slots__ = ("_event", "_event_count", "_state")

    def __init__(self, info: ExecutionInfo, event: I, state: S | None, event_count: int) -> None:
        super().__init__(info)
        self._event = event
        self._state = state
        self._event_count = event_count

    @property
    def event(self) -> I:
        """The event being added."""
        return self._event

    @property
    def state(self) -> S | None:
        """The batch so far, or None for the first event of a batch."""
        return self._state

    @property
    def event_count(self) -> int:
        """How many events the batch holds, counting this one."""
        return self._event_count


class DebounceExecuteContext(_BaseContext[R], Generic[S, R]):
    """
    The context of a `Debounce` job's `execute` (a flush).

    Type parameters:
        S: the batch state (always present during a flush).
        R: the type of `deps`.
    """

    __slots__ = ("_batch_id", "_event_count", "_flush_reason", "_started_at", "_state")

    def __init__(
        self,
        info: ExecutionInfo,
        deps: R,
        state: S,
        event_count: int,
        flush_reason: FlushReason,
        started_at: datetime,
        batch_id: str,
    ) -> None:
        super().__init__(info, deps)
        self._state = state
        self._event_count = event_count
        self._flush_reason: FlushReason = flush_reason
        self._started_at = started_at
        self._batch_id = batch_id

    @property
    def batch_id(self) -> str:
        """
        The batch's id: the same on every retry of its flush (a receiver can deduplicate
        by it), different for every batch.
        """
        return self._batch_id

    @property
    def state(self) -> S:
        """The batch being flushed."""
        return self._state

    @property
    def event_count(self) -> int:
        """How many events the batch holds."""
        return self._event_count

    @property
    def flush_reason(self) -> FlushReason:
        """Why this flush happens: the window elapsed, `max_events` was reached, or manual."""
        return self._flush_reason

    @property
    def started_at(self) -> datetime:
        """When the first event of the batch arrived."""
        return self._started_at

    def terminate(self, reason: str | None = None) -> NoReturn:
        """Drop this batch: no retry, no `on_error` (later batches of the id go on)."""
        _terminate(reason)


class _TaskContext(_Info[R], Generic[S, R]):
    """
    State and alarm control shared by the task contexts.

    Type parameters:
        S: the task's state (`state` is `S | None`).
        R: the job's requirements.
    """

    __slots__ = ("_schedule", "_state")

    def __init__(
        self, info: ExecutionInfo, state: StateCell[S | None], schedule: ScheduleCell
    ) -> None:
        super().__init__(info)
        self._state = state
        self._schedule = schedule

    @property
    def state(self) -> S | None:
        """The task's state, or None before anything set it."""
        return self._state.value

    def set_state(self, state: S) -> None:
        """Replace the state; committed when the callback completes."""
        self._state.set(state)

    def update_state(self, fn: Callable[[S | None], S]) -> None:
        """Replace the state with `fn(state)`."""
        self._state.set(fn(self._state.value))

    def schedule(self, when: DurationInput | datetime) -> datetime:
        """
        Set the task's one alarm: a duration from now, or an aware `datetime`.

        Replaces any earlier alarm; returns the alarm time. A raw epoch number is never a
        time: numbers are durations in seconds.
        """
        at = _alarm_time(when, self._info.now)
        self._schedule.set(at)
        return at

    def cancel_schedule(self) -> None:
        """Clear the task's alarm."""
        self._schedule.set(None)

    @property
    def scheduled_at(self) -> datetime | None:
        """The alarm as it stands now in this callback, or None."""
        return self._schedule.at

    def terminate(self, reason: str | None = None) -> NoReturn:
        """End the task: purge state and alarm."""
        _terminate(reason)


class TaskEventContext(_TaskContext[S, R], Generic[I, S, R]):
    """
    The context of a `Task` job's `on_event`.

    `on_event` is a fold: it runs inside the `send` call (or, for an event sent while
    `execute` was running, in the worker right after that run), so it must be pure and
    fast, and it has no `deps`.

    Type parameters:
        I: the event type.
        S: the task's state (`state` is `S | None`).
        R: the job's requirements (not exposed here: a fold needs none).
    """

    __slots__ = ("_event", "_event_count")

    def __init__(
        self,
        info: ExecutionInfo,
        state: StateCell[S | None],
        schedule: ScheduleCell,
        event: I,
        event_count: int,
    ) -> None:
        super().__init__(info, state, schedule)
        self._event = event
        self._event_count = event_count

    @property
    def event(self) -> I:
        """The event sent."""
        return self._event

    @property
    def event_count(self) -> int:
        """How many events this task has received, counting this one."""
        return self._event_count


class TaskExecuteContext(_TaskContext[S, R], _Deps[R], Generic[S, R]):
    """
    The context of a `Task` job's `execute` (its alarm fired, or `trigger`).

    Type parameters:
        S: the task's state (`state` is `S | None`).
        R: the type of `deps`.
    """

    __slots__ = ("_deps", "_execute_count")

    def __init__(
        self,
        info: ExecutionInfo,
        deps: R,
        state: StateCell[S | None],
        schedule: ScheduleCell,
        execute_count: int,
    ) -> None:
        super().__init__(info, state, schedule)
        self._deps = deps
        self._execute_count = execute_count

    def _dependencies(self) -> R:
        return self._deps

    @property
    def execute_count(self) -> int:
        """How many times `execute` has run for this task, counting this run."""
        return self._execute_count


class TaskIdleContext(_TaskContext[S, R], _Deps[R], Generic[S, R]):
    """
    The context of a `Task` job's `on_idle` (no alarm is set after a callback).

    `on_idle` runs on a worker, never in a client's call: after `on_event` it runs shortly
    after the `send` that left the task without an alarm.

    Type parameters:
        S: the task's state (`state` is `S | None`).
        R: the type of `deps`.
    """

    __slots__ = ("_deps", "_idle_reason")

    def __init__(
        self,
        info: ExecutionInfo,
        deps: R,
        state: StateCell[S | None],
        schedule: ScheduleCell,
        idle_reason: IdleReason,
    ) -> None:
        super().__init__(info, state, schedule)
        self._deps = deps
        self._idle_reason: IdleReason = idle_reason

    def _dependencies(self) -> R:
        return self._deps

    @property
    def idle_reason(self) -> IdleReason:
        """Which callback left the task without an alarm."""
        return self._idle_reason


class WorkerPoolContext(_BaseContext[R], Generic[I, R]):
    """
    The context of a `WorkerPool` job's `execute` (one event).

    Type parameters:
        I: the event type.
        R: the type of `deps`.
    """

    __slots__ = ("_cancelled", "_event", "_event_id", "_partition_key", "_priority")

    def __init__(
        self,
        info: ExecutionInfo,
        deps: R,
        event: I,
        event_id: str,
        partition_key: str | None,
        priority: int,
        cancelled: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(info, deps)
        self._event = event
        self._event_id = event_id
        self._partition_key = partition_key
        self._priority = priority
        self._cancelled = cancelled

    @property
    def cancelled(self) -> bool:
        """
        True once a client cancelled this event while it runs (`cancel(event_id)`).

        An async `execute` is cancelled then anyway; a sync one cannot be stopped, so it
        should look at this between steps and return early: whatever it returns, the event
        is recorded as cancelled and never retried.
        """
        return self._cancelled is not None and self._cancelled()

    @property
    def event(self) -> I:
        """The event being processed."""
        return self._event

    @property
    def event_id(self) -> str:
        """The event's id (given to `enqueue`, or generated)."""
        return self._event_id

    @property
    def partition_key(self) -> str | None:
        """The partition key given to `enqueue`, if any (one key, one event at a time)."""
        return self._partition_key

    @property
    def priority(self) -> int:
        """The event's priority (higher runs first among ready events)."""
        return self._priority


class ErrorContext(_BaseContext[R], Generic[_covariant.S, R]):
    """
    The context of `on_error(e, ctx)`: a failure is final.

    Type parameters:
        S: the state the failed execution saw: a Debounce's batch, a Continuous job's state,
            a Task's `S | None`; for a WorkerPool, the event that failed. Covariant (the
            state is only read here): one `on_error(e, ctx: ErrorContext[object])` serves
            jobs of any state type.
        R: the type of `deps`.
    """

    __slots__ = ("_attempts", "_reason", "_reschedule", "_state")

    def __init__(
        self,
        info: ExecutionInfo,
        deps: R,
        state: _covariant.S,
        attempts: int,
        reason: FailureReason,
        reschedule: ScheduleCell,
    ) -> None:
        super().__init__(info, deps)
        self._state = state
        self._attempts = attempts
        self._reason: FailureReason = reason
        self._reschedule = reschedule

    @property
    def state(self) -> _covariant.S:
        """The state the failed execution saw (its own changes are discarded)."""
        return self._state

    @property
    def attempts(self) -> int:
        """How many attempts were made."""
        return self._attempts

    @property
    def reason(self) -> FailureReason:
        """Why the failure is final."""
        return self._reason

    def reschedule(self, delay: DurationInput) -> None:
        """
        Try again after `delay` instead of giving up (the state is kept).

        The next run starts a fresh retry sequence; `rescheduled_at` says when it is due.
        Returns None, like `on_error` itself, so `on_error=lambda e, ctx:
        ctx.reschedule("5 minutes")` is a valid handler.
        """
        self._reschedule.set(_alarm_time(delay, self._info.now))

    @property
    def rescheduled_at(self) -> datetime | None:
        """When the instance runs again, if `reschedule` was called in this `on_error`."""
        return self._reschedule.at

    def terminate(self, reason: str | None = None) -> NoReturn:
        """Purge the instance now (no dead-letter record)."""
        _terminate(reason)


def _alarm_time(when: DurationInput | datetime, now: datetime) -> datetime:
    if isinstance(when, datetime):
        if when.tzinfo is None:
            msg = f"schedule: naive datetime {when!r}; pass an aware datetime or a duration"
            raise ValueError(msg)
        return when
    return now + to_timedelta(when, field="schedule")
