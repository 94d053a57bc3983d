"""Clocks: the only source of "now" inside the engine."""

import abc
import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime


AlarmDriver = Callable[[], Awaitable[datetime | None]]
"""Runs every alarm due at the clock's current time; returns the next alarm time, if any."""


class Clock(abc.ABC):
    """Where the engine reads the time and waits for it."""

    @abc.abstractmethod
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""

    @abc.abstractmethod
    async def sleep_until(self, when: datetime | None, wake: asyncio.Event) -> None:
        """Return once `when` is reached (never, if None) or `wake` is set, whichever first."""

    def attach(self, driver: AlarmDriver) -> None:  # noqa: B027 - optional hook
        """Let the clock run alarms itself (TestClock does; real clocks leave it to workers)."""

    def detach(self, driver: AlarmDriver) -> None:  # noqa: B027 - optional hook
        """Undo `attach`."""


class SystemClock(Clock):
    """The wall clock (UTC)."""

    def now(self) -> datetime:
        """The current UTC time."""
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime | None, wake: asyncio.Event) -> None:
        """Sleep until `when` or until `wake` is set."""
        timeout = None if when is None else max(0.0, (when - self.now()).total_seconds())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout)
