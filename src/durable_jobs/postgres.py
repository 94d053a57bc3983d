"""
PostgreSQL storage for many workers on many hosts: `pip install 'durable-jobs[postgres]'`.

    from durable_jobs.postgres import PostgresStorage

    engine = Engine(jobs=[...], storage=PostgresStorage("postgresql://app@db/jobs"))
"""

from ._storage._postgres import PostgresStorage


__all__ = ["PostgresStorage"]
