"""
A worker process for the cross-process benchmarks (sections 9 and 10).

    python -m benchmarks.busy_worker sqlite PATH
    python -m benchmarks.busy_worker postgres DSN SCHEMA

It serves two jobs on that storage until stdin closes or SIGTERM: `SLOW`, a Debounce
whose `execute` takes `FLUSH_SECONDS` (an async sleep), and `HOLD`, a WorkerPool whose
`execute` waits until the parent says so. Protocol on stdout, one line each: `READY` once
the worker serves; `FLUSHING <id> <batch id>` when a flush starts and `FLUSHED <id>
<batch id>` when its `execute` returns; `HOLDING <event id>` when a held event starts.
On stdin: `RELEASE` lets every held event finish.
"""

import asyncio
import signal
import sys
import threading

import attrs

from durable_jobs import (
    Debounce,
    DebounceEventContext,
    DebounceExecuteContext,
    Engine,
    Ok,
    Result,
    SqliteStorage,
    Storage,
    WorkerPool,
    WorkerPoolContext,
)


FLUSH_SECONDS = 3.0
"""How long the slow flush takes (the issue's example)."""
HOLD_CONCURRENCY = 16
"""The held pool's concurrency and the worker's slots."""
LEASE = "3 seconds"
"""Short, so the lease keeper renews (every second) while the connections are counted."""


@attrs.frozen
class Note:
    """The event and batch state of the slow debounce; the event of the held pool."""

    n: int


def _fold(ctx: DebounceEventContext[Note, Note]) -> Note:
    return Note((ctx.state.n if ctx.state is not None else 0) + 1)


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _slow_flush(ctx: DebounceExecuteContext[Note]) -> Result[None, Exception]:
    _say(f"FLUSHING {ctx.id} {ctx.batch_id}")
    await asyncio.sleep(FLUSH_SECONDS)
    _say(f"FLUSHED {ctx.id} {ctx.batch_id}")
    return Ok(None)


SLOW = Debounce(
    name="slow",
    event=Note,
    state=Note,
    flush_after="1 hour",
    on_event=_fold,
    execute=_slow_flush,
)


class Gate:
    """Held events wait here until the parent sends `RELEASE`."""

    def __init__(self) -> None:
        self.open = asyncio.Event()

    def release(self) -> None:
        self.open.set()
        self.open = asyncio.Event()


GATE = Gate()


async def _held(ctx: WorkerPoolContext[Note]) -> Result[None, Exception]:
    gate = GATE.open
    _say(f"HOLDING {ctx.event_id}")
    await gate.wait()
    return Ok(None)


HOLD = WorkerPool(name="hold", event=Note, concurrency=HOLD_CONCURRENCY, execute=_held)
JOBS = (SLOW, HOLD)


def storage_for(argv: list[str]) -> Storage:
    """The storage named on the command line."""
    if argv[0] == "sqlite":
        return SqliteStorage(argv[1])
    from durable_jobs.postgres import PostgresStorage  # noqa: PLC0415 - only when asked

    return PostgresStorage(argv[1], schema=argv[2])


def _commands(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Read stdin on a daemon thread (a blocked read must not keep the process alive)."""
    for line in sys.stdin:
        if line.strip() == "RELEASE":
            loop.call_soon_threadsafe(GATE.release)
    loop.call_soon_threadsafe(stop.set)


async def _serve(argv: list[str]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    storage = storage_for(argv)
    opener = getattr(storage, "open", None)
    if opener is not None:
        await opener()
    engine = Engine(jobs=list(JOBS), storage=storage, concurrency=HOLD_CONCURRENCY, lease=LEASE)
    threading.Thread(target=_commands, args=(loop, stop), daemon=True).start()
    try:
        async with engine:
            _say("READY")
            await stop.wait()
            GATE.release()  # let held runs finish, so the engine stops gracefully
    finally:
        await storage.close()


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1:]))
