"""
Shared by the crash tests: worker subprocesses of `crash_app`, a feeder that records what the
storage accepted, and the checks against the ground-truth sink.
"""

import asyncio
import itertools
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import attrs

import crash_app
from durable_jobs import Engine, InstanceStatus, StorageError


TESTS = Path(__file__).resolve().parent


@attrs.define
class Workers:
    """`durable-jobs worker crash_app:engine` subprocesses, logs kept for failure messages."""

    storage: str
    sink: Path
    logs: Path
    schema: str = "crash"
    running: list[subprocess.Popen[bytes]] = attrs.field(factory=list)
    started: int = 0
    killed: int = 0

    def start(self) -> None:
        env = {
            **os.environ,
            "CRASH_STORAGE": self.storage,
            "CRASH_SINK": str(self.sink),
            "CRASH_SCHEMA": self.schema,
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        }
        log = (self.logs / f"worker-{self.started}.log").open("wb")
        self.started += 1
        self.running.append(
            subprocess.Popen(
                [sys.executable, "-m", "durable_jobs", "worker", "crash_app:engine"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )

    def kill_one(self, rng: random.Random) -> None:
        victim = self.running.pop(rng.randrange(len(self.running)))
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        self.killed += 1

    def stop_all(self) -> list[int]:
        """SIGTERM every worker (a graceful stop); their exit codes."""
        for worker in self.running:
            worker.send_signal(signal.SIGTERM)
        codes = [worker.wait(timeout=30) for worker in self.running]
        self.running.clear()
        return codes

    def output(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.logs.glob("worker-*.log"))
        )


@attrs.define
class Feeder:
    """Sends work through the public client; remembers only what was accepted."""

    engine: Engine[None]
    rng: random.Random
    ids: int
    events: set[str] = attrs.field(factory=set)
    reminders: set[str] = attrs.field(factory=set)
    items: set[str] = attrs.field(factory=set)
    counter: int = 0

    async def feed(
        self, seconds: float = 3600, concurrency: int = 1, operations: int | None = None
    ) -> None:
        """Send work for `seconds`, or until `operations` more were sent."""
        deadline = time.monotonic() + seconds
        last = self.counter + operations if operations is not None else None
        await asyncio.gather(*(self._lane(deadline, last) for _ in range(concurrency)))

    async def poison(self) -> None:
        await self._accepted(
            lambda: self.engine.client.debounce(crash_app.COLLECT).add("bad", "poison")
        )

    async def _lane(self, deadline: float, last: int | None) -> None:
        clients = self.engine.client
        while time.monotonic() < deadline and (last is None or self.counter < last):
            self.counter += 1
            name = f"{self.counter}"
            roll = self.rng.random()
            if roll < 0.7:
                id = f"c{self.rng.randrange(self.ids)}"
                event = f"e{name}"
                collect = clients.debounce(crash_app.COLLECT)
                await self._accepted(partial(collect.add, id, event, event_id=event))
                self.events.add(event)
            elif roll < 0.95:
                item = f"p{name}"
                pool = clients.worker_pool(crash_app.POOL)
                await self._accepted(partial(pool.enqueue, item, event_id=item))
                self.items.add(item)
            else:
                reminder = f"r{name}"
                task = clients.task(crash_app.REMINDER)
                await self._accepted(partial(task.send, reminder, "arm", event_id=reminder))
                self.reminders.add(reminder)

    @staticmethod
    async def _accepted(operation: Callable[[], Awaitable[object]]) -> None:
        # An operation that raised was not accepted; it is retried with the same event id,
        # so a retry of one that did commit is acknowledged as a duplicate.
        for _ in range(50):
            try:
                await operation()
            except StorageError:
                await asyncio.sleep(0.1)
            else:
                return
        raise AssertionError("the storage refused the same operation 50 times")


def sink_rows(sink: Path, sql: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(sink, timeout=30)
    try:
        return db.execute(sql).fetchall()
    except sqlite3.OperationalError:  # before the first worker created the tables
        return []
    finally:
        db.close()


def outstanding(feeder: Feeder, sink: Path) -> dict[str, int]:
    """What the sink does not show yet, per kind of work."""
    delivered = {str(row[0]) for row in sink_rows(sink, "SELECT event FROM batches")}
    fired = {str(row[0]) for row in sink_rows(sink, "SELECT task FROM fired")}
    done = {str(row[0]) for row in sink_rows(sink, "SELECT item FROM items")}
    return {
        "events": len(feeder.events - delivered),
        "reminders": len(feeder.reminders - fired),
        "items": len(feeder.items - done),
    }


async def wait_until_done(feeder: Feeder, sink: Path, workers: Workers, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        left = outstanding(feeder, sink)
        letters = await feeder.engine.dead_letters()
        if not any(left.values()) and letters:
            return
        await asyncio.sleep(0.1)
    msg = f"work still outstanding after {within} s: {outstanding(feeder, sink)}"
    raise AssertionError(f"{msg}\n{workers.output()}")


def overlapping_runs(sink: Path) -> list[str]:
    """Runs of one instance whose [start, end] intervals intersect (two workers at once)."""
    runs: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for job, instance, started, ended in sink_rows(
        sink, "SELECT job, instance, started, ended FROM runs WHERE ended IS NOT NULL"
    ):
        assert isinstance(started, float)
        assert isinstance(ended, float)
        runs[(str(job), str(instance))].append((started, ended))
    found: list[str] = []
    for key, spans in runs.items():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            if start < end:
                found.append(f"{key}: a run started at {start} before one ended at {end}")
    return found


async def check_final_state(feeder: Feeder, sink: Path, final_start: float) -> None:
    """Nothing lost, nothing doubled, nothing stuck, only the expected dead letter."""
    # Every accepted event is in exactly one batch (a re-run flush reuses its batch id).
    per_event: dict[str, set[str]] = defaultdict(set)
    for batch, event in sink_rows(sink, "SELECT batch, event FROM batches"):
        per_event[str(event)].add(str(batch))
    assert feeder.events <= per_event.keys()
    doubled = {event: batches for event, batches in per_event.items() if len(batches) > 1}
    assert not doubled

    fired = {str(row[0]) for row in sink_rows(sink, "SELECT task FROM fired")}
    assert feeder.reminders <= fired
    done = {str(row[0]) for row in sink_rows(sink, "SELECT item FROM items")}
    assert feeder.items <= done

    # The recurring job kept running after the last restart.
    ticks = sink_rows(sink, f"SELECT count(*) FROM ticks WHERE at > {final_start}")
    assert int(str(ticks[0][0])) >= 1

    assert not overlapping_runs(sink)

    letters = await feeder.engine.dead_letters()
    assert [(letter.key.job, letter.key.id) for letter in letters] == [("collect", "bad")]

    now = datetime.now(UTC)
    stuck = [
        f"{record.key.job}/{record.key.id} status={record.status} alarm_at={record.alarm_at}"
        for record in await feeder.engine.instances()
        if record.status is InstanceStatus.FAILED
        or (record.alarm_at is not None and record.alarm_at < now - timedelta(seconds=3))
    ]
    assert not [entry for entry in stuck if not entry.startswith("collect/bad ")]
