"""`Debounce`: coalesce events per id into a batch, flushed once."""

import inspect
import typing
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Generic, Never

import attrs
from typing_extensions import TypeVar

from .._contexts import DebounceEventContext, DebounceExecuteContext, ErrorContext
from .._errors import InvalidDefinitionError
from .._result import Result
from .._retry import Retry
from .._runtime._debounce import DebounceHandler
from .._runtime._invoke import RunHandle
from .._runtime._services import RegisteredJob, Services
from .._storage._interface import Claim, JobKind
from .._type_forms import runtime_class, type_name
from . import _validators as check
from ._base import JobDefinition, check_name


I = TypeVar("I")
S = TypeVar("S", default=I)
E = TypeVar("E", default=Never)
R = TypeVar("R", contravariant=True, default=object)


def _max_events(
    _instance: object, _attribute: "attrs.Attribute[int | None]", value: int | None
) -> None:
    if value is not None:
        check.positive_int("max_events", value)


@attrs.frozen(kw_only=True, eq=False)
class Debounce(JobDefinition[R], Generic[I, S, E, R]):
    """
    A debounced job: events per id are folded into a batch that `execute` flushes once.

    The first event of a batch makes it due at `now + flush_after`; later events do not move
    that time (a fixed window), unless `quiet=True`: then every event moves it to its own
    time plus `flush_after`, at the latest `max_wait` after the first event (a quiet
    period). Reaching `max_events` seals the batch and makes it due at once. A worker
    flushes due batches, one at a time per id (`add` never runs `execute`). Without
    `on_event` the batch is the latest event (`S` is `I`).

    Type parameters:
        I: the event type (`event=`), validated on `add`.
        S: the batch state (`state=`); defaults to `I` when there is no `on_event`.
        E: the error type `execute` can return in `Err`; reaches `retry.should_retry`,
            a retry-after `delay` and `on_error` unchanged. `Never` when it cannot fail.
        R: the dependencies the callbacks need through `ctx.deps`.
    """

    name: str = attrs.field(validator=check_name)
    event: type[I] = attrs.field(validator=check.is_class)
    state: type[S] | None = attrs.field(default=None, validator=check.is_optional_class)
    flush_after: timedelta = attrs.field(converter=check.flush_after)
    max_events: int | None = attrs.field(default=None, validator=_max_events)
    quiet: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    """
    False (the default): a fixed window, due `flush_after` after the batch's first event.
    True: a quiet period, due once no event came for `flush_after`: each event moves the
    flush to its own time plus `flush_after`, capped by `max_wait` after the first event.
    """
    max_wait: timedelta | None = attrs.field(default=None, converter=check.optional_duration)
    """With `quiet=True` (required then): the longest a batch waits from its first event."""
    on_event: Callable[[DebounceEventContext[I, S, R]], S] | None = attrs.field(
        default=None, validator=check.is_optional_callable
    )
    execute: Callable[[DebounceExecuteContext[S, R]], Result[None, E] | Awaitable[Result[None, E]]]
    retry: Retry[E] | None = attrs.field(default=None, validator=check.is_optional_retry)
    on_error: Callable[[E, ErrorContext[S, R]], None | Awaitable[None]] | None = attrs.field(
        default=None, validator=check.is_optional_callable
    )
    timeout: timedelta | None = attrs.field(default=None, converter=check.timeout)
    """
    How long one `execute` may run (None: no limit). Past it an async `execute` is
    cancelled; a sync one cannot be, so its result is discarded and the run holds its work
    until the thread returns. A timeout is a defect, never an `E`: retried by the defect
    policy, then dead-lettered (see docs/retries-and-errors.md).
    """
    _state_class: type[S] = attrs.field(init=False)
    _fold: Callable[[DebounceEventContext[I, S, R]], S] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        check.require_callable("execute", self.execute)
        if self.quiet and self.max_wait is None:
            msg = "max_wait: a quiet-period debounce (quiet=True) needs max_wait, its cap"
            raise InvalidDefinitionError(msg)
        if not self.quiet and self.max_wait is not None:
            msg = "max_wait: only a quiet-period debounce (quiet=True) takes max_wait"
            raise InvalidDefinitionError(msg)
        if self.max_wait is not None and self.max_wait < self.flush_after:
            msg = (
                f"max_wait: must be at least flush_after ({self.flush_after}), got {self.max_wait}"
            )
            raise InvalidDefinitionError(msg)
        if self.on_event is None and self.state is not None and self.state is not self.event:
            msg = (
                "state: without on_event the batch is the latest event, so state must be "
                f"omitted or be the event class; got state={self.state!r}, event={self.event!r}"
            )
            raise InvalidDefinitionError(msg)
        if self.on_event is None:
            _require_event_state(self.execute, self.event)
        # Without on_event, S is I (the class's PEP 696 default): the state class is the
        # event class and the fold keeps the latest event. No checker can relate S to I
        # inside the class, so these two derived fields are set untyped, once, here.
        object.__setattr__(self, "_state_class", self.state or self.event)
        object.__setattr__(self, "_fold", self.on_event or _keep_latest)

    @property
    def kind(self) -> JobKind:
        """Always `JobKind.DEBOUNCE`."""
        return JobKind.DEBOUNCE

    @property
    def state_class(self) -> type[S]:
        """The runtime class of the batch state (the event class without `on_event`)."""
        return self._state_class

    def fold(self, context: DebounceEventContext[I, S, R]) -> S:
        """Fold one event into the batch (`on_event`, or keep the latest event)."""
        return self._fold(context)

    def register_with(self, deps: R, services: Services) -> RegisteredJob:
        """Erase `I, S, E` behind closures that keep them (called by `Engine`; internal)."""
        handler = DebounceHandler(self, services)

        async def run(claim: Claim, lease: RunHandle) -> None:
            await handler.run(claim, deps, lease)

        return RegisteredJob(name=self.name, kind=JobKind.DEBOUNCE, definition=self, run_claim=run)


def _keep_latest(context: DebounceEventContext[object, object, object]) -> object:
    return context.event


def _require_event_state(execute: object, event: object) -> None:
    """
    Without `on_event` the batch is the latest event: reject an `execute` annotated otherwise.

    The checkers cannot tie S to I here (see docs/typing.md, caveats), so an annotated
    `execute` is checked at definition time instead; unannotated callables pass.
    """
    if not callable(execute):
        return
    try:
        hints = typing.get_type_hints(execute)
        first = next(iter(inspect.signature(execute).parameters))
    except Exception:
        return
    annotation: object = hints.get(first)
    args: tuple[object, ...] = typing.get_args(annotation)
    if typing.get_origin(annotation) is not DebounceExecuteContext or not args:
        return
    expected = args[0]
    event_class = runtime_class(event)
    if isinstance(expected, type) and event_class and not issubclass(event_class, expected):
        msg = (
            f"execute: expects DebounceExecuteContext[{type_name(expected)}], but without"
            f" on_event the batch is the latest event, a {type_name(event)}; pass"
            " on_event= and state= to collect events into another type"
        )
        raise InvalidDefinitionError(msg)
