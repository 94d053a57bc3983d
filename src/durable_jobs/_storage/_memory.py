"""
`MemoryStorage`: the storage protocol in process memory (tests, demos).

Every change made through `MemoryStorage.instance(key)` is buffered in the transaction and
applied in one synchronous step when the block exits cleanly (so no other coroutine can see
half of it), or dropped when the block raises. JSON values are copied on the way in and on
the way out: a caller mutating a dict it saved, or one it read, never changes what is stored.
"""

import asyncio
import bisect
import heapq
import itertools
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING

import attrs

from ._buffered import BufferedTransaction, Changes
from ._buffered import queue_rank as _queue_rank
from ._copy import copy_item as _copy_item
from ._copy import copy_letter as _copy_letter
from ._copy import copy_record as _copy_record
from ._interface import (
    DeadLetter,
    InstanceKey,
    InstanceRecord,
    InstanceTransaction,
    QueueItem,
    Storage,
)
from ._keylocks import KeyLocks


_KeyOrder = tuple[str, str, str]


def _order(key: InstanceKey) -> _KeyOrder:
    """Key order everywhere: kind value, job name, id."""
    return (key.kind.value, key.job, key.id)


class _Queue:
    """One instance's committed queue, kept sorted by `_queue_rank` (peek is O(1))."""

    __slots__ = ("_items", "_ranks")

    def __init__(self) -> None:
        self._ranks: list[tuple[int, int, str]] = []
        self._items: dict[str, QueueItem] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._items

    def push(self, item: QueueItem) -> None:
        self.remove(item.event_id)
        self._items[item.event_id] = item
        bisect.insort(self._ranks, (*_queue_rank(item), item.event_id))

    def remove(self, event_id: str) -> bool:
        item = self._items.pop(event_id, None)
        if item is None:
            return False
        del self._ranks[bisect.bisect_left(self._ranks, (*_queue_rank(item), event_id))]
        return True

    def first(self, skip: AbstractSet[str]) -> QueueItem | None:
        """The first item whose event id is not in `skip` (usually the very first one)."""
        for _, _, event_id in self._ranks:
            if event_id not in skip:
                return self._items[event_id]
        return None


class _Store:
    """The committed data of one `MemoryStorage` (shared with its transactions)."""

    def __init__(self) -> None:
        self.records: dict[InstanceKey, InstanceRecord] = {}
        self.leases: dict[InstanceKey, datetime] = {}
        # (alarm_at, key order, tie-breaker, key); entries that no longer match are stale
        self.alarms: list[tuple[datetime, _KeyOrder, int, InstanceKey]] = []
        self.alarm_ties = itertools.count()
        self.dead: dict[str, DeadLetter] = {}
        self.seen: dict[InstanceKey, dict[str, datetime]] = {}
        self.queues: dict[InstanceKey, _Queue] = {}
        self.locks: KeyLocks[InstanceKey] = KeyLocks()
        self.last_seq = 0

    def apply(self, key: InstanceKey, changes: Changes) -> None:
        """Apply one block's changes in one synchronous step (no coroutine sees half)."""
        if changes.record_changed:
            self.set_record(key, changes.record)
        pushed: list[QueueItem] = []
        for item in changes.pushed:  # numbered in push order, after every stored item
            self.last_seq += 1
            pushed.append(attrs.evolve(item, seq=self.last_seq))
        self.apply_queue(key, purged=changes.queue_purged, removed=changes.removed, pushed=pushed)
        for letter_id in changes.letters_removed:
            self.dead.pop(letter_id, None)
        self.apply_satellites(key, changes.letters, dict(changes.remembered))

    def has_seen(self, key: InstanceKey, event_id: str) -> bool:
        seen = self.seen.get(key)
        return seen is not None and event_id in seen

    def set_record(self, key: InstanceKey, record: InstanceRecord | None) -> None:
        self.leases.pop(key, None)
        if record is None:
            self.records.pop(key, None)
            return
        self.records[key] = record
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
            self.queues.pop(key, None)
        queue = self.queues.get(key)
        if queue is not None:
            for event_id in removed:
                queue.remove(event_id)
        if pushed:
            queue = self.queues.setdefault(key, _Queue())
            for item in pushed:
                queue.push(item)
        if queue is not None and not queue:
            del self.queues[key]

    def apply_satellites(
        self, key: InstanceKey, letters: Sequence[DeadLetter], seen: dict[str, datetime]
    ) -> None:
        for letter in letters:
            self.dead[letter.id] = letter
        if seen:
            self.seen.setdefault(key, {}).update(seen)


class MemoryStorage:
    """
    Storage in process memory: atomic, serialized per instance, gone when the process ends.

    Use it in tests (with `durable_jobs.testing.TestClock`) and demos; one process only.
    Pushing a queue item whose `event_id` is already queued in that instance replaces it.
    """

    def __init__(self) -> None:
        self._store = _Store()

    def instance(self, key: InstanceKey) -> AbstractAsyncContextManager[InstanceTransaction]:
        """
        Serialized, atomic access to one instance.

        Blocks for the same key never overlap (a per-key `asyncio.Lock`); blocks for
        different keys run concurrently. Changes apply together on clean exit and are
        discarded when the block raises.
        """
        return _InstanceBlock(self._store, key)

    async def read(self, key: InstanceKey) -> InstanceRecord | None:
        """A committed snapshot of one record, without taking the instance."""
        record = self._store.records.get(key)
        return None if record is None else _copy_record(record)

    async def claim_due(
        self, now: datetime, *, limit: int, lease: timedelta
    ) -> Sequence[InstanceKey]:
        """
        Lease up to `limit` instances whose alarm is due at `now` and not leased.

        Due means `alarm_at <= now`; a lease has expired when `lease_until <= now`. Keys come
        in alarm order, then key order; each is leased until `now + lease`.
        """
        store = self._store
        claimed: list[InstanceKey] = []
        if limit <= 0:
            return claimed
        store.drop_stale_alarms()
        popped: list[tuple[datetime, _KeyOrder, int, InstanceKey]] = []
        while store.alarms and store.alarms[0][0] <= now and len(claimed) < limit:
            entry = heapq.heappop(store.alarms)
            at, _, _, key = entry
            record = store.records.get(key)
            if record is None or record.alarm_at != at:
                continue  # stale: dropped
            popped.append(entry)
            if key in claimed:
                continue
            lease_until = store.leases.get(key)
            if lease_until is None or lease_until <= now:
                claimed.append(key)
        for entry in popped:
            heapq.heappush(store.alarms, entry)
        for key in claimed:
            store.leases[key] = now + lease
        return claimed

    async def next_alarm_at(self) -> datetime | None:
        """
        When `claim_due` can next return something, or None when no alarm is set.

        That is the earliest alarm, except that a leased instance counts from the later of
        its alarm and its lease expiry (so a worker does not spin on an alarm in flight).
        """
        store = self._store
        store.drop_stale_alarms()
        best: datetime | None = None
        popped: list[tuple[datetime, _KeyOrder, int, InstanceKey]] = []
        # leased entries are few (at most the in-flight alarms): walk past them in order
        while store.alarms:
            at, _, _, key = store.alarms[0]
            if best is not None and at >= best:
                break
            entry = heapq.heappop(store.alarms)
            record = store.records.get(key)
            if record is None or record.alarm_at != at:
                continue  # stale: dropped
            popped.append(entry)
            lease_until = store.leases.get(key)
            ready = at if lease_until is None else max(at, lease_until)
            if best is None or ready < best:
                best = ready
            if lease_until is None:
                break
        for entry in popped:
            heapq.heappush(store.alarms, entry)
        return best

    async def list_instances(self, job: str | None = None) -> Sequence[InstanceRecord]:
        """Every record, optionally of one job, ordered by (kind, job, id)."""
        records = [r for r in self._store.records.values() if job is None or r.key.job == job]
        records.sort(key=lambda r: _order(r.key))
        return [_copy_record(r) for r in records]

    async def dead_letters(self, job: str | None = None) -> Sequence[DeadLetter]:
        """Dead letters, oldest first (by `at`, then by commit order), optionally of one job."""
        letters = [d for d in self._store.dead.values() if job is None or d.key.job == job]
        letters.sort(key=lambda d: d.at)
        return [_copy_letter(d) for d in letters]

    async def delete_dead_letter(self, letter_id: str) -> bool:
        """Remove one dead letter; False when there is none with that id."""
        return self._store.dead.pop(letter_id, None) is not None

    async def forget_seen_before(self, cutoff: datetime) -> int:
        """Drop remembered event ids accepted before `cutoff` (strictly); returns how many."""
        forgotten = 0
        for key, seen in list(self._store.seen.items()):
            old = [event_id for event_id, at in seen.items() if at < cutoff]
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
        committed = self._store.records.get(self._key)
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
                self._store.apply(self._key, changes)
        finally:
            self._store.locks.release(self._key)


class _StoredMemory:
    """The committed data as a buffered transaction reads it (copies, never the originals)."""

    __slots__ = ("_store",)

    def __init__(self, store: _Store) -> None:
        self._store = store

    async def has_seen(self, key: InstanceKey, event_id: str) -> bool:
        return self._store.has_seen(key, event_id)

    async def queue_head(self, key: InstanceKey, skip: frozenset[str]) -> QueueItem | None:
        queue = self._store.queues.get(key)
        first = None if queue is None else queue.first(skip)
        return None if first is None else _copy_item(first)

    async def queue_has(self, key: InstanceKey, event_id: str) -> bool:
        queue = self._store.queues.get(key)
        return queue is not None and event_id in queue

    async def queue_size(self, key: InstanceKey) -> int:
        queue = self._store.queues.get(key)
        return 0 if queue is None else len(queue)

    async def max_seq(self) -> int:
        return self._store.last_seq


if TYPE_CHECKING:
    # MemoryStorage is a `Storage` only structurally: make both checkers prove it here.
    _conforms: Storage = MemoryStorage()
