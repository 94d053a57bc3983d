"""`Continuous`: recurring work on a schedule."""

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Generic, Never

import attrs
from typing_extensions import TypeVar

from .._contexts import ContinuousContext, ErrorContext
from .._duration import DurationInput
from .._result import Result
from .._retry import Retry
from .._runtime._continuous import ContinuousHandler
from .._runtime._invoke import RunHandle
from .._runtime._services import RegisteredJob, Services
from .._schedule import Schedule
from .._storage._interface import Claim, JobKind
from . import _validators as check
from ._base import JobDefinition, build, validate_name


I = TypeVar("I")
S = TypeVar("S", default=I)
E = TypeVar("E", default=Never)
R = TypeVar("R", contravariant=True, default=object)

_T = TypeVar("_T")
_E = TypeVar("_E", default=Never)
_R = TypeVar("_R", contravariant=True, default=object)


@attrs.frozen(init=False, eq=False)
class Continuous(JobDefinition[R], Generic[I, S, E, R]):
    """
    A recurring job: `execute` runs on `schedule`, with per-instance state.

    `client.continuous(job).start(id, input)` creates an instance whose state is `input`; with
    `start_immediately=True` its first run is due at once (a worker runs it), then runs
    follow the schedule.

    Type parameters:
        I: what `start` takes — the initial state. Always equal to `S`.
        S: the state (`ctx.state` in `execute`).
        E: the error type `execute` can return in `Err`; reaches `retry.should_retry`,
            a retry-after `delay` and `on_error` unchanged. `Never` when it cannot fail.
        R: the dependencies `execute` and `on_error` need through `ctx.deps`.
    """

    name: str
    state: type[S]
    schedule: Schedule
    execute: Callable[[ContinuousContext[S, R]], Result[None, E] | Awaitable[Result[None, E]]]
    start_immediately: bool
    retry: Retry[E] | None
    on_error: Callable[[E, ErrorContext[S, R]], None | Awaitable[None]] | None
    timeout: timedelta | None
    """
    How long one `execute` may run (None: no limit). Past it an async `execute` is
    cancelled; a sync one cannot be, so its result is discarded and the run holds its work
    until the thread returns. A timeout is a defect, never an `E`: retried by the defect
    policy, then dead-lettered (see docs/retries-and-errors.md).
    """

    # `__new__` rather than `__init__`: its own type parameters bind `I` and `S` to the one
    # `state` class without overloads (overloads make mypy check lambdas without context).
    def __new__(
        cls,
        *,
        name: str,
        state: type[_T],
        schedule: Schedule,
        execute: Callable[
            [ContinuousContext[_T, _R]], Result[None, _E] | Awaitable[Result[None, _E]]
        ],
        start_immediately: bool = True,
        retry: Retry[_E] | None = None,
        on_error: Callable[[_E, ErrorContext[_T, _R]], None | Awaitable[None]] | None = None,
        timeout: DurationInput | None = None,
    ) -> "Continuous[_T, _T, _E, _R]":
        """Define a continuous job (see the class docstring)."""
        validate_name(name)
        check.require_class("state", state)
        check.require_type("schedule", schedule, Schedule, "every(...) or cron(...)")
        check.require_callable("execute", execute)
        check.require_type("start_immediately", start_immediately, bool, "a bool")
        if retry is not None:
            check.require_type("retry", retry, Retry, "Retry(...) or None")
        check.require_callable("on_error", on_error, optional=True)
        made: Continuous[_T, _T, _E, _R] = build(
            cls,
            name=name,
            state=state,
            schedule=schedule,
            execute=execute,
            start_immediately=start_immediately,
            retry=retry,
            on_error=on_error,
            timeout=check.timeout(timeout),
        )
        return made

    @property
    def kind(self) -> JobKind:
        """Always `JobKind.CONTINUOUS`."""
        return JobKind.CONTINUOUS

    def register_with(self, deps: R, services: Services) -> RegisteredJob:
        """Erase `I, S, E` behind closures that keep them (called by `Engine`; internal)."""
        handler = ContinuousHandler(self, services)

        async def run(claim: Claim, lease: RunHandle) -> None:
            await handler.run(claim, deps, lease)

        return RegisteredJob(
            name=self.name, kind=JobKind.CONTINUOUS, definition=self, run_claim=run
        )
