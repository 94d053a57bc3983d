"""What client operations return (frozen values)."""

from datetime import datetime
from typing import Literal, TypeAlias

import attrs

from .._contexts import FlushReason
from ._runner import Outcome


@attrs.frozen(kw_only=True)
class StartResult:
    """`continuous.start`: whether the instance was created (an existing one is unchanged)."""

    created: bool
    outcome: Outcome | None = None
    """The immediate run's outcome (`start_immediately=True` on a new instance)."""
    next_run_at: datetime | None = None


@attrs.frozen(kw_only=True)
class TriggerResult:
    """`trigger`: False when the instance does not exist (nothing is created)."""

    triggered: bool
    outcome: Outcome | None = None


@attrs.frozen(kw_only=True)
class TerminateResult:
    """`terminate`: False when the instance did not exist."""

    terminated: bool
    reason: str | None = None


ContinuousStatusName: TypeAlias = Literal["running", "retrying", "failed", "not_found"]
"""Where a continuous instance stands."""


@attrs.frozen(kw_only=True)
class ContinuousStatus:
    """`continuous.status`."""

    status: ContinuousStatusName
    run_count: int = 0
    next_run_at: datetime | None = None
    attempt: int = 1
    last_error: str | None = None


@attrs.frozen(kw_only=True)
class AddResult:
    """`debounce.add`: the batch after the event (a duplicate `event_id` changes nothing)."""

    created: bool
    """True when this event started a new batch."""
    event_count: int
    will_flush_at: datetime | None
    duplicate: bool = False
    flush: "FlushResult | None" = None
    """Set when the event reached `max_events` and the batch was flushed at once."""


@attrs.frozen(kw_only=True)
class FlushResult:
    """`debounce.flush`: whether a batch was flushed, and what the flush came to."""

    flushed: bool
    event_count: int = 0
    reason: FlushReason | None = None
    outcome: Outcome | None = None


@attrs.frozen(kw_only=True)
class ClearResult:
    """`debounce.clear`: whether a batch was discarded, and how many events it held."""

    cleared: bool
    discarded_events: int = 0


DebounceStatusName: TypeAlias = Literal["debouncing", "retrying", "failed", "not_found"]
"""Where a debounce instance stands (a flushed batch leaves nothing: `not_found`)."""


@attrs.frozen(kw_only=True)
class DebounceStatus:
    """`debounce.status`."""

    status: DebounceStatusName
    event_count: int = 0
    started_at: datetime | None = None
    will_flush_at: datetime | None = None
    attempt: int = 1
    last_error: str | None = None


@attrs.frozen(kw_only=True)
class SendResult:
    """`task.send`: whether the task was created, and its alarm afterwards."""

    created: bool
    scheduled_at: datetime | None
    duplicate: bool = False
    terminated: bool = False


TaskStatusName: TypeAlias = Literal["scheduled", "idle", "retrying", "failed", "not_found"]
"""Where a task stands."""


@attrs.frozen(kw_only=True)
class TaskStatus:
    """`task.status`."""

    status: TaskStatusName
    scheduled_at: datetime | None = None
    event_count: int = 0
    execute_count: int = 0
    attempt: int = 1
    last_error: str | None = None


@attrs.frozen(kw_only=True)
class EnqueueResult:
    """`worker_pool.enqueue`: where the event went (a duplicate `event_id` is not queued again)."""

    event_id: str
    partition: int
    duplicate: bool = False


@attrs.frozen(kw_only=True)
class CancelResult:
    """`worker_pool.cancel`: whether a queued event was removed before it ran."""

    cancelled: bool
    partition: int | None = None


PartitionStatusName: TypeAlias = Literal["processing", "idle", "paused", "failed"]
"""Where one pool instance stands."""


@attrs.frozen(kw_only=True)
class PartitionStatus:
    """One pool instance."""

    partition: int
    status: PartitionStatusName
    pending: int
    processed: int


@attrs.frozen(kw_only=True)
class PoolStatus:
    """`worker_pool.status`: every instance, and totals."""

    partitions: tuple[PartitionStatus, ...]
    pending: int
    processed: int
    paused: bool
