"""The typed client: one view per kind, typed from the definition object."""

import itertools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Generic, Protocol

from typing_extensions import TypeVar

from .._errors import JobNotFoundError, ValidationError
from .._serde import decode, decode_json_text
from .._storage._interface import JobKind
from .._types import JsonValue
from ._continuous import ContinuousHandler
from ._debounce import DebounceHandler
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
from ._services import RegisteredJob, Services
from ._task import TaskHandler
from ._worker_pool import WorkerPoolHandler


if TYPE_CHECKING:
    from .._definitions._continuous import Continuous
    from .._definitions._debounce import Debounce
    from .._definitions._task import Task
    from .._definitions._worker_pool import WorkerPool

I = TypeVar("I")
S = TypeVar("S")
E = TypeVar("E")
R = TypeVar("R", default=None)
IC = TypeVar("IC", contravariant=True)
SC = TypeVar("SC", covariant=True)
SI = TypeVar("SI")


class _ContinuousOps(Protocol[SI]):
    async def start(self, id: str, input: SI) -> StartResult: ...
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
    ) -> EnqueueResult: ...
    async def cancel(self, event_id: str) -> CancelResult: ...
    async def pause(self) -> None: ...
    async def resume(self) -> None: ...
    async def status(self) -> PoolStatus: ...


def _parse(payload: str | bytes | JsonValue, cls: type[I], field: str) -> I:
    """Validate data from outside (JSON text or an already-parsed JSON value) as a `cls`."""
    if isinstance(payload, str | bytes):
        try:
            return decode_json_text(payload, cls)
        except ValidationError as error:
            raise ValidationError(f"{field}{_tail(error.path)}", error.message) from error
    try:
        return decode(payload, cls)
    except ValidationError as error:
        raise ValidationError(f"{field}{_tail(error.path)}", error.message) from error


def _tail(path: str) -> str:
    path = path.removeprefix("$")
    return path if not path or path.startswith((".", "[")) else f".{path}"


class Client(Generic[R]):
    """
    The engine's client; pick a kind's view with the definition object.

    Type parameters:
        R: the engine's dependencies type; a view accepts any job whose requirement it meets.
    """

    __slots__ = ("_counters", "_deps", "_jobs", "_services")

    def __init__(self, jobs: Mapping[str, RegisteredJob], deps: R, services: Services) -> None:
        self._jobs = jobs
        self._deps = deps
        self._services = services
        self._counters: dict[str, itertools.count[int]] = {}

    def _check(self, job: object, name: str, kind: JobKind) -> None:
        registered = self._jobs.get(name)
        if registered is None or registered.definition is not job or registered.kind is not kind:
            msg = f"{kind.value} job {name!r} is not registered with this engine"
            raise JobNotFoundError(msg)

    def continuous(self, job: "Continuous[I, I, E, R]") -> "ContinuousClient[I]":
        """The client of a `Continuous` job."""
        self._check(job, job.name, JobKind.CONTINUOUS)
        return ContinuousClient(ContinuousHandler(job, self._deps, self._services))

    def debounce(self, job: "Debounce[I, S, E, R]") -> "DebounceClient[I, S]":
        """The client of a `Debounce` job."""
        self._check(job, job.name, JobKind.DEBOUNCE)
        handler: DebounceHandler[I, S, E, R] = DebounceHandler(job, self._deps, self._services)
        return DebounceClient(handler, job.event)

    def task(self, job: "Task[I, S, E, R]") -> "TaskClient[I, S]":
        """The client of a `Task` job."""
        self._check(job, job.name, JobKind.TASK)
        handler: TaskHandler[I, S, E, R] = TaskHandler(job, self._deps, self._services)
        return TaskClient(handler, job.event)

    def worker_pool(self, job: "WorkerPool[I, S, E, R]") -> "WorkerPoolClient[I]":
        """The client of a `WorkerPool` job."""
        self._check(job, job.name, JobKind.WORKER_POOL)
        handler: WorkerPoolHandler[I, S, E, R] = WorkerPoolHandler(
            job, self._deps, self._services, self._round_robin(job.name)
        )
        return WorkerPoolClient(handler, job.event)

    def _round_robin(self, name: str) -> "itertools.count[int]":
        # one counter per pool and client, so round-robin routing carries on across calls
        return self._counters.setdefault(name, itertools.count())


class ContinuousClient(Generic[S]):
    """
    Operations on a `Continuous` job's instances.

    Type parameters:
        S: the job's state, which is also what `start` takes.
    """

    __slots__ = ("_ops",)

    def __init__(self, ops: _ContinuousOps[S]) -> None:
        self._ops = ops

    async def start(self, id: str, input: S) -> StartResult:
        """Create instance `id` with state `input` (an existing id is left unchanged)."""
        return await self._ops.start(id, input)

    async def trigger(self, id: str) -> TriggerResult:
        """Run `id` now without moving its schedule (a missing id is not created)."""
        return await self._ops.trigger(id)

    async def status(self, id: str) -> ContinuousStatus:
        """Where `id` stands."""
        return await self._ops.status(id)

    async def get_state(self, id: str) -> S | None:
        """The state of `id`, or None."""
        return await self._ops.get_state(id)

    async def terminate(self, id: str, reason: str | None = None) -> TerminateResult:
        """Purge `id` (state and alarm); a missing id reports `terminated=False`."""
        return await self._ops.terminate(id, reason)


class DebounceClient(Generic[I, S]):
    """
    Operations on a `Debounce` job's instances.

    Type parameters:
        I: the event type `add` takes.
        S: the batch state `get_state` returns.
    """

    __slots__ = ("_event", "_ops")

    def __init__(self, ops: _DebounceOps[I, S], event: type[I]) -> None:
        self._ops = ops
        self._event = event

    async def add(self, id: str, event: I, event_id: str | None = None) -> AddResult:
        """
        Fold `event` into `id`'s batch.

        The first event of a batch sets the flush alarm; reaching `max_events` flushes at
        once. With `event_id`, a repeated id is acknowledged (`duplicate=True`) and not
        folded twice.
        """
        return await self._ops.add(id, event, event_id)

    async def add_json(
        self,
        id: str,
        payload: str | bytes | JsonValue,
        event_id: str | None = None,
    ) -> AddResult:
        """`add` for outside data: `payload` is validated (`ValidationError` names the field)."""
        return await self._ops.add(id, _parse(payload, self._event, "event"), event_id)

    async def flush(self, id: str) -> FlushResult:
        """Flush `id`'s batch now (reason `manual`)."""
        return await self._ops.flush(id)

    async def clear(self, id: str) -> ClearResult:
        """Discard `id`'s batch without executing it."""
        return await self._ops.clear(id)

    async def status(self, id: str) -> DebounceStatus:
        """Where `id`'s batch stands."""
        return await self._ops.status(id)

    async def get_state(self, id: str) -> S | None:
        """The batch so far, or None."""
        return await self._ops.get_state(id)


class TaskClient(Generic[I, S]):
    """
    Operations on a `Task` job's instances.

    Type parameters:
        I: the event type `send` takes.
        S: the state `get_state` returns.
    """

    __slots__ = ("_event", "_ops")

    def __init__(self, ops: _TaskOps[I, S], event: type[I]) -> None:
        self._ops = ops
        self._event = event

    async def send(self, id: str, event: I, event_id: str | None = None) -> SendResult:
        """Run the task's `on_event` (a repeated `event_id` is acknowledged, not run twice)."""
        return await self._ops.send(id, event, event_id)

    async def send_json(
        self,
        id: str,
        payload: str | bytes | JsonValue,
        event_id: str | None = None,
    ) -> SendResult:
        """`send` for outside data: `payload` is validated (`ValidationError` names the field)."""
        return await self._ops.send(id, _parse(payload, self._event, "event"), event_id)

    async def trigger(self, id: str) -> TriggerResult:
        """Run `execute` now (a missing id is not created)."""
        return await self._ops.trigger(id)

    async def status(self, id: str) -> TaskStatus:
        """Where the task stands."""
        return await self._ops.status(id)

    async def get_state(self, id: str) -> S | None:
        """The task's state, or None."""
        return await self._ops.get_state(id)

    async def terminate(self, id: str) -> TerminateResult:
        """Purge the task."""
        return await self._ops.terminate(id)


class WorkerPoolClient(Generic[I]):
    """
    Operations on a `WorkerPool` job.

    Type parameters:
        I: the event type `enqueue` takes.
    """

    __slots__ = ("_event", "_ops")

    def __init__(self, ops: _PoolOps[I], event: type[I]) -> None:
        self._ops = ops
        self._event = event

    async def enqueue(
        self,
        event: I,
        partition_key: str | None = None,
        priority: int = 0,
        event_id: str | None = None,
    ) -> EnqueueResult:
        """Queue `event`: round-robin, or by `partition_key` (same key, same FIFO queue)."""
        return await self._ops.enqueue(
            event, partition_key=partition_key, priority=priority, event_id=event_id
        )

    async def enqueue_many(
        self,
        events: Sequence[I],
        partition_key: str | None = None,
        priority: int = 0,
    ) -> tuple[EnqueueResult, ...]:
        """Queue several events in order (each its own atomic operation)."""
        return tuple(
            [
                await self._ops.enqueue(event, partition_key=partition_key, priority=priority)
                for event in events
            ]
        )

    async def enqueue_json(
        self,
        payload: str | bytes | JsonValue,
        partition_key: str | None = None,
        priority: int = 0,
        event_id: str | None = None,
    ) -> EnqueueResult:
        """`enqueue` for outside data: validated (`ValidationError` names the field)."""
        return await self._ops.enqueue(
            _parse(payload, self._event, "event"),
            partition_key=partition_key,
            priority=priority,
            event_id=event_id,
        )

    async def cancel(self, event_id: str) -> CancelResult:
        """Remove a queued event that has not started."""
        return await self._ops.cancel(event_id)

    async def pause(self) -> None:
        """Stop dequeuing (events keep arriving and are kept)."""
        await self._ops.pause()

    async def resume(self) -> None:
        """Dequeue again."""
        await self._ops.resume()

    async def status(self) -> PoolStatus:
        """Every partition and the totals."""
        return await self._ops.status()
