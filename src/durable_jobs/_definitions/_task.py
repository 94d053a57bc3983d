"""`Task`: a user-driven state machine with one alarm."""

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Generic, Never

import attrs
from typing_extensions import TypeVar

from .._contexts import ErrorContext, TaskEventContext, TaskExecuteContext, TaskIdleContext
from .._result import Result
from .._retry import Retry
from .._runtime._invoke import RunHandle
from .._runtime._services import RegisteredJob, Services
from .._runtime._task import TaskHandler
from .._storage._interface import Claim, JobKind
from . import _validators as check
from ._base import JobDefinition, check_name


I = TypeVar("I")
S = TypeVar("S")
E = TypeVar("E", default=Never)
R = TypeVar("R", contravariant=True, default=object)


@attrs.frozen(kw_only=True, eq=False)
class Task(JobDefinition[R], Generic[I, S, E, R]):
    """
    A task: `send(id, event)` runs `on_event`; a worker runs `execute` when the alarm fires.

    Both can change the state, `schedule(...)` or `cancel_schedule()` the one alarm, or
    `terminate()`. Whenever a callback leaves no alarm set, a worker runs `on_idle`.

    Type parameters:
        I: the event type (`event=`), validated on `send`.
        S: the task's state (`state=`); contexts see `S | None` before it is first set.
        E: the error type `execute` can return in `Err`; reaches `retry.should_retry`,
            a retry-after `delay` and `on_error` unchanged. `Never` when it cannot fail.
        R: the dependencies the callbacks need through `ctx.deps`.
    """

    name: str = attrs.field(validator=check_name)
    event: type[I] = attrs.field(validator=check.is_class)
    state: type[S] = attrs.field(validator=check.is_class)
    on_event: Callable[[TaskEventContext[I, S, R]], None | Awaitable[None]] = attrs.field(
        validator=check.is_callable
    )
    execute: Callable[[TaskExecuteContext[S, R]], Result[None, E] | Awaitable[Result[None, E]]] = (
        attrs.field(validator=check.is_callable)
    )
    on_idle: Callable[[TaskIdleContext[S, R]], None | Awaitable[None]] | None = attrs.field(
        default=None, validator=check.is_optional_callable
    )
    retry: Retry[E] | None = attrs.field(default=None, validator=check.is_optional_retry)
    on_error: Callable[[E, ErrorContext[S | None, R]], None | Awaitable[None]] | None = attrs.field(
        default=None, validator=check.is_optional_callable
    )
    timeout: timedelta | None = attrs.field(default=None, converter=check.timeout)
    """
    How long one `execute` may run (None: no limit). Past it an async `execute` is
    cancelled; a sync one cannot be, so its result is discarded and the run holds its work
    until the thread returns. A timeout is a defect, never an `E`: retried by the defect
    policy, then dead-lettered (see docs/retries-and-errors.md).
    """

    @property
    def kind(self) -> JobKind:
        """Always `JobKind.TASK`."""
        return JobKind.TASK

    def register_with(self, deps: R, services: Services) -> RegisteredJob:
        """Erase `I, S, E` behind closures that keep them (called by `Engine`; internal)."""
        handler = TaskHandler(self, services)

        async def run(claim: Claim, lease: RunHandle) -> None:
            await handler.run(claim, deps, lease)

        return RegisteredJob(name=self.name, kind=JobKind.TASK, definition=self, run_claim=run)
