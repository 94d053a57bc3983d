"""
The buffered instance transaction shared by every backend (memory, SQLite, PostgreSQL).

Changes are kept in memory while the block runs and handed over as one `Changes` value on
clean exit, so the backend can apply them in one step (one database transaction); reads of the
queue and of remembered event ids combine what is stored with what is buffered.
"""

from datetime import datetime
from typing import Protocol

import attrs

from ._copy import copy_item, copy_letter, copy_record
from ._interface import DeadLetter, InstanceKey, InstanceRecord, Lease, QueueItem


class StoredView(Protocol):
    """What a buffered transaction reads from the committed data of its backend."""

    async def has_seen(self, key: InstanceKey, event_id: str) -> bool:
        """Whether `event_id` is remembered for `key`."""
        ...

    async def queue_head(self, key: InstanceKey, skip: frozenset[str]) -> QueueItem | None:
        """The first stored item of `key`'s queue whose id is not in `skip`."""
        ...

    async def queue_has(self, key: InstanceKey, event_id: str) -> bool:
        """Whether `key`'s stored queue holds `event_id`."""
        ...

    async def queue_size(self, key: InstanceKey) -> int:
        """How many items `key`'s stored queue holds."""
        ...

    async def max_seq(self) -> int:
        """The highest `seq` any stored queue item has (0 if none)."""
        ...


def queue_rank(item: QueueItem) -> tuple[int, int]:
    return (-item.priority, item.seq)


@attrs.frozen
class Changes:
    """Everything one block wants to write, applied in one transaction."""

    record_changed: bool
    record: InstanceRecord | None
    queue_purged: bool
    removed: frozenset[str]
    pushed: tuple[QueueItem, ...]
    letters: tuple[DeadLetter, ...]
    letters_removed: frozenset[str]
    remembered: tuple[tuple[str, datetime], ...]
    fence: str | None
    """Commit only if this token still holds a live lease on the instance."""
    release: bool
    """End the fenced lease on commit."""
    revoke: bool
    """End whatever lease the instance holds on commit."""


class BufferedTransaction:
    """
    Buffers changes to one instance; reads combine what is stored with the buffer.

    A backend opens the instance (locks it, reads its record), hands this object to the
    block, and on clean exit writes `close()`'s `Changes` in one database transaction.
    """

    def __init__(self, stored: StoredView, key: InstanceKey, record: InstanceRecord | None) -> None:
        self._stored = stored
        self._key = key
        self._lease = None if record is None else record.lease
        self._record = record
        self._record_changed = False
        self._queue_purged = False
        self._letters: list[DeadLetter] = []
        self._letters_removed: set[str] = set()
        self._remembered: dict[str, datetime] = {}
        self._pushed: dict[str, QueueItem] = {}
        self._removed: set[str] = set()
        self._fence: str | None = None
        self._release = False
        self._revoke = False
        self._open = True

    @property
    def key(self) -> InstanceKey:
        """The instance this transaction is about."""
        return self._key

    @property
    def record(self) -> InstanceRecord | None:
        """The record as it stands in this transaction (after `save`/`purge`), or None."""
        return None if self._record is None else copy_record(self._record)

    def save(self, record: InstanceRecord) -> None:
        """Insert or replace the record on commit; its lease stays as it is."""
        self._check_open()
        if record.key != self._key:
            msg = f"save: a record of {record.key} in the transaction of {self._key}"
            raise ValueError(msg)
        self._record = attrs.evolve(copy_record(record), lease=self._lease)
        self._record_changed = True

    def purge(self) -> None:
        """Delete the record, its alarm, its lease and its queue items on commit."""
        self._check_open()
        self._record = None
        self._lease = None
        self._record_changed = True
        self._queue_purged = True
        self._pushed.clear()
        self._removed.clear()

    def fence(self, token: str, *, release: bool = True) -> bool:
        """Commit only while `token` holds the lease (see `InstanceTransaction.fence`)."""
        self._check_open()
        self._fence = token
        self._release = release
        return self._lease is not None and self._lease.token == token

    def revoke_lease(self) -> None:
        """End any lease on the instance at commit."""
        self._check_open()
        self._revoke = True
        self._set_lease(None)

    def add_dead_letter(self, letter: DeadLetter) -> None:
        """Record a dead letter on commit."""
        self._check_open()
        self._letters.append(copy_letter(letter))

    def remove_dead_letter(self, letter_id: str) -> None:
        """Delete a dead letter on commit; unknown ids are ignored."""
        self._check_open()
        self._letters_removed.add(letter_id)

    async def has_seen(self, event_id: str) -> bool:
        """Whether `event_id` was accepted before, or earlier in this transaction."""
        self._check_open()
        if event_id in self._remembered:
            return True
        return await self._stored.has_seen(self._key, event_id)

    def remember(self, event_id: str, at: datetime) -> None:
        """Remember `event_id` as accepted at `at`, on commit."""
        self._check_open()
        self._remembered[event_id] = at

    def queue_push(self, item: QueueItem) -> None:
        """Append an item on commit (its `seq` is assigned then); replaces one of that id."""
        self._check_open()
        self._removed.add(item.event_id)  # a stored item of that id is replaced
        self._pushed.pop(item.event_id, None)
        self._pushed[item.event_id] = copy_item(item)

    async def queue_peek(self) -> QueueItem | None:
        """The next item: highest priority first, then FIFO; includes this block's changes."""
        self._check_open()
        best: QueueItem | None = None
        if not self._queue_purged:
            key, skip = self._key, frozenset(self._removed)
            best = await self._stored.queue_head(key, skip)
        if self._pushed:
            # pushed items are newer than every stored one: number them after the stored max
            base = await self._stored.max_seq()
            for offset, item in enumerate(self._pushed.values(), start=1):
                numbered = attrs.evolve(copy_item(item), seq=base + offset)
                if best is None or queue_rank(numbered) < queue_rank(best):
                    best = numbered
        return best

    async def queue_remove(self, event_id: str) -> bool:
        """Remove one queued item on commit; False when it is not queued here."""
        self._check_open()
        if self._pushed.pop(event_id, None) is not None:
            return True
        if self._queue_purged or event_id in self._removed:
            return False
        key = self._key
        if await self._stored.queue_has(key, event_id):
            self._removed.add(event_id)
            return True
        return False

    async def queue_size(self) -> int:
        """How many items wait in this instance's queue, including this block's changes."""
        self._check_open()
        stored = 0
        if not self._queue_purged:
            key = self._key
            stored = await self._stored.queue_size(key)
            for event_id in self._removed:
                if await self._stored.queue_has(key, event_id):
                    stored -= 1
        return stored + len(self._pushed)

    def close(self) -> Changes:
        """End the transaction and hand over what it wants written."""
        self._check_open()
        self._open = False
        return Changes(
            record_changed=self._record_changed,
            record=self._record,
            queue_purged=self._queue_purged,
            removed=frozenset(self._removed),
            pushed=tuple(self._pushed.values()),
            letters=tuple(self._letters),
            letters_removed=frozenset(self._letters_removed),
            remembered=tuple(self._remembered.items()),
            fence=self._fence,
            release=self._release,
            revoke=self._revoke,
        )

    def _set_lease(self, lease: Lease | None) -> None:
        self._lease = lease
        if self._record is not None:
            self._record = attrs.evolve(self._record, lease=lease)

    def _check_open(self) -> None:
        if not self._open:
            msg = f"the transaction of {self._key} was used after its block ended"
            raise RuntimeError(msg)
