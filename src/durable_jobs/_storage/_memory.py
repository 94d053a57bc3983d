"""
`MemoryStorage`: the storage protocol in process memory (tests, demos).

Every change made through `MemoryStorage.instance(key)` is buffered in the transaction and
applied in one synchronous step when the block exits cleanly (so no other coroutine can see
half of it), or dropped when the block raises. Claims, renewals and fenced finishes are
synchronous steps too, each under one `threading.RLock`, so callers in any thread and on any
event loop (a worker, a sync client, one `asyncio.run` per request) see whole steps only,
and the per-key locks of the blocks are ones any loop can wait for. JSON values are copied
on the way in and on the way out: a caller mutating a dict it saved, or one it read, never
changes what is stored. Leases expire by the host's wall clock, like SQLite's.
"""

import asyncio
import bisect
import functools
import heapq
import inspect
import itertools
import threading
import uuid
from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

import attrs

from ._buffered import BufferedTransaction, Changes
from ._buffered import queue_rank as _queue_rank
from ._copy import copy_item as _copy_item
from ._copy import copy_letter as _copy_letter
from ._copy import copy_record as _copy_record
from ._interface import (
    CancelOutcome,
    Claim,
    DeadLetter,
    InstanceKey,
    InstanceRecord,
    InstanceStatus,
    InstanceTransaction,
    ItemClaim,
    ItemFinish,
    JobKind,
    Lease,
    LeaseLostError,
    PoolCounts,
    PoolRate,
    QueueItem,
    Storage,
)
from ._keylocks import KeyLocks


_KeyOrder = tuple[str, str, str]

_MUTEX = threading.RLock()
"""
Held by every step on the data of any `MemoryStorage` (see `_guard_steps`): callers may be
in any thread. One for all of them: a memory storage serves tests and demos, not load.
"""


def _order(key: InstanceKey) -> _KeyOrder:
    """Key order everywhere: kind value, job name, id."""
    return (key.kind.value, key.job, key.id)


def _lease_now() -> datetime:
    return datetime.now(UTC)


def _live(lease: Lease | None, now: datetime) -> Lease | None:
    return lease if lease is not None and lease.expires_at > now else None


class _Queue:
    """One instance's committed queue, kept sorted by `_queue_rank` (peek is O(1))."""

    __slots__ = ("_by_key", "_items", "_ranks")

    def __init__(self) -> None:
        self._ranks: list[tuple[int, int, str]] = []
        self._items: dict[str, QueueItem] = {}
        # partition key -> (seq, event id) in FIFO order: the first one is the key's head
        self._by_key: dict[str, list[tuple[int, str]]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._items

    def get(self, event_id: str) -> QueueItem | None:
        return self._items.get(event_id)

    def items(self) -> Collection[QueueItem]:
        return self._items.values()

    def push(self, item: QueueItem) -> None:
        self.remove(item.event_id)
        self._items[item.event_id] = item
        bisect.insort(self._ranks, (*_queue_rank(item), item.event_id))
        if item.partition_key is not None:
            bisect.insort(
                self._by_key.setdefault(item.partition_key, []), (item.seq, item.event_id)
            )

    def replace(self, item: QueueItem) -> None:
        """Store a changed version of an item already queued (same seq and priority)."""
        self._items[item.event_id] = item

    def remove(self, event_id: str) -> QueueItem | None:
        item = self._items.pop(event_id, None)
        if item is None:
            return None
        del self._ranks[bisect.bisect_left(self._ranks, (*_queue_rank(item), event_id))]
        if item.partition_key is not None:
            same = self._by_key[item.partition_key]
            del same[bisect.bisect_left(same, (item.seq, event_id))]
            if not same:
                del self._by_key[item.partition_key]
        return item

    def first(self, skip: AbstractSet[str]) -> QueueItem | None:
        """The first item whose event id is not in `skip` (usually the very first one)."""
        for _, _, event_id in self._ranks:
            if event_id not in skip:
                return self._items[event_id]
        return None

    def in_order(self) -> list[QueueItem]:
        """Every item, highest priority first, then FIFO."""
        return [self._items[event_id] for _, _, event_id in self._ranks]

    def is_key_head(self, item: QueueItem) -> bool:
        """Whether no earlier item shares `item`'s partition key."""
        if item.partition_key is None:
            return True
        return self._by_key[item.partition_key][0][1] == item.event_id


class _Store:
    """The committed data of one `MemoryStorage` (shared with its transactions)."""

    def __init__(self) -> None:
        self.records: dict[InstanceKey, InstanceRecord] = {}
        self.leases: dict[InstanceKey, Lease] = {}
        # token -> (instance, event id of a pool item or None for the instance itself)
        self.tokens: dict[str, tuple[InstanceKey, str | None]] = {}
        # (alarm_at, key order, tie-breaker, key); entries that no longer match are stale
        self.alarms: list[tuple[datetime, _KeyOrder, int, InstanceKey]] = []
        self.alarm_ties = itertools.count()
        self.dead: dict[str, DeadLetter] = {}
        self.seen: dict[InstanceKey, dict[str, datetime]] = {}
        self.queues: dict[InstanceKey, _Queue] = {}
        self.locks: KeyLocks[InstanceKey] = KeyLocks()
        self.last_seq = 0
        # pool -> rate budget -> engine times of the starts still counted, oldest first
        self.starts: dict[InstanceKey, dict[str, list[datetime]]] = {}

    def apply(self, key: InstanceKey, changes: Changes) -> None:
        """Apply one block's changes in one synchronous step (no coroutine sees half)."""
        if changes.fence is not None:
            lease = _live(self.leases.get(key), _lease_now())
            if lease is None or lease.token != changes.fence:
                msg = (
                    f"the lease of {key.kind.value}:{key.job}:{key.id} was lost before its"
                    " finish; nothing was written"
                )
                raise LeaseLostError(msg)
            if changes.release:
                self.drop_lease(key)
        if changes.revoke:
            self.drop_lease(key)
        if changes.record_changed:
            self.set_record(key, changes.record)
        pushed: list[QueueItem] = []
        for item in changes.pushed:  # numbered in push order, after every stored item
            self.last_seq += 1
            pushed.append(attrs.evolve(item, seq=self.last_seq, lease=None, cancel_requested=False))
        self.apply_queue(key, purged=changes.queue_purged, removed=changes.removed, pushed=pushed)
        for letter_id in changes.letters_removed:
            self.dead.pop(letter_id, None)
        self.apply_satellites(key, changes.letters, dict(changes.remembered))

    def drop_lease(self, key: InstanceKey) -> None:
        lease = self.leases.pop(key, None)
        if lease is not None:
            self.tokens.pop(lease.token, None)

    def with_lease(self, record: InstanceRecord, now: datetime) -> InstanceRecord:
        return attrs.evolve(_copy_record(record), lease=_live(self.leases.get(record.key), now))

    def has_seen(self, key: InstanceKey, event_id: str) -> bool:
        seen = self.seen.get(key)
        return seen is not None and event_id in seen

    def set_record(self, key: InstanceKey, record: InstanceRecord | None) -> None:
        if record is None:
            self.records.pop(key, None)
            self.drop_lease(key)
            return
        self.records[key] = attrs.evolve(record, lease=None)
        if record.alarm_at is not None:
            heapq.heappush(self.alarms, (record.alarm_at, _order(key), next(self.alarm_ties), key))
            if len(self.alarms) > 2 * len(self.records) + 64:
                self.rebuild_alarms()

    def rebuild_alarms(self) -> None:
        self.alarms = [
            (r.alarm_at, _order(k), next(self.alarm_ties), k)
            for k, r in self.records.items()
            if r.alarm_at is not None
        ]
        heapq.heapify(self.alarms)

    def drop_stale_alarms(self) -> None:
        while self.alarms:
            at, _, _, key = self.alarms[0]
            record = self.records.get(key)
            if record is not None and record.alarm_at == at:
                return
            heapq.heappop(self.alarms)

    def apply_queue(
        self,
        key: InstanceKey,
        *,
        purged: bool,
        removed: AbstractSet[str],
        pushed: Sequence[QueueItem],
    ) -> None:
        if purged:
            queue = self.queues.pop(key, None)
            if queue is not None:
                for item in queue.items():
                    self.forget_item_lease(item)
        queue = self.queues.get(key)
        if queue is not None:
            for event_id in removed:
                gone = queue.remove(event_id)
                if gone is not None:
                    self.forget_item_lease(gone)
        if pushed:
            queue = self.queues.setdefault(key, _Queue())
            for item in pushed:
                queue.push(item)
        if queue is not None and not queue:
            del self.queues[key]

    def forget_item_lease(self, item: QueueItem) -> None:
        if item.lease is not None:
            self.tokens.pop(item.lease.token, None)

    def apply_satellites(
        self, key: InstanceKey, letters: Sequence[DeadLetter], seen: dict[str, datetime]
    ) -> None:
        for letter in letters:
            self.dead[letter.id] = letter
        if seen:
            self.seen.setdefault(key, {}).update(seen)

    def is_active(self, pool: InstanceKey) -> bool:
        record = self.records.get(pool)
        return record is None or record.status is InstanceStatus.ACTIVE

    def ready_items(
        self,
        pool: InstanceKey,
        concurrency: int,
        now: datetime,
        lease_now: datetime,
        rate: PoolRate | None = None,
    ) -> list[QueueItem]:
        """The pool's events a claim may take now, in claim order, at most the free slots."""
        queue = self.queues.get(pool)
        if queue is None or not self.is_active(pool):
            return []
        items = queue.in_order()
        running = sum(1 for item in items if _live(item.lease, lease_now) is not None)
        budgets = {} if rate is None else self.budgets(pool, rate, now)
        ready: list[QueueItem] = []
        for item in items:
            if running + len(ready) >= concurrency:
                break
            if (
                _live(item.lease, lease_now) is None
                and not item.cancel_requested
                and (item.available_at is None or item.available_at <= now)
                and queue.is_key_head(item)
            ):
                if rate is not None:
                    bucket = rate.bucket(item.partition_key)
                    left = budgets.get(bucket, rate.limit)
                    if left <= 0:
                        continue
                    budgets[bucket] = left - 1
                ready.append(item)
        return ready

    def budgets(self, pool: InstanceKey, rate: PoolRate, now: datetime) -> dict[str, int]:
        """How many more starts each budget of the pool allows at `now` (others: all)."""
        cutoff = now - rate.period
        left: dict[str, int] = {}
        for bucket, starts in list(self.starts.get(pool, {}).items()):
            del starts[: bisect.bisect_right(starts, rate.forget_before(now))]
            left[bucket] = rate.limit - (len(starts) - bisect.bisect_right(starts, cutoff))
        return left

    def record_start(self, pool: InstanceKey, bucket: str, now: datetime) -> None:
        bisect.insort(self.starts.setdefault(pool, {}).setdefault(bucket, []), now)

    def reopens_at(self, pool: InstanceKey, rate: PoolRate, bucket: str) -> datetime | None:
        """When the budget allows one more start (None: it has room whatever the time)."""
        starts = self.starts.get(pool, {}).get(bucket, [])
        if len(starts) < rate.limit:
            return None
        return starts[-rate.limit] + rate.period

    def drop_cancelled(self, pool: InstanceKey, lease_now: datetime) -> None:
        """Remove the events asked to stop whose worker is gone (their lease expired)."""
        queue = self.queues.get(pool)
        if queue is None:
            return
        gone = [
            item
            for item in queue.items()
            if item.cancel_requested and _live(item.lease, lease_now) is None
        ]
        for item in gone:
            self.forget_item_lease(item)
            queue.remove(item.event_id)
        if gone:
            self.count(pool, "cancelled", len(gone))
        if not queue:
            del self.queues[pool]

    def count(self, pool: InstanceKey, field: str, amount: int) -> None:
        """Add `amount` to the integer `field` of the pool record's meta."""
        record = self.records.get(pool)
        if record is None or not amount:
            return
        meta = record.meta if isinstance(record.meta, dict) else {}
        count = meta.get(field, 0)
        total = (count if isinstance(count, int) else 0) + amount
        self.records[pool] = attrs.evolve(record, meta={**meta, field: total})

    def next_ready_at(
        self,
        pool: InstanceKey,
        concurrency: int,
        lease_now: datetime,
        rate: PoolRate | None = None,
    ) -> datetime | None:
        """When the pool's next event may be claimed (None: none, or every slot is busy)."""
        queue = self.queues.get(pool)
        if queue is None or not self.is_active(pool):
            return None
        waiting = [item for item in queue.items() if _live(item.lease, lease_now) is None]
        if len(queue) - len(waiting) >= concurrency:
            return None
        times: list[datetime] = []
        for item in waiting:
            if not queue.is_key_head(item):
                continue
            at = item.available_at or item.enqueued_at
            if rate is not None and not item.cancel_requested:
                reopens = self.reopens_at(pool, rate, rate.bucket(item.partition_key))
                at = at if reopens is None else max(at, reopens)
            times.append(at)
        return min(times, default=None)


class MemoryStorage:
    """
    Storage in process memory: atomic, serialized per instance, gone when the process ends.

    Use it in tests (with `durable_jobs.testing.TestClock`) and demos; one process only,
    any number of threads and event loops.
    Pushing a queue item whose `event_id` is already queued in that instance replaces it.
    """

    def __init__(self) -> None:
        self._store = _Store()

    def instance(self, key: InstanceKey) -> AbstractAsyncContextManager[InstanceTransaction]:
        """
        Serialized, atomic access to one instance.

        Blocks for the same key never overlap (a per-key lock that any event loop and any
        thread can wait for); blocks for different keys run concurrently. Changes apply
        together on clean exit and are discarded when the block raises.
        """
        return _InstanceBlock(self._store, key)

    async def read(self, key: InstanceKey) -> InstanceRecord | None:
        """A committed snapshot of one record, without taking the instance."""
        record = self._store.records.get(key)
        return None if record is None else self._store.with_lease(record, _lease_now())

    async def claim_due(self, now: datetime, *, limit: int, lease: timedelta) -> Sequence[Claim]:
        """
        Lease up to `limit` active instances whose alarm is due at `now` and hold no lease.

        Due means `alarm_at <= now`; keys come in alarm order, then key order.
        """
        store = self._store
        claimed: list[Claim] = []
        if limit <= 0:
            return claimed
        lease_now = _lease_now()
        store.drop_stale_alarms()
        popped: list[tuple[datetime, _KeyOrder, int, InstanceKey]] = []
        taken: set[InstanceKey] = set()
        while store.alarms and store.alarms[0][0] <= now and len(claimed) < limit:
            entry = heapq.heappop(store.alarms)
            at, _, _, key = entry
            record = store.records.get(key)
            if record is None or record.alarm_at != at:
                continue  # stale: dropped
            popped.append(entry)
            if key in taken or record.status is not InstanceStatus.ACTIVE:
                continue
            if _live(store.leases.get(key), lease_now) is not None:
                continue
            store.drop_lease(key)  # an expired one
            grant = Lease(token=uuid.uuid4().hex, expires_at=lease_now + lease)
            store.leases[key] = grant
            store.tokens[grant.token] = (key, None)
            taken.add(key)
            claimed.append(
                Claim(key=key, token=grant.token, record=store.with_lease(record, lease_now))
            )
        for entry in popped:
            heapq.heappush(store.alarms, entry)
        return claimed

    async def claim_items(
        self,
        pools: Mapping[InstanceKey, int],
        now: datetime,
        *,
        limit: int,
        lease: timedelta,
        rates: Mapping[InstanceKey, PoolRate] | None = None,
    ) -> Sequence[ItemClaim]:
        """Lease up to `limit` ready pool events (see `Storage.claim_items`)."""
        store = self._store
        claimed: list[ItemClaim] = []
        lease_now = _lease_now()
        for pool, concurrency in pools.items():
            if len(claimed) >= limit:
                break
            store.drop_cancelled(pool, lease_now)
            queue = store.queues.get(pool)
            if queue is None:
                continue
            rate = None if rates is None else rates.get(pool)
            for item in store.ready_items(pool, concurrency, now, lease_now, rate):
                if len(claimed) >= limit:
                    break
                store.forget_item_lease(item)  # an expired one
                grant = Lease(token=uuid.uuid4().hex, expires_at=lease_now + lease)
                held = attrs.evolve(item, lease=grant)
                queue.replace(held)
                store.tokens[grant.token] = (pool, item.event_id)
                if rate is not None:
                    store.record_start(pool, rate.bucket(item.partition_key), now)
                claimed.append(ItemClaim(pool=pool, token=grant.token, item=_copy_item(held)))
        return claimed

    async def renew(self, tokens: Collection[str], lease: timedelta) -> frozenset[str]:
        """Extend the live leases of `tokens`; returns those renewed."""
        store = self._store
        lease_now = _lease_now()
        renewed: set[str] = set()
        for token in tokens:
            held = store.tokens.get(token)
            if held is None:
                continue
            key, event_id = held
            if event_id is None:
                current = _live(store.leases.get(key), lease_now)
                if current is not None and current.token == token:
                    store.leases[key] = attrs.evolve(current, expires_at=lease_now + lease)
                    renewed.add(token)
                continue
            queue = store.queues.get(key)
            item = None if queue is None else queue.get(event_id)
            current = None if item is None else _live(item.lease, lease_now)
            if queue is None or item is None or current is None or current.token != token:
                continue
            extended = attrs.evolve(current, expires_at=lease_now + lease)
            queue.replace(attrs.evolve(item, lease=extended))
            renewed.add(token)
        return frozenset(renewed)

    async def release(self, tokens: Collection[str]) -> None:
        """End the leases of `tokens`."""
        store = self._store
        for token in tokens:
            held = store.tokens.pop(token, None)
            if held is None:
                continue
            key, event_id = held
            if event_id is None:
                lease = store.leases.get(key)
                if lease is not None and lease.token == token:
                    del store.leases[key]
                continue
            queue = store.queues.get(key)
            item = None if queue is None else queue.get(event_id)
            held_lease = None if item is None else item.lease
            if queue is None or item is None or held_lease is None or held_lease.token != token:
                continue
            queue.replace(attrs.evolve(item, lease=None))

    async def next_alarm_at(
        self,
        pools: Mapping[InstanceKey, int],
        rates: Mapping[InstanceKey, PoolRate] | None = None,
    ) -> datetime | None:
        """
        When `claim_due` or `claim_items` can next return something, or None.

        Instances and pool events held by a live lease are not counted.
        """
        store = self._store
        store.drop_stale_alarms()
        lease_now = _lease_now()
        best: datetime | None = None
        popped: list[tuple[datetime, _KeyOrder, int, InstanceKey]] = []
        # leased entries are few (at most the runs in flight): walk past them in order
        while store.alarms:
            at, _, _, key = store.alarms[0]
            entry = heapq.heappop(store.alarms)
            record = store.records.get(key)
            if record is None or record.alarm_at != at:
                continue  # stale: dropped
            popped.append(entry)
            if record.status is not InstanceStatus.ACTIVE:
                continue
            if _live(store.leases.get(key), lease_now) is None:
                best = at
                break
        for entry in popped:
            heapq.heappush(store.alarms, entry)
        for pool, concurrency in pools.items():
            rate = None if rates is None else rates.get(pool)
            first = store.next_ready_at(pool, concurrency, lease_now, rate)
            if first is not None:
                best = first if best is None else min(best, first)
        return best

    async def push_items(
        self, pool: InstanceKey, items: Sequence[QueueItem], *, now: datetime
    ) -> Sequence[bool]:
        """Queue events on a pool in one step; False for an id the pool has seen."""
        store = self._store
        accepted: list[bool] = []
        fresh: list[QueueItem] = []
        seen: dict[str, datetime] = {}
        for item in items:
            if store.has_seen(pool, item.event_id) or item.event_id in seen:
                accepted.append(False)
                continue
            accepted.append(True)
            seen[item.event_id] = now
            store.last_seq += 1
            fresh.append(
                attrs.evolve(
                    _copy_item(item), seq=store.last_seq, lease=None, cancel_requested=False
                )
            )
        if fresh:
            if pool not in store.records:
                store.set_record(
                    pool,
                    InstanceRecord(key=pool, meta={"processed": 0}, created_at=now, updated_at=now),
                )
            store.apply_queue(pool, purged=False, removed=frozenset(), pushed=fresh)
            store.apply_satellites(pool, (), seen)
        return accepted

    async def finish_item(self, pool: InstanceKey, finish: ItemFinish) -> None:
        """The fenced write of a pool event's run."""
        store = self._store
        queue = store.queues.get(pool)
        item = None if queue is None else queue.get(finish.event_id)
        lease = None if item is None else _live(item.lease, _lease_now())
        if queue is None or item is None or lease is None or lease.token != finish.token:
            msg = f"the lease of event {finish.event_id!r} of {pool} was lost; nothing written"
            raise LeaseLostError(msg)
        store.tokens.pop(finish.token, None)
        retry = finish.retry
        cancelled = finish.cancelled or (retry is not None and item.cancel_requested)
        if retry is None or cancelled:
            queue.remove(item.event_id)
            if not queue:
                del store.queues[pool]
            if cancelled:
                store.count(pool, "cancelled", 1)
        else:
            queue.replace(
                attrs.evolve(
                    item,
                    lease=None,
                    available_at=retry.available_at,
                    attempt=retry.attempt,
                    retry_started_at=retry.retry_started_at,
                    defects=retry.defects,
                    last_error=retry.last_error,
                )
            )
        for letter in finish.letters:
            store.dead[letter.id] = _copy_letter(letter)
        store.count(pool, "processed", finish.processed)

    async def read_item(self, pool: InstanceKey, event_id: str) -> QueueItem | None:
        """One of the pool's events as stored (with its lease while it runs), or None."""
        queue = self._store.queues.get(pool)
        item = None if queue is None else queue.get(event_id)
        if item is None:
            return None
        return attrs.evolve(_copy_item(item), lease=_live(item.lease, _lease_now()))

    async def cancel_item(self, pool: InstanceKey, event_id: str) -> CancelOutcome:
        """Remove a pool event that is not running; ask a running one to stop."""
        store = self._store
        queue = store.queues.get(pool)
        item = None if queue is None else queue.get(event_id)
        if queue is None or item is None:
            return "not_found"
        if _live(item.lease, _lease_now()) is not None:
            queue.replace(attrs.evolve(item, cancel_requested=True))
            return "running"
        store.forget_item_lease(item)
        queue.remove(event_id)
        if not queue:
            del store.queues[pool]
        store.count(pool, "cancelled", 1)
        return "cancelled"

    async def cancel_requests(self, tokens: Collection[str]) -> frozenset[str]:
        """Of `tokens`, those whose running pool event was asked to stop."""
        store = self._store
        lease_now = _lease_now()
        asked: set[str] = set()
        for token in tokens:
            held = store.tokens.get(token)
            if held is None or held[1] is None:
                continue
            queue = store.queues.get(held[0])
            item = None if queue is None else queue.get(held[1])
            lease = None if item is None else _live(item.lease, lease_now)
            asking = item is not None and item.cancel_requested
            if asking and lease is not None and lease.token == token:
                asked.add(token)
        return frozenset(asked)

    async def abandon(self, tokens: Collection[str]) -> None:
        """Mark the live leases of `tokens` abandoned (kept until their thread returns)."""
        store = self._store
        lease_now = _lease_now()
        for token in tokens:
            held = store.tokens.get(token)
            if held is None:
                continue
            key, event_id = held
            if event_id is None:
                current = _live(store.leases.get(key), lease_now)
                if current is not None and current.token == token:
                    store.leases[key] = attrs.evolve(current, abandoned=True)
                continue
            queue = store.queues.get(key)
            item = None if queue is None else queue.get(event_id)
            lease = None if item is None else _live(item.lease, lease_now)
            if (
                queue is not None
                and item is not None
                and lease is not None
                and lease.token == token
            ):
                queue.replace(attrs.evolve(item, lease=attrs.evolve(lease, abandoned=True)))

    async def pool_counts(self, pool: InstanceKey, now: datetime | None = None) -> PoolCounts:
        """How many of the pool's events are queued, delayed, running and retrying."""
        queue = self._store.queues.get(pool)
        if queue is None:
            return PoolCounts(queued=0, running=0, retrying=0)
        lease_now = _lease_now()
        running = retrying = queued = delayed = abandoned = 0
        for item in queue.items():
            lease = _live(item.lease, lease_now)
            if lease is not None:
                running += 1
                abandoned += lease.abandoned
            elif item.attempt > 1 or item.defects > 0:
                retrying += 1
            elif now is not None and item.available_at is not None and item.available_at > now:
                delayed += 1
            else:
                queued += 1
        return PoolCounts(
            queued=queued,
            running=running,
            retrying=retrying,
            delayed=delayed,
            abandoned=abandoned,
        )

    async def list_instances(self, job: str | None = None) -> Sequence[InstanceRecord]:
        """Every record, optionally of one job, ordered by (kind, job, id)."""
        records = [r for r in self._store.records.values() if job is None or r.key.job == job]
        records.sort(key=lambda r: _order(r.key))
        now = _lease_now()
        return [self._store.with_lease(r, now) for r in records]

    async def dead_letters(self, job: str | None = None) -> Sequence[DeadLetter]:
        """Dead letters, oldest first (by `at`, then by commit order), optionally of one job."""
        letters = [d for d in self._store.dead.values() if job is None or d.key.job == job]
        letters.sort(key=lambda d: d.at)
        return [_copy_letter(d) for d in letters]

    async def delete_dead_letter(self, letter_id: str) -> bool:
        """Remove one dead letter; False when there is none with that id."""
        return self._store.dead.pop(letter_id, None) is not None

    async def forget_seen_before(self, cutoff: datetime) -> int:
        """Drop remembered event ids accepted before `cutoff` (strictly; see the protocol)."""
        forgotten = 0
        store = self._store
        for key, seen in list(store.seen.items()):
            if key.kind is JobKind.DEBOUNCE and key in store.records:
                continue  # its open batch may hold these events
            queue = store.queues.get(key)
            old = [
                event_id
                for event_id, at in seen.items()
                if at < cutoff and (queue is None or event_id not in queue)
            ]
            for event_id in old:
                del seen[event_id]
            forgotten += len(old)
            if not seen:
                del self._store.seen[key]
        return forgotten

    async def wait_for_change(self) -> None:
        """Never returns: only this process can change a `MemoryStorage`."""
        await asyncio.Event().wait()

    async def close(self) -> None:
        """Nothing to release (the data stays readable)."""


class _InstanceBlock:
    """`async with storage.instance(key) as tx`: takes the key's lock, commits or discards."""

    __slots__ = ("_key", "_store", "_tx")

    def __init__(self, store: _Store, key: InstanceKey) -> None:
        self._store = store
        self._key = key
        self._tx: BufferedTransaction | None = None

    async def __aenter__(self) -> InstanceTransaction:
        if self._tx is not None:
            msg = "a storage.instance(...) block cannot be entered twice"
            raise RuntimeError(msg)
        await self._store.locks.acquire(self._key)
        # the committed record is only ever handed out as a copy by the transaction
        with _MUTEX:
            committed = self._store.records.get(self._key)
            if committed is not None:
                committed = attrs.evolve(
                    committed, lease=_live(self._store.leases.get(self._key), _lease_now())
                )
        self._tx = BufferedTransaction(_StoredMemory(self._store), self._key, committed)
        return self._tx

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tx = self._tx
        if tx is None:
            return
        try:
            changes = tx.close()
            if exc_type is None:
                with _MUTEX:
                    self._store.apply(self._key, changes)
        finally:
            self._store.locks.release(self._key)


class _StoredMemory:
    """The committed data as a buffered transaction reads it (copies, never the originals)."""

    __slots__ = ("_store",)

    def __init__(self, store: _Store) -> None:
        self._store = store

    async def has_seen(self, key: InstanceKey, event_id: str) -> bool:
        with _MUTEX:
            return self._store.has_seen(key, event_id)

    async def queue_head(self, key: InstanceKey, skip: frozenset[str]) -> QueueItem | None:
        with _MUTEX:
            queue = self._store.queues.get(key)
            first = None if queue is None else queue.first(skip)
            if first is None:
                return None
            return attrs.evolve(_copy_item(first), lease=_live(first.lease, _lease_now()))

    async def queue_has(self, key: InstanceKey, event_id: str) -> bool:
        with _MUTEX:
            queue = self._store.queues.get(key)
            return queue is not None and event_id in queue

    async def queue_size(self, key: InstanceKey) -> int:
        with _MUTEX:
            queue = self._store.queues.get(key)
            return 0 if queue is None else len(queue)

    async def max_seq(self) -> int:
        with _MUTEX:
            return self._store.last_seq


_Step = Callable[..., Coroutine[Any, Any, object]]

_NOT_STEPS = frozenset({"wait_for_change", "close"})
"""Coroutine methods that are not steps on the data (they may wait, or touch nothing)."""


def _locked(name: str, step: _Step) -> _Step:
    """`step` run under the store's mutex; it must finish without suspending."""

    @functools.wraps(step)
    async def locked(self: MemoryStorage, *args: object, **kwargs: object) -> object:
        running = step(self, *args, **kwargs)
        with _MUTEX:
            try:
                running.send(None)
            except StopIteration as done:
                return done.value
        running.close()
        msg = f"MemoryStorage.{name} suspended holding the store's mutex (a step must not await)"
        raise RuntimeError(msg)

    return locked


def _guard_steps(cls: type[MemoryStorage]) -> None:
    """
    Make every coroutine method of `cls` a step under the store's mutex.

    Callers may be on any event loop in any thread (a worker, a sync client, one
    `asyncio.run` per web request), so each step takes `_MUTEX`. A step never
    suspends, which `_locked` checks, so the mutex is never held across an `await`. Methods
    added later are guarded too, unless listed in `_NOT_STEPS`.
    """
    for name, member in list(vars(cls).items()):
        if inspect.iscoroutinefunction(member) and name not in _NOT_STEPS:
            setattr(cls, name, _locked(name, member))


_guard_steps(MemoryStorage)


if TYPE_CHECKING:
    # MemoryStorage is a `Storage` only structurally: make both checkers prove it here.
    _conforms: Storage = MemoryStorage()
