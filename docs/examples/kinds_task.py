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
    status: str  # "placed", "paid", "shipped" or "delivered"


def on_order_event(ctx: TaskEventContext[str, Order]) -> None:
    if ctx.event == "placed":
        ctx.set_state(Order("placed"))
        ctx.schedule("30 minutes")  # an unpaid order expires
    elif ctx.event == "paid":
        ctx.set_state(Order("paid"))
        ctx.schedule("1 day")  # replaces the expiry: ship tomorrow
    elif ctx.event == "hold":
        ctx.cancel_schedule()  # no alarm left: on_idle runs next
    elif ctx.event == "cancel":
        ctx.terminate("cancelled by the customer")


class Courier:
    """Stands in for a shipping API; clear `answer` to keep a call waiting."""

    def __init__(self) -> None:
        self.calling = asyncio.Event()
        self.answer = asyncio.Event()
        self.answer.set()  # it answers at once

    async def ship(self) -> None:
        self.calling.set()
        await self.answer.wait()
        self.calling.clear()


courier = Courier()


async def on_order_due(ctx: TaskExecuteContext[Order]) -> Ok[None]:
    order = ctx.state
    if order is None or order.status == "placed":
        ctx.terminate("expired unpaid")
    if order.status == "paid":
        await courier.ship()
        ctx.set_state(Order("shipped"))
        ctx.schedule("2 days")  # then check the delivery
    else:
        ctx.set_state(Order("delivered"))
    return Ok(None)


idle: list[IdleReason] = []


def on_order_idle(ctx: TaskIdleContext[Order]) -> None:
    idle.append(ctx.idle_reason)
    if ctx.state is not None and ctx.state.status == "delivered":
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

    placed = await shop.send("o-1", "placed")  # on_event runs in this call
    assert (placed.status, placed.created) == ("applied", True)
    assert placed.scheduled_at == start + timedelta(minutes=30)
    await clock.advance("30 minutes")  # a worker runs execute: it terminates the unpaid order
    assert await shop.get_state("o-1") is None

    await shop.send("o-2", "placed")
    paid = await shop.send("o-2", "paid", event_id="payment-77")
    again = await shop.send("o-2", "paid", event_id="payment-77")  # a redelivered webhook
    assert again.status == "duplicate"
    assert again.scheduled_at == paid.scheduled_at
    assert (await shop.status("o-2")).event_count == 2
    await clock.advance("1 day")  # a worker runs execute: it ships and sets the next alarm
    assert await shop.get_state("o-2") == Order("shipped")
    await clock.advance("2 days")  # delivered; no alarm is left, so on_idle runs and terminates
    assert (await shop.status("o-2")).status == "not_found"
    assert idle == ["execute"]

    await shop.send("o-3", "placed")
    await shop.send("o-3", "paid")
    await shop.send("o-3", "hold")  # no alarm left: on_idle is due, a worker runs it
    await clock.run_due()
    assert idle == ["execute", "on_event"]
    assert (await shop.status("o-3")).status == "idle"
    triggered = await shop.trigger("o-3")  # execute is due now
    assert triggered.triggered
    await clock.run_due()
    assert (await shop.status("o-3")).status == "scheduled"  # shipped; delivery check set

    courier.answer.clear()  # the courier keeps the next execute waiting
    await shop.send("o-4", "paid")
    await shop.trigger("o-4")
    worker = asyncio.create_task(clock.run_due())  # a worker runs execute in the background
    await courier.calling.wait()
    assert (await shop.status("o-4")).status == "running"
    sent = await shop.send("o-4", "cancel")  # never waits for the run: stored, folded after it
    assert sent.status == "queued"
    assert (await shop.status("o-4")).queued_events == 1
    courier.answer.set()
    await worker  # execute's result is written, then the queued "cancel" is folded
    assert (await shop.status("o-4")).status == "not_found"


if __name__ == "__main__":
    asyncio.run(main())
