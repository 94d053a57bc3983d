"""
`event=` and `state=` take what both checkers accept as `type[X]`, and the runtime agrees.

A parameterised generic (`list[int]`), a `TypedDict` and a `NewType` type-check as a
definition's event or state type (the typing cases pin which checker accepts which); each
works end to end here. What no checker accepts as `type[X]` is refused at definition time.
"""

from typing import Annotated, Any, Literal, NewType, Protocol, TypedDict

import pytest

from durable_jobs import (
    Continuous,
    ContinuousContext,
    Debounce,
    DebounceEventContext,
    DebounceExecuteContext,
    Engine,
    InvalidDefinitionError,
    MemoryStorage,
    Ok,
    Task,
    TaskEventContext,
    TaskExecuteContext,
    ValidationError,
    WorkerPool,
    WorkerPoolContext,
    every,
)
from durable_jobs._type_forms import runtime_class, type_name
from durable_jobs.testing import TestClock


class Order(TypedDict):
    id: str
    cents: int


UserId = NewType("UserId", int)


async def test_a_continuous_job_keeps_a_list_of_ints(clock: TestClock) -> None:
    seen: list[list[int]] = []

    def tick(ctx: ContinuousContext[list[int]]) -> Ok[None]:
        seen.append(ctx.state)
        ctx.set_state([*ctx.state, len(ctx.state)])
        return Ok(None)

    job = Continuous(name="c", state=list[int], schedule=every("1 minute"), execute=tick)
    client = Engine(jobs=[job], storage=MemoryStorage(), clock=clock).client.continuous(job)
    await client.start("a", [7])
    await clock.advance("1 minute")
    assert seen == [[7], [7, 1]]
    assert await client.get_state("a") == [7, 1, 2]
    for wrong in ((1, 2), ["not", "ints"]):
        bypassed_the_checker: Any = wrong
        with pytest.raises(ValidationError, match=r"^input: expected list\[int\], got "):
            await client.start("b", bypassed_the_checker)


async def test_a_debounce_job_folds_dict_events_into_a_tuple(clock: TestClock) -> None:
    flushed: list[tuple[str, ...]] = []

    def fold(ctx: DebounceEventContext[dict[str, int], tuple[str, ...]]) -> tuple[str, ...]:
        return (*(ctx.state or ()), *sorted(ctx.event))

    def flush(ctx: DebounceExecuteContext[tuple[str, ...]]) -> Ok[None]:
        flushed.append(ctx.state)
        return Ok(None)

    job = Debounce(
        name="d",
        event=dict[str, int],
        state=tuple[str, ...],
        flush_after="1 minute",
        on_event=fold,
        execute=flush,
    )
    client = Engine(jobs=[job], storage=MemoryStorage(), clock=clock).client.debounce(job)
    await client.add("a", {"x": 1, "b": 2})
    await client.add("a", {"c": 3})
    assert await client.get_state("a") == ("b", "x", "c")
    await clock.advance("1 minute")
    assert flushed == [("b", "x", "c")]


async def test_a_task_takes_typed_dict_events_and_a_new_type_state(clock: TestClock) -> None:
    ran: list[UserId | None] = []

    def on_event(ctx: TaskEventContext[Order, UserId]) -> None:
        ctx.set_state(UserId(ctx.event["cents"]))
        ctx.schedule("1 minute")

    def execute(ctx: TaskExecuteContext[UserId]) -> Ok[None]:
        ran.append(ctx.state)
        return Ok(None)

    job = Task(name="t", event=Order, state=UserId, on_event=on_event, execute=execute)
    client = Engine(jobs=[job], storage=MemoryStorage(), clock=clock).client.task(job)
    await client.send("a", {"id": "o-1", "cents": 250})
    await clock.advance("1 minute")
    assert ran == [250]
    wrong: Any = ["o-1", 250]
    with pytest.raises(ValidationError, match=r"expected Order, got"):
        await client.send("a", wrong)


async def test_a_worker_pool_takes_tuple_events(clock: TestClock) -> None:
    done: list[tuple[int, ...]] = []

    def work(ctx: WorkerPoolContext[tuple[int, ...]]) -> Ok[None]:
        done.append(ctx.event)
        return Ok(None)

    job = WorkerPool(name="w", event=tuple[int, ...], concurrency=1, execute=work)
    client = Engine(jobs=[job], storage=MemoryStorage(), clock=clock).client.worker_pool(job)
    await client.enqueue((1, 2, 3))
    await clock.advance("1 second")
    assert done == [(1, 2, 3)]


class HasName(Protocol):
    name: str


@pytest.mark.parametrize(
    "form",
    [int | None, Literal["a", "b"], Annotated[int, "x"], HasName, 42, "int"],
    ids=["union", "literal", "annotated", "protocol", "int-value", "string"],
)
def test_what_is_not_a_type_form_is_refused_at_definition(form: Any) -> None:
    with pytest.raises(InvalidDefinitionError, match=r"^state: expected a class or a generic"):
        Continuous(name="c", state=form, schedule=every(1), execute=lambda ctx: Ok(None))
    with pytest.raises(InvalidDefinitionError, match=r"^event: expected a class or a generic"):
        WorkerPool(name="w", event=form, concurrency=1, execute=lambda ctx: Ok(None))


def test_runtime_classes_and_names() -> None:
    assert runtime_class(list[int]) is list
    assert runtime_class(dict[str, list[int]]) is dict
    assert runtime_class(Order) is dict
    assert runtime_class(UserId) is int
    assert runtime_class(int) is int
    assert runtime_class(int | None) is None
    assert [type_name(f) for f in (int, list[int], UserId, Order)] == [
        "int",
        "list[int]",
        "UserId",
        "Order",
    ]
