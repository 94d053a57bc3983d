"""Task: a state machine driven by `send`, with one alarm, `execute` and `on_idle`."""

import asyncio
from datetime import timedelta

import attrs

from durable_jobs import (
    Engine,
    IdleReason,
    MemoryStorage,
    Ok,
    Task,
    TaskEventContext,
    TaskExecuteContext,
    TaskIdleContext,
)
from durable_jobs.testing import TestClock


@attrs.frozen
class Order:
    status: str  # "placed", "paid" or "shipped"


def on_order_event(ctx: TaskEventContext[str, Order]) -> None:
    if ctx.event == "placed":
        ctx.set_state(Order("placed"))
        ctx.schedule("30 minutes")  # an unpaid order expires
    elif ctx.event == "paid":
        ctx.set_state(Order("paid"))
        ctx.schedule("1 day")  # replaces the expiry: ship tomorrow
    elif ctx.event == "hold":
        ctx.cancel_schedule()  # no alarm left: on_idle runs next


def on_order_due(ctx: TaskExecuteContext[Order]) -> Ok[None]:
    if ctx.state is None or ctx.state.status == "placed":
        ctx.terminate("expired unpaid")
    ctx.set_state(Order("shipped"))
    return Ok(None)


idle: list[IdleReason] = []


def on_order_idle(ctx: TaskIdleContext[Order]) -> None:
    idle.append(ctx.idle_reason)
    if ctx.state is not None and ctx.state.status == "shipped":
        ctx.terminate("done")


orders = Task(
    name="orders",
    event=str,
    state=Order,
    on_event=on_order_event,
    execute=on_order_due,
    on_idle=on_order_idle,
)


async def main() -> None:
    clock = TestClock()
    engine = Engine(jobs=[orders], storage=MemoryStorage(), clock=clock)
    shop = engine.client.task(orders)
    start = clock.now()

    placed = await shop.send("o-1", "placed")
    assert placed.created
    assert placed.scheduled_at == start + timedelta(minutes=30)
    await clock.advance("30 minutes")  # execute runs and terminates the unpaid order
    assert await shop.get_state("o-1") is None

    await shop.send("o-2", "placed")
    paid = await shop.send("o-2", "paid", event_id="payment-77")
    again = await shop.send("o-2", "paid", event_id="payment-77")  # a redelivered webhook
    assert again.duplicate
    assert again.scheduled_at == paid.scheduled_at
    assert (await shop.status("o-2")).event_count == 2
    await clock.advance("1 day")  # ships; no alarm is left, so on_idle runs and terminates
    assert (await shop.status("o-2")).status == "not_found"
    assert idle == ["execute"]

    await shop.send("o-3", "placed")
    await shop.send("o-3", "paid")
    await shop.send("o-3", "hold")
    assert idle == ["execute", "on_event"]
    assert (await shop.status("o-3")).status == "idle"
    triggered = await shop.trigger("o-3")  # runs execute now, in this call
    assert triggered.triggered
    assert (await shop.status("o-3")).status == "not_found"


if __name__ == "__main__":
    asyncio.run(main())
