"""Testing helpers: `TestClock`, a clock you move by hand that runs due alarms as it goes."""

import asyncio
from datetime import UTC, datetime

from ._clock import AlarmDriver, Clock
from ._duration import DurationInput, to_timedelta


_MAX_STEPS = 10_000


class TestClock(Clock):
    """
    A deterministic clock for tests.

    `await clock.advance("5 seconds")` moves time forward and runs every alarm that falls
    due on the way, in due order, before it returns; nothing sleeps for real. An `Engine`
    built with this clock attaches itself, so its alarms run without a worker.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start if start is not None else datetime(2026, 1, 1, tzinfo=UTC)
        if self._now.tzinfo is None:
            msg = "start: TestClock needs a timezone-aware datetime"
            raise ValueError(msg)
        self._drivers: list[AlarmDriver] = []
        self._moved = asyncio.Condition() if _has_loop() else None

    def now(self) -> datetime:
        """The clock's current time."""
        return self._now

    def attach(self, driver: AlarmDriver) -> None:
        """Run `driver` whenever time moves."""
        self._drivers.append(driver)

    def detach(self, driver: AlarmDriver) -> None:
        """Stop running `driver`."""
        if driver in self._drivers:
            self._drivers.remove(driver)

    def set(self, when: datetime) -> None:
        """Jump to `when` without running alarms (never backwards)."""
        if when < self._now:
            msg = f"set: {when.isoformat()} is before {self._now.isoformat()}"
            raise ValueError(msg)
        self._now = when

    async def run_due(self) -> datetime | None:
        """Run every alarm due now; returns the earliest next alarm time, if any."""
        nexts: list[datetime] = []
        for driver in list(self._drivers):
            upcoming = await driver()
            if upcoming is not None:
                nexts.append(upcoming)
        await self._notify()
        return min(nexts, default=None)

    async def advance(self, by: DurationInput) -> None:
        """Move forward by `by`, running due alarms in due order on the way."""
        target = self._now + to_timedelta(by, field="by")
        steps = 0
        instant = self._now
        while True:
            upcoming = await self.run_due()
            if upcoming is None or upcoming > target:
                break
            if upcoming <= self._now:
                steps = steps + 1 if self._now == instant else 1
                instant = self._now
                if steps > _MAX_STEPS:
                    msg = f"alarms keep falling due at {self._now.isoformat()}: a loop?"
                    raise RuntimeError(msg)
                continue
            self._now = upcoming
        self._now = target
        await self.run_due()

    async def sleep_until(self, when: datetime | None, wake: asyncio.Event) -> None:
        """Wait until the clock reaches `when` (moved by `advance`) or `wake` is set."""
        if self._moved is None:
            self._moved = asyncio.Condition()
        while not wake.is_set() and (when is None or self._now < when):
            waiter = asyncio.ensure_future(wake.wait())
            async with self._moved:
                moved = asyncio.ensure_future(self._moved.wait())
                done, pending = await asyncio.wait({waiter, moved}, return_when="FIRST_COMPLETED")
                for task in pending:
                    task.cancel()
                del done

    async def _notify(self) -> None:
        if self._moved is None:
            return
        async with self._moved:
            self._moved.notify_all()


def _has_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
