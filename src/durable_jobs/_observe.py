"""
Observability: every outcome emits a `JobEvent`.

Events go to the observers given to `Engine(observers=[...])` and to the stdlib logger
`durable_jobs` (failures at WARNING, dead letters at ERROR, the rest at DEBUG/INFO).
"""

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Literal, Protocol, TypeAlias

import attrs

from ._storage._interface import JobKind


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


class EventSink:
    """Fans events out to observers and the logger (engine-internal)."""

    __slots__ = ("_observers",)

    def __init__(self, observers: Sequence[Observer]) -> None:
        self._observers = tuple(observers)

    def emit(self, event: JobEvent) -> None:
        """Deliver `event` everywhere; an observer that raises is logged, never propagated."""
        level = _LEVELS.get(event.type, logging.DEBUG)
        if logger.isEnabledFor(level):
            logger.log(level, "%s", _describe(event), extra={"job_event": event})
        for observer in self._observers:
            try:
                observer(event)
            except Exception:
                logger.exception("observer %r failed on %s", observer, event.type)


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
    if event.error is not None:
        parts.append(f"error={event.error}")
    return " ".join(parts)
