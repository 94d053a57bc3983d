"""
The one execution runner (the seeds' `JobExecution`).

Every execution of user code that can fail with `E` goes through `run_execution`: it runs
the callback (sync ones in the thread pool, async ones on the loop), interprets what
happened, runs `on_error` when a failure is final, and returns a `RunResult`: the typed
`Outcome` plus the record changes and the dead letter the outcome calls for. It holds no
transaction and writes nothing: the handler applies the result in the run's one fenced
write (its finish). This is the only module that decides about retries: whether to retry,
with which delay and jitter, when attempts or time are exhausted, and what a defect does.
"""

import asyncio
import enum
import logging
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
from .._errors import ValidationError
from .._observe import EventType, JobEvent
from .._result import Err, Ok, Result
from .._retry import MAX_DELAY, Backoff, Retry
from .._serde import encode
from .._storage._interface import DeadLetter, InstanceKey, InstanceRecord, InstanceStatus
from .._types import JsonValue
from ._invoke import Call, RunHandle, StopReason, bind
from ._services import Services


logger = logging.getLogger("durable_jobs")

E = TypeVar("E")
S = TypeVar("S", default=None)
R = TypeVar("R")
X = TypeVar("X")


@attrs.frozen(kw_only=True)
class Succeeded:
    """`execute` returned `Ok`: its state changes are committed and the attempt counter reset."""

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
    """User code called `ctx.terminate()`: the kind drops the instance (or the event, a batch)."""

    reason: str | None


@attrs.frozen(kw_only=True)
class Defect:
    """User code raised: retried by the defect policy, or parked when it ran out."""

    error: str
    retry_at: datetime | None
    parked: bool


@attrs.frozen(kw_only=True)
class Cancelled:
    """A client cancelled the running pool event: `execute` was stopped; never retried."""


Outcome: TypeAlias = Succeeded | RetryScheduled | FailedFinally | Terminated | Defect | Cancelled
"""What one execution came to."""


class Keep(enum.Enum):
    """The state is left as it is stored (a single-member sentinel)."""

    KEEP = "keep"


@attrs.frozen(kw_only=True)
class Attempts:
    """Where a retry sequence stands: the next attempt, since when it retries, defects so far."""

    attempt: int = 1
    retry_started_at: datetime | None = None
    defects: int = 0

    @classmethod
    def of(cls, record: InstanceRecord) -> "Attempts":
        """The bookkeeping stored in a record."""
        return cls(
            attempt=record.attempt,
            retry_started_at=record.retry_started_at,
            defects=record.defects,
        )


@attrs.frozen(kw_only=True)
class RunResult:
    """
    What a run comes to, ready for its one fenced write.

    `attempts` and `last_error` are the bookkeeping to store; `alarm_at` is set when the
    run itself must run again (a retry, a defect retry, an `on_error` reschedule) and None
    when the kind decides what comes next; `state` is the state to commit, or `Keep.KEEP`.
    `events` are emitted once the write committed.
    """

    outcome: Outcome
    attempts: Attempts
    last_error: str | None
    alarm_at: datetime | None
    parked: bool
    state: JsonValue | Keep
    letters: tuple[DeadLetter, ...]
    events: tuple[JobEvent, ...]
    ended_at: datetime

    @property
    def is_done(self) -> bool:
        """Whether the work is finished with (nothing of it runs again unless a client asks)."""
        return self.alarm_at is None and not self.parked

    def applied_to(self, record: InstanceRecord) -> InstanceRecord:
        """`record` with this run's bookkeeping and state (the kind sets the alarm after)."""
        updated = attrs.evolve(
            record,
            attempt=self.attempts.attempt,
            retry_started_at=self.attempts.retry_started_at,
            defects=self.attempts.defects,
            last_error=self.last_error,
            alarm_at=self.alarm_at,
            updated_at=self.ended_at,
        )
        if not isinstance(self.state, Keep):
            updated = attrs.evolve(updated, state=self.state)
        if self.parked:
            updated = attrs.evolve(updated, status=InstanceStatus.FAILED, alarm_at=None)
        return updated


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
    key: InstanceKey
    deps: R
    call: Call[Result[None, E]]
    """`execute` bound to its context."""
    retry: Retry[E] | None
    on_error: Callable[[E, ErrorContext[X, R]], None | Awaitable[None]] | None
    error_state: X
    """The state as it was before this attempt: what `on_error` sees."""
    attempts: Attempts
    """The bookkeeping as the run found it."""
    state: StateCell[S] | None = None
    """The cell user code changes; committed on success."""
    letter_state: JsonValue = None
    """What a dead letter keeps as the state (the stored state before this attempt)."""
    letter_meta: JsonValue = None
    """What a dead letter keeps as the kind's bookkeeping (so `resume` can rebuild the work)."""
    event: JsonValue = None
    """The event being processed (worker pools): kept in dead letters."""
    event_id: str | None = None
    """The id of that event, named in the events the run emits."""
    encode_state: Callable[[S], JsonValue] = encode
    """
    The data boundary for the state user code set (`to_json` with the job's state class):
    a state that would not read back is a defect of the run, never stored.
    """
    park_on_defect: bool = True
    """Park the instance when the defect policy runs out (False: give up on this work)."""
    after_success: Callable[[], Awaitable[None]] | None = None
    """Part of the execution after `Ok` (a task's `on_idle`): raising is a defect."""
    after_final_failure: Callable[[], Awaitable[None]] | None = None
    """
    The kind's follow-up to a final failure that `on_error` did not reschedule (a task's
    `on_idle`); it may terminate, and if it raises the instance is parked like `on_error`.
    """
    timeout: timedelta | None = None
    """
    How long `call` may run (engine clock, from `info.now`): past it, an async one is
    cancelled, a sync one's result is discarded; either way a defect (never an `E`).
    """


async def run_execution(
    services: Services, execution: Execution[E, R, X, S], run: RunHandle | None
) -> RunResult:
    """
    Run one execution; return what its finish must write. Writes nothing itself.

    Raises `LeaseLostError` when the run's lease is lost on the way (the result must not be
    applied), and lets cancellation through.
    """
    steps = _Steps(services, execution, run)
    try:
        guarded = await _guarded(services, execution, run)
        if isinstance(guarded, str):
            if run is not None:
                run.check()
            if guarded == "cancelled":
                return steps.cancelled()
            return steps.timed_out()
        result = guarded
        if isinstance(result, Ok) and execution.after_success is not None:
            await execution.after_success()
    except TerminateSignal as signal:
        return steps.terminated(signal.reason)
    except Exception as exc:  # a defect: never an E, never given to should_retry/on_error
        if run is not None:
            run.check()
        return steps.defect(exc)
    if run is not None:
        run.check()

    if isinstance(result, Ok):
        return steps.succeeded()
    error = result.error
    try:
        decision = await _decide(services, execution, error, run)
    except Exception as exc:  # should_retry or a retry-after callable raised
        return steps.defect(exc)
    if isinstance(decision, timedelta):
        return steps.retry(error, decision)
    return await steps.fail_finally(error, decision)


async def _guarded(
    services: Services, execution: Execution[E, R, X, S], run: RunHandle | None
) -> Result[None, E] | StopReason:
    """
    `execute`, unless its timeout passes or its cancel is requested first: then the run's
    task is cancelled inside it (`RunHandle.stop_with`) and the reason is returned. An async
    `execute` unwinds; a sync one cannot be stopped, so the run waits for its thread, its
    lease marked abandoned meanwhile, and discards what it returns.
    """
    if run is None:
        returned = await services.invoker.invoke(execution.call, run)
        return returned if isinstance(returned, Ok | Err) else await returned
    if (before := _stop_of(run)) is not None:
        return before  # cancelled before it started
    timeout = execution.timeout
    timer = None
    if timeout is not None:
        timer = asyncio.ensure_future(_time_out(services, execution.info.now + timeout, run))
    try:
        run.guarded = True
        try:
            returned = await services.invoker.invoke(execution.call, run)
            result = returned if isinstance(returned, Ok | Err) else await returned
        finally:
            run.guarded = False
            if timer is not None:
                timer.cancel()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if _stop_of(run) is None or run.lost or task is None or task.cancelling() > 1:
            raise  # not (only) our stop: the worker stops, or the lease was lost
        task.uncancel()
    else:
        if _stop_of(run) is None:
            return result
        # it caught the cancellation and returned: stopped all the same
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            task.uncancel()
    if run.pending:
        # a sync execute goes on in its thread: hold the work until it returns
        try:
            await services.storage.abandon([run.token])
        except Exception:  # the mark only informs: the run still waits for its thread
            logger.warning("marking the lease of %s abandoned failed", run.key, exc_info=True)
        await services.invoker.outlive(run)
    stopped = _stop_of(run)
    return "timeout" if stopped is None else stopped


def _stop_of(run: RunHandle) -> StopReason | None:
    """`run.stopped` as it is now (another task sets it while this one waits)."""
    return run.stopped


async def _time_out(services: Services, deadline: datetime, run: RunHandle) -> None:
    await services.clock.sleep_until(deadline, asyncio.Event())
    run.stop_with("timeout")


async def _decide(
    services: Services, execution: Execution[E, R, X, S], error: E, run: RunHandle | None
) -> timedelta | FailureReason:
    """The retry decision: a delay to retry after, or why the failure is final."""
    retry = execution.retry
    if retry is None:
        return "no_retry"
    should_retry = retry.should_retry
    if should_retry is not None and not await services.invoker.value(
        lambda: should_retry(error), run
    ):
        return "not_retryable"
    attempt = execution.info.attempt
    if attempt >= retry.max_attempts:
        return "max_attempts"
    now = services.clock.now()
    started = execution.attempts.retry_started_at or execution.info.now
    limit = retry.max_duration_delta
    if limit is not None and now - started >= limit:
        return "max_duration"
    delay = await _base_delay(services, retry, error, attempt, run)
    return _jittered(delay, retry.jitter_fraction, services.random)


async def _base_delay(
    services: Services, retry: Retry[E], error: E, attempt: int, run: RunHandle | None
) -> timedelta:
    """The delay before jitter, capped at `MAX_DELAY` like every `Backoff` shape."""
    delay = retry.delay
    if isinstance(delay, Backoff):
        return delay.delay_for(attempt)
    if callable(delay):
        computed = await services.invoker.value(lambda: delay(error, attempt), run)
        return to_capped_timedelta(computed, cap=MAX_DELAY, field="retry.delay")
    return to_capped_timedelta(delay, cap=MAX_DELAY, field="retry.delay")


def _jittered(delay: timedelta, fraction: float, random: Callable[[], float]) -> timedelta:
    if fraction == 0:
        return delay
    return delay * (1 + fraction * (2 * random() - 1))


class _Steps(Generic[E, R, X, S]):
    """Builds the `RunResult` of each row of the outcome table (one execution)."""

    def __init__(
        self, services: Services, execution: Execution[E, R, X, S], run: RunHandle | None
    ) -> None:
        self._services = services
        self._execution = execution
        self._run = run
        self._events: list[JobEvent] = []

    def succeeded(self) -> RunResult:
        execution = self._execution
        cell = execution.state
        state: JsonValue | Keep = Keep.KEEP
        if cell is not None and cell.changed:
            try:
                state = execution.encode_state(cell.value)
            except ValidationError as bad:  # the state it left would not read back
                return self.defect(bad, text=f"the state it set cannot be stored: {bad}")
        self._emit("job.executed")
        return self._result(Succeeded(attempt=execution.info.attempt), Attempts(), state=state)

    def retry(self, error: E, delay: timedelta) -> RunResult:
        execution = self._execution
        ended = self._services.clock.now()
        retry_at = ended + delay  # counted from the end of the failed attempt
        text = describe_error(error)
        self._emit("job.failed", error=text, will_retry=True, retry_at=retry_at)
        attempts = Attempts(
            attempt=execution.info.attempt + 1,
            retry_started_at=execution.attempts.retry_started_at or execution.info.now,
            defects=execution.attempts.defects,
        )
        return self._result(
            RetryScheduled(attempt=execution.info.attempt, retry_at=retry_at, error=text),
            attempts,
            last_error=text,
            alarm_at=retry_at,
        )

    async def fail_finally(self, error: E, reason: FailureReason) -> RunResult:
        execution = self._execution
        info = execution.info
        text = describe_error(error)
        if reason in ("max_attempts", "max_duration"):
            self._emit("job.retry_exhausted", error=text, reason=reason)
        else:
            self._emit("job.failed", error=text, will_retry=False, reason=reason)
        if execution.on_error is None:
            letter = self._letter(text, reason, info.attempt)
            followed = await self._follow_up(letter)
            if followed is not None:
                return followed
            outcome = FailedFinally(
                attempts=info.attempt,
                reason=reason,
                error=text,
                rescheduled_at=None,
                dead_lettered=True,
            )
            return self._result(outcome, Attempts(), last_error=text, letters=(letter,))
        on_error = execution.on_error
        reschedule = ScheduleCell(None)
        # `ctx.now` is when on_error starts: a reschedule counts from the failed attempt's end
        handling = attrs.evolve(info, now=self._services.clock.now())
        context = ErrorContext(
            handling, execution.deps, execution.error_state, info.attempt, reason, reschedule
        )
        try:
            handled = await self._services.invoker.invoke(
                bind(on_error, lambda: on_error(error, context)), self._run
            )
            if handled is not None:
                await handled
        except TerminateSignal as signal:
            return self.terminated(signal.reason)
        except Exception as exc:  # on_error raised: a defect of the instance, parked at once
            if self._run is not None:
                self._run.check()
            return self._park(_describe_exception(exc), Attempts())
        if self._run is not None:
            self._run.check()
        if reschedule.at is None:
            followed = await self._follow_up(None)
            if followed is not None:
                return followed
        outcome = FailedFinally(
            attempts=info.attempt,
            reason=reason,
            error=text,
            rescheduled_at=reschedule.at,
            dead_lettered=False,
        )
        return self._result(outcome, Attempts(), last_error=text, alarm_at=reschedule.at)

    async def _follow_up(self, letter: DeadLetter | None) -> RunResult | None:
        """Run `after_final_failure`; a result only when it terminated or raised."""
        follow = self._execution.after_final_failure
        if follow is None:
            return None
        try:
            await follow()
        except TerminateSignal as signal:
            return self.terminated(signal.reason, letter)
        except Exception as exc:  # like on_error raising: a defect of the instance, parked
            if self._run is not None:
                self._run.check()
            return self._park(_describe_exception(exc), Attempts(), earlier=letter)
        if self._run is not None:
            self._run.check()
        return None

    def terminated(self, reason: str | None, letter: DeadLetter | None = None) -> RunResult:
        if self._run is not None:
            self._run.check()
        self._emit("job.terminated", reason=reason)
        letters = () if letter is None else (letter,)
        return self._result(Terminated(reason=reason), Attempts(), letters=letters)

    def timed_out(self) -> RunResult:
        """`execute` ran past its timeout: a defect (retried by the defect policy, then parked)."""
        timeout = self._execution.timeout
        seconds = 0.0 if timeout is None else timeout.total_seconds()
        text = f"TimeoutError: execute ran longer than its timeout ({seconds:g} s)"
        return self._defect(text, reason="timeout")

    def cancelled(self) -> RunResult:
        """A client cancelled the running event: dropped, never retried, no dead letter."""
        self._emit("job.cancelled", reason="cancelled")
        return self._result(Cancelled(), Attempts())

    def defect(self, exc: Exception, *, text: str | None = None) -> RunResult:
        return self._defect(_describe_exception(exc) if text is None else text)

    def _defect(self, text: str, reason: str | None = None) -> RunResult:
        execution = self._execution
        policy = self._services.defect_policy
        defects = execution.attempts.defects + 1
        kept = attrs.evolve(execution.attempts, defects=defects)
        if defects <= policy.max_retries:
            retry_at = self._services.clock.now() + policy.backoff.delay_for(defects)
            self._emit(
                "job.failed",
                error=text,
                will_retry=True,
                retry_at=retry_at,
                reason=reason,
                defect=True,
            )
            return self._result(
                Defect(error=text, retry_at=retry_at, parked=False),
                kept,
                last_error=text,
                alarm_at=retry_at,
            )
        self._emit("job.failed", error=text, will_retry=False, reason=reason, defect=True)
        return self._park(text, kept, letter_reason=reason or "defect")

    def _park(
        self,
        text: str,
        attempts: Attempts,
        earlier: DeadLetter | None = None,
        letter_reason: str = "defect",
    ) -> RunResult:
        """Out of options: park the instance (or give up on the work) with a dead letter."""
        execution = self._execution
        letter = self._letter(text, letter_reason, execution.info.attempt)
        letters = (letter,) if earlier is None else (earlier, letter)
        parked = execution.park_on_defect
        outcome = Defect(error=text, retry_at=None, parked=parked)
        if not parked:
            attempts = Attempts()
        return self._result(outcome, attempts, last_error=text, letters=letters, parked=parked)

    def _letter(self, text: str, reason: str, attempts: int) -> DeadLetter:
        execution = self._execution
        letter = DeadLetter(
            id=uuid.uuid4().hex,
            key=execution.key,
            state=execution.letter_state,
            meta=execution.letter_meta,
            event=execution.event,
            error=text,
            reason=reason,
            attempts=attempts,
            at=self._services.clock.now(),
        )
        self._emit("job.dead_lettered", error=text, reason=reason)
        return letter

    def _result(
        self,
        outcome: Outcome,
        attempts: Attempts,
        *,
        last_error: str | None = None,
        alarm_at: datetime | None = None,
        state: JsonValue | Keep = Keep.KEEP,
        letters: tuple[DeadLetter, ...] = (),
        parked: bool = False,
    ) -> RunResult:
        return RunResult(
            outcome=outcome,
            attempts=attempts,
            last_error=last_error,
            alarm_at=alarm_at,
            parked=parked,
            state=state,
            letters=letters,
            events=tuple(self._events),
            ended_at=self._services.clock.now(),
        )

    def _emit(
        self,
        type_: EventType,
        *,
        error: str | None = None,
        will_retry: bool | None = None,
        retry_at: datetime | None = None,
        reason: str | None = None,
        defect: bool = False,
    ) -> None:
        key = self._execution.key
        self._events.append(
            JobEvent(
                type=type_,
                kind=key.kind,
                job=key.job,
                id=key.id,
                at=self._services.clock.now(),
                attempt=self._execution.info.attempt,
                error=error,
                will_retry=will_retry,
                retry_at=retry_at,
                reason=reason,
                defect=defect,
                event_id=self._execution.event_id,
            )
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
