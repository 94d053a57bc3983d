"""`python -m durable_jobs`: the `durable-jobs` command."""

from ._cli import run


run()
