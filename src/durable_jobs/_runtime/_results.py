"""
What client operations return (frozen values).

Client calls commit and return: they never wait for, nor run, user code. So a result says
what was stored and when a worker will act on it, never what the work came to; a caller
that needs to wait for the work uses the client's `wait_*` methods or `status`.
"""

from datetime import datetime
from typing import Literal, TypeAlias

import attrs

from .._contexts import FlushReason


@attrs.frozen(kw_only=True)
class StartResult:
    """`continuous.start`: whether the instance was created (an existing one is unchanged)."""

    created: bool
    next_run_at: datetime | None = None
    """When a worker runs it next (`start_immediately`: now)."""


@attrs.frozen(kw_only=True)
class TriggerResult:
    """`trigger`: False when the instance does not exist or is parked (nothing is created)."""

    triggered: bool
    after_current_run: bool = False
    """A run was in progress: the triggered one starts right after it ends."""


@attrs.frozen(kw_only=True)
class TerminateResult:
    """`terminate`: False when the instance did not exist."""

    terminated: bool
    reason: str | None = None


ContinuousStatusName: TypeAlias = Literal["scheduled", "running", "retrying", "failed", "not_found"]
"""Where a continuous instance stands (`running`: a worker runs it right now)."""


@attrs.frozen(kw_only=True)
class ContinuousStatus:
    """`continuous.status`."""

    status: ContinuousStatusName
    run_count: int = 0
    next_run_at: datetime | None = None
    attempt: int = 1
    last_error: str | None = None
    abandoned: bool = False
    """
    Its run was stopped (past its `timeout`) while a sync `execute` still runs in a thread:
    the instance stays held (`running`) until the thread returns; its result is discarded.
    """


@attrs.frozen(kw_only=True)
class AddResult:
    """`debounce.add`: the batch the event joined (a duplicate `event_id` changes nothing)."""

    created: bool
    """True when this event started a new batch."""
    batch_id: str | None
    """The batch the event is in; the id every retry of its flush sees (None for a duplicate)."""
    event_count: int
    """How many events that batch holds now."""
    will_flush_at: datetime | None
    """
    When that batch is due: its first event plus `flush_after`, or now once it is full or
    flushed by hand. It flushes then, or right after an earlier batch of the id finishes.
    """
    sealed: bool = False
    """This event filled the batch (`max_events`): it is sealed, the next event opens another."""
    duplicate: bool = False


@attrs.frozen(kw_only=True)
class FlushResult:
    """`debounce.flush`: whether an open batch was made due now."""

    requested: bool
    """False when there is no open batch (nothing was stored)."""
    batch_id: str | None = None
    event_count: int = 0


@attrs.frozen(kw_only=True)
class ClearResult:
    """`debounce.clear`: the batches discarded (those not started; a running flush goes on)."""

    cleared: bool
    discarded_batches: int = 0
    discarded_events: int = 0


BatchStage: TypeAlias = Literal["open", "queued", "flushing", "retrying", "failed"]
"""
Where one batch of a Debounce id stands: `open` takes events; `queued` is sealed and waits
for the batch before it; `flushing` runs now; `retrying` waits for its next attempt;
`failed` is parked (its flush raised until the defect policy ran out).
"""


@attrs.frozen(kw_only=True)
class BatchStatus:
    """One batch of a Debounce id's chain."""

    batch_id: str
    stage: BatchStage
    event_count: int
    started_at: datetime
    """When its first event arrived."""
    due_at: datetime | None
    """
    When it may flush: `open`, its own due time; `retrying`, the next attempt; otherwise None
    (`queued` flushes right after the batch before it).
    """
    reason: FlushReason | None = None
    """Why it flushes, once sealed."""


DebounceStatusName: TypeAlias = Literal["debouncing", "flushing", "retrying", "failed", "not_found"]
"""Where a debounce id stands, by its oldest batch (a flushed batch leaves nothing)."""


@attrs.frozen(kw_only=True)
class DebounceStatus:
    """`debounce.status`: the id's chain of batches, oldest (the one that flushes next) first."""

    status: DebounceStatusName
    batches: tuple[BatchStatus, ...] = ()
    next_flush_at: datetime | None = None
    """When a worker next flushes a batch of this id (None while one is flushing)."""
    attempt: int = 1
    """The attempt the oldest sealed batch is at."""
    last_error: str | None = None
    abandoned: bool = False
    """
    Its run was stopped (past its `timeout`) while a sync `execute` still runs in a thread:
    the instance stays held (`running`) until the thread returns; its result is discarded.
    """


SendStatus: TypeAlias = Literal["applied", "queued", "terminated", "duplicate"]
"""
What `send` did with an event: `applied` (folded by `on_event` now), `queued` (the task's
`execute` is running: it is folded right after that run, by the worker), `terminated`
(`on_event` ended the task), `duplicate` (a repeated `event_id`: nothing changed).
"""


@attrs.frozen(kw_only=True)
class SendResult:
    """`task.send`: what happened to the event, and the task's alarm afterwards."""

    status: SendStatus
    created: bool
    """True when this event created the task."""
    scheduled_at: datetime | None = None


TaskStatusName: TypeAlias = Literal[
    "scheduled", "idle", "running", "retrying", "failed", "not_found"
]
"""Where a task stands (`running`: a worker runs one of its callbacks right now)."""


@attrs.frozen(kw_only=True)
class TaskStatus:
    """`task.status`."""

    status: TaskStatusName
    scheduled_at: datetime | None = None
    event_count: int = 0
    execute_count: int = 0
    attempt: int = 1
    last_error: str | None = None
    queued_events: int = 0
    """Events sent during a run, waiting to be folded right after it."""
    abandoned: bool = False
    """
    Its run was stopped (past its `timeout`) while a sync `execute` still runs in a thread:
    the instance stays held (`running`) until the thread returns; its result is discarded.
    """


@attrs.frozen(kw_only=True)
class EnqueueResult:
    """`worker_pool.enqueue`: the event's id (a duplicate `event_id` is not queued again)."""

    event_id: str
    duplicate: bool = False


CancelStatus: TypeAlias = Literal["cancelled", "running", "not_found"]
"""What `cancel` found: a waiting event (removed), a running one (left alone), or none."""


@attrs.frozen(kw_only=True)
class CancelResult:
    """`worker_pool.cancel`: whether a waiting event was removed before it ran (again)."""

    cancelled: bool
    status: CancelStatus


@attrs.frozen(kw_only=True)
class PoolStatus:
    """`worker_pool.status`: the pool's events, across every worker process."""

    queued: int
    """Waiting to start for the first time."""
    running: int
    """Running right now (at most the pool's concurrency)."""
    retrying: int
    """Waiting for a later attempt (each holds its partition key)."""
    processed: int
    """Events that succeeded, in all."""
    paused: bool
    concurrency: int
    delayed: int = 0
    """Waiting for their first attempt until a `not_before` time still ahead."""
    abandoned: int = 0
    """
    Of the running ones, those whose run was stopped (timed out, or cancelled) while their
    sync `execute` still runs in a thread: their slot and key stay held until it returns.
    """
    cancelled: int = 0
    """Events cancelled (waiting ones removed, running ones stopped), in all."""

    @property
    def pending(self) -> int:
        """Every event not finished yet: queued, delayed, running and retrying."""
        return self.queued + self.delayed + self.running + self.retrying
