"""
A worker in its own process, started with the CLI; this process is a client only.

It runs `durable-jobs worker jobs_app:engine` against a SQLite file in a temporary folder,
adds two signups from here through a `Client` (no engine, no worker, no mailer), waits for
the worker to flush them, then stops the worker with SIGTERM.
"""

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from digest_jobs import digests
from getting_started import Signup

from durable_jobs import Client, SqliteStorage


HERE = Path(__file__).resolve().parent


async def add_signups(db: str) -> None:
    # a web app: the job definitions and the storage; the jobs' deps are never built here
    client = Client(jobs=[digests], storage=SqliteStorage(db))
    signups = client.debounce(digests)
    added = await signups.add("team-7", Signup("a@example.com"))
    await signups.add("team-7", Signup("b@example.com"))
    assert added.batch_id is not None
    async with asyncio.timeout(10):  # the worker process flushes the batch after 100 ms
        await signups.wait_flushed("team-7", added.batch_id)
    assert await client.storage.dead_letters() == []
    await client.storage.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        db = str(Path(folder) / "jobs.db")
        command = [str(Path(sys.executable).parent / "durable-jobs"), "worker", "jobs_app:engine"]
        worker = subprocess.Popen(
            command, cwd=HERE, env={**os.environ, "JOBS_DB": db}, stdout=subprocess.PIPE, text=True
        )
        try:
            asyncio.run(add_signups(db))
        finally:
            worker.send_signal(signal.SIGTERM)  # graceful: runs in flight finish first
            output, _ = worker.communicate(timeout=10)
        assert worker.returncode == 0, worker.returncode
    assert "worker: mailed a@example.com, b@example.com" in output, output
    print("the worker process mailed the batch and stopped cleanly")


if __name__ == "__main__":
    main()
