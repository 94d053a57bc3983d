"""
`add` latency on one Debounce id while a 3 s `execute` of that id runs in a worker process.

A worker process (`busy_worker.py`) serves the `SLOW` Debounce job on the storage. This
process is a client only (`Client(jobs=..., storage=...)`, no deps, no worker), as a web
app would be. Each repetition:

1. baseline: `adds` sequential `add`s to a fresh id with no flush running anywhere (the
   worker process is up and idle), one every `SPACING` seconds;
2. one event to another fresh id and `flush(id)`: the worker claims the batch and its
   `execute` starts (it prints `FLUSHING`); then the same `adds` to that same id, with the
   same spacing, while the flush runs. The repetition counts only if the flush is still
   running after the last add (`status(id)` shows the flushed batch as `flushing`).

Even repetitions run the baseline first, odd ones the flush phase first, so that neither
phase always follows the other.

Each `add` is timed alone (wall clock around the await). The adds fold into the id's
open batch, which grows the same way in both phases.
"""

import asyncio
import contextlib
import sys
import time
from collections.abc import Sequence

import attrs

from durable_jobs import Client, DebounceClient, SqliteStorage, Storage

from ._harness import percentile, quiet
from .busy_worker import FLUSH_SECONDS, JOBS, SLOW, Note


SPACING = 0.02
"""Seconds between two adds (the adds are sequential: each waits for the previous one)."""
WINDOW = 0.8
"""The adds during the flush stop after this fraction of `FLUSH_SECONDS`, whatever happens."""
WARM_UP = 10
"""Adds to another id before the first repetition, not counted."""
START_TIMEOUT = 60.0
"""Seconds the worker process may take to start, or a flush to begin or end."""


@attrs.frozen
class Latencies:
    """One phase of one repetition: each add's wall time, in milliseconds."""

    samples: tuple[float, ...]

    @property
    def p50(self) -> float:
        return percentile(self.samples, 0.50)

    @property
    def p99(self) -> float:
        return percentile(self.samples, 0.99)

    @property
    def worst(self) -> float:
        return max(self.samples)


@attrs.frozen
class BusyRuns:
    """Every repetition of both phases."""

    calm: tuple[Latencies, ...]
    busy: tuple[Latencies, ...]


async def _line(stream: asyncio.StreamReader, prefix: str) -> str:
    """The next line of the worker's stdout that starts with `prefix` (others are skipped)."""
    async with asyncio.timeout(START_TIMEOUT):
        while True:
            raw = await stream.readline()
            if not raw:
                msg = f"the worker process exited before printing {prefix!r}"
                raise RuntimeError(msg)
            line = raw.decode().strip()
            if line.startswith(prefix):
                return line


async def start_worker(argv: Sequence[str]) -> asyncio.subprocess.Process:
    """A `busy_worker` process on `argv`, once it prints READY."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.busy_worker",
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        await _line(process.stdout, "READY")
    except BaseException:
        await stop_worker(process)
        raise
    return process


async def stop_worker(process: asyncio.subprocess.Process) -> str:
    """Stop the worker (stdin closed: it finishes its runs and exits); the end of its stderr."""
    if process.stdin is not None:
        process.stdin.close()
    try:
        async with asyncio.timeout(30):
            _, err = await process.communicate()
    except TimeoutError:
        process.kill()
        _, err = await process.communicate()
    lines = err.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


async def _adds(client: DebounceClient[Note, Note], id: str, count: int, until: float) -> Latencies:
    samples: list[float] = []
    quiet()
    for n in range(count):
        if time.perf_counter() >= until:
            break
        started = time.perf_counter()
        await client.add(id, Note(n))
        samples.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(SPACING)
    return Latencies(tuple(samples))


async def _busy(
    client: DebounceClient[Note, Note],
    worker: asyncio.subprocess.Process,
    rep: int,
    adds: int,
) -> Latencies:
    """`adds` adds to an id while the worker flushes that id (and waits for the flush end)."""
    assert worker.stdout is not None
    hot = f"hot-{rep}"
    await client.add(hot, Note(0))
    requested = await client.flush(hot)
    line = await _line(worker.stdout, "FLUSHING")
    began = time.perf_counter()
    if line.split()[1:] != [hot, str(requested.batch_id)]:
        msg = f"the worker flushed something else: {line!r}"
        raise RuntimeError(msg)
    busy = await _adds(client, hot, adds, began + FLUSH_SECONDS * WINDOW)
    status = await client.status(hot)
    first = status.batches[0] if status.batches else None
    if first is None or first.batch_id != requested.batch_id or first.stage != "flushing":
        msg = f"the flush of {hot} was no longer running after the adds: {status!r}"
        raise RuntimeError(msg)
    await _line(worker.stdout, "FLUSHED")
    return busy


async def _rep(
    client: DebounceClient[Note, Note],
    worker: asyncio.subprocess.Process,
    rep: int,
    adds: int,
) -> tuple[Latencies, Latencies]:
    """Both phases; even reps start with the baseline, odd ones with the flush (order bias)."""
    if rep % 2 == 0:
        calm = await _adds(client, f"calm-{rep}", adds, float("inf"))
        busy = await _busy(client, worker, rep, len(calm.samples))
    else:
        busy = await _busy(client, worker, rep, adds)
        calm = await _adds(client, f"calm-{rep}", len(busy.samples), float("inf"))
    if len(busy.samples) < len(calm.samples):
        # the same number of adds in both phases, or the comparison is not fair
        calm = Latencies(calm.samples[: len(busy.samples)])
    return calm, busy


async def measure(
    worker_argv: Sequence[str], client_storage: "Storage", reps: int, adds: int
) -> BusyRuns:
    """`reps` repetitions against a worker process started on `worker_argv`."""
    worker = await start_worker(worker_argv)
    calm: list[Latencies] = []
    busy: list[Latencies] = []
    try:
        client = Client(jobs=list(JOBS), storage=client_storage).debounce(SLOW)
        if isinstance(client_storage, SqliteStorage):
            await client_storage.open()
        await _adds(client, "warm-up", WARM_UP, float("inf"))  # connections, first writes
        for rep in range(reps):
            quiet_calm, busy_run = await _rep(client, worker, rep, adds)
            calm.append(quiet_calm)
            busy.append(busy_run)
    finally:
        with contextlib.suppress(Exception):
            await client_storage.close()
        tail = await stop_worker(worker)
    if worker.returncode != 0:
        msg = f"the worker process exited with {worker.returncode}: {tail}"
        raise RuntimeError(msg)
    return BusyRuns(tuple(calm), tuple(busy))
