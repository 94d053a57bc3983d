"""An app module for `durable-jobs worker jobs_app:engine` (see cli_worker.py)."""

import os

from getting_started import Digest, Signup, collect, send_digest

from durable_jobs import Debounce, Engine, SqliteStorage


digests = Debounce(
    name="digests",
    event=Signup,
    state=Digest,
    flush_after="100 ms",  # short, so that the example ends quickly
    on_event=collect,
    execute=send_digest,
)

engine = Engine(jobs=[digests], storage=SqliteStorage(os.environ.get("JOBS_DB", "jobs.db")))
