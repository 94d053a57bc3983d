"""`WorkerPool`: a durable queue; at most `concurrency` of its events run at once."""

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Generic, Never

import attrs
from typing_extensions import TypeVar

from .._contexts import ErrorContext, WorkerPoolContext
from .._duration import DurationInput, to_timedelta
from .._errors import InvalidDefinitionError
from .._result import Result
from .._retry import Retry
from .._runtime._invoke import RunHandle
from .._runtime._services import RegisteredJob, Services
from .._runtime._worker_pool import WorkerPoolHandler
from .._storage._interface import ItemClaim, JobKind, PoolRate
from . import _validators as check
from ._base import JobDefinition, check_name


I = TypeVar("I")
S = TypeVar("S", default=None)
E = TypeVar("E", default=Never)
R = TypeVar("R", contravariant=True, default=object)


_T = TypeVar("_T")


def _period(value: DurationInput) -> timedelta:
    delta = to_timedelta(value, field="period")
    if delta <= timedelta(0):
        msg = f"period: must be longer than zero, got {value!r}"
        raise InvalidDefinitionError(msg)
    return delta


def _limit(_instance: object, _attribute: "attrs.Attribute[int]", value: int) -> None:
    check.positive_int("limit", value)


@attrs.frozen(kw_only=True)
class RateLimit:
    """
    A pool's rate limit: at most `limit` of its events start per `period`, across every
    worker process (the storage counts the starts in the claim, like `concurrency`).

    Every start counts, a retry's too. In any window of length `period` (engine clock) at
    most `limit` events start; a worker waits for the budget instead of polling. With
    `per_key=True` each `partition_key` has a budget of its own, and the events without a
    key share one.
    """

    limit: int = attrs.field(validator=_limit)
    period: timedelta = attrs.field(converter=_period)
    per_key: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))


def _stored(rate: RateLimit) -> PoolRate:
    """The storage's form of a rate limit."""
    return PoolRate(limit=rate.limit, period=rate.period, per_key=rate.per_key)


def _rate_limit(_instance: object, _attribute: "attrs.Attribute[_T]", value: _T) -> None:
    if value is not None and not isinstance(value, RateLimit):
        msg = f"rate_limit: expected RateLimit(...) or None, got {value!r}"
        raise InvalidDefinitionError(msg)


def _concurrency(_instance: object, _attribute: "attrs.Attribute[int]", value: int) -> None:
    check.positive_int("concurrency", value)


@attrs.frozen(kw_only=True, eq=False)
class WorkerPool(JobDefinition[R], Generic[I, S, E, R]):
    """
    A durable queue: at most `concurrency` of its events run at once, across every worker.

    Events without a `partition_key` start as soon as a slot is free; events with one run one
    at a time per key, in the order they were enqueued (an event waiting for its retry holds
    its key). Among ready events a higher `priority` starts first. A repeated `event_id` is
    recognised and not queued again. A final failure of one event goes to `on_error` (whose
    `ctx.state` is that event; `ctx.terminate()` drops just that event) or to a dead-letter
    record, and the pool moves on.

    Type parameters:
        I: the event type (`event=`), validated on `enqueue`.
        S: always None (a pool keeps no state).
        E: the error type `execute` can return in `Err`; reaches `retry.should_retry`,
            a retry-after `delay` and `on_error` unchanged. `Never` when it cannot fail.
        R: the dependencies the callbacks need through `ctx.deps`.
    """

    name: str = attrs.field(validator=check_name)
    event: type[I] = attrs.field(validator=check.is_class)
    concurrency: int = attrs.field(validator=_concurrency)
    execute: Callable[[WorkerPoolContext[I, R]], Result[None, E] | Awaitable[Result[None, E]]] = (
        attrs.field(validator=check.is_callable)
    )
    retry: Retry[E] | None = attrs.field(default=None, validator=check.is_optional_retry)
    on_error: Callable[[E, ErrorContext[I, R]], None | Awaitable[None]] | None = attrs.field(
        default=None, validator=check.is_optional_callable
    )
    rate_limit: RateLimit | None = attrs.field(default=None, validator=_rate_limit)
    """At most `rate_limit.limit` starts per `rate_limit.period`, across every worker."""
    timeout: timedelta | None = attrs.field(default=None, converter=check.timeout)
    """
    How long one `execute` may run (None: no limit). Past it an async `execute` is
    cancelled; a sync one cannot be, so its result is discarded and the run holds its work
    until the thread returns. A timeout is a defect, never an `E`: retried by the defect
    policy, then dead-lettered (see docs/retries-and-errors.md).
    """

    @property
    def kind(self) -> JobKind:
        """Always `JobKind.WORKER_POOL`."""
        return JobKind.WORKER_POOL

    def register_with(self, deps: R, services: Services) -> RegisteredJob:
        """Erase `I, S, E` behind closures that keep them (called by `Engine`; internal)."""
        handler = WorkerPoolHandler(self, services)

        async def run(claim: ItemClaim, lease: RunHandle) -> None:
            await handler.run(claim, deps, lease)

        return RegisteredJob(
            name=self.name,
            kind=JobKind.WORKER_POOL,
            definition=self,
            run_item=run,
            pool=handler.key,
            concurrency=self.concurrency,
            rate=None if self.rate_limit is None else _stored(self.rate_limit),
        )
