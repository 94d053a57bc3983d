"""
The typed client: one view per kind, typed from the definition object.

A client needs the job definitions and the storage, never the jobs' dependencies: every
call commits one short transaction and returns, and no call runs `execute`, `on_error` or
`on_idle` (only the pure `on_event` folds). A web process builds one with
`Client(jobs=[...], storage=...)`; `engine.client` is the same thing for the engine's jobs.
"""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Generic, Never, Protocol

from typing_extensions import TypeVar

from .._clock import Clock, SystemClock
from .._errors import DuplicateJobError, JobNotFoundError
from .._limits import DataLimits
from .._observe import EventSink, Observer
from .._serde import Extra, from_json
from .._storage._interface import Storage
from .._storage._sqlite import default_storage
from .._types import JsonValue
from ._common import NotBefore
from ._continuous import ContinuousHandler
from ._debounce import DebounceHandler
from ._invoke import Invoker
from ._results import (
    AddResult,
    CancelResult,
    ClearResult,
    ContinuousStatus,
    DebounceStatus,
    EnqueueResult,
    FlushResult,
    PoolStatus,
    SendResult,
    StartResult,
    TaskStatus,
    TerminateResult,
    TriggerResult,
)
from ._services import DefectPolicy, RegisteredJob, Services
from ._task import TaskHandler
from ._worker_pool import WorkerPoolHandler


if TYPE_CHECKING:
    from .._definitions._base import JobDefinition
    from .._definitions._continuous import Continuous
    from .._definitions._debounce import Debounce
    from .._definitions._task import Task
    from .._definitions._worker_pool import WorkerPool

I = TypeVar("I")
S = TypeVar("S")
E = TypeVar("E")
R = TypeVar("R")
IC = TypeVar("IC", contravariant=True)
SC = TypeVar("SC", covariant=True)
SI = TypeVar("SI")

_POLL_FIRST = 0.01
_POLL_MAX = 0.5


class _ContinuousOps(Protocol[SI]):
    async def start(
        self, id: str, input: SI, not_before: NotBefore | None = None
    ) -> StartResult: ...
    async def trigger(self, id: str) -> TriggerResult: ...
    async def status(self, id: str) -> ContinuousStatus: ...
    async def get_state(self, id: str) -> SI | None: ...
    async def terminate(self, id: str, reason: str | None = None) -> TerminateResult: ...


class _DebounceOps(Protocol[IC, SC]):
    async def add(self, id: str, event: IC, event_id: str | None = None) -> AddResult: ...
    async def flush(self, id: str) -> FlushResult: ...
    async def clear(self, id: str) -> ClearResult: ...
    async def status(self, id: str) -> DebounceStatus: ...
    async def get_state(self, id: str) -> SC | None: ...


class _TaskOps(Protocol[IC, SC]):
    async def send(self, id: str, event: IC, event_id: str | None = None) -> SendResult: ...
    async def trigger(self, id: str) -> TriggerResult: ...
    async def status(self, id: str) -> TaskStatus: ...
    async def get_state(self, id: str) -> SC | None: ...
    async def terminate(self, id: str) -> TerminateResult: ...


class _PoolOps(Protocol[IC]):
    async def enqueue(
        self,
        event: IC,
        *,
        partition_key: str | None = None,
        priority: int = 0,
        event_id: str | None = None,
        not_before: NotBefore | None = None,
    ) -> EnqueueResult: ...
    async def enqueue_many(
        self,
        events: Sequence[IC],
        *,
        partition_key: str | None,
        priority: int,
        not_before: NotBefore | None = None,
    ) -> tuple[EnqueueResult, ...]: ...
    async def cancel(self, event_id: str) -> CancelResult: ...
    async def pause(self) -> None: ...
    async def resume(self) -> None: ...
    async def status(self) -> PoolStatus: ...
    async def is_pending(self, event_id: str) -> bool: ...


async def _wait_until(done: Callable[[], Awaitable[bool]]) -> None:
    """Poll `done` with a growing pause until it is true."""
    pause = _POLL_FIRST
    while not await done():
        await asyncio.sleep(pause)
        pause = min(pause * 2, _POLL_MAX)


def _no_wake(at: datetime) -> None:
    del at  # a client-only process has no worker to wake; workers watch the storage


class Client:
    """
    Operations on the instances of a set of jobs; pick a kind's view with the definition.

    `Client(jobs=[...], storage=...)` works in any process, without the jobs' dependencies
    and without a worker: the storage is the only channel to the workers. Every method
    commits one short transaction and returns; none waits for, or runs, a job's
    `execute`, `on_error` or `on_idle`. `engine.client` is a `Client` for the engine's jobs.
    """

    __slots__ = ("_definitions", "_services")

    def __init__(
        self,
        *,
        jobs: "Sequence[JobDefinition[Never]]",
        storage: Storage | None = None,
        clock: Clock | None = None,
        observers: Sequence[Observer] = (),
        limits: DataLimits | None = None,
    ) -> None:
        """
        A client of `jobs` on `storage` (by default `SqliteStorage("durable_jobs.db")`).

        `clock` must be the one the workers use in tests (`TestClock`); `observers` receive
        the events of these calls (`debounce.started`, `pool.enqueued`, ...); `limits`
        bounds the events and states these calls store (by default `DataLimits()`).
        """
        services = Services(
            storage=default_storage() if storage is None else storage,
            clock=clock if clock is not None else SystemClock(),
            events=EventSink(observers),
            random=_no_random,
            defect_policy=DefectPolicy(),
            invoker=Invoker(1),
            wake=_no_wake,
            limits=DataLimits() if limits is None else limits,
        )
        self._services = services
        self._definitions = _by_name(jobs)

    @property
    def storage(self) -> Storage:
        """The storage this client writes to."""
        return self._services.storage

    def _check(self, job: "JobDefinition[Never]", name: str, kind: str) -> None:
        if self._definitions.get(name) is not job:
            msg = f"{kind} job {name!r} is not registered with this client"
            raise JobNotFoundError(msg)

    def continuous(self, job: "Continuous[I, I, E, R]") -> "ContinuousClient[I]":
        """The client of a `Continuous` job."""
        self._check(job, job.name, "continuous")
        return ContinuousClient(ContinuousHandler(job, self._services))

    def debounce(self, job: "Debounce[I, S, E, R]") -> "DebounceClient[I, S]":
        """The client of a `Debounce` job."""
        self._check(job, job.name, "debounce")
        handler: DebounceHandler[I, S, E, R] = DebounceHandler(job, self._services)
        return DebounceClient(handler, job.event, self._services.limits)

    def task(self, job: "Task[I, S, E, R]") -> "TaskClient[I, S]":
        """The client of a `Task` job."""
        self._check(job, job.name, "task")
        handler: TaskHandler[I, S, E, R] = TaskHandler(job, self._services)
        return TaskClient(handler, job.event, self._services.limits)

    def worker_pool(self, job: "WorkerPool[I, S, E, R]") -> "WorkerPoolClient[I]":
        """The client of a `WorkerPool` job."""
        self._check(job, job.name, "worker_pool")
        handler: WorkerPoolHandler[I, S, E, R] = WorkerPoolHandler(job, self._services)
        return WorkerPoolClient(handler, job.event, self._services.limits)


class EngineClient(Client):
    """The client of an engine: its jobs, sharing its services (and so its wake-ups)."""

    __slots__ = ()

    def __init__(self, jobs: Sequence[RegisteredJob], services: Services) -> None:
        self._services = services
        self._definitions = {job.name: job.definition for job in jobs}


def _by_name(jobs: "Sequence[JobDefinition[Never]]") -> dict[str, object]:
    definitions: dict[str, object] = {}
    for job in jobs:
        if job.name in definitions:
            msg = f"two jobs are named {job.name!r}; job names must be unique"
            raise DuplicateJobError(msg)
        definitions[job.name] = job
    return definitions


def _no_random() -> float:
    return 0.5


class ContinuousClient(Generic[S]):
    """
    Operations on a `Continuous` job's instances.

    Type parameters:
        S: the job's state, which is also what `start` takes.
    """

    __slots__ = ("_ops",)

    def __init__(self, ops: _ContinuousOps[S]) -> None:
        self._ops = ops

    async def start(self, id: str, input: S, not_before: NotBefore | None = None) -> StartResult:
        """
        Create instance `id` with state `input` (an existing id is left unchanged).

        With `start_immediately` its first run is due now: a worker runs it. With
        `not_before` (a delay such as `"1 hour"`, or a timezone-aware `datetime`) nothing
        runs before then: the first run is due at that time (`start_immediately`), or at
        the schedule's first time after it; `status().next_run_at` shows it.
        """
        return await self._ops.start(id, input, not_before)

    async def trigger(self, id: str) -> TriggerResult:
        """
        Make a run due now without moving the schedule; during a run, one more right after.

        A missing or parked id is not created or resumed (`triggered=False`).
        """
        return await self._ops.trigger(id)

    async def status(self, id: str) -> ContinuousStatus:
        """Where `id` stands."""
        return await self._ops.status(id)

    async def get_state(self, id: str) -> S | None:
        """The state of `id`, or None."""
        return await self._ops.get_state(id)

    async def terminate(self, id: str, reason: str | None = None) -> TerminateResult:
        """
        Purge `id` (state and alarm) now; a missing id reports `terminated=False`.

        A run in progress is cancelled (an async one) or left to end, and its result is
        discarded, never written.
        """
        return await self._ops.terminate(id, reason)


class DebounceClient(Generic[I, S]):
    """
    Operations on a `Debounce` job's instances.

    Type parameters:
        I: the event type `add` takes.
        S: the batch state `get_state` returns.
    """

    __slots__ = ("_event", "_limits", "_ops")

    def __init__(self, ops: _DebounceOps[I, S], event: type[I], limits: DataLimits) -> None:
        self._ops = ops
        self._event = event
        self._limits = limits

    async def add(self, id: str, event: I, event_id: str | None = None) -> AddResult:
        """
        Fold `event` into `id`'s open batch (its `on_event` runs here: keep it pure and fast).

        The first event of a batch makes it due `flush_after` later; reaching `max_events`
        seals the batch and makes it due now, and the next event opens another. A worker
        flushes due batches, oldest first, one at a time per id. With `event_id`, a
        repeated id is acknowledged (`duplicate=True`) and not folded twice.
        """
        return await self._ops.add(id, event, event_id)

    async def add_json(
        self,
        id: str,
        payload: str | bytes | JsonValue,
        event_id: str | None = None,
        *,
        extra: Extra = "forbid",
    ) -> AddResult:
        """
        `add` for outside data: JSON text or a parsed JSON value, read strictly as the event.

        `ValidationError` names the failing field; nothing is stored then. A field the
        event class does not have is refused, unless `extra="ignore"` drops such fields.
        """
        event = from_json(payload, self._event, field="event", limits=self._limits, extra=extra)
        return await self._ops.add(id, event, event_id)

    async def flush(self, id: str) -> FlushResult:
        """
        Make `id`'s open batch due now (reason `manual`): a worker flushes it shortly.

        It flushes right after any earlier batch of the id; a retry's delay is never cut.
        """
        return await self._ops.flush(id)

    async def clear(self, id: str) -> ClearResult:
        """Discard `id`'s batches that have not started flushing (a flush in progress goes on)."""
        return await self._ops.clear(id)

    async def status(self, id: str) -> DebounceStatus:
        """Where `id`'s batches stand, oldest first."""
        return await self._ops.status(id)

    async def get_state(self, id: str) -> S | None:
        """The open batch so far, or None."""
        return await self._ops.get_state(id)

    async def wait_flushed(self, id: str, batch_id: str) -> None:
        """
        Return once batch `batch_id` of `id` is done: flushed, failed finally, or cleared.

        It polls the storage, so it works in any process; bound it with
        `async with asyncio.timeout(...)`. In tests with a `TestClock`, advance the clock.
        """
        ops = self._ops

        async def done() -> bool:
            status = await ops.status(id)
            return all(batch.batch_id != batch_id for batch in status.batches)

        await _wait_until(done)


class TaskClient(Generic[I, S]):
    """
    Operations on a `Task` job's instances.

    Type parameters:
        I: the event type `send` takes.
        S: the state `get_state` returns.
    """

    __slots__ = ("_event", "_limits", "_ops")

    def __init__(self, ops: _TaskOps[I, S], event: type[I], limits: DataLimits) -> None:
        self._ops = ops
        self._event = event
        self._limits = limits

    async def send(self, id: str, event: I, event_id: str | None = None) -> SendResult:
        """
        Fold `event` with the task's `on_event` now (keep it pure and fast: it runs here).

        While the task's `execute` runs, the event is stored and folded right after that run
        by the worker (`status="queued"`). A repeated `event_id` is acknowledged, not folded
        twice.
        """
        return await self._ops.send(id, event, event_id)

    async def send_json(
        self,
        id: str,
        payload: str | bytes | JsonValue,
        event_id: str | None = None,
        *,
        extra: Extra = "forbid",
    ) -> SendResult:
        """
        `send` for outside data: JSON text or a parsed JSON value, read strictly as the event.

        `ValidationError` names the failing field; nothing is stored then. A field the
        event class does not have is refused, unless `extra="ignore"` drops such fields.
        """
        event = from_json(payload, self._event, field="event", limits=self._limits, extra=extra)
        return await self._ops.send(id, event, event_id)

    async def trigger(self, id: str) -> TriggerResult:
        """Make `execute` due now; during a run, due right after it (a missing id stays so)."""
        return await self._ops.trigger(id)

    async def status(self, id: str) -> TaskStatus:
        """Where the task stands."""
        return await self._ops.status(id)

    async def get_state(self, id: str) -> S | None:
        """The task's state, or None."""
        return await self._ops.get_state(id)

    async def terminate(self, id: str) -> TerminateResult:
        """Purge the task now; a run in progress is refused its result."""
        return await self._ops.terminate(id)


class WorkerPoolClient(Generic[I]):
    """
    Operations on a `WorkerPool` job.

    Type parameters:
        I: the event type `enqueue` takes.
    """

    __slots__ = ("_event", "_limits", "_ops")

    def __init__(self, ops: _PoolOps[I], event: type[I], limits: DataLimits) -> None:
        self._ops = ops
        self._event = event
        self._limits = limits

    async def enqueue(
        self,
        event: I,
        partition_key: str | None = None,
        priority: int = 0,
        event_id: str | None = None,
        not_before: NotBefore | None = None,
    ) -> EnqueueResult:
        """
        Queue `event`: it starts when a slot of the pool is free (higher `priority` first).

        Events with one `partition_key` run one at a time, in order. A repeated `event_id`
        is acknowledged (`duplicate=True`) and not queued again. `not_before` (a delay such
        as `"10 minutes"`, or a timezone-aware `datetime`) delays its first attempt until
        then; it is stored with the event, and `status().delayed` counts it meanwhile. A
        delayed event with a `partition_key` holds its key: later events of that key wait.
        """
        return await self._ops.enqueue(
            event,
            partition_key=partition_key,
            priority=priority,
            event_id=event_id,
            not_before=not_before,
        )

    async def enqueue_many(
        self,
        events: Sequence[I],
        partition_key: str | None = None,
        priority: int = 0,
        not_before: NotBefore | None = None,
    ) -> tuple[EnqueueResult, ...]:
        """Queue several events, in order, in one transaction (all or none)."""
        return await self._ops.enqueue_many(
            events, partition_key=partition_key, priority=priority, not_before=not_before
        )

    async def enqueue_json(
        self,
        payload: str | bytes | JsonValue,
        partition_key: str | None = None,
        priority: int = 0,
        event_id: str | None = None,
        not_before: NotBefore | None = None,
        *,
        extra: Extra = "forbid",
    ) -> EnqueueResult:
        """
        `enqueue` for outside data: JSON text or a parsed JSON value, read strictly as the
        event. `ValidationError` names the failing field; nothing is queued then. A field
        the event class does not have is refused, unless `extra="ignore"` drops such fields.
        """
        event = from_json(payload, self._event, field="event", limits=self._limits, extra=extra)
        return await self._ops.enqueue(
            event,
            partition_key=partition_key,
            priority=priority,
            event_id=event_id,
            not_before=not_before,
        )

    async def cancel(self, event_id: str) -> CancelResult:
        """Remove an event that waits to start or for a retry (a running one goes on)."""
        return await self._ops.cancel(event_id)

    async def pause(self) -> None:
        """Start no more events (running ones finish; new ones are still accepted)."""
        await self._ops.pause()

    async def resume(self) -> None:
        """Start events again."""
        await self._ops.resume()

    async def status(self) -> PoolStatus:
        """How many events wait, run and retry, across every worker process."""
        return await self._ops.status()

    async def wait(self, event_id: str) -> None:
        """
        Return once event `event_id` is done: succeeded, failed finally, or cancelled.

        It polls the storage, so it works in any process; bound it with
        `async with asyncio.timeout(...)`. In tests with a `TestClock`, advance the clock.
        """
        ops = self._ops

        async def done() -> bool:
            return not await ops.is_pending(event_id)

        await _wait_until(done)
