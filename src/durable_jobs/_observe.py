"""
Observability: every outcome emits a `JobEvent`.

Events go to the observers given to `Engine(observers=[...])` and to the stdlib logger
`durable_jobs` (failures at WARNING, dead letters at ERROR, the rest at DEBUG/INFO).

An event emitted while a worker runs something carries that run's timing and worker: the
worker marks each run's task with a `RunInfo` (a context variable, so the run's sync
callbacks in the thread pool see it too), and the sink fills `duration`, `queue_latency`,
`run_count` and `worker_id` from it.
"""

import itertools
import logging
import os
import socket
from collections.abc import Sequence
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import Literal, Protocol, TypeAlias

import attrs

from ._storage._interface import Claim, ItemClaim, JobKind


EventType: TypeAlias = Literal[
    "job.started",
    "job.executed",
    "job.failed",
    "job.retry_exhausted",
    "job.terminated",
    "job.dead_lettered",
    "job.lease_lost",
    "job.cancelled",
    "debounce.started",
    "debounce.flushed",
    "task.scheduled",
    "pool.enqueued",
]
"""The kinds of events the engine emits."""

logger = logging.getLogger("durable_jobs")


@attrs.frozen(kw_only=True)
class JobEvent:
    """
    One observable fact about an instance.

    Fields that do not apply to an event type are None: `error` is the real error text of
    `job.failed`/`job.retry_exhausted`/`job.dead_lettered`; `will_retry` and `retry_at` say
    whether and when a failed execution runs again; `reason` is a failure, flush, termination
    or schedule-trigger reason. `job.lease_lost` reports a run whose result was discarded
    because it no longer held its instance (its lease expired, or a client call such as
    `terminate` ended it): nothing of that run was written.
    """

    type: EventType
    kind: JobKind
    job: str
    id: str
    at: datetime
    attempt: int | None = None
    error: str | None = None
    will_retry: bool | None = None
    retry_at: datetime | None = None
    reason: str | None = None
    event_count: int | None = None
    scheduled_at: datetime | None = None
    event_id: str | None = None
    batch_id: str | None = None
    """The Debounce batch an event is about (`debounce.started`, `debounce.flushed`, ...)."""
    defect: bool = False
    duration: timedelta | None = None
    """
    For an event of a run: how long the run had taken when it emitted the event (engine
    clock), so a `job.executed` or `job.failed` event gives the execution's duration.
    None for an event of a client call.
    """
    queue_latency: timedelta | None = None
    """
    For an event of a run: how late the run started after its work fell due (its alarm, or
    when its pool event became available); zero when a worker was waiting for it.
    """
    run_count: int | None = None
    """
    For an event of a run: how many times this piece of work (a batch, a pool event, a run
    of an instance) has been run, this run included: 1, then 2 on the first retry, ... .
    Failed attempts and defect retries both count.
    """
    worker_id: str | None = None
    """For an event of a run: the id of the worker that ran it (`Engine.worker_id`)."""


class Observer(Protocol):
    """A callback receiving every `JobEvent`; it must not raise (errors are logged)."""

    def __call__(self, event: JobEvent, /) -> None:
        """Receive one event."""
        ...


_LEVELS: dict[EventType, int] = {
    "job.failed": logging.WARNING,
    "job.retry_exhausted": logging.WARNING,
    "job.dead_lettered": logging.ERROR,
    "job.lease_lost": logging.WARNING,
    "job.started": logging.INFO,
    "job.terminated": logging.INFO,
}


@attrs.frozen(kw_only=True)
class RunInfo:
    """The run a worker's task is running now (engine-internal; see the module docstring)."""

    worker_id: str
    kind: JobKind
    job: str
    id: str
    attempt: int
    run_count: int
    started_at: datetime
    due_at: datetime | None


_CURRENT_RUN: ContextVar[RunInfo | None] = ContextVar("durable_jobs_run", default=None)

_ENGINES = itertools.count(1)


def new_worker_id() -> str:
    """`host:pid` for the first engine of a process, `host:pid:n` for the n-th after it."""
    base = f"{socket.gethostname()}:{os.getpid()}"
    n = next(_ENGINES)
    return base if n == 1 else f"{base}:{n}"


def current_run() -> RunInfo | None:
    """The run the calling task (or a thread running one of its callbacks) belongs to."""
    return _CURRENT_RUN.get()


class EventSink:
    """Fans events out to observers and the logger (engine-internal)."""

    __slots__ = ("_observers", "worker_id")

    def __init__(self, observers: Sequence[Observer], worker_id: str = "") -> None:
        self._observers = tuple(observers)
        self.worker_id: str = worker_id or new_worker_id()
        """The id events of this engine's runs carry, and its log lines."""

    def enter_run(self, work: Claim | ItemClaim, started_at: datetime) -> None:
        """Mark the calling task as running `work`, claimed and started at `started_at`."""
        if isinstance(work, Claim):
            key, record = work.key, work.record
            attempt, defects, due_at = record.attempt, record.defects, record.alarm_at
        else:
            key, item = work.pool, work.item
            attempt, defects = item.attempt, item.defects
            due_at = item.available_at or item.enqueued_at
        _CURRENT_RUN.set(
            RunInfo(
                worker_id=self.worker_id,
                kind=key.kind,
                job=key.job,
                id=key.id,
                attempt=attempt,
                run_count=attempt + defects,
                started_at=started_at,
                due_at=due_at,
            )
        )

    def emit(self, event: JobEvent) -> None:
        """Deliver `event` everywhere; an observer that raises is logged, never propagated."""
        run = _CURRENT_RUN.get()
        if run is not None:
            event = _of_run(event, run)
        level = _LEVELS.get(event.type, logging.DEBUG)
        if logger.isEnabledFor(level):
            logger.log(level, "%s", _describe(event), extra={"job_event": event})
        for observer in self._observers:
            try:
                observer(event)
            except Exception:
                logger.exception("observer %r failed on %s", observer, event.type)


def _of_run(event: JobEvent, run: RunInfo) -> JobEvent:
    """`event` with the timing and worker of the run that emitted it."""
    latency = None
    if run.due_at is not None:
        latency = max(run.started_at - run.due_at, timedelta(0))
    return attrs.evolve(
        event,
        duration=max(event.at - run.started_at, timedelta(0)),
        queue_latency=latency,
        run_count=run.run_count,
        worker_id=run.worker_id,
    )


def _describe(event: JobEvent) -> str:
    parts = [f"{event.type} {event.kind.value}:{event.job}:{event.id}"]
    if event.attempt is not None:
        parts.append(f"attempt={event.attempt}")
    if event.reason is not None:
        parts.append(f"reason={event.reason}")
    if event.will_retry is not None:
        parts.append(f"will_retry={event.will_retry}")
    if event.retry_at is not None:
        parts.append(f"retry_at={event.retry_at.isoformat()}")
    if event.event_count is not None:
        parts.append(f"events={event.event_count}")
    if event.duration is not None:
        parts.append(f"duration={event.duration.total_seconds():.3f}s")
    if event.error is not None:
        parts.append(f"error={event.error}")
    return " ".join(parts)
