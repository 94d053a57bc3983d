"""
The storage protocol every backend implements (memory, SQLite, PostgreSQL).

Everything the engine knows about an instance lives in one `InstanceRecord` plus three
satellite collections (dead letters, seen event ids, queue items). Client calls change them
inside `Storage.instance(key)`: one short, serialized, all-or-nothing block.

User code never runs inside a block. A worker *claims* due work (`claim_due`, `claim_items`):
one short transaction that puts a lease (a random token and an expiry) on the instance or
the pool item. It runs the user's code holding nothing but that lease, renews the lease
while the code runs (`renew`), and applies the outcome in a second block that is *fenced*
(`InstanceTransaction.fence`, `Storage.finish_item`): it commits only if the token still
holds the lease, so a run whose lease was lost (expired, or revoked by a client's
`terminate`) never writes.

Lease expiry is measured by the storage's own clock — the database server's on PostgreSQL
(immune to clock skew between hosts), the host's wall clock on SQLite and in memory —
never by the engine clock, which only decides when alarms are due.
"""

import enum
from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Literal, Protocol, TypeAlias

import attrs

from .._errors import StorageError
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
    """A worker pool that does not start events (queued events are kept)."""


@attrs.frozen
class InstanceKey:
    """Identity of one instance: `(kind, job name, id)`."""

    kind: JobKind
    job: str
    id: str


@attrs.frozen(kw_only=True)
class Lease:
    """
    A worker's claim on an instance or a pool item while it runs user code for it.

    `expires_at` is in the storage's lease clock (the database server's clock on
    PostgreSQL). Only live leases are ever reported: an expired one reads as no lease.
    """

    token: str
    expires_at: datetime
    abandoned: bool = False
    """
    The run holding it was stopped (it timed out, or its pool event was cancelled) while a
    sync callback of it still runs in a thread: its result will be discarded, and the lease
    is kept, renewed, until the thread returns (see `Storage.abandon`). A claim's new lease
    is never abandoned.
    """


@attrs.frozen(kw_only=True)
class InstanceRecord:
    """
    The stored form of one instance.

    `state` is the user's state encoded by the converter (`None` when the instance has none).
    `meta` is the kind's own bookkeeping (counters, timestamps), encoded the same way.
    `alarm_at` is when a worker should next look at the instance (engine clock).
    `attempt` is the number of the *next* execution attempt (1 = a fresh one);
    `retry_started_at` is when the first failed attempt of the current retry sequence started
    (for `Retry.max_duration`); `defects` counts consecutive defects (for the defect policy).
    `lease` is set while a worker runs user code for the instance; saving a record never
    changes it (claims, renewals and fenced finishes do).
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
    lease: Lease | None = None
    unreadable: str | None = None
    """
    Set when the backend could not read part of the stored row (JSON that does not parse,
    an unknown status, a garbled time): what and why, e.g. `state: invalid JSON (...)`.
    The fields it names hold a stand-in (JSON text that does not parse is given as a JSON
    string; a status this version does not know reads as `FAILED`; a time or counter that
    is not an integer reads as None, the epoch or 1). A worker that claims such an
    instance parks it at once. Saving a record whose `unreadable` is set rewrites neither
    `state` nor `meta`: the stored text stays as it was, for an operator to repair.
    """


@attrs.frozen(kw_only=True)
class DeadLetter:
    """A final failure nobody handled, or a parked defect: nothing disappears silently."""

    id: str
    key: InstanceKey
    state: JsonValue
    meta: JsonValue = None
    """The kind's bookkeeping at the time (so `Engine.resume` can rebuild the work)."""
    event: JsonValue = None
    error: str
    reason: str
    attempts: int
    at: datetime


@attrs.frozen(kw_only=True)
class QueueItem:
    """
    One entry of an instance's queue: a worker-pool event, a sealed Debounce batch waiting
    for the one before it, or a Task event sent while its `execute` was running.

    Pool events carry their own retry bookkeeping (`attempt`, `retry_started_at`,
    `defects`, `last_error`), the time they may run again (`available_at`) and their own
    lease; queue entries of other kinds leave those at their defaults.
    """

    event_id: str
    event: JsonValue
    priority: int = 0
    partition_key: str | None = None
    enqueued_at: datetime
    seq: int = 0
    """Assigned by the backend on push: FIFO order within one priority."""
    available_at: datetime | None = None
    """Not before this time (engine clock); None means as soon as it is enqueued."""
    attempt: int = 1
    retry_started_at: datetime | None = None
    defects: int = 0
    last_error: str | None = None
    lease: Lease | None = None
    cancel_requested: bool = False
    """
    `Storage.cancel_item` found the pool event running and asked it to stop: it is never
    kept for a retry, and once its lease is gone it is removed as cancelled.
    """

    unreadable: str | None = None
    """
    Set when the backend could not parse the stored `event` JSON (what and why); `event`
    is then the stored text as a JSON string. The runtime dead-letters such an event.
    """


@attrs.frozen(kw_only=True)
class PoolRate:
    """
    A pool's rate limit: at most `limit` of its events start per `period` (engine clock).

    Every claim of an event is a start (a retry too). With `per_key`, each partition key
    has a budget of its own, and the events without a key share one; otherwise the whole
    pool shares one. A start counts while it is less than `period` old: in any window of
    length `period`, at most `limit` starts.
    """

    limit: int
    period: timedelta
    per_key: bool = False

    def forget_before(self, now: datetime) -> datetime:
        """
        Starts at or before this time may be deleted: never counted again by any claim.

        A claim counts every start later than its `now - period`, also starts recorded
        with a later time than its own `now`: claims of several processes take their `now`
        before they wait for the pool's claim lock, so a later claim may carry an earlier
        time. Deleting starts only well after they stop counting (two periods, at least a
        minute) keeps such a claim from missing one.
        """
        return now - self.period - max(self.period, timedelta(minutes=1))

    def bucket(self, partition_key: str | None) -> str:
        """The budget an event with `partition_key` draws from (stored with each start)."""
        if not self.per_key:
            return "*"
        return "-" if partition_key is None else f"k:{partition_key}"


@attrs.frozen(kw_only=True)
class Claim:
    """A due instance a worker now holds a lease on, with the record as it was claimed."""

    key: InstanceKey
    token: str
    record: InstanceRecord


@attrs.frozen(kw_only=True)
class ItemClaim:
    """A pool event a worker now holds a lease on, with the event as it was claimed."""

    pool: InstanceKey
    token: str
    item: QueueItem


@attrs.frozen(kw_only=True)
class ItemRetry:
    """A pool event's next attempt: it stays at its place in the queue (its key stays held)."""

    available_at: datetime
    attempt: int
    retry_started_at: datetime | None
    defects: int
    last_error: str | None


@attrs.frozen(kw_only=True)
class ItemFinish:
    """
    The one write of a pool event's run: remove it (`retry=None`) or keep it for `retry`.

    `letters` are committed with it; `processed` is added to the pool's processed counter,
    which the storage keeps as the integer `processed` of the pool record's `meta` object.
    """

    event_id: str
    token: str
    retry: ItemRetry | None = None
    letters: tuple[DeadLetter, ...] = ()
    processed: int = 0
    cancelled: bool = False
    """
    The run stopped because its cancel was requested: the event is removed (`retry` is
    ignored) and counted in the integer `cancelled` of the pool record's `meta`. A `retry`
    of an event whose cancel was requested is never kept either: it is removed and counted
    the same way.
    """


CancelOutcome: TypeAlias = Literal["cancelled", "running", "not_found"]
"""
What `Storage.cancel_item` found: a waiting event removed, a running one asked to stop
(its cancel is requested), or none.
"""


@attrs.frozen(kw_only=True)
class PoolCounts:
    """How many events of one pool wait, run, and wait for a retry."""

    queued: int
    """Waiting to start for the first time."""
    running: int
    """Held by a live lease right now."""
    retrying: int
    """Waiting for a later attempt."""
    delayed: int = 0
    """Waiting for a first attempt whose `available_at` is later than `now` (when given)."""
    abandoned: int = 0
    """Of the running ones, those whose lease is abandoned (see `Lease.abandoned`)."""


class LeaseLostError(StorageError):
    """A fenced write found its lease gone (expired, revoked or taken): nothing was written."""


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
        """Insert or replace the record; its lease is kept as it is (`record.lease` is ignored)."""
        ...

    def purge(self) -> None:
        """Delete the record, its lease and its queue items (seen event ids are kept)."""
        ...

    def fence(self, token: str, *, release: bool = True) -> bool:
        """
        Make this block the write of the run holding `token`.

        Returns whether the lease as read at the start of the block is `token`'s. Whatever it
        returns, the commit re-checks atomically that `token` still holds a live lease and
        raises `LeaseLostError`, writing nothing, when it does not. With `release` the
        commit also ends the lease.
        """
        ...

    def revoke_lease(self) -> None:
        """End any lease on the instance at commit: the running finish will be refused."""
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
        Serialized, atomic access to one instance: a short block, never around user code.

        Blocks for the same key never overlap; changes commit together on clean exit and are
        discarded when the block raises.
        """
        ...

    async def read(self, key: InstanceKey) -> InstanceRecord | None:
        """A committed snapshot of one record, without taking the instance."""
        ...

    async def claim_due(self, now: datetime, *, limit: int, lease: timedelta) -> Sequence[Claim]:
        """
        Lease up to `limit` active instances whose alarm is due at `now` (engine clock) and
        that hold no live lease; each gets a new token, valid for `lease` (lease clock).

        Raises `SchemaMismatchError` when the stored schema is not this version's.
        """
        ...

    async def claim_items(
        self,
        pools: Mapping[InstanceKey, int],
        now: datetime,
        *,
        limit: int,
        lease: timedelta,
        rates: Mapping[InstanceKey, PoolRate] | None = None,
    ) -> Sequence[ItemClaim]:
        """
        Lease up to `limit` ready events of the given pools (pool key -> concurrency).

        Ready: the pool is not paused, fewer than its concurrency of its events hold a live
        lease, the event holds none, its `available_at` has come, and no earlier event with
        the same `partition_key` is still queued (one key, one event at a time, in FIFO order).
        Higher priority first, then FIFO. Raises `SchemaMismatchError` like `claim_due`.

        A pool in `rates` also needs budget: fewer than `rate.limit` starts (claims) of its
        events at engine times after `now - rate.period` (later than `now` too: another
        process's claim may have taken a later `now`), per partition key with `per_key`;
        each claim records a start at `now`, and starts are forgotten after
        `rate.forget_before(now)`. The budget holds across every process, like concurrency.
        An event whose cancel was requested and whose lease is gone (its worker died) is not
        claimed: it is removed and counted as cancelled.
        """
        ...

    async def renew(self, tokens: Collection[str], lease: timedelta) -> frozenset[str]:
        """Extend the live leases of `tokens` by `lease` from now; returns those renewed."""
        ...

    async def release(self, tokens: Collection[str]) -> None:
        """End the leases of `tokens` without writing anything else (a worker stopping)."""
        ...

    async def next_alarm_at(
        self,
        pools: Mapping[InstanceKey, int],
        rates: Mapping[InstanceKey, PoolRate] | None = None,
    ) -> datetime | None:
        """
        When `claim_due` or `claim_items` (for `pools`) can next return something, or None.

        Work held by a live lease is not counted: a worker looks again when it finishes (or
        polls for expired leases on its own). For a pool in `rates`, an event is ready no
        earlier than its budget allows one more start: the `limit`-th latest start of its
        budget plus the `period`.
        """
        ...

    async def push_items(
        self, pool: InstanceKey, items: Sequence[QueueItem], *, now: datetime
    ) -> Sequence[bool]:
        """
        Queue events on a pool in one transaction; for each, False when its `event_id` was
        seen by the pool before (nothing is queued for it). Accepted ids are remembered, and
        the pool's record is created (active) when it has none.
        """
        ...

    async def finish_item(self, pool: InstanceKey, finish: ItemFinish) -> None:
        """
        The fenced write of a pool event's run; `LeaseLostError` (nothing written) when the
        token no longer holds the event's lease.
        """
        ...

    async def read_item(self, pool: InstanceKey, event_id: str) -> QueueItem | None:
        """One of the pool's events as stored (with its lease while it runs), or None."""
        ...

    async def cancel_item(self, pool: InstanceKey, event_id: str) -> CancelOutcome:
        """
        Remove a pool event that is not running (queued, or waiting for a retry), counting
        it in the pool's `cancelled` counter; a running one gets `cancel_requested` instead
        ("running"), and its worker learns it through `cancel_requests`.
        """
        ...

    async def cancel_requests(self, tokens: Collection[str]) -> frozenset[str]:
        """Of `tokens`, those whose pool event holds that live lease and was asked to stop."""
        ...

    async def abandon(self, tokens: Collection[str]) -> None:
        """
        Mark the live leases of `tokens` abandoned (see `Lease.abandoned`): their runs were
        stopped while a thread of theirs still runs. Renewals keep the mark; claims clear it.
        """
        ...

    async def pool_counts(self, pool: InstanceKey, now: datetime | None = None) -> PoolCounts:
        """
        How many of the pool's events are queued, running and waiting for a retry; with
        `now` (engine clock), first attempts not available before a later time are counted
        as `delayed` instead of `queued`.
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
        """
        Drop remembered event ids accepted before `cutoff` (strictly); returns how many.

        Never dropped, whatever their age: an id still queued under its key (an item with
        that event id: a waiting pool event, a Task event sent during a run), and every id
        of a Debounce key that has a record (its open batch may hold the event, and a
        repeated id must not be folded twice). The worker calls this periodically with
        `Engine(event_id_retention=...)`.
        """
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
