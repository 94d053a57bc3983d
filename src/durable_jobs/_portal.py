"""
A portal: an event loop on a daemon thread of its own, where coroutines from any thread or
any other event loop run.

Two things need a loop that outlives their callers. `SyncClient` runs the async client's
coroutines from plain threads (a WSGI request, a script), and `PostgresStorage` keeps its
connection pool there: psycopg's connections and pool belong to the loop they were opened
on, while its callers come from every loop of the process (a worker's, the portal's, one
`asyncio.run` per request). The loop starts on first use, never at import or construction,
and again in a child process after `fork` (a thread does not survive a fork).
"""

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar


T = TypeVar("T")

_Make = Callable[[], Coroutine[Any, Any, T]]


class Portal:
    """An event loop on a daemon thread, started on first use; see the module docstring."""

    __slots__ = ("_loop", "_mutex", "_name", "_pid", "_thread")

    def __init__(self, name: str) -> None:
        self._name = name
        self._mutex = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    def loop(self) -> asyncio.AbstractEventLoop:
        """The portal's running loop, started now if need be."""
        with self._mutex:
            if self._loop is None or self._pid != os.getpid() or self._loop.is_closed():
                self._start()
            loop = self._loop
        if loop is None:  # pragma: no cover - _start sets it
            msg = "the portal's event loop did not start"
            raise RuntimeError(msg)
        return loop

    def is_here(self) -> bool:
        """Whether the caller runs on the portal's own thread."""
        return self._thread is threading.current_thread() and self._pid == os.getpid()

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(started.set)
            loop.run_forever()

        thread = threading.Thread(target=serve, name=self._name, daemon=True)
        thread.start()
        started.wait()
        self._loop, self._thread, self._pid = loop, thread, os.getpid()

    def run(self, make: _Make[T]) -> T:
        """
        Run the coroutine `make()` on the portal and wait for it (a blocking call).

        Raises `RuntimeError` on the portal's own thread, where waiting would never end.
        An interrupt (Ctrl-C) while waiting cancels the coroutine.
        """
        if self.is_here():
            msg = (
                "a blocking durable-jobs call was made on the portal's own event loop,"
                " where it would wait forever; use the async client there"
            )
            raise RuntimeError(msg)
        loop = self.loop()
        done: concurrent.futures.Future[T] = concurrent.futures.Future()
        box: list[asyncio.Task[T]] = []

        def relay(task: asyncio.Task[T]) -> None:
            if task.cancelled():
                done.cancel()
            elif (error := task.exception()) is not None:
                done.set_exception(error)
            else:
                done.set_result(task.result())

        def start() -> None:
            task = loop.create_task(make())
            box.append(task)
            task.add_done_callback(relay)

        loop.call_soon_threadsafe(start)
        try:
            return done.result()
        except BaseException:
            if not done.done():
                loop.call_soon_threadsafe(_cancel_first, box)
            raise

    async def call(self, make: _Make[T]) -> T:
        """
        Await the coroutine `make()` run on the portal, from any event loop.

        On the portal's loop it is simply awaited. From another loop, cancelling the caller
        cancels it there, and the caller's `CancelledError` comes out only once it has
        ended (a cancelled storage operation has finished cleaning up by then).
        """
        here = asyncio.get_running_loop()
        loop = self.loop()
        if here is loop:
            return await make()
        return await call_on(loop, here, make)


async def call_on(
    loop: asyncio.AbstractEventLoop, here: asyncio.AbstractEventLoop, make: _Make[T]
) -> T:
    """Await `make()` run as a task on `loop` (not the running loop `here`); see `Portal.call`."""
    result: asyncio.Future[T] = here.create_future()
    box: list[asyncio.Task[T]] = []

    def deliver(task: asyncio.Task[T]) -> None:
        if result.done():
            return
        if task.cancelled():
            result.cancel()
        elif (error := task.exception()) is not None:
            result.set_exception(error)
        else:
            result.set_result(task.result())

    def relay(task: asyncio.Task[T]) -> None:
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits
            here.call_soon_threadsafe(deliver, task)

    def start() -> None:
        task = loop.create_task(make())
        box.append(task)
        task.add_done_callback(relay)

    try:
        loop.call_soon_threadsafe(start)
    except RuntimeError as exc:
        msg = "the event loop that owns this resource is closed"
        raise RuntimeError(msg) from exc
    try:
        return await asyncio.shield(result)
    except asyncio.CancelledError:
        if not result.done():
            # `start` ran or runs before this, in the order both were scheduled on `loop`
            loop.call_soon_threadsafe(_cancel_first, box)
            while not result.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(result)
        raise


def _cancel_first(box: "list[asyncio.Task[T]]") -> None:
    # read when it runs on the task's loop: `start`, scheduled earlier, has filled the box
    box[0].cancel()


class Home:
    """
    The one event loop a loop-bound resource (a psycopg pool) lives on, and the way there.

    With a portal, that is the portal's loop. Without one, it is the loop of the first
    `call`, adopted then and not before (so creating the owner captures no loop); calls
    from other loops are run there while it runs.
    """

    __slots__ = ("_loop", "_portal")

    def __init__(self, portal: Portal | None) -> None:
        self._portal = portal
        self._loop: asyncio.AbstractEventLoop | None = None

    async def call(self, make: _Make[T]) -> T:
        """Await `make()` run on the home loop (directly when the caller is there)."""
        if self._portal is not None:
            return await self._portal.call(make)
        here = asyncio.get_running_loop()
        loop = self._loop
        if loop is None:
            loop = self._loop = here
        if loop is here:
            return await make()
        if loop.is_closed() or not loop.is_running():
            msg = (
                "the event loop this resource was first used on is no longer running;"
                " use it from that loop only"
            )
            raise RuntimeError(msg)
        return await call_on(loop, here, make)


_DEFAULT = Portal("durable-jobs-portal")


def default_portal() -> Portal:
    """The process's portal (sync clients, PostgreSQL pools opened from a DSN)."""
    return _DEFAULT
