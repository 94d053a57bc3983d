"""`MemoryStorage`: the storage protocol in process memory (tests, demos)."""

import asyncio
import copy
import heapq
from collections.abc import AsyncGenerator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

import attrs

from .._types import JsonValue
from ._interface import DeadLetter, InstanceKey, InstanceRecord, InstanceTransaction, QueueItem


def _order(key: InstanceKey) -> tuple[str, str, str]:
    return (key.kind.value, key.job, key.id)


class _Queue:
    """One instance's queue: a heap on (-priority, seq) with lazy deletion."""

    __slots__ = ("heap", "items")

    def __init__(self) -> None:
        self.heap: list[tuple[int, int, str]] = []
        self.items: dict[str, QueueItem] = {}

    def push(self, item: QueueItem) -> None:
        self.items[item.event_id] = item
        heapq.heappush(self.heap, (-item.priority, item.seq, item.event_id))

    def peek(self) -> QueueItem | None:
        while self.heap:
            _, seq, event_id = self.heap[0]
            item = self.items.get(event_id)
            if item is not None and item.seq == seq:
                return item
            heapq.heappop(self.heap)
        return None

    def remove(self, event_id: str) -> bool:
        return self.items.pop(event_id, None) is not None


class MemoryStorage:
    """
    Storage in process memory: atomic, serialized per instance, gone when the process ends.

    Use it in tests (with `durable_jobs.testing.TestClock`) and demos.
    """

    def __init__(self) -> None:
        self.records: dict[InstanceKey, InstanceRecord] = {}
        self.leases: dict[InstanceKey, datetime] = {}
        self.dead: list[DeadLetter] = []
        self.seen: dict[tuple[InstanceKey, str], datetime] = {}
        self.queues: dict[InstanceKey, _Queue] = {}
        self.locks: dict[InstanceKey, asyncio.Lock] = {}
        self.seq = 0

    @asynccontextmanager
    async def instance(self, key: InstanceKey) -> AsyncGenerator[InstanceTransaction]:
        """Serialized, atomic access to one instance."""
        lock = self.locks.setdefault(key, asyncio.Lock())
        async with lock:
            tx = _MemoryTransaction(self, key)
            yield tx
            tx.commit()

    async def read(self, key: InstanceKey) -> InstanceRecord | None:
        """A committed snapshot of one record."""
        record = self.records.get(key)
        return None if record is None else _copy(record)

    async def claim_due(
        self, now: datetime, *, limit: int, lease: timedelta
    ) -> Sequence[InstanceKey]:
        """Lease up to `limit` due, unleased instances."""
        due = sorted(
            (
                (record.alarm_at, _order(key), key)
                for key, record in self.records.items()
                if record.alarm_at is not None
                and record.alarm_at <= now
                and (key not in self.leases or self.leases[key] <= now)
            ),
        )
        keys = [key for _, _, key in due[:limit]]
        for key in keys:
            self.leases[key] = now + lease
        return keys

    async def next_alarm_at(self) -> datetime | None:
        """The earliest alarm of any instance."""
        times = [r.alarm_at for r in self.records.values() if r.alarm_at is not None]
        return min(times, default=None)

    async def list_instances(self, job: str | None = None) -> Sequence[InstanceRecord]:
        """Every record (optionally of one job), in key order."""
        records = [r for r in self.records.values() if job is None or r.key.job == job]
        return [_copy(r) for r in sorted(records, key=lambda r: _order(r.key))]

    async def dead_letters(self, job: str | None = None) -> Sequence[DeadLetter]:
        """Dead letters, oldest first."""
        return [d for d in self.dead if job is None or d.key.job == job]

    async def delete_dead_letter(self, letter_id: str) -> bool:
        """Remove one dead letter."""
        before = len(self.dead)
        self.dead = [d for d in self.dead if d.id != letter_id]
        return len(self.dead) != before

    async def forget_seen_before(self, cutoff: datetime) -> int:
        """Drop remembered event ids older than `cutoff`."""
        old = [k for k, at in self.seen.items() if at < cutoff]
        for k in old:
            del self.seen[k]
        return len(old)

    async def close(self) -> None:
        """Nothing to release."""

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


class _MemoryTransaction:
    """Buffers changes to one instance; `commit` applies them all at once."""

    def __init__(self, storage: MemoryStorage, key: InstanceKey) -> None:
        self._storage = storage
        self._key = key
        committed = storage.records.get(key)
        self._record = None if committed is None else _copy(committed)
        self._touched = False
        self._purged = False
        self.dead: list[DeadLetter] = []
        self._remember: dict[str, datetime] = {}
        self._pushed: list[QueueItem] = []
        self._removed: set[str] = set()

    @property
    def key(self) -> InstanceKey:
        """The instance of this transaction."""
        return self._key

    @property
    def record(self) -> InstanceRecord | None:
        """The record including this transaction's changes."""
        return self._record

    def save(self, record: InstanceRecord) -> None:
        """Insert or replace the record."""
        self._record = _copy(record)
        self._touched = True

    def purge(self) -> None:
        """Delete record, alarm and queue."""
        self._record = None
        self._touched = True
        self._purged = True
        self._pushed.clear()

    def add_dead_letter(self, letter: DeadLetter) -> None:
        """Record a dead letter on commit."""
        self.dead.append(letter)

    async def has_seen(self, event_id: str) -> bool:
        """Whether `event_id` was accepted before (or earlier in this transaction)."""
        return event_id in self._remember or (self._key, event_id) in self._storage.seen

    def remember(self, event_id: str, at: datetime) -> None:
        """Remember `event_id` on commit."""
        self._remember[event_id] = at

    def queue_push(self, item: QueueItem) -> None:
        """Append an item on commit."""
        self._pushed.append(attrs.evolve(item, seq=self._storage.next_seq()))

    async def queue_peek(self) -> QueueItem | None:
        """The next item (highest priority, then FIFO), including this transaction's changes."""
        candidates: list[QueueItem] = []
        queue = None if self._purged else self._storage.queues.get(self._key)
        if queue is not None:
            for _, _, event_id in sorted(queue.heap):
                item = queue.items.get(event_id)
                if item is not None and event_id not in self._removed:
                    candidates.append(item)
                    break
        candidates.extend(i for i in self._pushed if i.event_id not in self._removed)
        if not candidates:
            return None
        return min(candidates, key=lambda i: (-i.priority, i.seq))

    async def queue_remove(self, event_id: str) -> bool:
        """Remove one item on commit."""
        if event_id in self._removed:
            return False
        for item in self._pushed:
            if item.event_id == event_id:
                self._pushed.remove(item)
                return True
        queue = None if self._purged else self._storage.queues.get(self._key)
        if queue is not None and event_id in queue.items:
            self._removed.add(event_id)
            return True
        return False

    async def queue_size(self) -> int:
        """Items waiting, including this transaction's changes."""
        queue = None if self._purged else self._storage.queues.get(self._key)
        stored = 0 if queue is None else len(queue.items) - len(self._removed)
        return stored + len(self._pushed)

    def commit(self) -> None:
        """Apply every buffered change."""
        storage = self._storage
        key = self._key
        if self._touched:
            storage.leases.pop(key, None)
            if self._record is None:
                storage.records.pop(key, None)
            else:
                storage.records[key] = self._record
        if self._purged:
            storage.queues.pop(key, None)
        queue = storage.queues.get(key)
        for event_id in self._removed:
            if queue is not None:
                queue.remove(event_id)
        if self._pushed:
            queue = storage.queues.setdefault(key, _Queue())
            for item in self._pushed:
                queue.push(item)
        storage.dead.extend(self.dead)
        for event_id, at in self._remember.items():
            storage.seen[(key, event_id)] = at


def _copy(record: InstanceRecord) -> InstanceRecord:
    state: JsonValue = copy.deepcopy(record.state)
    meta: JsonValue = copy.deepcopy(record.meta)
    return attrs.evolve(record, state=state, meta=meta)
