"""The kinds page's examples: a recurring report, an order state machine, a thumbnail pool."""

import asyncio

import attrs

from durable_jobs import (
    Continuous,
    ContinuousContext,
    Engine,
    MemoryStorage,
    Ok,
    Task,
    TaskEventContext,
    TaskExecuteContext,
    TaskIdleContext,
    WorkerPool,
    WorkerPoolContext,
    every,
)
from durable_jobs.testing import TestClock


# Continuous: `execute` runs on a schedule; the state is what `start` was given.
def report(ctx: ContinuousContext[int]) -> Ok[None]:
    ctx.set_state(ctx.state + 1)
    if ctx.run_count == 3:
        ctx.terminate("three reports are enough")
    return Ok(None)


reports = Continuous(name="reports", state=int, schedule=every("1 hour"), execute=report)


# Task: events drive a state machine; `execute` runs when the instance's alarm falls due.
@attrs.frozen
class Order:
    status: str


def on_order_event(ctx: TaskEventContext[str, Order]) -> None:
    ctx.set_state(Order(ctx.event))
    if ctx.event == "paid":
        ctx.schedule("1 day")  # ship tomorrow


def ship(ctx: TaskExecuteContext[Order]) -> Ok[None]:
    ctx.set_state(Order("shipped"))
    return Ok(None)


def on_order_idle(ctx: TaskIdleContext[Order]) -> None:
    if ctx.state is not None and ctx.state.status == "shipped":
        ctx.terminate("done")


orders = Task(
    name="orders",
    event=str,
    state=Order,
    on_event=on_order_event,
    execute=ship,
    on_idle=on_order_idle,
)


# WorkerPool: a durable queue, `concurrency` instances each working FIFO.
@attrs.frozen
class Thumbnail:
    image: str


done: list[str] = []


async def render(ctx: WorkerPoolContext[Thumbnail]) -> Ok[None]:
    done.append(ctx.event.image)
    return Ok(None)


thumbnails = WorkerPool(name="thumbnails", event=Thumbnail, concurrency=2, execute=render)


async def main() -> None:
    clock = TestClock()
    engine = Engine(jobs=[reports, orders, thumbnails], storage=MemoryStorage(), clock=clock)

    await engine.client.continuous(reports).start("daily", 0)  # runs at once, then hourly
    await clock.advance("3 hours")
    assert (await engine.client.continuous(reports).status("daily")).status == "not_found"

    shop = engine.client.task(orders)
    await shop.send("o-1", "placed")
    await shop.send("o-1", "paid")
    assert await shop.get_state("o-1") == Order("paid")
    await clock.advance("1 day")  # ship() runs, then on_idle terminates the order
    assert await shop.get_state("o-1") is None

    pool = engine.client.worker_pool(thumbnails)
    await pool.enqueue(Thumbnail("a.png"), partition_key="user-1")
    await pool.enqueue(Thumbnail("b.png"), partition_key="user-1", priority=5)
    await clock.advance(0)
    assert sorted(done) == ["a.png", "b.png"]
    print("reports, orders and thumbnails ran")


if __name__ == "__main__":
    asyncio.run(main())
