"""
A worker in its own process, started with the CLI; this process is a client only.

It runs `durable-jobs worker jobs_app:engine` against a SQLite file in a temporary folder,
adds two signups from here without running a worker, waits for the worker to flush them,
then stops the worker with SIGTERM.
"""

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from getting_started import Signup
from jobs_app import digests

from durable_jobs import Engine, SqliteStorage


HERE = Path(__file__).resolve().parent


async def add_signups(db: str) -> None:
    # a web app: the same jobs on the same database, and no `async with engine:`
    web = Engine(jobs=[digests], storage=SqliteStorage(db))
    client = web.client.debounce(digests)
    await client.add("team-7", Signup("a@example.com"))
    await client.add("team-7", Signup("b@example.com"))
    for _ in range(200):  # the worker process flushes the batch 100 ms after the first add
        if (await client.status("team-7")).status == "not_found":
            break
        await asyncio.sleep(0.02)
    assert (await client.status("team-7")).status == "not_found"
    assert await web.dead_letters() == []
    await web.storage.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        db = str(Path(folder) / "jobs.db")
        command = [str(Path(sys.executable).parent / "durable-jobs"), "worker", "jobs_app:engine"]
        worker = subprocess.Popen(command, cwd=HERE, env={**os.environ, "JOBS_DB": db})
        try:
            asyncio.run(add_signups(db))
        finally:
            worker.send_signal(signal.SIGTERM)  # graceful: in-flight alarms finish first
            code = worker.wait(timeout=10)
        assert code == 0, code
    print("the worker process flushed the batch and stopped cleanly")


if __name__ == "__main__":
    main()
