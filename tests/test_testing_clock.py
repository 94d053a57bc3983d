"""TestClock: time moves only when told, due alarms run in due order, nothing really sleeps."""

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import attrs
import pytest

from durable_jobs import (
    Debounce,
    DebounceExecuteContext,
    Engine,
    MemoryStorage,
    Ok,
    Result,
)
from durable_jobs.testing import DEFAULT_START, TestClock


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class FakeAlarms:
    """A driver over named alarms; an alarm's action may schedule more alarms."""

    def __init__(self, clock: TestClock, log: list[tuple[str, datetime]]) -> None:
        self.clock = clock
        self.log = log
        self.alarms: dict[str, datetime] = {}
        self.actions: dict[str, Callable[[], None]] = {}
        self.calls: list[datetime] = []

    def schedule(self, name: str, when: datetime, action: Callable[[], None] | None = None) -> None:
        self.alarms[name] = when
        if action is not None:
            self.actions[name] = action

    async def __call__(self) -> datetime | None:
        now = self.clock.now()
        self.calls.append(now)
        while due := sorted((when, name) for name, when in self.alarms.items() if when <= now):
            _, name = due[0]
            del self.alarms[name]
            self.log.append((name, now))
            await asyncio.sleep(0)
            action = self.actions.pop(name, None)
            if action is not None:
                action()
        return min(self.alarms.values(), default=None)


# -- time ----------------------------------------------------------------------------------


def test_starts_at_a_fixed_utc_time_by_default() -> None:
    clock = TestClock()
    assert clock.now() == DEFAULT_START == T0
    assert clock.now().tzinfo is UTC


def test_starts_where_told_and_reports_utc() -> None:
    start = datetime(2030, 6, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    clock = TestClock(start)
    assert clock.now() == start
    assert clock.now().tzinfo is UTC


def test_rejects_a_naive_start() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        TestClock(datetime(2026, 1, 1))


async def test_advance_accepts_every_duration_form() -> None:
    clock = TestClock()
    await clock.advance("5 seconds")
    await clock.advance(10)
    await clock.advance(0.5)
    await clock.advance(timedelta(minutes=1))
    await clock.advance("1 hour")
    assert clock.now() == T0 + timedelta(hours=1, minutes=1, seconds=15.5)


async def test_advance_rejects_bad_durations() -> None:
    clock = TestClock()
    with pytest.raises(ValueError, match="soon"):
        await clock.advance("soon")
    with pytest.raises(ValueError, match="by"):
        await clock.advance(-1)
    assert clock.now() == T0


async def test_set_jumps_without_running_alarms() -> None:
    clock = TestClock()
    log: list[tuple[str, datetime]] = []
    alarms = FakeAlarms(clock, log)
    alarms.schedule("a", at(5))
    clock.attach(alarms)
    clock.set(at(10))
    assert clock.now() == at(10)
    assert log == []
    assert await clock.run_due() is None
    assert log == [("a", at(10))]


def test_set_never_goes_backwards_and_needs_an_aware_time() -> None:
    clock = TestClock()
    clock.set(at(10))
    with pytest.raises(ValueError, match="never goes back"):
        clock.set(at(5))
    with pytest.raises(ValueError, match="timezone-aware"):
        clock.set(datetime(2027, 1, 1))
    clock.set(at(10))  # the same instant is fine
    assert clock.now() == at(10)


async def test_advance_to_goes_to_an_absolute_time() -> None:
    clock = TestClock()
    await clock.advance_to(at(30))
    assert clock.now() == at(30)
    with pytest.raises(ValueError, match="never goes back"):
        await clock.advance_to(at(10))


# -- alarms --------------------------------------------------------------------------------


async def test_advance_runs_alarms_in_due_order_across_drivers() -> None:
    clock = TestClock()
    log: list[tuple[str, datetime]] = []
    first, second = FakeAlarms(clock, log), FakeAlarms(clock, log)
    first.schedule("a10", at(10))
    first.schedule("a30", at(30))
    second.schedule("b20", at(20))
    second.schedule("b30", at(30))
    second.schedule("b90", at(90))
    clock.attach(first)
    clock.attach(second)

    await clock.advance("1 minute")

    assert log == [("a10", at(10)), ("b20", at(20)), ("a30", at(30)), ("b30", at(30))]
    assert clock.now() == at(60)
    await clock.advance("30 seconds")
    assert log[-1] == ("b90", at(90))


async def test_alarms_scheduled_while_advancing_run_when_they_fall_due() -> None:
    clock = TestClock()
    log: list[tuple[str, datetime]] = []
    alarms = FakeAlarms(clock, log)
    clock.attach(alarms)

    def chain() -> None:
        alarms.schedule("second", clock.now() + timedelta(seconds=5))
        alarms.schedule("beyond", clock.now() + timedelta(seconds=50))

    alarms.schedule("first", at(10), chain)
    await clock.advance(20)
    assert log == [("first", at(10)), ("second", at(15))]
    await clock.advance(40)
    assert log[-1] == ("beyond", at(60))


async def test_an_alarm_scheduled_for_now_runs_before_advance_returns() -> None:
    clock = TestClock()
    log: list[tuple[str, datetime]] = []
    alarms = FakeAlarms(clock, log)
    clock.attach(alarms)
    alarms.schedule("at-target", at(10), lambda: alarms.schedule("immediate", clock.now()))
    await clock.advance(10)
    assert log == [("at-target", at(10)), ("immediate", at(10))]


async def test_time_never_goes_backwards_even_for_overdue_alarms() -> None:
    clock = TestClock()
    clock.set(at(100))
    log: list[tuple[str, datetime]] = []
    alarms = FakeAlarms(clock, log)
    alarms.schedule("overdue", at(5))
    alarms.schedule("soon", at(110))
    clock.attach(alarms)
    stale = [at(50)]

    async def stale_once() -> datetime | None:
        # a stale answer in the past must not pull the clock back
        return stale.pop() if stale else None

    clock.attach(stale_once)
    await clock.advance(20)
    assert log == [("overdue", at(100)), ("soon", at(110))]
    assert alarms.calls == sorted(alarms.calls)
    assert alarms.calls[0] == at(100)
    assert clock.now() == at(120)
    assert stale == []


async def test_advance_ends_at_the_target_and_runs_the_drivers_there() -> None:
    clock = TestClock()
    log: list[tuple[str, datetime]] = []
    alarms = FakeAlarms(clock, log)
    clock.attach(alarms)
    await clock.advance(30)
    assert alarms.calls[-1] == at(30)
    assert clock.now() == at(30)


async def test_run_due_runs_what_is_due_now_without_moving_time() -> None:
    clock = TestClock()
    log: list[tuple[str, datetime]] = []
    alarms = FakeAlarms(clock, log)
    alarms.schedule("now", T0)
    alarms.schedule("later", at(5))
    clock.attach(alarms)
    assert await clock.run_due() == at(5)
    assert log == [("now", T0)]
    assert clock.now() == T0


async def test_a_detached_driver_is_not_run() -> None:
    clock = TestClock()
    log: list[tuple[str, datetime]] = []
    alarms = FakeAlarms(clock, log)
    alarms.schedule("a", at(1))
    clock.attach(alarms)
    clock.detach(alarms)
    clock.detach(alarms)  # detaching twice is harmless
    await clock.advance(5)
    assert log == []


async def test_an_alarm_that_reschedules_itself_for_now_forever_is_caught() -> None:
    clock = TestClock()
    runs = 0

    async def stuck() -> datetime | None:
        nonlocal runs
        runs += 1
        return clock.now()

    clock.attach(stuck)
    with pytest.raises(RuntimeError, match="reschedule itself"):
        await clock.advance(5)
    assert runs <= 10_001
    clock.detach(stuck)
    await clock.advance(5)  # the clock is usable again
    assert clock.now() == at(5)


async def test_an_alarm_held_by_another_task_lets_that_task_finish() -> None:
    clock = TestClock()
    release = asyncio.Event()
    done: list[datetime] = []

    async def holder() -> None:
        await release.wait()
        done.append(clock.now())

    task = asyncio.create_task(holder())

    async def driver() -> datetime | None:
        # the alarm stays due (at T0) until `holder` finishes it, as with a leased alarm
        if done:
            return None
        release.set()
        return T0

    clock.attach(driver)
    await clock.advance(1)
    await task
    assert done == [T0]
    assert clock.now() == at(1)


async def test_advancing_twice_at_once_is_refused() -> None:
    clock = TestClock()
    gate = asyncio.Event()
    entered = asyncio.Event()

    async def slow() -> datetime | None:
        entered.set()
        await gate.wait()
        return None

    clock.attach(slow)
    first = asyncio.create_task(clock.advance(1))
    await entered.wait()
    with pytest.raises(RuntimeError, match="already advancing"):
        await clock.advance(1)
    gate.set()
    await first
    assert clock.now() == at(1)


# -- sleep_until ---------------------------------------------------------------------------


async def settle() -> None:
    """Let every ready task run (no time passes)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_sleep_until_is_woken_by_advance() -> None:
    clock = TestClock()
    wake = asyncio.Event()
    sleeper = asyncio.create_task(clock.sleep_until(at(10), wake))
    await settle()
    assert not sleeper.done()
    await clock.advance(5)
    await settle()
    assert not sleeper.done()
    await clock.advance(5)
    await asyncio.wait_for(sleeper, timeout=5)  # guard only: it is already done
    assert not wake.is_set()


async def test_sleep_until_is_woken_by_set() -> None:
    clock = TestClock()
    sleeper = asyncio.create_task(clock.sleep_until(at(10), asyncio.Event()))
    await settle()
    clock.set(at(11))
    await asyncio.wait_for(sleeper, timeout=5)


async def test_sleep_until_is_woken_by_the_event() -> None:
    clock = TestClock()
    wake = asyncio.Event()
    timed = asyncio.create_task(clock.sleep_until(at(10), wake))
    forever = asyncio.create_task(clock.sleep_until(None, wake))
    await settle()
    assert not timed.done()
    assert not forever.done()
    wake.set()
    await asyncio.wait_for(asyncio.gather(timed, forever), timeout=5)
    assert clock.now() == T0


async def test_sleep_until_returns_at_once_when_due_or_woken() -> None:
    clock = TestClock()
    await clock.sleep_until(T0, asyncio.Event())
    await clock.sleep_until(at(-5), asyncio.Event())
    woken = asyncio.Event()
    woken.set()
    await clock.sleep_until(None, woken)


async def test_sleep_until_always_lets_other_tasks_run() -> None:
    # a worker loop around an overdue `sleep_until` must not starve the task running the alarm
    clock = TestClock()
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    task = asyncio.create_task(other())
    await clock.sleep_until(at(-1), asyncio.Event())
    assert ran == ["other"]
    await task


async def test_sleep_until_without_a_time_ignores_advance() -> None:
    clock = TestClock()
    wake = asyncio.Event()
    sleeper = asyncio.create_task(clock.sleep_until(None, wake))
    await clock.advance("1 day")
    await settle()
    assert not sleeper.done()
    wake.set()
    await asyncio.wait_for(sleeper, timeout=5)


async def test_a_cancelled_sleep_until_leaves_no_waiter_behind() -> None:
    clock = TestClock()
    sleeper = asyncio.create_task(clock.sleep_until(at(10), asyncio.Event()))
    await settle()
    sleeper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeper
    clock.set(at(20))  # must not touch the cancelled waiter
    await clock.advance(1)


# -- with an engine ------------------------------------------------------------------------


@attrs.frozen
class Ping:
    n: int


async def test_advance_and_a_running_worker_share_the_alarms() -> None:
    clock = TestClock()
    runs: list[tuple[int, datetime]] = []

    async def execute(ctx: DebounceExecuteContext[Ping]) -> Result[None, Exception]:
        await asyncio.sleep(0)  # let the other runner look at the alarm meanwhile
        runs.append((ctx.state.n, ctx.now))
        return Ok(None)

    job = Debounce(
        name="pings", event=Ping, flush_after="10 seconds", max_events=100, execute=execute
    )
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    async with engine:  # its worker sleeps on the TestClock
        client = engine.client.debounce(job)
        for n in range(5):
            await client.add(str(n), Ping(n))
            await clock.advance("3 seconds")
        await clock.advance("1 minute")
    # each batch ran exactly once, at its own due time
    assert sorted(runs) == [(n, at(3 * n + 10)) for n in range(5)]
