"""Per-key asyncio locks that exist only while someone holds or waits for them."""

import asyncio
from collections.abc import Hashable
from typing import Generic, TypeVar


K = TypeVar("K", bound=Hashable)


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class KeyLocks(Generic[K]):
    """
    One `asyncio.Lock` per key, dropped from the table once unused (no unbounded growth).

    Type parameters:
        K: the key type.
    """

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[K, _Entry] = {}

    async def acquire(self, key: K) -> None:
        """Wait for `key`'s lock; on cancellation nothing is held."""
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        entry.users += 1
        try:
            await entry.lock.acquire()
        except BaseException:
            self._drop(key, entry)
            raise

    def release(self, key: K) -> None:
        """Release `key`'s lock (held by the caller)."""
        entry = self._entries[key]
        entry.lock.release()
        self._drop(key, entry)

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: K, entry: _Entry) -> None:
        entry.users -= 1
        if entry.users == 0 and self._entries.get(key) is entry:
            del self._entries[key]
