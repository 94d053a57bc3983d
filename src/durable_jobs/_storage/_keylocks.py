"""
Locks an async caller can wait for from any event loop, in any thread.

`asyncio.Lock` belongs to the loop that first waits for it: a second loop waiting for it
fails (`RuntimeError: ... bound to a different event loop`), and a release from another
thread wakes nobody reliably. A storage is shared by every loop of a process (a worker's,
a sync client's, one `asyncio.run` per web request), so its locks must not belong to any:
`AnyLoopLock` keeps its state under a `threading.Lock` and wakes each waiter on the
waiter's own loop (`call_soon_threadsafe`).
"""

import asyncio
import threading
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar


K = TypeVar("K", bound=Hashable)


class _Waiter:
    __slots__ = ("future", "granted", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
        self.loop = loop
        self.future = future
        self.granted = False
        """The lock was handed to this waiter (it must release it, even if cancelled)."""


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class AnyLoopLock:
    """
    A mutual-exclusion lock for coroutines of any event loop and any thread, first come
    first served.

    The holder releases it from wherever it holds it; a waiter that is cancelled leaves the
    queue (or passes the lock on, when it was handed the lock meanwhile).
    """

    __slots__ = ("_locked", "_mutex", "_waiters")

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._locked = False
        self._waiters: deque[_Waiter] = deque()

    def locked(self) -> bool:
        """Whether someone holds the lock."""
        return self._locked

    async def acquire(self) -> None:
        """Wait for the lock; on cancellation nothing is held."""
        loop = asyncio.get_running_loop()
        with self._mutex:
            if not self._locked:
                self._locked = True
                return
            waiter = _Waiter(loop, loop.create_future())
            self._waiters.append(waiter)
        try:
            await waiter.future
        except BaseException:
            with self._mutex:
                if waiter.granted:
                    self._pass_on()
                else:
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Release the lock (held by the caller); the first waiter gets it."""
        with self._mutex:
            if not self._locked:
                msg = "release of an AnyLoopLock that is not held"
                raise RuntimeError(msg)
            self._pass_on()

    def _pass_on(self) -> None:
        """Hand the lock to the first waiter whose loop still runs, or free it (under _mutex)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            try:
                waiter.loop.call_soon_threadsafe(_wake, waiter.future)
            except RuntimeError:  # its loop is closed: nobody waits there any more
                continue
            waiter.granted = True
            return
        self._locked = False

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = AnyLoopLock()
        self.users = 0


class KeyLocks(Generic[K]):
    """
    One `AnyLoopLock` per key, dropped from the table once unused (no unbounded growth).

    Type parameters:
        K: the key type.
    """

    __slots__ = ("_entries", "_mutex")

    def __init__(self) -> None:
        self._entries: dict[K, _Entry] = {}
        self._mutex = threading.Lock()

    async def acquire(self, key: K) -> None:
        """Wait for `key`'s lock; on cancellation nothing is held."""
        with self._mutex:
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
        with self._mutex:
            entry = self._entries[key]
        entry.lock.release()
        self._drop(key, entry)

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: K, entry: _Entry) -> None:
        with self._mutex:
            entry.users -= 1
            if entry.users == 0 and self._entries.get(key) is entry:
                del self._entries[key]
