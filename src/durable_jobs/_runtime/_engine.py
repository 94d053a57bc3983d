"""The engine: registration, the typed client, and the worker's alarm loop."""

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Self, overload

from typing_extensions import TypeVar

from .._clock import Clock, SystemClock
from .._duration import DurationInput, to_timedelta
from .._errors import DuplicateJobError
from .._observe import EventSink, Observer
from .._storage._interface import DeadLetter, InstanceKey, InstanceRecord, Storage
from .._storage._sqlite import SqliteStorage
from . import _admin
from ._admin import ResumeResult
from ._client import Client
from ._services import DefectPolicy, RegisteredJob, Services


if TYPE_CHECKING:
    from .._definitions._base import Registrable

R = TypeVar("R", default=None)

logger = logging.getLogger("durable_jobs")

_MIN_IDLE = timedelta(milliseconds=5)
_MAX_IDLE = timedelta(seconds=1)

DEFAULT_DATABASE = "durable_jobs.db"
"""The file of the default storage, relative to the working directory."""


class Engine(Generic[R]):
    """
    Registers job definitions, hands out the typed client, and runs the worker.

    `async with engine:` runs the alarm loop in the background until the block exits.
    A process that only uses `engine.client` (a web app) needs no worker: storage is the
    only channel between processes.

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
        lease: DurationInput = "5 minutes",
        concurrency: int = 16,
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
        lease: DurationInput = "5 minutes",
        concurrency: int = 16,
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
        lease: DurationInput = "5 minutes",
        concurrency: int = 16,
    ) -> None:
        """
        Register `jobs` with `deps` (omit `deps` when no job needs any).

        `storage` defaults to `SqliteStorage("durable_jobs.db")` in the working directory;
        `clock` to the system clock. `lease` is how long a claimed alarm stays hidden from
        other workers (a worker that dies mid-run loses its claim after it); `concurrency`
        bounds the alarms one worker runs at once.
        """
        if storage is None:
            storage = SqliteStorage(DEFAULT_DATABASE)
        self._clock = clock if clock is not None else SystemClock()
        self._storage = storage
        self._lease = to_timedelta(lease, field="lease")
        self._concurrency = concurrency
        self._wake_event = asyncio.Event()
        self._known_next: datetime | None = None
        self._services = Services(
            storage=storage,
            clock=self._clock,
            events=EventSink(observers),
            random=random if random is not None else _default_random(),
            defect_policy=defect_policy if defect_policy is not None else DefectPolicy(),
            wake=self._wake,
        )
        self._jobs: dict[str, RegisteredJob] = {}
        registered = _register_all(jobs, deps, self._services)
        for job in registered:
            if job.name in self._jobs:
                msg = f"two jobs are named {job.name!r}; job names must be unique"
                raise DuplicateJobError(msg)
            self._jobs[job.name] = job
        self.client: Client[R] = Client(self._jobs, deps, self._services)
        """The typed client: `engine.client.debounce(job).add(...)` and friends."""
        self._worker: asyncio.Task[None] | None = None
        self._stopping = False
        self._clock.attach(self.run_due)

    @property
    def clock(self) -> Clock:
        """The engine's clock."""
        return self._clock

    @property
    def storage(self) -> Storage:
        """The engine's storage."""
        return self._storage

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
        letter; a worker-pool event is queued again. Raises `DeadLetterNotFoundError`, or
        `ConflictError` (nothing changed) when a live instance would be overwritten.
        """
        result = await _admin.resume(self._storage, self._clock, letter_id)
        self._wake(result.run_at)
        return result

    async def discard(self, letter_id: str) -> None:
        """Delete a dead letter; `DeadLetterNotFoundError` when there is none."""
        await _admin.discard(self._storage, letter_id)

    async def run_due(self) -> datetime | None:
        """Run every alarm due now (bounded concurrency); returns the next alarm time."""
        semaphore = asyncio.Semaphore(self._concurrency)

        async def run(key: InstanceKey) -> None:
            async with semaphore:
                await self._run_alarm(key)

        while True:
            now = self._clock.now()
            keys = await self._storage.claim_due(now, limit=self._concurrency, lease=self._lease)
            if not keys:
                break
            async with asyncio.TaskGroup() as group:
                for key in keys:
                    group.create_task(run(key))
        return await self._storage.next_alarm_at()

    async def _run_alarm(self, key: InstanceKey) -> None:
        job = self._jobs.get(key.job)
        if job is None or job.kind is not key.kind:
            logger.warning("alarm for %s:%s:%s, which is not registered", key.kind, key.job, key.id)
            return
        try:
            await job.on_alarm(key)
        except Exception:
            # the claim's lease expires and the alarm runs again; other instances go on
            logger.exception("alarm of %s:%s:%s failed", key.kind.value, key.job, key.id)

    def _wake(self, at: datetime) -> None:
        if self._known_next is None or at < self._known_next:
            self._known_next = at
            self._wake_event.set()

    async def __aenter__(self) -> Self:
        """Start the worker (the alarm loop) in the background."""
        self._stopping = False
        self._worker = asyncio.create_task(self._loop(), name="durable-jobs-worker")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the worker after in-flight alarms finish."""
        await self.stop()

    async def stop(self) -> None:
        """Stop the worker gracefully: in-flight alarms complete, nothing is lost."""
        self._stopping = True
        self._wake_event.set()
        worker, self._worker = self._worker, None
        if worker is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    def _should_stop(self) -> bool:
        return self._stopping

    async def _watch(self) -> None:
        # other processes (clients, workers) may set earlier alarms: look again when they write
        while True:
            try:
                await self._storage.wait_for_change()
            except Exception:
                logger.exception("watching storage for changes failed; retrying shortly")
                await asyncio.sleep(1)
                continue
            self._wake_event.set()

    async def _loop(self) -> None:
        watcher = asyncio.create_task(self._watch(), name="durable-jobs-watch")
        try:
            await self._serve()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _serve(self) -> None:
        # a slot frees as soon as its alarm ends: a slow alarm never holds back the others
        running: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            running.discard(task)
            self._wake_event.set()

        blocked = 0  # looks in a row that found a due alarm nobody could claim
        try:
            while not self._stopping:
                self._wake_event.clear()
                self._known_next = None
                try:
                    next_at = await self._claim_into(running, finished)
                except Exception:
                    logger.exception("worker iteration failed; retrying shortly")
                    next_at = self._clock.now() + timedelta(seconds=1)
                if self._should_stop():  # stop() may have run while we awaited
                    break
                now = self._clock.now()
                if next_at is not None and next_at <= now:
                    # never busy-wait: an alarm that is due but not claimable (its instance is
                    # busy in another worker) is looked at again after a growing pause; a
                    # storage change or a finished alarm still wakes the loop at once
                    blocked += 1
                    next_at = now + min(_MIN_IDLE * 2 ** min(blocked - 1, 16), _MAX_IDLE)
                else:
                    blocked = 0
                self._known_next = next_at
                await self._clock.sleep_until(next_at, self._wake_event)
        finally:
            # graceful: in-flight alarms finish (a cancelled worker cancels them instead,
            # and their leases expire so another worker runs them again)
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    async def _claim_into(
        self,
        running: set[asyncio.Task[None]],
        finished: Callable[[asyncio.Task[None]], None],
    ) -> datetime | None:
        """Start due alarms in free slots; the time to look again (None: only when woken)."""
        while True:
            free = self._concurrency - len(running)
            if free <= 0:
                return None  # a finishing alarm wakes the loop
            keys = await self._storage.claim_due(self._clock.now(), limit=free, lease=self._lease)
            for key in keys:
                task = asyncio.create_task(self._run_alarm(key), name=f"alarm {key.job}:{key.id}")
                running.add(task)
                task.add_done_callback(finished)
            if len(keys) < free:
                return await self._storage.next_alarm_at()


def _register_all(
    jobs: "Sequence[Registrable[R]]", deps: R, services: Services
) -> list[RegisteredJob]:
    registered: list[RegisteredJob] = []
    for job in jobs:
        registered.append(job.register_with(deps, services))
    return registered


def _default_random() -> Callable[[], float]:
    return random.SystemRandom().random
