"""The worker's module, for `durable-jobs worker jobs_app:engine` (see cli_worker.py)."""

import os

from deps import Services
from digest_jobs import digests

from durable_jobs import Engine, SqliteStorage


class PrintMailer:
    """A stand-in for a real mail client: the dependency only the worker builds."""

    async def send(self, to: tuple[str, ...]) -> int:
        print("worker: mailed", ", ".join(to), flush=True)
        return 250


engine = Engine(
    jobs=[digests],
    deps=Services(mailer=PrintMailer()),
    storage=SqliteStorage(os.environ.get("JOBS_DB", "jobs.db")),
)
