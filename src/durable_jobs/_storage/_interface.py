"""
The storage protocol every backend implements (memory, SQLite, PostgreSQL).

Everything the engine knows about an instance lives in one `InstanceRecord` plus three
satellite collections (dead letters, seen event ids, queue items). Handlers change them only
inside `Storage.instance(key)`, which serializes access to that key and commits all changes
at once, or none of them.
"""

import enum
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Protocol

import attrs

from .._types import JsonValue


class JobKind(enum.Enum):
    """The four kinds of job; part of every instance's identity."""

    CONTINUOUS = "continuous"
    DEBOUNCE = "debounce"
    TASK = "task"
    WORKER_POOL = "worker_pool"


class InstanceStatus(enum.Enum):
    """Where an instance stands, as shown by `status` and the CLI."""

    ACTIVE = "active"
    """Alive: has state and/or an alarm, or waits for events."""
    FAILED = "failed"
    """Parked after its defect policy ran out; state kept, no alarm; resumable."""
    PAUSED = "paused"
    """A worker-pool partition that does not dequeue (events are kept)."""


@attrs.frozen
class InstanceKey:
    """Identity of one instance: `(kind, job name, id)`."""

    kind: JobKind
    job: str
    id: str


@attrs.frozen(kw_only=True)
class InstanceRecord:
    """
    The stored form of one instance.

    `state` is the user's state encoded by the converter (`None` when the instance has none).
    `meta` is the kind's own bookkeeping (counters, timestamps), encoded the same way.
    `attempt` is the number of the *next* execution attempt (1 = a fresh one);
    `retry_started_at` is when the first failed attempt of the current retry sequence started
    (for `Retry.max_duration`); `defects` counts consecutive defects (for the defect policy).
    """

    key: InstanceKey
    status: InstanceStatus = InstanceStatus.ACTIVE
    state: JsonValue = None
    meta: JsonValue = None
    alarm_at: datetime | None = None
    attempt: int = 1
    retry_started_at: datetime | None = None
    defects: int = 0
    last_error: str | None = None
    created_at: datetime
    updated_at: datetime


@attrs.frozen(kw_only=True)
class DeadLetter:
    """A final failure nobody handled, or a parked defect: nothing disappears silently."""

    id: str
    key: InstanceKey
    state: JsonValue
    meta: JsonValue = None
    """The kind's bookkeeping at the time (so `Engine.resume` can rebuild the instance)."""
    event: JsonValue = None
    error: str
    reason: str
    attempts: int
    at: datetime


@attrs.frozen(kw_only=True)
class QueueItem:
    """One event waiting in a worker-pool partition."""

    event_id: str
    event: JsonValue
    priority: int = 0
    partition_key: str | None = None
    enqueued_at: datetime
    seq: int = 0
    """Assigned by the backend on push: FIFO order within one priority."""


class InstanceTransaction(Protocol):
    """Serialized, atomic access to one instance (see `Storage.instance`)."""

    @property
    def key(self) -> InstanceKey:
        """The instance this transaction is about."""
        ...

    @property
    def record(self) -> InstanceRecord | None:
        """The record as it stands in this transaction (after `save`/`purge`), or None."""
        ...

    def save(self, record: InstanceRecord) -> None:
        """Insert or replace the record (and clear any alarm lease)."""
        ...

    def purge(self) -> None:
        """Delete the record, its alarm and its queue items (seen event ids are kept)."""
        ...

    def add_dead_letter(self, letter: DeadLetter) -> None:
        """Record a dead letter, committed with everything else."""
        ...

    def remove_dead_letter(self, letter_id: str) -> None:
        """Delete a dead letter (of any instance) with everything else; unknown ids are ignored."""
        ...

    async def has_seen(self, event_id: str) -> bool:
        """Whether `event_id` was already accepted by this instance (idempotency)."""
        ...

    def remember(self, event_id: str, at: datetime) -> None:
        """Remember `event_id` as accepted at `at`."""
        ...

    def queue_push(self, item: QueueItem) -> None:
        """Append an item to this instance's queue."""
        ...

    async def queue_peek(self) -> QueueItem | None:
        """The next item: highest priority first, then FIFO (lowest `seq`)."""
        ...

    async def queue_remove(self, event_id: str) -> bool:
        """Remove one queued item; False when it is not queued here."""
        ...

    async def queue_size(self) -> int:
        """How many items wait in this instance's queue."""
        ...


class Storage(Protocol):
    """What every backend provides. All methods are coroutines or async contexts."""

    def instance(self, key: InstanceKey) -> AbstractAsyncContextManager[InstanceTransaction]:
        """
        Serialized, atomic access to one instance.

        Blocks for the same key never overlap; changes commit together on clean exit and are
        discarded when the block raises.
        """
        ...

    async def read(self, key: InstanceKey) -> InstanceRecord | None:
        """A committed snapshot of one record, without taking the instance."""
        ...

    async def claim_due(
        self, now: datetime, *, limit: int, lease: timedelta
    ) -> Sequence[InstanceKey]:
        """Lease up to `limit` instances whose alarm is due at `now` and not leased."""
        ...

    async def next_alarm_at(self) -> datetime | None:
        """
        When `claim_due` can next return something, or None when no alarm is set.

        The earliest alarm time, where a leased instance counts from the later of its alarm
        and its lease expiry, so a worker sleeps while an alarm is in flight elsewhere.
        """
        ...

    async def list_instances(self, job: str | None = None) -> Sequence[InstanceRecord]:
        """Every record, optionally of one job, in key order."""
        ...

    async def dead_letters(self, job: str | None = None) -> Sequence[DeadLetter]:
        """Dead letters, oldest first, optionally of one job."""
        ...

    async def delete_dead_letter(self, letter_id: str) -> bool:
        """Remove one dead letter; False when there is none with that id."""
        ...

    async def forget_seen_before(self, cutoff: datetime) -> int:
        """Drop remembered event ids older than `cutoff`; returns how many."""
        ...

    async def wait_for_change(self) -> None:
        """
        Return when another process may have changed stored alarms (a hint to look again).

        A backend that only one process can use never returns (the engine wakes itself for
        changes made in its own process).
        """
        ...

    async def close(self) -> None:
        """Release connections and files."""
        ...
