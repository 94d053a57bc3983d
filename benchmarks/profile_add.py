"""
Where the time of a debounce `add` on `SqliteStorage` goes (a diagnostic, not a benchmark).

`python -m benchmarks.profile_add [EVENTS]` adds EVENTS events (default 1000, over 100 ids)
once unprofiled, printing wall time, event-loop-thread CPU and other-thread CPU (the
storage's SQLite thread) per add, then once under cProfile, printing the functions of the
event-loop thread by their own time. cProfile sees only that thread; the SQLite thread
shows up as time spent waiting in `select.epoll.poll`.
"""

import asyncio
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

from durable_jobs import Engine, SqliteStorage
from durable_jobs.testing import TestClock

from ._workloads import debounce_job, stream


async def _adds(events: int, profile: cProfile.Profile | None) -> None:
    ids = 100
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as folder:
        storage = SqliteStorage(Path(folder) / "jobs.db")
        job = debounce_job()
        client = Engine(jobs=[job], storage=storage, clock=TestClock()).client.debounce(job)
        await storage.open()
        work = list(stream(ids, max(1, events // ids)))
        wall, main_cpu, all_cpu = time.perf_counter(), time.thread_time(), time.process_time()
        if profile is not None:
            profile.enable()
        for id, click in work:
            await client.add(id, click)
        if profile is not None:
            profile.disable()
        wall = time.perf_counter() - wall
        main_cpu = time.thread_time() - main_cpu
        other_cpu = time.process_time() - all_cpu - main_cpu
        await storage.close()
    per = 1e6 / len(work)
    label = "profiled" if profile is not None else "unprofiled"
    print(
        f"{label}: {len(work)} adds, {wall * per:.0f} µs/add wall,"
        f" {main_cpu * per:.0f} µs/add event-loop thread CPU,"
        f" {other_cpu * per:.0f} µs/add other threads' CPU (SQLite thread)"
    )


def main(argv: list[str]) -> None:
    events = int(argv[0]) if argv else 1000
    asyncio.run(_adds(events, None))
    profile = cProfile.Profile()
    asyncio.run(_adds(events, profile))
    print()
    pstats.Stats(profile).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main(sys.argv[1:])
