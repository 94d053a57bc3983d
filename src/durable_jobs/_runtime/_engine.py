"""The engine: registration, the typed client, and the worker."""

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Self, overload

from typing_extensions import TypeVar

from .._clock import Clock, SystemClock
from .._definitions._validators import positive_int
from .._duration import DurationInput, to_timedelta
from .._errors import DuplicateJobError, InvalidDefinitionError, SchemaMismatchError
from .._limits import DataLimits
from .._observe import EventSink, Observer
from .._storage._interface import DeadLetter, InstanceRecord, JobKind, Storage
from .._storage._sqlite import DEFAULT_DATABASE, default_storage
from . import _admin
from ._admin import ResumeResult
from ._client import Client, EngineClient
from ._common import key_of, require_instance
from ._invoke import Invoker
from ._services import DefectPolicy, RegisteredJob, Services
from ._sync import SyncClient
from ._worker import Worker


if TYPE_CHECKING:
    from .._definitions._base import Registrable
    from .._definitions._continuous import Continuous

R = TypeVar("R", default=None)
I = TypeVar("I")
E = TypeVar("E")
RJ = TypeVar("RJ")

logger = logging.getLogger("durable_jobs")

__all__ = ["DEFAULT_DATABASE", "Engine"]

_MIN_LEASE = timedelta(seconds=1)


class Engine(Generic[R]):
    """
    Registers job definitions, hands out the typed client, and runs the worker.

    `async with engine:` runs the worker in the background until the block exits: it
    claims due work, runs the jobs' callbacks (async ones on the loop, sync ones in a
    thread pool of `threads`), and writes each outcome. A process that only uses a client
    (a web app) needs no engine at all: `Client(jobs=[...], storage=...)` needs no deps.

    Type parameters:
        R: the type of `deps`. Every job's requirement must be a supertype of it, so a job
            needing a dependency the engine lacks is a type error at `Engine(...)`. Jobs
            are taken as `Registrable[R]` (structurally), so jobs needing different
            dependency Protocols share one engine whose `deps` satisfies them all.
    """

    @overload
    def __init__(
        self: "Engine[None]",
        *,
        jobs: "Sequence[Registrable[None]]",
        storage: Storage | None = None,
        clock: Clock | None = None,
        observers: Sequence[Observer] = (),
        defect_policy: DefectPolicy | None = None,
        random: Callable[[], float] | None = None,
        lease: DurationInput = "30 seconds",
        concurrency: int = 16,
        threads: int | None = None,
        limits: DataLimits | None = None,
        event_id_retention: DurationInput = "7 days",
    ) -> None: ...

    @overload
    def __init__(
        self,
        *,
        jobs: "Sequence[Registrable[R]]",
        deps: R,
        storage: Storage | None = None,
        clock: Clock | None = None,
        observers: Sequence[Observer] = (),
        defect_policy: DefectPolicy | None = None,
        random: Callable[[], float] | None = None,
        lease: DurationInput = "30 seconds",
        concurrency: int = 16,
        threads: int | None = None,
        limits: DataLimits | None = None,
        event_id_retention: DurationInput = "7 days",
    ) -> None: ...

    def __init__(
        self,
        *,
        # the overloads above are the typed surface; this implementation serves both
        jobs: "Sequence[Registrable[Any]]",
        deps: Any = None,
        storage: Storage | None = None,
        clock: Clock | None = None,
        observers: Sequence[Observer] = (),
        defect_policy: DefectPolicy | None = None,
        random: Callable[[], float] | None = None,
        lease: DurationInput = "30 seconds",
        concurrency: int = 16,
        threads: int | None = None,
        limits: DataLimits | None = None,
        event_id_retention: DurationInput = "7 days",
    ) -> None:
        """
        Register `jobs` with `deps` (omit `deps` when no job needs any).

        `storage` defaults to `SqliteStorage("durable_jobs.db")` in the working directory;
        `clock` to the system clock. `lease` is how long a worker's claim on one run lasts
        without renewal: it is renewed every third of it while the run goes on, so it is
        also how long the work of a worker that died waits before another takes it.
        `concurrency` bounds the runs one worker has in flight; `threads` (default:
        `concurrency`) is the size of the thread pool sync callbacks run in. `limits`
        bounds the events and states that enter storage (by default `DataLimits()`: 1 MiB
        of JSON, 64 levels deep). `event_id_retention` is how long an accepted `event_id`
        is remembered to recognise a repeat: the worker forgets older ones about once an
        hour (never the id of an event still queued, nor those of a Debounce id whose
        batches are not done).
        """
        self._storage: Storage = default_storage() if storage is None else storage
        self._clock = clock if clock is not None else SystemClock()
        self._lease = to_timedelta(lease, field="lease")
        if self._lease < _MIN_LEASE:
            msg = f"lease: must be at least one second (it is renewed every third), got {lease!r}"
            raise InvalidDefinitionError(msg)
        positive_int("concurrency", concurrency)
        pool_size = positive_int("threads", concurrency if threads is None else threads)
        self._wake_event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop the worker last ran on (`async with`, `run_due`); wake-ups go there."""
        self._services = Services(
            storage=self._storage,
            clock=self._clock,
            events=EventSink(observers),
            random=random if random is not None else _default_random(),
            defect_policy=defect_policy if defect_policy is not None else DefectPolicy(),
            invoker=Invoker(pool_size),
            wake=self._wake,
            limits=DataLimits() if limits is None else limits,
        )
        self._jobs: dict[str, RegisteredJob] = {}
        for job in _register_all(jobs, deps, self._services):
            if job.name in self._jobs:
                msg = f"two jobs are named {job.name!r}; job names must be unique"
                raise DuplicateJobError(msg)
            self._jobs[job.name] = job
        retention = to_timedelta(event_id_retention, field="event_id_retention")
        if retention <= timedelta(0):
            msg = f"event_id_retention: must be positive, got {event_id_retention!r}"
            raise InvalidDefinitionError(msg)
        self._worker = Worker(
            self._services,
            self._jobs,
            concurrency=concurrency,
            lease=self._lease,
            event_id_retention=retention,
        )
        self.client: Client = EngineClient(list(self._jobs.values()), self._services)
        """The typed client: `engine.client.debounce(job).add(...)` and friends."""
        self.sync_client: SyncClient = SyncClient.of(self.client)
        """The same client for code that is not async, safe from any thread (no `await`)."""
        self._serving: asyncio.Task[None] | None = None
        self._stopping = False
        self._declared: dict[tuple[str, str], Callable[[], Awaitable[object]]] = {}
        """Declared Continuous instances not yet ensured by this engine (see `declare`)."""
        self._clock.attach(self.run_due)

    @property
    def worker_id(self) -> str:
        """
        The id of this engine's worker (`host:pid`, then `host:pid:2`, ... for more engines
        in one process): in the `worker_id` of its runs' events and in its log lines.
        """
        return self._services.events.worker_id

    @property
    def clock(self) -> Clock:
        """The engine's clock."""
        return self._clock

    @property
    def storage(self) -> Storage:
        """The engine's storage."""
        return self._storage

    @property
    def abandoned_threads(self) -> int:
        """
        Threads of this engine's stopped runs still running: a sync `execute` past its
        `timeout`, or whose pool event was cancelled. Each run holds its instance (or its
        pool event and key) until its thread returns, then discards what it returned.
        """
        return self._services.invoker.abandoned

    @property
    def job_names(self) -> tuple[str, ...]:
        """The registered job names, sorted."""
        return tuple(sorted(self._jobs))

    async def instances(self, job: str | None = None) -> Sequence[InstanceRecord]:
        """Every stored instance (optionally of one job), in key order."""
        return await self._storage.list_instances(job)

    async def inspect(self, job: str, id: str) -> InstanceRecord:
        """One stored instance; `InstanceNotFoundError` when there is none."""
        return await _admin.find_instance(self._storage, job, id)

    async def dead_letters(self, job: str | None = None) -> Sequence[DeadLetter]:
        """Dead letters, oldest first (optionally of one job)."""
        return await self._storage.dead_letters(job)

    async def resume(self, letter_id: str) -> ResumeResult:
        """
        Run a dead letter's work again (due now) and delete the letter, atomically.

        A parked instance is reactivated with its state; a purged one is rebuilt from the
        letter; a worker-pool event or a debounce batch is queued again. Raises
        `DeadLetterNotFoundError`, or `ConflictError` (nothing changed) when a live
        instance would be overwritten.
        """
        result = await _admin.resume(self._storage, self._clock, letter_id)
        self._wake(result.run_at)
        return result

    async def discard(self, letter_id: str) -> None:
        """Delete a dead letter; `DeadLetterNotFoundError` when there is none."""
        await _admin.discard(self._storage, letter_id)

    def declare(self, job: "Continuous[I, I, E, RJ]", id: str, input: I) -> None:
        """
        Declare that Continuous instance `id` of `job` exists, started with `input`.

        Each worker of the engine (`async with engine:`, `durable-jobs worker`, or the first
        `run_due`) starts it when it starts, unless it exists: like
        `client.continuous(job).start(id, input)`, which does nothing to an existing
        instance, so any number of workers and restarts make one instance. Call it where
        the engine is built, before a worker starts. Raises `JobNotFoundError` for a job
        not registered here, `ValidationError` for an empty id or an `input` that is not
        the job's state type, and `InvalidDefinitionError` when `id` is declared twice.
        """
        client = self.client.continuous(job)
        key_of(JobKind.CONTINUOUS, job.name, id)
        require_instance("input", input, job.state)
        if (job.name, id) in self._declared:
            msg = f"declare: {job.name!r} instance {id!r} is declared twice"
            raise InvalidDefinitionError(msg)
        self._declared[job.name, id] = lambda: client.start(id, input)

    async def _ensure_declared(self, *, retry: bool) -> None:
        """
        Start the declared instances not ensured yet; with `retry`, a failure is logged and
        tried again a second later, until it works or the worker stops.
        """
        while self._declared:
            name = next(iter(self._declared))
            try:
                await self._declared[name]()
            except SchemaMismatchError:
                raise  # this version must not run against that database
            except Exception:
                if not retry:
                    raise
                logger.exception("starting declared instance %s:%s failed", *name)
                if self._stopping:
                    return  # the next worker start tries again
                await asyncio.sleep(1)
                continue
            del self._declared[name]

    async def run_due(self) -> datetime | None:
        """
        Claim and run everything due now, to the end; returns the next alarm time.

        `TestClock.advance` calls this at every step; a test may call it directly too.
        Declared instances (`declare`) are started first, once.
        """
        self._loop = asyncio.get_running_loop()
        await self._ensure_declared(retry=False)
        return await self._worker.run_due()

    def _wake(self, at: datetime) -> None:
        # client calls come from any thread and any loop (a sync client, a web request's
        # `asyncio.run`): the worker's loop-bound events are touched on its own loop only
        loop = self._loop
        if loop is None:
            return  # no worker has run: there is nobody to wake
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is loop:
            self._wake_here(at)
        else:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody sleeps there
                loop.call_soon_threadsafe(self._wake_here, at)

    def _wake_here(self, at: datetime) -> None:
        self._worker.keeper.poke()
        # only an alarm before the worker's planned look (or one while it looks) wakes it
        planned = self._worker.sleeping_until
        if self._wake_event is not None and (planned is None or at < planned):
            self._wake_event.set()

    async def __aenter__(self) -> Self:
        """Start the worker in the background."""
        self._stopping = False
        self._loop = asyncio.get_running_loop()
        self._wake_event = asyncio.Event()
        self._serving = asyncio.create_task(self._serve(), name="durable-jobs-worker")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the worker after the runs in flight finish."""
        await self.stop()

    async def stop(self) -> None:
        """
        Stop the worker gracefully: claim nothing more, let the runs in flight finish.

        Cancelling the task that awaits `stop` cancels the async runs instead and gives their
        instances back at once (a sync callback cannot be stopped: its instance stays held
        until it returns and its result is refused).
        """
        self._stopping = True
        if self._wake_event is not None:
            self._wake_event.set()
        serving, self._serving = self._serving, None
        try:
            if serving is not None:
                # cancelling this task cancels `serving` too (it is awaited): the worker
                # then gives its async runs up; our own cancellation must come out again
                with contextlib.suppress(asyncio.CancelledError):
                    await serving
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise asyncio.CancelledError
        finally:
            await self._worker.close()

    @property
    def serving(self) -> "asyncio.Task[None] | None":
        """The background worker task while `async with engine:` runs (None otherwise)."""
        return self._serving

    def _should_stop(self) -> bool:
        return self._stopping

    async def _watch(self, wake: asyncio.Event) -> None:
        # other processes (clients, workers) may set earlier alarms or revoke leases
        while True:
            try:
                await self._storage.wait_for_change()
            except Exception:
                logger.exception("watching storage for changes failed; retrying shortly")
                await asyncio.sleep(1)
                continue
            wake.set()
            self._worker.keeper.poke()

    async def _serve(self) -> None:
        wake = self._wake_event
        if wake is None:  # pragma: no cover - set by __aenter__
            return
        watcher = asyncio.create_task(self._watch(wake), name="durable-jobs-watch")
        try:
            await self._ensure_declared(retry=True)
            await self._worker.serve(wake, self._should_stop, self._lease / 2)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


def _register_all(
    jobs: "Sequence[Registrable[R]]", deps: R, services: Services
) -> list[RegisteredJob]:
    registered: list[RegisteredJob] = []
    for job in jobs:
        registered.append(job.register_with(deps, services))
    return registered


def _default_random() -> Callable[[], float]:
    return random.SystemRandom().random
