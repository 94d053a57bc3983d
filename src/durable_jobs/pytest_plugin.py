"""
The pytest plugin of durable-jobs, loaded by pytest through the `pytest11` entry point.

Installing durable-jobs makes three fixtures available to every test (nothing to import):

- `durable_clock`: a fresh `TestClock` at 2026-01-01T00:00:00Z.
- `memory_engine`: builds an `Engine` on a `MemoryStorage` with `durable_clock`:
  `memory_engine(jobs=[...], deps=...)`.
- `sqlite_engine`: the same on a `SqliteStorage` in the test's `tmp_path` (one file per
  test, closed after it).

The engines' retry delays are exact (no jitter) unless the test passes `random=`. The
fixtures are plain (not async), so they work under pytest-asyncio in `auto` and in `strict`
mode alike, and in sync tests (with `engine.sync_client`).
"""

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

import pytest

from ._observe import Observer
from ._portal import default_portal
from ._runtime._engine import Engine
from ._storage._interface import Storage
from ._storage._memory import MemoryStorage
from ._storage._sqlite import SqliteStorage
from .testing import TestClock


if TYPE_CHECKING:
    from ._definitions._base import JobDefinition

__all__ = ["EngineFactory", "durable_clock", "memory_engine", "sqlite_engine"]

R = TypeVar("R")


def _no_jitter() -> float:
    return 0.5


class EngineFactory(Protocol):
    """
    Builds an `Engine` of `jobs` (with `deps` when they need any) on the fixture's storage
    and `durable_clock`; the keywords are those of `Engine`.
    """

    @overload
    def __call__(
        self,
        *,
        jobs: "Sequence[JobDefinition[None]]",
        observers: Sequence[Observer] = (),
        random: Callable[[], float] = _no_jitter,
    ) -> Engine[None]: ...

    @overload
    def __call__(
        self,
        *,
        jobs: "Sequence[JobDefinition[R]]",
        deps: R,
        observers: Sequence[Observer] = (),
        random: Callable[[], float] = _no_jitter,
    ) -> Engine[R]: ...


class _Factory:
    """An `EngineFactory` on one storage; the storages it made are closed at teardown."""

    def __init__(self, clock: TestClock, storage: Callable[[], Storage]) -> None:
        self._clock = clock
        self._storage = storage
        self.made: list[Storage] = []

    @overload
    def __call__(
        self,
        *,
        jobs: "Sequence[JobDefinition[None]]",
        observers: Sequence[Observer] = (),
        random: Callable[[], float] = _no_jitter,
    ) -> Engine[None]: ...

    @overload
    def __call__(
        self,
        *,
        jobs: "Sequence[JobDefinition[R]]",
        deps: R,
        observers: Sequence[Observer] = (),
        random: Callable[[], float] = _no_jitter,
    ) -> Engine[R]: ...

    def __call__(
        self,
        *,
        # the overloads above are the typed surface (as on `Engine`); this serves both
        jobs: "Sequence[JobDefinition[Any]]",
        deps: Any = None,
        observers: Sequence[Observer] = (),
        random: Callable[[], float] = _no_jitter,
    ) -> "Engine[Any]":
        storage = self._storage()
        self.made.append(storage)
        return Engine(
            jobs=jobs,
            deps=deps,
            storage=storage,
            clock=self._clock,
            observers=observers,
            random=random,
        )

    def close(self) -> None:
        """Close every storage made (on the library's own loop: no test loop is needed)."""
        for storage in self.made:
            default_portal().run(storage.close)


@pytest.fixture
def durable_clock() -> TestClock:
    """A fresh `TestClock` at 2026-01-01T00:00:00Z; the engine fixtures use it."""
    return TestClock()


@pytest.fixture
def memory_engine(durable_clock: TestClock) -> Iterator[EngineFactory]:
    """Build an `Engine` on a fresh `MemoryStorage` with `durable_clock`."""
    factory = _Factory(durable_clock, MemoryStorage)
    yield factory
    factory.close()


@pytest.fixture
def sqlite_engine(durable_clock: TestClock, tmp_path: Path) -> Iterator[EngineFactory]:
    """Build an `Engine` on a `SqliteStorage` in `tmp_path` with `durable_clock`."""
    made = iter(range(1, 1_000_000))

    def storage() -> Storage:
        n = next(made)
        return SqliteStorage(tmp_path / ("durable_jobs.db" if n == 1 else f"durable_jobs_{n}.db"))

    factory = _Factory(durable_clock, storage)
    yield factory
    factory.close()
