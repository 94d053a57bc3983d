"""Dead letters, defects and the DefectPolicy, resuming, and `ctx.terminate()`."""

import asyncio

import attrs

from durable_jobs import (
    Backoff,
    Debounce,
    DebounceExecuteContext,
    DefectPolicy,
    Engine,
    Err,
    MemoryStorage,
    Ok,
    Result,
    Task,
    TaskEventContext,
    TaskExecuteContext,
)
from durable_jobs.testing import TestClock


@attrs.frozen
class Export:
    rows: int


class ExportError(Exception):
    pass


@attrs.define
class World:
    """What the jobs below talk to, faked."""

    disk_full: bool = True
    payment_calls: int = 0


world = World()
exported: list[int] = []


def write_export(ctx: DebounceExecuteContext[Export]) -> Result[None, ExportError]:
    if world.disk_full:
        return Err(ExportError("disk full"))
    exported.append(ctx.state.rows)
    return Ok(None)


# No retry and no on_error: a failure is final at once and leaves a dead letter.
exports = Debounce(name="exports", event=Export, flush_after="1 minute", execute=write_export)


@attrs.frozen
class Invoice:
    amount: int


def on_invoice(ctx: TaskEventContext[int, Invoice]) -> None:
    if ctx.event < 0:
        ctx.terminate("a negative amount")  # purged: no retry, no on_error
    ctx.set_state(Invoice(ctx.event))
    ctx.schedule("1 hour")


def charge(ctx: TaskExecuteContext[Invoice]) -> Ok[None]:
    world.payment_calls += 1
    if world.payment_calls <= 3:
        raise ConnectionError("payment API unreachable")  # a defect, not an E
    return Ok(None)


invoices = Task(name="invoices", event=int, state=Invoice, on_event=on_invoice, execute=charge)


async def main() -> None:
    clock = TestClock()
    engine = Engine(
        jobs=[exports, invoices],
        storage=MemoryStorage(),
        clock=clock,
        defect_policy=DefectPolicy(max_retries=2, backoff=Backoff.fixed("10 seconds")),
    )

    await engine.client.debounce(exports).add("daily", Export(rows=120))
    await clock.advance("1 minute")  # the flush fails: no retry, so a dead letter
    (letter,) = await engine.dead_letters()
    assert (letter.key.job, letter.key.id, letter.reason) == ("exports", "daily", "no_retry")
    assert letter.error == "ExportError: disk full"
    assert (await engine.client.debounce(exports).status("daily")).status == "not_found"

    world.disk_full = False
    resumed = await engine.resume(letter.id)  # the batch is queued again, due now
    assert resumed.action == "requeued"
    await clock.run_due()
    assert exported == [120]
    assert await engine.dead_letters() == []

    bills = engine.client.task(invoices)
    assert (await bills.send("inv-0", -5)).status == "terminated"
    assert await bills.get_state("inv-0") is None

    await bills.send("inv-1", 250)
    await clock.advance("1 hour")  # raises: defect 1, retried after 10 s
    await clock.advance("10 seconds")  # raises: defect 2, retried after 10 s
    await clock.advance("10 seconds")  # raises: the policy ran out, the task is parked
    status = await bills.status("inv-1")
    assert status.status == "failed"
    assert status.last_error is not None
    assert "ConnectionError: payment API unreachable" in status.last_error
    assert await bills.get_state("inv-1") == Invoice(250)  # the state is kept
    (parked,) = await engine.dead_letters()
    assert parked.reason == "defect"

    assert (await engine.resume(parked.id)).action == "reactivated"
    await clock.run_due()  # the fourth call succeeds
    assert world.payment_calls == 4
    assert (await bills.status("inv-1")).status == "idle"


if __name__ == "__main__":
    asyncio.run(main())
