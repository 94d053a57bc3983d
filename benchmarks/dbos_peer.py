"""
The peer baseline: the same debounce add workload through DBOS's `Debouncer` on SQLite.

Run in its own process by the suite (`python -m benchmarks.dbos_peer IDS EVENTS ADDERS REPS
[FOLDER]`; the suite passes a folder of its own, so a timed-out run leaves no files behind)
so DBOS's global instance, threads and logging stay out of the other measurements. It prints
one line `RESULT {json}`: adds per second per repetition, sequential and concurrent, or the
error that stopped it. Each repetition launches DBOS on a new SQLite file (its defaults:
rollback journal, `synchronous=FULL`), and, as a second variant, on a file switched to WAL
beforehand (WAL is a property of the file; DBOS keeps its connection defaults).

DBOS's debounce keeps the latest call's arguments (it does not fold events into a state),
so per event it does less application work than our `add`; the window is one hour, so no
workflow runs during the measurement.
"""

import asyncio
import importlib.metadata
import json
import logging
import sqlite3
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._workloads import shard, stream


DEBOUNCE_PERIOD = 3600.0
"""Seconds: the debounce window, longer than any measurement."""


def flush_batch(user: str, n: int) -> None:
    """The debounced workflow (never runs during the benchmark)."""


_registered: list[Callable[[str, int], None]] = []
"""The workflow, registered with DBOS once per process (its registry outlives instances)."""


def _launch(path: Path) -> tuple[Any, Any]:
    from dbos import DBOS, Debouncer  # noqa: PLC0415 - optional: only the bench extra has it

    DBOS(
        config={
            "name": "durable-jobs-bench",
            "system_database_url": f"sqlite:///{path}",
            "log_level": "WARNING",
        }
    )
    if not _registered:
        _registered.append(DBOS.workflow(name="flush_batch")(flush_batch))
    DBOS.launch()
    factory: Any = Debouncer  # untyped use: its type parameters do not matter here
    return DBOS, factory.create(_registered[0])


def _sequential(debouncer: Any, ids: int, events_per_id: int) -> float:
    events = list(stream(ids, events_per_id))
    start = time.perf_counter()
    for id, click in events:
        debouncer.debounce(id, DEBOUNCE_PERIOD, click.user, click.n)
    return len(events) / (time.perf_counter() - start)


def _concurrent(debouncer: Any, ids: int, events_per_id: int, adders: int) -> float:
    async def adder(index: int) -> None:
        for id, click in shard(ids, events_per_id, index, adders):
            await debouncer.debounce_async(id, DEBOUNCE_PERIOD, click.user, click.n)

    async def run() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(adder(index) for index in range(adders)))
        return ids * events_per_id / (time.perf_counter() - start)

    return asyncio.run(run())


def _measure(wal: bool, run: Callable[[Any], float], folder: Path, rep: int, variant: str) -> float:
    path = folder / f"dbos-{variant}-{rep}.sqlite"
    if wal:
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.close()
    dbos, debouncer = _launch(path)
    try:
        return run(debouncer)
    finally:
        dbos.destroy()


def main(argv: list[str]) -> dict[str, object]:
    ids, events_per_id, adders, reps = (int(arg) for arg in argv[:4])
    logging.getLogger("dbos").setLevel(logging.WARNING)
    results: dict[str, object] = {"version": importlib.metadata.version("dbos")}
    runs: dict[str, Callable[[Any], float]] = {
        "sequential": lambda d: _sequential(d, ids, events_per_id),
        "concurrent": lambda d: _concurrent(d, ids, events_per_id, adders),
    }
    if len(argv) > 4:  # the suite's folder: it removes it even if this process is killed
        return _variants(runs, Path(argv[4]), reps, results)
    with tempfile.TemporaryDirectory(prefix="bench-dbos-") as name:
        return _variants(runs, Path(name), reps, results)


def _variants(
    runs: dict[str, Callable[[Any], float]],
    folder: Path,
    reps: int,
    results: dict[str, object],
) -> dict[str, object]:
    for journal, wal in (("default", False), ("wal", True)):
        for label, run in runs.items():
            variant = f"{label}-{journal}"
            results[variant] = [_measure(wal, run, folder, rep, variant) for rep in range(reps)]
    return results


if __name__ == "__main__":
    try:
        outcome = main(sys.argv[1:])
    except BaseException as exc:
        last = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        where = f" (at {Path(last.filename).name}:{last.lineno})" if last else ""
        outcome = {"error": f"{type(exc).__name__}: {exc}{where}"}
    print("RESULT " + json.dumps(outcome), flush=True)
