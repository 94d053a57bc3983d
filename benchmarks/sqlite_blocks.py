"""
SQLite instance-block latency: one block that reads a record and saves it (an `add`-like
write), timed from `storage.instance(key)` to the end of its commit.

Each block is one `BEGIN IMMEDIATE` ... `COMMIT`, so blocks of every process on the file
take turns at SQLite's write lock. Measured in one process alone, then in each of two and
four processes started together that write to keys of their own. Not a test: run it by
hand (`.venv/bin/python -m benchmarks.sqlite_blocks [--blocks N]`); it prints p50/p99/max
per process count.
"""

import argparse
import asyncio
import multiprocessing
import statistics
import tempfile
import time
from datetime import UTC, datetime
from multiprocessing.queues import Queue
from pathlib import Path

from durable_jobs import SqliteStorage
from durable_jobs._storage._interface import InstanceKey, InstanceRecord, JobKind


KEYS_PER_PROCESS = 100
T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def _blocks(path: Path, prefix: str, count: int, start_at: float) -> list[float]:
    storage = SqliteStorage(path)
    await storage.open()
    keys = [InstanceKey(JobKind.DEBOUNCE, "bench", f"{prefix}-{n}") for n in range(100)]
    await asyncio.sleep(max(0.0, start_at - time.time()))
    samples: list[float] = []
    for n in range(count):
        key = keys[n % KEYS_PER_PROCESS]
        started = time.perf_counter()
        async with storage.instance(key) as tx:
            record = tx.record
            state = 0 if record is None or not isinstance(record.state, int) else record.state
            tx.save(InstanceRecord(key=key, state=state + 1, created_at=T0, updated_at=T0))
        samples.append((time.perf_counter() - started) * 1000)
    await storage.close()
    return samples


def _process(
    path: Path, prefix: str, count: int, start_at: float, out: "Queue[list[float]]"
) -> None:
    out.put(asyncio.run(_blocks(path, prefix, count, start_at)))


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(processes: int, count: int) -> list[list[float]]:
    """Each process's block latencies (ms), all started at one moment on one new file."""
    context = multiprocessing.get_context("spawn")
    out: Queue[list[float]] = context.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "jobs.db"
        asyncio.run(_blocks(path, "warm", 1, 0.0))  # the schema exists before anyone starts
        start_at = time.time() + 1.5
        workers = [
            context.Process(target=_process, args=(path, f"p{n}", count, start_at, out))
            for n in range(processes)
        ]
        for worker in workers:
            worker.start()
        results = [out.get() for _ in workers]
        for worker in workers:
            worker.join()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--blocks", type=int, default=5000, help="blocks per process")
    args = parser.parse_args()
    print("| processes | p50 ms | p99 ms | max ms | blocks/s per process |")
    print("| --- | --- | --- | --- | --- |")
    for processes in (1, 2, 4):
        for samples in measure(processes, args.blocks):
            rate = len(samples) / (sum(samples) / 1000)
            print(
                f"| {processes} | {statistics.median(samples):.2f} |"
                f" {_percentile(samples, 0.99):.2f} | {max(samples):.1f} | {rate:.0f} |"
            )


if __name__ == "__main__":
    main()
