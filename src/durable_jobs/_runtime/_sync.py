"""
The sync client: the typed client's methods without `await`, for code that is not async.

A WSGI app (Flask, Django), a script or a thread pool calls `SyncClient` methods like any
blocking function. Each call runs the async client's coroutine on the process's portal
(an event loop on a daemon thread of its own, started on first use) and waits for it, so
any number of threads can share one `SyncClient`: their calls run concurrently there, and
no thread needs an event loop of its own.
"""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Generic, Never

from typing_extensions import TypeVar

from .._clock import Clock
from .._duration import DurationInput, to_timedelta
from .._observe import Observer
from .._portal import Portal, default_portal
from .._serde import Extra
from .._storage._interface import Storage
from .._types import JsonValue
from ._client import Client, ContinuousClient, DebounceClient, TaskClient, WorkerPoolClient
from ._common import NotBefore
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
T = TypeVar("T")


class SyncClient:
    """
    The typed client for code that is not async: the same methods as `Client`, blocking.

    `SyncClient(jobs=[...], storage=...)` builds one like `Client(...)` does (no deps, no
    worker); `engine.sync_client` is the engine's. It is safe from any number of threads:
    every call runs on the process's portal loop and returns its result (or raises its
    error) in the calling thread. In async code, use `Client`: a blocking call there would
    stall the caller's event loop.
    """

    __slots__ = ("_client", "_portal")

    def __init__(
        self,
        *,
        jobs: "Sequence[JobDefinition[Never]]",
        storage: Storage | None = None,
        clock: Clock | None = None,
        observers: Sequence[Observer] = (),
    ) -> None:
        """A sync client of `jobs` on `storage`; the arguments are those of `Client`."""
        self._client = Client(jobs=jobs, storage=storage, clock=clock, observers=observers)
        self._portal = default_portal()

    @classmethod
    def of(cls, client: Client) -> "SyncClient":
        """The blocking twin of `client` (same jobs, storage, clock and observers)."""
        made = cls.__new__(cls)
        made._client = client
        made._portal = default_portal()
        return made

    @property
    def storage(self) -> Storage:
        """The storage this client writes to."""
        return self._client.storage

    @property
    def client(self) -> Client:
        """The async client this one runs (for async code in the same process)."""
        return self._client

    def continuous(self, job: "Continuous[I, I, E, R]") -> "SyncContinuousClient[I]":
        """The sync client of a `Continuous` job."""
        return SyncContinuousClient(self._client.continuous(job), self._portal)

    def debounce(self, job: "Debounce[I, S, E, R]") -> "SyncDebounceClient[I, S]":
        """The sync client of a `Debounce` job."""
        return SyncDebounceClient(self._client.debounce(job), self._portal)

    def task(self, job: "Task[I, S, E, R]") -> "SyncTaskClient[I, S]":
        """The sync client of a `Task` job."""
        return SyncTaskClient(self._client.task(job), self._portal)

    def worker_pool(self, job: "WorkerPool[I, S, E, R]") -> "SyncWorkerPoolClient[I]":
        """The sync client of a `WorkerPool` job."""
        return SyncWorkerPoolClient(self._client.worker_pool(job), self._portal)


def _seconds(timeout: DurationInput | None) -> float | None:
    return None if timeout is None else to_timedelta(timeout, field="timeout").total_seconds()


async def _bounded(waiting: Callable[[], Awaitable[None]], limit: float | None) -> None:
    async with asyncio.timeout(limit):
        await waiting()


class SyncContinuousClient(Generic[S]):
    """
    `ContinuousClient`'s operations, blocking.

    Type parameters:
        S: the job's state, which is also what `start` takes.
    """

    __slots__ = ("_async", "_portal")

    def __init__(self, client: ContinuousClient[S], portal: Portal) -> None:
        self._async = client
        self._portal = portal

    def start(self, id: str, input: S, not_before: NotBefore | None = None) -> StartResult:
        """See `ContinuousClient.start`."""
        return self._portal.run(lambda: self._async.start(id, input, not_before))

    def trigger(self, id: str) -> TriggerResult:
        """See `ContinuousClient.trigger`."""
        return self._portal.run(lambda: self._async.trigger(id))

    def status(self, id: str) -> ContinuousStatus:
        """See `ContinuousClient.status`."""
        return self._portal.run(lambda: self._async.status(id))

    def get_state(self, id: str) -> S | None:
        """See `ContinuousClient.get_state`."""
        return self._portal.run(lambda: self._async.get_state(id))

    def terminate(self, id: str, reason: str | None = None) -> TerminateResult:
        """See `ContinuousClient.terminate`."""
        return self._portal.run(lambda: self._async.terminate(id, reason))


class SyncDebounceClient(Generic[I, S]):
    """
    `DebounceClient`'s operations, blocking.

    Type parameters:
        I: the event type `add` takes.
        S: the batch state `get_state` returns.
    """

    __slots__ = ("_async", "_portal")

    def __init__(self, client: DebounceClient[I, S], portal: Portal) -> None:
        self._async = client
        self._portal = portal

    def add(self, id: str, event: I, event_id: str | None = None) -> AddResult:
        """See `DebounceClient.add` (its `on_event` runs on the portal's loop)."""
        return self._portal.run(lambda: self._async.add(id, event, event_id))

    def add_json(
        self,
        id: str,
        payload: str | bytes | JsonValue,
        event_id: str | None = None,
        *,
        extra: Extra = "forbid",
    ) -> AddResult:
        """See `DebounceClient.add_json`."""
        return self._portal.run(lambda: self._async.add_json(id, payload, event_id, extra=extra))

    def flush(self, id: str) -> FlushResult:
        """See `DebounceClient.flush`."""
        return self._portal.run(lambda: self._async.flush(id))

    def clear(self, id: str) -> ClearResult:
        """See `DebounceClient.clear`."""
        return self._portal.run(lambda: self._async.clear(id))

    def status(self, id: str) -> DebounceStatus:
        """See `DebounceClient.status`."""
        return self._portal.run(lambda: self._async.status(id))

    def get_state(self, id: str) -> S | None:
        """See `DebounceClient.get_state`."""
        return self._portal.run(lambda: self._async.get_state(id))

    def wait_flushed(self, id: str, batch_id: str, timeout: DurationInput | None = None) -> None:
        """
        Return once batch `batch_id` of `id` is done (see `DebounceClient.wait_flushed`).

        `TimeoutError` when `timeout` passes first (None: wait as long as it takes).
        """
        limit = _seconds(timeout)
        self._portal.run(lambda: _bounded(lambda: self._async.wait_flushed(id, batch_id), limit))


class SyncTaskClient(Generic[I, S]):
    """
    `TaskClient`'s operations, blocking.

    Type parameters:
        I: the event type `send` takes.
        S: the state `get_state` returns.
    """

    __slots__ = ("_async", "_portal")

    def __init__(self, client: TaskClient[I, S], portal: Portal) -> None:
        self._async = client
        self._portal = portal

    def send(self, id: str, event: I, event_id: str | None = None) -> SendResult:
        """See `TaskClient.send` (its `on_event` runs on the portal's loop)."""
        return self._portal.run(lambda: self._async.send(id, event, event_id))

    def send_json(
        self,
        id: str,
        payload: str | bytes | JsonValue,
        event_id: str | None = None,
        *,
        extra: Extra = "forbid",
    ) -> SendResult:
        """See `TaskClient.send_json`."""
        return self._portal.run(lambda: self._async.send_json(id, payload, event_id, extra=extra))

    def trigger(self, id: str) -> TriggerResult:
        """See `TaskClient.trigger`."""
        return self._portal.run(lambda: self._async.trigger(id))

    def status(self, id: str) -> TaskStatus:
        """See `TaskClient.status`."""
        return self._portal.run(lambda: self._async.status(id))

    def get_state(self, id: str) -> S | None:
        """See `TaskClient.get_state`."""
        return self._portal.run(lambda: self._async.get_state(id))

    def terminate(self, id: str) -> TerminateResult:
        """See `TaskClient.terminate`."""
        return self._portal.run(lambda: self._async.terminate(id))


class SyncWorkerPoolClient(Generic[I]):
    """
    `WorkerPoolClient`'s operations, blocking.

    Type parameters:
        I: the event type `enqueue` takes.
    """

    __slots__ = ("_async", "_portal")

    def __init__(self, client: WorkerPoolClient[I], portal: Portal) -> None:
        self._async = client
        self._portal = portal

    def enqueue(
        self,
        event: I,
        partition_key: str | None = None,
        priority: int = 0,
        event_id: str | None = None,
        not_before: NotBefore | None = None,
    ) -> EnqueueResult:
        """See `WorkerPoolClient.enqueue`."""
        return self._portal.run(
            lambda: self._async.enqueue(event, partition_key, priority, event_id, not_before)
        )

    def enqueue_many(
        self,
        events: Sequence[I],
        partition_key: str | None = None,
        priority: int = 0,
        not_before: NotBefore | None = None,
    ) -> tuple[EnqueueResult, ...]:
        """See `WorkerPoolClient.enqueue_many`."""
        return self._portal.run(
            lambda: self._async.enqueue_many(events, partition_key, priority, not_before)
        )

    def enqueue_json(
        self,
        payload: str | bytes | JsonValue,
        partition_key: str | None = None,
        priority: int = 0,
        event_id: str | None = None,
        not_before: NotBefore | None = None,
        *,
        extra: Extra = "forbid",
    ) -> EnqueueResult:
        """See `WorkerPoolClient.enqueue_json`."""
        return self._portal.run(
            lambda: self._async.enqueue_json(
                payload, partition_key, priority, event_id, not_before, extra=extra
            )
        )

    def cancel(self, event_id: str) -> CancelResult:
        """See `WorkerPoolClient.cancel`."""
        return self._portal.run(lambda: self._async.cancel(event_id))

    def pause(self) -> None:
        """See `WorkerPoolClient.pause`."""
        self._portal.run(self._async.pause)

    def resume(self) -> None:
        """See `WorkerPoolClient.resume`."""
        self._portal.run(self._async.resume)

    def status(self) -> PoolStatus:
        """See `WorkerPoolClient.status`."""
        return self._portal.run(self._async.status)

    def wait(self, event_id: str, timeout: DurationInput | None = None) -> None:
        """
        Return once event `event_id` is done (see `WorkerPoolClient.wait`).

        `TimeoutError` when `timeout` passes first (None: wait as long as it takes).
        """
        limit = _seconds(timeout)
        self._portal.run(lambda: _bounded(lambda: self._async.wait(event_id), limit))
