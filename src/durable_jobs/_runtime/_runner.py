"""
The one execution runner (the seeds' `JobExecution`).

Every execution of user code that can fail with `E` goes through `run_execution`: it runs
the callback (sync or async), interprets what happened, applies the generic part of the
outcome to the instance's record inside the caller's transaction, and returns a typed
`Outcome`. This is the only module that decides about retries: whether to retry, with which
delay and jitter, when attempts or time are exhausted, and what a defect does. The per-kind
handlers only build contexts and apply their kind's continuation to the outcome.
"""

import traceback
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Generic, TypeAlias

import attrs
from typing_extensions import TypeVar

from .._contexts import (
    ErrorContext,
    ExecutionInfo,
    FailureReason,
    ScheduleCell,
    StateCell,
    TerminateSignal,
)
from .._duration import to_capped_timedelta
from .._observe import EventType, JobEvent
from .._result import Err, Ok, Result
from .._retry import MAX_DELAY, Backoff, Retry
from .._serde import encode
from .._storage._interface import DeadLetter, InstanceRecord, InstanceStatus, InstanceTransaction
from .._types import JsonValue
from ._services import Services


E = TypeVar("E")
S = TypeVar("S", default=None)
R = TypeVar("R")
X = TypeVar("X")


@attrs.frozen(kw_only=True)
class Succeeded:
    """`execute` returned `Ok`: state changes were committed and the attempt counter reset."""

    attempt: int


@attrs.frozen(kw_only=True)
class RetryScheduled:
    """`execute` returned a retryable `Err`: the attempt's changes were discarded."""

    attempt: int
    """The attempt that failed."""
    retry_at: datetime
    error: str


@attrs.frozen(kw_only=True)
class FailedFinally:
    """`execute` returned `Err` and no retry remains: `on_error` ran or a dead letter exists."""

    attempts: int
    reason: FailureReason
    error: str
    rescheduled_at: datetime | None
    """Set when `on_error` called `ctx.reschedule(...)`: the instance keeps its state."""
    dead_lettered: bool


@attrs.frozen(kw_only=True)
class Terminated:
    """User code called `ctx.terminate()`: the instance was purged."""

    reason: str | None


@attrs.frozen(kw_only=True)
class Defect:
    """User code raised: retried by the defect policy, or parked when it ran out."""

    error: str
    retry_at: datetime | None
    parked: bool


Outcome: TypeAlias = Succeeded | RetryScheduled | FailedFinally | Terminated | Defect
"""What one execution came to."""


@attrs.frozen(kw_only=True)
class Execution(Generic[E, R, X, S]):
    """
    Everything the runner needs for one execution (built by a handler).

    Type parameters:
        E: the error type of `call`.
        R: the job's dependencies type.
        X: the state type `on_error` sees through `ErrorContext[X, R]`.
        S: the type of the state cell user code may change (`None` when it has none).
    """

    info: ExecutionInfo
    deps: R
    call: Callable[[], Result[None, E] | Awaitable[Result[None, E]]]
    """`execute` bound to its context."""
    retry: Retry[E] | None
    on_error: Callable[[E, ErrorContext[X, R]], None | Awaitable[None]] | None
    error_state: X
    """The state as it was before this attempt: what `on_error` and dead letters see."""
    state: StateCell[S] | None = None
    """The cell user code changes; committed to the record on success."""
    event: JsonValue = None
    """The event being processed (worker pools): kept in dead letters."""
    park_on_defect: bool = True
    """Park the instance when the defect policy runs out (False: give up on this event)."""
    after_final_failure: Callable[[], Awaitable[None]] | None = None
    """
    The kind's follow-up to a final failure that `on_error` did not reschedule (a task's
    `on_idle`); it may terminate, and if it raises the instance is parked like `on_error`.
    """


async def run_execution(
    services: Services,
    tx: InstanceTransaction,
    record: InstanceRecord,
    execution: Execution[E, R, X, S],
) -> Outcome:
    """
    Run one execution and apply the generic part of its outcome to `tx`.

    On return the record in `tx` holds the committed state, the attempt bookkeeping, the
    retry or defect alarm, and the dead letter if one was written; a terminated instance is
    purged. The caller applies its kind's continuation (next run, purge, idle, next event).
    """
    info = execution.info
    now = info.now
    try:
        outcome = execution.call()
        result = outcome if isinstance(outcome, Ok | Err) else await outcome
    except TerminateSignal as signal:
        return _terminate(services, tx, record, info, signal.reason)
    except Exception as exc:  # a defect: never an E, never given to should_retry/on_error
        return await _defect(services, tx, record, execution, exc)

    if isinstance(result, Ok):
        saved = attrs.evolve(
            record,
            state=encode(execution.state.value)
            if execution.state is not None and execution.state.changed
            else record.state,
            attempt=1,
            retry_started_at=None,
            defects=0,
            last_error=None,
            updated_at=now,
        )
        tx.save(saved)
        _emit(services, record, "job.executed", attempt=info.attempt)
        return Succeeded(attempt=info.attempt)

    error = result.error
    try:
        decision = _decide(execution.retry, error, info.attempt, record, now, services.random)
    except Exception as exc:  # should_retry or a retry-after callable raised
        return await _defect(services, tx, record, execution, exc)
    error_text = describe_error(error)
    if isinstance(decision, timedelta):
        retry_at = now + decision
        tx.save(
            attrs.evolve(
                record,
                attempt=info.attempt + 1,
                retry_started_at=record.retry_started_at or now,
                alarm_at=retry_at,
                last_error=error_text,
                updated_at=now,
            )
        )
        _emit(
            services,
            record,
            "job.failed",
            attempt=info.attempt,
            error=error_text,
            will_retry=True,
            retry_at=retry_at,
        )
        services.wake(retry_at)
        return RetryScheduled(attempt=info.attempt, retry_at=retry_at, error=error_text)
    return await _fail_finally(services, tx, record, execution, error, error_text, decision)


def _decide(
    retry: Retry[E] | None,
    error: E,
    attempt: int,
    record: InstanceRecord,
    now: datetime,
    random: Callable[[], float],
) -> timedelta | FailureReason:
    """The retry decision (SPEC §5): a delay to retry after, or why the failure is final."""
    if retry is None:
        return "no_retry"
    if retry.should_retry is not None and not retry.should_retry(error):
        return "not_retryable"
    if attempt >= retry.max_attempts:
        return "max_attempts"
    started = record.retry_started_at or now
    limit = retry.max_duration_delta
    if limit is not None and now - started >= limit:
        return "max_duration"
    return _jittered(_base_delay(retry, error, attempt), retry.jitter_fraction, random)


def _base_delay(retry: Retry[E], error: E, attempt: int) -> timedelta:
    """The delay before jitter, capped at `MAX_DELAY` like every `Backoff` shape."""
    delay = retry.delay
    if isinstance(delay, Backoff):
        return delay.delay_for(attempt)
    if callable(delay):
        return to_capped_timedelta(delay(error, attempt), cap=MAX_DELAY, field="retry.delay")
    return to_capped_timedelta(delay, cap=MAX_DELAY, field="retry.delay")


def _jittered(delay: timedelta, fraction: float, random: Callable[[], float]) -> timedelta:
    if fraction == 0:
        return delay
    return delay * (1 + fraction * (2 * random() - 1))


async def _fail_finally(
    services: Services,
    tx: InstanceTransaction,
    record: InstanceRecord,
    execution: Execution[E, R, X, S],
    error: E,
    error_text: str,
    reason: FailureReason,
) -> Outcome:
    info = execution.info
    now = info.now
    if reason in ("max_attempts", "max_duration"):
        _emit(
            services,
            record,
            "job.retry_exhausted",
            attempt=info.attempt,
            error=error_text,
            reason=reason,
        )
    else:
        _emit(
            services,
            record,
            "job.failed",
            attempt=info.attempt,
            error=error_text,
            will_retry=False,
            reason=reason,
        )
    reset = attrs.evolve(
        record,
        attempt=1,
        retry_started_at=None,
        defects=0,
        last_error=error_text,
        updated_at=now,
    )
    if execution.on_error is None:
        tx.save(attrs.evolve(reset, alarm_at=None))
        _dead_letter(services, tx, record, execution, error_text, reason, info.attempt)
        followed = await _follow_up(services, tx, reset, execution)
        if followed is not None:
            return followed
        return FailedFinally(
            attempts=info.attempt,
            reason=reason,
            error=error_text,
            rescheduled_at=None,
            dead_lettered=True,
        )
    reschedule = ScheduleCell(None)
    context = ErrorContext(
        info, execution.deps, execution.error_state, info.attempt, reason, reschedule
    )
    try:
        handled = execution.on_error(error, context)
        if handled is not None:
            await handled
    except TerminateSignal as signal:
        return _terminate(services, tx, record, info, signal.reason)
    except Exception as exc:  # on_error raised: a defect of the instance, parked at once
        return _park(services, tx, reset, execution, _describe_exception(exc))
    tx.save(attrs.evolve(reset, alarm_at=reschedule.at))
    if reschedule.at is not None:
        services.wake(reschedule.at)
    else:
        followed = await _follow_up(services, tx, reset, execution)
        if followed is not None:
            return followed
    return FailedFinally(
        attempts=info.attempt,
        reason=reason,
        error=error_text,
        rescheduled_at=reschedule.at,
        dead_lettered=False,
    )


async def _follow_up(
    services: Services,
    tx: InstanceTransaction,
    reset: InstanceRecord,
    execution: Execution[E, R, X, S],
) -> Outcome | None:
    """Run `after_final_failure`; an outcome only when it terminated or raised."""
    follow = execution.after_final_failure
    if follow is None:
        return None
    try:
        await follow()
    except TerminateSignal as signal:
        return _terminate(services, tx, reset, execution.info, signal.reason)
    except Exception as exc:  # like on_error raising: a defect of the instance, parked
        return _park(services, tx, reset, execution, _describe_exception(exc))
    return None


def _terminate(
    services: Services,
    tx: InstanceTransaction,
    record: InstanceRecord,
    info: ExecutionInfo,
    reason: str | None,
) -> Outcome:
    tx.purge()
    _emit(services, record, "job.terminated", attempt=info.attempt, reason=reason)
    return Terminated(reason=reason)


async def _defect(
    services: Services,
    tx: InstanceTransaction,
    record: InstanceRecord,
    execution: Execution[E, R, X, S],
    exc: Exception,
) -> Outcome:
    """A raised exception: retry the alarm with the defect policy, then park."""
    error_text = _describe_exception(exc)
    policy = services.defect_policy
    defects = record.defects + 1
    now = execution.info.now
    if defects <= policy.max_retries:
        retry_at = now + policy.backoff.delay_for(defects)
        tx.save(
            attrs.evolve(
                record, defects=defects, alarm_at=retry_at, last_error=error_text, updated_at=now
            )
        )
        _emit(
            services,
            record,
            "job.failed",
            attempt=execution.info.attempt,
            error=error_text,
            will_retry=True,
            retry_at=retry_at,
            defect=True,
        )
        services.wake(retry_at)
        return Defect(error=error_text, retry_at=retry_at, parked=False)
    _emit(
        services,
        record,
        "job.failed",
        attempt=execution.info.attempt,
        error=error_text,
        will_retry=False,
        defect=True,
    )
    return _park(services, tx, attrs.evolve(record, defects=defects), execution, error_text)


def _park(
    services: Services,
    tx: InstanceTransaction,
    record: InstanceRecord,
    execution: Execution[E, R, X, S],
    error_text: str,
) -> Outcome:
    now = execution.info.now
    if execution.park_on_defect:
        tx.save(
            attrs.evolve(
                record,
                status=InstanceStatus.FAILED,
                alarm_at=None,
                last_error=error_text,
                updated_at=now,
            )
        )
    else:
        tx.save(attrs.evolve(record, defects=0, last_error=error_text, updated_at=now))
    _dead_letter(services, tx, record, execution, error_text, "defect", execution.info.attempt)
    return Defect(error=error_text, retry_at=None, parked=execution.park_on_defect)


def _dead_letter(
    services: Services,
    tx: InstanceTransaction,
    record: InstanceRecord,
    execution: Execution[E, R, X, S],
    error_text: str,
    reason: str,
    attempts: int,
) -> None:
    tx.add_dead_letter(
        DeadLetter(
            id=uuid.uuid4().hex,
            key=record.key,
            state=record.state,
            meta=record.meta,
            event=execution.event,
            error=error_text,
            reason=reason,
            attempts=attempts,
            at=execution.info.now,
        )
    )
    _emit(
        services,
        record,
        "job.dead_lettered",
        attempt=attempts,
        error=error_text,
        reason=reason,
    )


def describe_error(error: object) -> str:
    """A readable text for an `E` (stored in dead letters and events)."""
    if isinstance(error, BaseException):
        text = str(error)
        return f"{type(error).__qualname__}: {text}" if text else type(error).__qualname__
    return repr(error)


def _describe_exception(exc: BaseException) -> str:
    frames = traceback.format_exception(exc)
    return "".join(frames).rstrip()


def _emit(
    services: Services,
    record: InstanceRecord,
    type_: EventType,
    *,
    attempt: int | None = None,
    error: str | None = None,
    will_retry: bool | None = None,
    retry_at: datetime | None = None,
    reason: str | None = None,
    defect: bool = False,
) -> None:
    key = record.key
    services.events.emit(
        JobEvent(
            type=type_,
            kind=key.kind,
            job=key.job,
            id=key.id,
            at=services.clock.now(),
            attempt=attempt,
            error=error,
            will_retry=will_retry,
            retry_at=retry_at,
            reason=reason,
            defect=defect,
        )
    )
