"""
Testing helpers: `TestClock`, a clock you move by hand that runs due alarms as it goes.

This module does not import pytest. Typical use::

    clock = TestClock()
    engine = Engine(jobs=[digests], storage=MemoryStorage(), clock=clock)
    await engine.client.debounce(digests).add("team-7", Signup("a@example.com"))
    await clock.advance("1 minute")      # the flush runs before this returns
"""

import asyncio
from datetime import UTC, datetime

from ._clock import AlarmDriver, Clock
from ._duration import DurationInput, to_timedelta


__all__ = ["DEFAULT_START", "TestClock"]

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
"""Where a `TestClock` starts unless told otherwise: 2026-01-01T00:00:00Z."""

_MAX_RUNS_AT_ONE_INSTANT = 10_000


class TestClock(Clock):
    """
    A deterministic clock for tests: time moves only when you move it.

    `await clock.advance("5 seconds")` moves time forward and runs every alarm that falls
    due on the way, in due order, before it returns; nothing sleeps for real. An `Engine`
    built with this clock attaches itself (`Clock.attach`), so its alarms run during
    `advance` even without a running worker. Time never goes backwards.
    """

    __test__ = False  # tell pytest this is not a test class

    def __init__(self, start: datetime | None = None) -> None:
        """Start at `start` (timezone-aware), by default at `DEFAULT_START`."""
        when = DEFAULT_START if start is None else start
        if when.tzinfo is None or when.utcoffset() is None:
            msg = f"start: TestClock needs a timezone-aware datetime, got {when!r}"
            raise ValueError(msg)
        self._now = when.astimezone(UTC)
        self._drivers: list[AlarmDriver] = []
        self._sleepers: dict[asyncio.Future[None], datetime] = {}
        self._advancing = False

    def now(self) -> datetime:
        """The clock's current time (UTC)."""
        return self._now

    def attach(self, driver: AlarmDriver) -> None:
        """Run `driver` whenever `advance` or `run_due` looks for due alarms."""
        self._drivers.append(driver)

    def detach(self, driver: AlarmDriver) -> None:
        """Stop running `driver` (no error when it is not attached)."""
        if driver in self._drivers:
            self._drivers.remove(driver)

    def set(self, when: datetime) -> None:
        """
        Jump to `when` without running any alarm (they run at the next `advance`/`run_due`).

        Raises `ValueError` when `when` is naive or earlier than `now()`.
        """
        self._move(self._forward(when))

    async def advance(self, by: DurationInput) -> None:
        """
        Move forward by `by`, running every alarm that falls due on the way, in due order.

        The clock steps from one alarm time to the next (alarms scheduled while it goes are
        included when they fall due before the target), runs the attached drivers at each
        step, ends at `now() + by` and runs what is due there. Work that a serving worker
        (`async with engine:`) holds at that moment is not waited for: it runs there.
        Raises `RuntimeError` when alarms keep falling due at one instant forever (an alarm
        rescheduling itself for now).
        """
        await self._run_until(self._now + to_timedelta(by, field="by"))

    async def advance_to(self, when: datetime) -> None:
        """Like `advance`, to an absolute (timezone-aware) time; never backwards."""
        await self._run_until(self._forward(when))

    async def run_due(self) -> datetime | None:
        """
        Run every alarm due now, without moving time; returns the next alarm time, if any.

        Like `advance(0)`: alarms that become due at this instant while it runs run too.
        """
        return await self._run_until(self._now)

    async def sleep_until(self, when: datetime | None, wake: asyncio.Event) -> None:
        """
        Wait until the clock is moved to `when` or later, or until `wake` is set.

        Like a real sleep it always suspends, even when `when` has already passed, so a loop
        around it never starves the other tasks.
        """
        if wake.is_set() or (when is not None and self._now >= when):
            await asyncio.sleep(0)
            return
        waiters: set[asyncio.Future[None] | asyncio.Task[bool]] = {
            asyncio.ensure_future(wake.wait())
        }
        reached: asyncio.Future[None] | None = None
        if when is not None:
            reached = asyncio.get_running_loop().create_future()
            self._sleepers[reached] = when
            waiters.add(reached)
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            if reached is not None:
                self._sleepers.pop(reached, None)

    def _forward(self, when: datetime) -> datetime:
        if when.tzinfo is None or when.utcoffset() is None:
            msg = f"when: TestClock needs a timezone-aware datetime, got {when!r}"
            raise ValueError(msg)
        if when < self._now:
            msg = (
                f"when: {when.isoformat()} is before {self._now.isoformat()} (time never goes back)"
            )
            raise ValueError(msg)
        return when.astimezone(UTC)

    def _move(self, when: datetime) -> None:
        if when <= self._now:
            return
        self._now = when
        for sleeper, until in list(self._sleepers.items()):
            if until <= when:
                del self._sleepers[sleeper]
                if not sleeper.done():
                    sleeper.set_result(None)

    async def _drive(self) -> datetime | None:
        upcoming: datetime | None = None
        for driver in list(self._drivers):
            at = await driver()
            if at is not None and (upcoming is None or at < upcoming):
                upcoming = at
        return upcoming

    async def _run_until(self, target: datetime) -> datetime | None:
        if self._advancing:
            msg = "TestClock is already advancing: await one advance/run_due before the next"
            raise RuntimeError(msg)
        self._advancing = True
        try:
            runs_here = 0
            while True:
                upcoming = await self._drive()
                if upcoming is None or upcoming > target:
                    if self._now >= target:
                        return upcoming
                    self._move(target)
                    runs_here = 0
                elif upcoming > self._now:
                    self._move(upcoming)
                    runs_here = 0
                else:
                    # still due here: scheduled for "now" by what just ran; let other tasks
                    # make progress, then look again
                    runs_here += 1
                    if runs_here >= _MAX_RUNS_AT_ONE_INSTANT:
                        msg = (
                            f"alarms kept falling due at {self._now.isoformat()} after "
                            f"{runs_here} runs: does an alarm reschedule itself for now?"
                        )
                        raise RuntimeError(msg)
                    await asyncio.sleep(0)
        finally:
            self._advancing = False
