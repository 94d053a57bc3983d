"""
Where user callbacks run: async ones on the event loop, sync ones in a bounded thread pool.

A synchronous `execute` that sleeps or blocks on I/O therefore never stalls the worker's
loop, its other runs, or the lease renewals that keep its own run valid. `RunHandle` is one
run's view of its lease: the lease keeper marks it lost, and cancels it when the code in
flight is async (a thread cannot be stopped: its result is refused instead).
"""

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, Literal, TypeAlias

import attrs
from typing_extensions import TypeVar

from .._storage._interface import InstanceKey, LeaseLostError


T = TypeVar("T")

StopReason: TypeAlias = Literal["timeout", "cancelled"]
"""Why a run's `execute` was stopped before it returned."""


def is_async(fn: object) -> bool:
    """Whether calling `fn` returns a coroutine (async functions, partials, `__call__`)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - the method, not callability
    return not inspect.isfunction(fn) and inspect.iscoroutinefunction(call)


@attrs.frozen
class Call(Generic[T]):
    """
    A user callback bound to its arguments, and where it must run.

    Type parameters:
        T: what the callback returns (possibly through an awaitable).
    """

    thunk: Callable[[], T | Awaitable[T]]
    blocking: bool
    """True for a sync callable: it runs in the thread pool."""


def bind(fn: object, thunk: Callable[[], T | Awaitable[T]]) -> Call[T]:
    """`thunk` calls `fn`; it runs in a thread unless `fn` is async."""
    return Call(thunk, blocking=not is_async(fn))


class RunHandle:
    """One run's lease, as the worker and the lease keeper see it."""

    __slots__ = (
        "abandoned",
        "cancellable",
        "expires",
        "finishing",
        "guarded",
        "key",
        "lost",
        "pending",
        "stopped",
        "task",
        "threads",
        "token",
    )

    def __init__(
        self, key: InstanceKey, token: str, expires: float, *, cancellable: bool = False
    ) -> None:
        self.key: InstanceKey = key
        self.token: str = token
        self.cancellable: bool = cancellable
        """A pool event's run: a client's `cancel` can ask it to stop."""
        self.stopped: StopReason | None = None
        """Why `execute` was asked to stop (its timeout passed, or a client cancelled it)."""
        self.guarded: bool = False
        """`execute` runs right now: a stop cancels the run's task (see `stop_with`)."""
        self.pending: set[asyncio.Future[None]] = set()
        """This run's callbacks still running in a thread (a stopped run waits for them)."""
        self.expires: float = expires
        """Local monotonic time by which the lease must be renewed."""
        self.lost: bool = False
        self.threads: int = 0
        """How many of this run's callbacks are in a thread right now."""
        self.task: asyncio.Task[None] | None = None
        self.abandoned: bool = False
        """The run was cancelled while a thread of it was still running (it cannot stop)."""
        self.finishing: bool = False
        """
        Its fenced write has begun: from here its fence decides whether the result counts (a
        renewal racing the commit that ends the lease must not call the run lost).
        """

    def finish(self) -> None:
        """The run's fenced write begins: check the lease, then let the fence decide."""
        self.check()
        self.finishing = True

    def check(self) -> None:
        """Raise `LeaseLostError` when the lease was lost: nothing of this run may be written."""
        if self.lost:
            key = self.key
            msg = (
                f"the lease of {key.kind.value}:{key.job}:{key.id} was lost while its run was"
                " in progress; its result is discarded"
            )
            raise LeaseLostError(msg)

    def is_cancelled(self) -> bool:
        """Whether a client cancelled this run's event (`WorkerPoolContext.cancelled`)."""
        return self.stopped == "cancelled"

    def stop_with(self, reason: StopReason) -> None:
        """
        Ask `execute` to stop: while it runs, the run's task is cancelled inside it (an
        async `execute` unwinds; a sync one goes on in its thread, which the run then waits
        for). The first reason stands; a run writing its outcome is not stopped.
        """
        if self.stopped is not None or self.lost or self.finishing:
            return
        self.stopped = reason
        if self.guarded and self.task is not None and not self.task.done():
            self.task.cancel()

    def lose(self) -> None:
        """Mark the lease lost; cancel the run if what it runs now can be cancelled."""
        if self.lost or self.finishing:
            return
        self.lost = True
        if self.threads == 0 and self.task is not None and not self.task.done():
            self.task.cancel()


class Invoker:
    """Runs callbacks: async ones on the loop, sync ones in a thread pool of `threads`."""

    __slots__ = ("_executor", "_threads", "abandoned")

    def __init__(self, threads: int) -> None:
        self._threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self.abandoned: int = 0
        """
        Threads of stopped runs (timed out, cancelled) still running: the runs wait for
        them, holding their instance or pool event, and discard what they return.
        """

    @property
    def threads(self) -> int:
        """The size of the thread pool."""
        return self._threads

    async def invoke(self, call: Call[T], run: RunHandle | None) -> T | Awaitable[T]:
        """
        Call it where it belongs; what a sync callback returns comes back as it is (an
        awaitable returned by a sync callable, such as a lambda calling an async function,
        is then awaited by the caller on the loop).
        """
        if not call.blocking:
            return call.thunk()
        return await self._in_thread(call.thunk, run)

    async def outlive(self, run: RunHandle) -> None:
        """Wait for the threads of a stopped run to return (counted in `abandoned`)."""
        if not run.pending:
            return
        self.abandoned += 1
        try:
            await asyncio.wait(set(run.pending))
        finally:
            self.abandoned -= 1

    async def value(self, fn: Callable[[], T], run: RunHandle | None) -> T:
        """Run a plain callback (a predicate, a delay function) in the thread pool."""
        return await self._in_thread(fn, run)

    async def _in_thread(self, fn: Callable[[], T], run: RunHandle | None) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="durable-jobs")
        # like asyncio.to_thread: the callback sees the caller's context variables
        context = contextvars.copy_context()
        future = asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(context.run, fn)
        )
        if run is not None:
            run.threads += 1
            # a marker of its own: the thread's future is typed by what the callback returns
            returned: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            run.pending.add(returned)

            def ended(_: object, run: RunHandle = run) -> None:
                run.pending.discard(returned)
                if not returned.done():
                    returned.set_result(None)

            future.add_done_callback(ended)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if run is not None and not future.done():
                run.abandoned = True  # the thread goes on: its instance is not released
            raise
        finally:
            if run is not None:
                run.threads -= 1

    def close(self) -> None:
        """Stop the thread pool once its running callbacks return."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)
