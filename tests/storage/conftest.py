"""
The `storage` fixture: every test of the conformance suite runs once per backend.

Adding a backend is one entry in `BACKENDS`: a name and a `Backend` whose factory is an
async context manager taking a fresh temporary directory and yielding an open, empty
storage (it may call `pytest.skip` when the backend cannot run here). For example::

    @contextlib.asynccontextmanager
    async def _sqlite(tmp: Path) -> AsyncGenerator[Storage]:
        storage = SqliteStorage(tmp / "jobs.db")
        try:
            yield storage
        finally:
            await storage.close()

    BACKENDS = {..., "sqlite": Backend(_sqlite)}
"""

import contextlib
import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import attrs
import pytest

from durable_jobs import MemoryStorage, SqliteStorage
from durable_jobs._storage._interface import Storage
from durable_jobs.postgres import PostgresStorage
from pg_server import postgres_dsn


@attrs.frozen
class Backend:
    """How to get a fresh storage of one backend, and what it can do."""

    factory: Callable[[Path], AbstractAsyncContextManager[Storage]]
    concurrent_keys: bool = True
    """Blocks on different keys can be open at the same time (not so for a one-writer DB)."""


@contextlib.asynccontextmanager
async def _memory(tmp: Path) -> AsyncGenerator[Storage]:
    del tmp
    storage = MemoryStorage()
    try:
        yield storage
    finally:
        await storage.close()


@contextlib.asynccontextmanager
async def _sqlite(tmp: Path) -> AsyncGenerator[Storage]:
    storage = SqliteStorage(tmp / "jobs.db")
    try:
        yield storage
    finally:
        await storage.close()


@contextlib.asynccontextmanager
async def _postgres(tmp: Path) -> AsyncGenerator[Storage]:
    # every test gets a schema of its own on the session's throwaway server
    # at most 50 characters: the schema's NOTIFY channel must fit PostgreSQL's 63 bytes
    storage = PostgresStorage(postgres_dsn(), schema=f"t_{uuid.uuid4().hex}")
    try:
        yield storage
    finally:
        await storage.close()


BACKENDS: dict[str, Backend] = {
    "memory": Backend(_memory),
    "sqlite": Backend(_sqlite, concurrent_keys=False),
    "postgres": Backend(_postgres),
}


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Backend:
    """The backend under test (its capabilities)."""
    name: str = request.param
    return BACKENDS[name]


@pytest.fixture
def concurrent_keys(backend: Backend) -> bool:
    """Whether the backend under test lets blocks on different keys be open at once."""
    return backend.concurrent_keys


@pytest.fixture
async def storage(backend: Backend, tmp_path: Path) -> AsyncGenerator[Storage]:
    """A fresh, empty storage of the backend under test."""
    async with backend.factory(tmp_path) as opened:
        yield opened
