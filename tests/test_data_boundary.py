"""
The data boundary through the public clients: what cannot be read back is never stored.

Untyped code (attrs does not check field types) and outside JSON reach every client call;
each bad value must be refused with `ValidationError` naming the field path, showing at
most a short preview of the value, with nothing stored. A bad state made by a worker's
callback is a defect of that run, never an exception raised to nobody.
"""

import math
from datetime import timedelta
from typing import Any

import attrs
import pytest

from durable_jobs import (
    Continuous,
    ContinuousContext,
    DataLimits,
    Debounce,
    DebounceEventContext,
    DebounceExecuteContext,
    DefectPolicy,
    Engine,
    MemoryStorage,
    Ok,
    Result,
    Task,
    TaskEventContext,
    TaskExecuteContext,
    ValidationError,
    WorkerPool,
    WorkerPoolContext,
    every,
)
from durable_jobs.testing import TestClock


@attrs.frozen
class Line:
    sku: str
    quantity: int


@attrs.frozen
class Order:
    id: str
    lines: list[Line] = attrs.field(factory=list)
    tags: frozenset[str] = frozenset()
    total: float = 0.0
    note: Any = None


@attrs.frozen
class Cart:
    orders: tuple[Order, ...] = ()


def fold(ctx: DebounceEventContext[Order, Cart]) -> Cart:
    return Cart((*(ctx.state.orders if ctx.state else ()), ctx.event))


async def flush(ctx: DebounceExecuteContext[Cart]) -> Result[None, Exception]:
    del ctx
    return Ok(None)


def keep(ctx: TaskEventContext[Order, Cart]) -> None:
    ctx.set_state(Cart((*(ctx.state.orders if ctx.state else ()), ctx.event)))


async def noop_task(ctx: TaskExecuteContext[Cart]) -> Result[None, Exception]:
    del ctx
    return Ok(None)


async def ship(ctx: WorkerPoolContext[Order]) -> Result[None, Exception]:
    del ctx
    return Ok(None)


async def tick(ctx: ContinuousContext[Order]) -> Result[None, Exception]:
    del ctx
    return Ok(None)


carts = Debounce(
    name="carts", event=Order, state=Cart, flush_after="1 minute", on_event=fold, execute=flush
)
tasks = Task(name="tasks", event=Order, state=Cart, on_event=keep, execute=noop_task)
pool = WorkerPool(name="pool", event=Order, concurrency=2, execute=ship)
feeds = Continuous(name="feeds", state=Order, schedule=every("1 hour"), execute=tick)

LIMITS = DataLimits(max_bytes=4096, max_depth=8)


def engine_on(storage: MemoryStorage, clock: TestClock) -> Engine:
    return Engine(
        jobs=[carts, tasks, pool, feeds],
        storage=storage,
        clock=clock,
        limits=LIMITS,
        defect_policy=DefectPolicy(max_retries=0),
    )


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def untyped(**fields: Any) -> Order:
    """An Order built the way untyped code can (attrs does not check field types)."""
    return Order(**{"id": "o", **fields})


def untyped_line(**fields: Any) -> Line:
    return Line(**{"sku": "a", "quantity": 1, **fields})


# Each: (what is wrong, a bad Order, the path the error must name)
BAD_ORDERS: list[tuple[str, Order, str]] = [
    ("int given a string", untyped(lines=[untyped_line(quantity="2")]), "event.lines[0].quantity"),
    ("str given an int", untyped(id=7), "event.id"),
    ("list given a string", untyped(lines="abc"), "event.lines"),
    ("list given an object", untyped(lines={}), "event.lines"),
    ("NaN", Order("o", total=math.nan), "event.total"),
    ("infinity", Order("o", total=-math.inf), "event.total"),
    ("lone surrogate", Order("\ud800"), "event.id"),
    ("NUL", Order("a\x00b"), "event.id"),
    ("surrogate key", Order("o", note={"\udfff": 1}), "event.note"),
    ("int too large", Order("o", lines=[Line("a", 2**63)]), "event.lines[0].quantity"),
    ("int too small", Order("o", note=-(2**63) - 1), "event.note"),
    ("too deep", Order("o", note=nested(20)), "event.note"),
    ("too big", Order("o", note="x" * 5000), "event"),
    ("not JSON", Order("o", note=b"raw"), "event.note"),
    ("not JSON either", Order("o", note=[1, 2j]), "event.note[1]"),
    ("non-string key", Order("o", note={1: 2}), "event.note"),
    ("loses precision", Order("o", total=2**60 + 1), "event.total"),
    ("contains itself", Order("o", note=(cycle := [])), "event"),
]
cycle.append(cycle)


async def nothing_stored(engine: Engine) -> None:
    assert await engine.instances() == []
    assert await engine.dead_letters() == []
    status = await engine.client.worker_pool(pool).status()
    assert status.pending == 0


@pytest.mark.parametrize(("what", "order", "path"), BAD_ORDERS, ids=[b[0] for b in BAD_ORDERS])
async def test_every_client_call_refuses_a_bad_event_naming_its_path(
    clock: TestClock, what: str, order: Order, path: str
) -> None:
    engine = engine_on(MemoryStorage(), clock)
    client = engine.client
    calls = {
        "add": lambda: client.debounce(carts).add("id", order),
        "send": lambda: client.task(tasks).send("id", order),
        "enqueue": lambda: client.worker_pool(pool).enqueue(order),
        "enqueue_many": lambda: client.worker_pool(pool).enqueue_many([Order("ok"), order]),
        "start": lambda: client.continuous(feeds).start("id", order),
    }
    for name, call in calls.items():
        with pytest.raises(ValidationError) as raised:
            await call()
        expected = path.replace("event", "input") if name == "start" else path
        if name == "enqueue_many":
            expected = path.replace("event", "events[1]")
        assert raised.value.path.startswith(expected), (what, name, raised.value.path)
        assert len(str(raised.value)) < 400, (what, name)
    await nothing_stored(engine)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "empty"),
        (" ", "whitespace"),
        ("a\tb", "control"),
        ("a\nb", "control"),
        ("a\x00", "NUL"),
        ("\ud800", "surrogate"),
        (" padded", "whitespace"),
        ("x" * 513, "bytes long"),
        (7, "expected a string"),
        (b"id", "expected a string"),
        (["id"], "expected a string"),
        (None, "expected a string"),
    ],
)
async def test_ids_event_ids_and_partition_keys_follow_one_rule(
    clock: TestClock, value: object, problem: str
) -> None:
    engine = engine_on(MemoryStorage(), clock)
    client = engine.client
    bad: Any = value
    checks = [
        ("id", lambda: client.debounce(carts).add(bad, Order("o"))),
        ("id", lambda: client.task(tasks).send(bad, Order("o"))),
        ("id", lambda: client.continuous(feeds).start(bad, Order("o"))),
        ("id", lambda: client.continuous(feeds).status(bad)),
        ("event_id", lambda: client.debounce(carts).add("a", Order("o"), event_id=bad)),
        ("event_id", lambda: client.task(tasks).send("a", Order("o"), event_id=bad)),
        ("event_id", lambda: client.worker_pool(pool).enqueue(Order("o"), event_id=bad)),
        ("event_id", lambda: client.worker_pool(pool).cancel(bad)),
        ("partition_key", lambda: client.worker_pool(pool).enqueue(Order("o"), bad)),
    ]
    for field, call in checks:
        if value is None and field != "id":
            continue  # None means "none given" there
        with pytest.raises(ValidationError, match=problem) as raised:
            await call()
        assert raised.value.path == field
    await nothing_stored(engine)


@pytest.mark.parametrize("priority", [True, 1.5, "1", 2**31, -(2**31) - 1, 2**63])
async def test_priorities_are_integers_of_the_one_range(clock: TestClock, priority: object) -> None:
    engine = engine_on(MemoryStorage(), clock)
    bad: Any = priority
    with pytest.raises(ValidationError) as raised:
        await engine.client.worker_pool(pool).enqueue(Order("o"), priority=bad)
    assert raised.value.path == "priority"
    await nothing_stored(engine)


async def test_the_integer_range_ends_are_accepted(clock: TestClock) -> None:
    engine = engine_on(MemoryStorage(), clock)
    queue = engine.client.worker_pool(pool)
    for edge, rank in ((2**63 - 1, 2**31 - 1), (-(2**63), -(2**31))):
        await queue.enqueue(Order("o", lines=[Line("a", edge)]), priority=rank)
    assert (await queue.status()).queued == 2


async def test_a_value_preview_never_carries_the_payload(clock: TestClock) -> None:
    engine = engine_on(MemoryStorage(), clock)
    secret = "4111 1111 1111 1111 " * 50
    card: Any = [secret]
    with pytest.raises(ValidationError) as raised:
        await engine.client.worker_pool(pool).enqueue(Order("o", lines=[Line(secret, card)]))
    message = str(raised.value)
    assert secret not in message
    assert len(raised.value.message) < 200
    assert "…" in message or "..." in message


@pytest.mark.parametrize(
    ("payload", "path", "problem"),
    [
        ('{"id": "o", "lines": "abc"}', "event.lines", "list"),
        ('{"id": "o", "lines": {}}', "event.lines", "list"),
        ('{"id": "o", "extra": 1}', "event.extra", "unexpected field"),
        (
            '{"id": "o", "lines": [{"sku": "a", "quantity": "2"}]}',
            "event.lines[0].quantity",
            "integer",
        ),
        ('{"id": "o", "total": NaN}', "event", "NaN"),
        ('{"id": "o", "total": Infinity}', "event", "JSON"),
        ('{"id": "\\ud800"}', "event.id", "surrogate"),
        ('{"id": "a\\u0000"}', "event.id", "NUL"),
        ('{"id": "o", "note": 9223372036854775808}', "event.note", "range"),
        ("[" * 3000, "event", "nested"),
        ('{"id": ', "event", "not valid JSON"),
        (b"\xff\xfe\x00", "event", "not valid JSON"),
        ('{"id": "o", "note": "' + "x" * 5000 + '"}', "event", "limit"),
    ],
)
async def test_json_entry_points_read_strictly(
    clock: TestClock, payload: str | bytes, path: str, problem: str
) -> None:
    engine = engine_on(MemoryStorage(), clock)
    client = engine.client
    for call in (
        lambda: client.debounce(carts).add_json("id", payload),
        lambda: client.task(tasks).send_json("id", payload),
        lambda: client.worker_pool(pool).enqueue_json(payload),
    ):
        with pytest.raises(ValidationError, match=problem) as raised:
            await call()
        assert raised.value.path == path
    await nothing_stored(engine)


async def test_extra_json_fields_are_dropped_only_when_asked(clock: TestClock) -> None:
    engine = engine_on(MemoryStorage(), clock)
    queue = engine.client.worker_pool(pool)
    await queue.enqueue_json('{"id": "o", "added_by_the_sender": true}', extra="ignore")
    assert (await queue.status()).queued == 1


async def test_a_fold_whose_state_cannot_be_stored_is_refused(clock: TestClock) -> None:
    def bad_fold(ctx: DebounceEventContext[Order, Cart]) -> Cart:
        return Cart((ctx.event, Order("x", total=math.inf)))

    def bad_keep(ctx: TaskEventContext[Order, Cart]) -> None:
        ctx.set_state(Cart((Order("x", note={"k": math.nan}),)))

    bad_carts = attrs.evolve(carts, on_event=bad_fold)
    bad_tasks = attrs.evolve(tasks, on_event=bad_keep)
    engine = Engine(jobs=[bad_carts, bad_tasks], storage=MemoryStorage(), clock=clock)
    with pytest.raises(ValidationError) as raised:
        await engine.client.debounce(bad_carts).add("id", Order("o"))
    assert raised.value.path == "state.orders[1].total"
    with pytest.raises(ValidationError) as raised:
        await engine.client.task(bad_tasks).send("id", Order("o"))
    assert raised.value.path == "state.orders[0].note.k"
    assert await engine.instances() == []


async def test_a_bad_state_set_on_a_worker_is_a_defect_parked_with_a_dead_letter(
    clock: TestClock,
) -> None:
    async def corrupt(ctx: ContinuousContext[Order]) -> Result[None, Exception]:
        ctx.set_state(Order(ctx.state.id, total=math.nan))
        return Ok(None)

    bad_feeds = attrs.evolve(feeds, execute=corrupt)
    engine = Engine(
        jobs=[bad_feeds],
        storage=MemoryStorage(),
        clock=clock,
        defect_policy=DefectPolicy(max_retries=1),
    )
    feed = engine.client.continuous(bad_feeds)
    await feed.start("f", Order("f"))
    await clock.run_due()  # defect 1: retried by the defect policy
    assert (await feed.status("f")).status == "retrying"
    await clock.advance(timedelta(minutes=10))  # defect 2: the policy ran out
    status = await feed.status("f")
    assert status.status == "failed"
    assert status.last_error is not None
    assert "state.total" in status.last_error
    assert await feed.get_state("f") == Order("f")  # the good state was kept
    (letter,) = await engine.dead_letters()
    assert letter.reason == "defect"
    assert "state.total" in letter.error


async def test_sets_floats_and_tuples_round_trip(clock: TestClock) -> None:
    engine = engine_on(MemoryStorage(), clock)
    order = Order("o", tags=frozenset({"b", "a", "c"}), total=3, note={"list": (1, 2)})
    await engine.client.continuous(feeds).start("f", order)
    state = await engine.client.continuous(feeds).get_state("f")
    assert state == Order("o", tags=frozenset({"a", "b", "c"}), total=3.0, note={"list": [1, 2]})


def test_data_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        DataLimits(max_bytes=0)
    with pytest.raises(ValueError, match="max_depth"):
        DataLimits(max_depth=1000)


@pytest.mark.parametrize("name", ["a\tb", "a\nb", "\ud800", "x" * 513])
def test_job_names_follow_the_rule_of_ids(name: str) -> None:
    with pytest.raises(ValueError, match="name"):
        WorkerPool(name=name, event=Order, concurrency=1, execute=ship)
