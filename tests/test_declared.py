"""Declared Continuous instances: started by each worker when it starts, once, everywhere."""

import pytest

from durable_jobs import (
    Continuous,
    ContinuousContext,
    Engine,
    InvalidDefinitionError,
    JobNotFoundError,
    MemoryStorage,
    Ok,
    ValidationError,
    every,
)
from durable_jobs.testing import TestClock


def tick(ctx: ContinuousContext[int]) -> Ok[None]:
    ctx.set_state(ctx.state + 1)
    return Ok(None)


ticker = Continuous(name="ticker", state=int, schedule=every("1 minute"), execute=tick)
other = Continuous(name="other", state=int, schedule=every("1 minute"), execute=tick)


async def test_a_declared_instance_exists_once_across_workers_and_restarts() -> None:
    clock = TestClock()
    storage = MemoryStorage()
    first = Engine(jobs=[ticker], storage=storage, clock=clock)
    first.declare(ticker, "main", 0)
    await clock.advance("2 minutes")  # the first look starts it and runs it, then 2 more
    assert await first.client.continuous(ticker).get_state("main") == 3

    # a second worker, and a restart, declare it too: nothing is reset or duplicated
    second = Engine(jobs=[ticker], storage=storage, clock=clock)
    second.declare(ticker, "main", 100)
    async with second:
        pass
    restarted = Engine(jobs=[ticker], storage=storage, clock=clock)
    restarted.declare(ticker, "main", 100)
    await clock.advance("1 minute")
    assert await restarted.client.continuous(ticker).get_state("main") == 4
    assert [r.key.id for r in await restarted.instances("ticker")] == ["main"]


async def test_a_serving_worker_starts_it_before_it_claims_anything() -> None:
    clock = TestClock()
    engine = Engine(jobs=[ticker], storage=MemoryStorage(), clock=clock)
    engine.declare(ticker, "main", 5)
    async with engine:
        pass  # the worker starts, ensures the declared instance, and stops
    status = await engine.client.continuous(ticker).status("main")
    assert status.status == "scheduled"
    assert status.next_run_at == clock.now()  # due at once: the next worker runs it
    assert await engine.client.continuous(ticker).get_state("main") == 5


async def test_a_terminated_declared_instance_comes_back_at_the_next_worker_start() -> None:
    clock = TestClock()
    storage = MemoryStorage()
    engine = Engine(jobs=[ticker], storage=storage, clock=clock)
    engine.declare(ticker, "main", 0)
    await clock.run_due()
    await engine.client.continuous(ticker).terminate("main")
    await clock.run_due()  # this engine ensured it already
    assert await engine.client.continuous(ticker).get_state("main") is None
    restarted = Engine(jobs=[ticker], storage=storage, clock=clock)
    restarted.declare(ticker, "main", 0)
    await clock.run_due()  # started again, and run at once
    assert await restarted.client.continuous(ticker).get_state("main") == 1


def test_declare_checks_its_arguments_at_once() -> None:
    engine = Engine(jobs=[ticker], storage=MemoryStorage(), clock=TestClock())
    with pytest.raises(JobNotFoundError):
        engine.declare(other, "main", 0)
    with pytest.raises(ValidationError):
        engine.declare(ticker, "", 0)
    with pytest.raises(ValidationError):
        engine.declare(ticker, "main", "zero")  # type: ignore[arg-type]  # wrong on purpose
    engine.declare(ticker, "main", 0)
    with pytest.raises(InvalidDefinitionError):
        engine.declare(ticker, "main", 1)
