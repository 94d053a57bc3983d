"""
The storage conformance suite: what every backend must do (see `_storage/_interface.py`).

Every test runs against each backend registered in `conftest.BACKENDS`. Nothing here
sleeps: concurrency is shown by interleaving coroutines with events and `sleep(0)`.
"""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import attrs
import pytest

from durable_jobs._storage._interface import (
    DeadLetter,
    InstanceKey,
    InstanceRecord,
    InstanceStatus,
    InstanceTransaction,
    JobKind,
    QueueItem,
    Storage,
)
from durable_jobs._types import JsonValue


T0 = datetime(2026, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def at(seconds: float) -> datetime:
    """`T0` plus `seconds`."""
    return T0 + timedelta(seconds=seconds)


def key(id: str = "a", job: str = "job", kind: JobKind = JobKind.TASK) -> InstanceKey:
    return InstanceKey(kind, job, id)


def record(
    k: InstanceKey | None = None,
    *,
    alarm: datetime | None = None,
    state: JsonValue = None,
    meta: JsonValue = None,
) -> InstanceRecord:
    return InstanceRecord(
        key=key() if k is None else k,
        state=state,
        meta=meta,
        alarm_at=alarm,
        created_at=T0,
        updated_at=T0,
    )


def letter(id: str, k: InstanceKey, when: datetime, *, state: JsonValue = None) -> DeadLetter:
    return DeadLetter(
        id=id, key=k, state=state, error="boom", reason="no_retry", attempts=1, at=when
    )


def item(event_id: str, priority: int = 0, event: JsonValue = None) -> QueueItem:
    return QueueItem(
        event_id=event_id,
        event={"id": event_id} if event is None else event,
        priority=priority,
        enqueued_at=T0,
    )


async def put(storage: Storage, rec: InstanceRecord) -> None:
    async with storage.instance(rec.key) as tx:
        tx.save(rec)


async def in_failing_block(
    storage: Storage, k: InstanceKey, body: Callable[[InstanceTransaction], Awaitable[None]]
) -> None:
    """Run `body` in a block on `k` that then raises `Boom` (which must come out)."""

    async def run() -> None:
        async with storage.instance(k) as tx:
            await body(tx)
            raise Boom

    with pytest.raises(Boom):
        await run()


async def queue_ids(storage: Storage, k: InstanceKey) -> list[str]:
    """The queue's order, read by peeking and removing inside a block that rolls back."""
    order: list[str] = []

    async def drain(tx: InstanceTransaction) -> None:
        while (head := await tx.queue_peek()) is not None:
            order.append(head.event_id)
            assert await tx.queue_remove(head.event_id)

    await in_failing_block(storage, k, drain)
    return order


async def queue_size(storage: Storage, k: InstanceKey) -> int:
    async with storage.instance(k) as tx:
        return await tx.queue_size()


async def has_seen(storage: Storage, k: InstanceKey, event_id: str) -> bool:
    async with storage.instance(k) as tx:
        return await tx.has_seen(event_id)


class Boom(Exception):
    """Raised inside a block to roll it back."""


# -- records -------------------------------------------------------------------------------


async def test_read_of_unknown_instance_is_none(storage: Storage) -> None:
    assert await storage.read(key()) is None
    async with storage.instance(key()) as tx:
        assert tx.key == key()
        assert tx.record is None


async def test_save_then_read_round_trips_every_field(storage: Storage) -> None:
    rec = InstanceRecord(
        key=InstanceKey(JobKind.DEBOUNCE, "digests", "team-7"),
        status=InstanceStatus.FAILED,
        state={"emails": ["a@example.com", "b"], "n": 2, "ratio": 0.5, "ok": True, "x": None},
        meta={"event_count": 3, "nested": {"list": [1, [2, 3]]}},
        alarm_at=at(60),
        attempt=3,
        retry_started_at=at(5),
        defects=2,
        last_error="MailError(503)",
        created_at=T0,
        updated_at=at(1),
    )
    await put(storage, rec)
    assert await storage.read(rec.key) == rec
    async with storage.instance(rec.key) as tx:
        assert tx.record == rec


async def test_save_replaces_the_record(storage: Storage) -> None:
    await put(storage, record(state=1))
    await put(storage, record(state=2))
    got = await storage.read(key())
    assert got is not None
    assert got.state == 2
    assert len(await storage.list_instances()) == 1


async def test_scalar_and_empty_json_values_round_trip(storage: Storage) -> None:
    values: list[JsonValue] = ["text", 0, -5, 1.25, False, None, [], {}]
    for index, value in enumerate(values):
        await put(storage, record(key(str(index)), state=value, meta=value))
    for index, value in enumerate(values):
        got = await storage.read(key(str(index)))
        assert got is not None
        assert got.state == value
        assert got.meta == value
        assert type(got.state) is type(value)


async def test_stored_json_is_not_aliased_with_the_caller(storage: Storage) -> None:
    state: dict[str, JsonValue] = {"items": [1, 2]}
    async with storage.instance(key()) as tx:
        tx.save(record(state=state))
        state["items"] = "changed after save"
    state["extra"] = True

    got = await storage.read(key())
    assert got is not None
    assert got.state == {"items": [1, 2]}
    assert isinstance(got.state, dict)
    got.state["items"] = "changed after read"
    again = await storage.read(key())
    assert again is not None
    assert again.state == {"items": [1, 2]}

    async with storage.instance(key()) as tx:
        seen = tx.record
        assert seen is not None
        assert isinstance(seen.state, dict)
        seen.state["items"] = "changed through tx.record"
    final = await storage.read(key())
    assert final is not None
    assert final.state == {"items": [1, 2]}


async def test_record_sees_own_uncommitted_changes(storage: Storage) -> None:
    await put(storage, record(state="old"))
    async with storage.instance(key()) as tx:
        tx.save(record(state="new"))
        current = tx.record
        assert current is not None
        assert current.state == "new"
        before_commit = await storage.read(key())
        assert before_commit is not None
        assert before_commit.state == "old"
        tx.purge()
        purged = tx.record
        assert purged is None
        tx.save(record(state="reborn"))
        reborn = tx.record
        assert reborn is not None
        assert reborn.state == "reborn"
    committed = await storage.read(key())
    assert committed is not None
    assert committed.state == "reborn"


# -- atomicity -----------------------------------------------------------------------------


async def test_everything_commits_together_on_clean_exit(storage: Storage) -> None:
    k = key(kind=JobKind.WORKER_POOL)
    async with storage.instance(k) as tx:
        tx.save(record(k, state={"n": 1}, alarm=at(10)))
        tx.add_dead_letter(letter("d1", k, T0))
        tx.remember("e1", T0)
        tx.queue_push(item("q1"))
        # nothing is visible from outside before the block ends
        assert await storage.read(k) is None
        assert await storage.dead_letters() == []
        assert await storage.list_instances() == []
        assert await storage.next_alarm_at() is None
    assert await storage.read(k) == record(k, state={"n": 1}, alarm=at(10))
    assert [d.id for d in await storage.dead_letters()] == ["d1"]
    assert await has_seen(storage, k, "e1")
    assert await queue_ids(storage, k) == ["q1"]
    assert await storage.next_alarm_at() == at(10)


async def test_an_exception_discards_every_change(storage: Storage) -> None:
    k = key(kind=JobKind.WORKER_POOL)

    async def changes(tx: InstanceTransaction) -> None:
        tx.save(record(k, state={"n": 1}, alarm=at(10)))
        tx.add_dead_letter(letter("d1", k, T0))
        tx.remember("e1", T0)
        tx.queue_push(item("q1"))

    await in_failing_block(storage, k, changes)
    assert await storage.read(k) is None
    assert await storage.dead_letters() == []
    assert not await has_seen(storage, k, "e1")
    assert await queue_size(storage, k) == 0
    assert await storage.next_alarm_at() is None
    assert await storage.list_instances() == []


async def test_an_exception_discards_purge_and_queue_removal(storage: Storage) -> None:
    k = key(kind=JobKind.WORKER_POOL)
    async with storage.instance(k) as tx:
        tx.save(record(k, state=1, alarm=at(5)))
        tx.queue_push(item("q1"))
        tx.queue_push(item("q2"))

    async def changes(tx: InstanceTransaction) -> None:
        assert await tx.queue_remove("q1")
        tx.purge()

    await in_failing_block(storage, k, changes)
    assert await storage.read(k) == record(k, state=1, alarm=at(5))
    assert await queue_ids(storage, k) == ["q1", "q2"]
    assert await storage.next_alarm_at() == at(5)


async def test_the_exception_propagates_unchanged(storage: Storage) -> None:
    error = Boom("original")
    with pytest.raises(Boom) as raised:
        async with storage.instance(key()):
            raise error
    assert raised.value is error


async def test_the_instance_is_released_after_an_exception(storage: Storage) -> None:
    with pytest.raises(Boom):
        async with storage.instance(key()):
            raise Boom
    async with storage.instance(key()) as tx:
        tx.save(record())
    assert await storage.read(key()) is not None


async def test_cancellation_inside_a_block_discards_its_changes(storage: Storage) -> None:
    entered = asyncio.Event()

    async def hold() -> None:
        async with storage.instance(key()) as tx:
            tx.save(record())
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(hold())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await storage.read(key()) is None
    async with storage.instance(key()) as tx:  # released
        assert tx.record is None


# -- serialization -------------------------------------------------------------------------


async def test_blocks_on_one_key_never_overlap(storage: Storage) -> None:
    log: list[str] = []
    a_inside = asyncio.Event()
    b_trying = asyncio.Event()

    async def first() -> None:
        async with storage.instance(key()) as tx:
            log.append("a in")
            a_inside.set()
            await b_trying.wait()
            for _ in range(50):  # give b every chance to barge in
                await asyncio.sleep(0)
            tx.save(record(state="a"))
            log.append("a out")

    async def second() -> None:
        await a_inside.wait()
        b_trying.set()
        async with storage.instance(key()) as tx:
            log.append("b in")
            current = tx.record
            assert current is not None
            assert current.state == "a"  # b sees a's committed work
            tx.save(record(state="b"))
            log.append("b out")

    await asyncio.gather(first(), second())
    assert log == ["a in", "a out", "b in", "b out"]
    got = await storage.read(key())
    assert got is not None
    assert got.state == "b"


async def test_many_writers_on_one_key_lose_no_update(storage: Storage) -> None:
    await put(storage, record(state=0))

    async def increment() -> None:
        async with storage.instance(key()) as tx:
            current = tx.record
            assert current is not None
            assert isinstance(current.state, int)
            await asyncio.sleep(0)
            tx.save(record(state=current.state + 1))

    await asyncio.gather(*(increment() for _ in range(20)))
    got = await storage.read(key())
    assert got is not None
    assert got.state == 20


async def test_blocks_on_different_keys_run_concurrently(
    storage: Storage, concurrent_keys: bool
) -> None:
    if not concurrent_keys:
        pytest.skip("this backend serializes all writers")
    a_inside = asyncio.Event()
    b_inside = asyncio.Event()

    async def first() -> None:
        async with storage.instance(key("a")) as tx:
            a_inside.set()
            async with asyncio.timeout(5):  # only reached on failure: never a real wait here
                await b_inside.wait()
            tx.save(record(key("a")))

    async def second() -> None:
        await a_inside.wait()
        async with storage.instance(key("b")) as tx:
            b_inside.set()
            tx.save(record(key("b")))

    await asyncio.gather(first(), second())
    assert [r.key.id for r in await storage.list_instances()] == ["a", "b"]


async def test_read_does_not_wait_for_an_open_block(storage: Storage) -> None:
    await put(storage, record(state="committed"))
    async with storage.instance(key()) as tx:
        tx.save(record(state="pending"))
        got = await storage.read(key())
        assert got is not None
        assert got.state == "committed"


# -- alarms and leases ---------------------------------------------------------------------


async def test_claim_due_orders_by_alarm_then_key_and_respects_limit(storage: Storage) -> None:
    await put(storage, record(key("c"), alarm=at(1)))
    await put(storage, record(key("b"), alarm=at(2)))
    await put(storage, record(key("a"), alarm=at(2)))
    await put(storage, record(key("x", kind=JobKind.CONTINUOUS), alarm=at(2)))
    await put(storage, record(key("later"), alarm=at(100)))
    await put(storage, record(key("none")))

    first = await storage.claim_due(at(10), limit=3, lease=LEASE)
    assert list(first) == [key("c"), key("x", kind=JobKind.CONTINUOUS), key("a")]
    rest = await storage.claim_due(at(10), limit=3, lease=LEASE)
    assert list(rest) == [key("b")]
    assert list(await storage.claim_due(at(10), limit=3, lease=LEASE)) == []


async def test_claim_due_includes_an_alarm_exactly_at_now(storage: Storage) -> None:
    await put(storage, record(alarm=at(10)))
    assert list(await storage.claim_due(at(9), limit=10, lease=LEASE)) == []
    assert list(await storage.claim_due(at(10), limit=10, lease=LEASE)) == [key()]


async def test_claim_due_with_zero_limit_claims_nothing(storage: Storage) -> None:
    await put(storage, record(alarm=at(1)))
    assert list(await storage.claim_due(at(10), limit=0, lease=LEASE)) == []
    assert list(await storage.claim_due(at(10), limit=1, lease=LEASE)) == [key()]


async def test_a_lease_hides_the_alarm_until_it_expires(storage: Storage) -> None:
    await put(storage, record(alarm=at(1)))
    assert list(await storage.claim_due(at(10), limit=10, lease=LEASE)) == [key()]
    # leased until at(40)
    assert list(await storage.claim_due(at(10), limit=10, lease=LEASE)) == []
    assert list(await storage.claim_due(at(39), limit=10, lease=LEASE)) == []
    assert list(await storage.claim_due(at(40), limit=10, lease=LEASE)) == [key()]
    # claimed again: a new lease until at(70)
    assert list(await storage.claim_due(at(69), limit=10, lease=LEASE)) == []


async def test_saving_the_record_clears_the_lease(storage: Storage) -> None:
    await put(storage, record(alarm=at(1)))
    assert list(await storage.claim_due(at(10), limit=10, lease=LEASE)) == [key()]
    await put(storage, record(alarm=at(5)))  # e.g. a retry scheduled in the past
    assert list(await storage.claim_due(at(10), limit=10, lease=LEASE)) == [key()]


async def test_a_block_that_does_not_save_keeps_the_lease(storage: Storage) -> None:
    await put(storage, record(alarm=at(1)))
    assert list(await storage.claim_due(at(10), limit=10, lease=LEASE)) == [key()]
    async with storage.instance(key()) as tx:
        assert tx.record is not None

    async def changes(tx: InstanceTransaction) -> None:
        tx.save(record(alarm=at(2)))

    await in_failing_block(storage, key(), changes)
    assert list(await storage.claim_due(at(10), limit=10, lease=LEASE)) == []


async def test_purging_clears_the_lease(storage: Storage) -> None:
    await put(storage, record(alarm=at(1)))
    assert list(await storage.claim_due(at(10), limit=10, lease=LEASE)) == [key()]
    async with storage.instance(key()) as tx:
        tx.purge()
    assert list(await storage.claim_due(at(10), limit=10, lease=LEASE)) == []
    await put(storage, record(alarm=at(2)))
    assert list(await storage.claim_due(at(10), limit=10, lease=LEASE)) == [key()]


async def test_clearing_or_moving_the_alarm_changes_what_is_due(storage: Storage) -> None:
    await put(storage, record(key("a"), alarm=at(1)))
    await put(storage, record(key("b"), alarm=at(2)))
    await put(storage, record(key("a")))  # alarm cleared
    await put(storage, record(key("b"), alarm=at(50)))  # moved later
    assert list(await storage.claim_due(at(10), limit=10, lease=LEASE)) == []
    assert await storage.next_alarm_at() == at(50)
    assert list(await storage.claim_due(at(50), limit=10, lease=LEASE)) == [key("b")]


async def test_next_alarm_at_is_when_the_next_claim_can_succeed(storage: Storage) -> None:
    assert await storage.next_alarm_at() is None
    await put(storage, record(key("a")))
    assert await storage.next_alarm_at() is None
    await put(storage, record(key("b"), alarm=at(20)))
    await put(storage, record(key("c"), alarm=at(10)))
    assert await storage.next_alarm_at() == at(10)
    assert list(await storage.claim_due(at(15), limit=10, lease=LEASE)) == [key("c")]
    # c is leased until at(45): b's alarm comes first now
    assert await storage.next_alarm_at() == at(20)
    await put(storage, record(key("b"), alarm=at(60)))
    assert await storage.next_alarm_at() == at(45)
    await put(storage, record(key("b"), alarm=at(20)))
    async with storage.instance(key("c")) as tx:
        tx.purge()
    assert await storage.next_alarm_at() == at(20)
    await put(storage, record(key("b")))
    assert await storage.next_alarm_at() is None


# -- purge ---------------------------------------------------------------------------------


async def test_purge_removes_record_alarm_and_queue_but_keeps_letters_and_seen_ids(
    storage: Storage,
) -> None:
    k = key(kind=JobKind.WORKER_POOL)
    async with storage.instance(k) as tx:
        tx.save(record(k, state={"n": 1}, alarm=at(5)))
        tx.queue_push(item("q1"))
        tx.remember("e1", T0)
    async with storage.instance(k) as tx:
        tx.add_dead_letter(letter("d1", k, T0))
        tx.purge()
        assert tx.record is None
        assert await tx.queue_size() == 0
        assert await tx.queue_peek() is None
        assert await tx.has_seen("e1")
    assert await storage.read(k) is None
    assert await storage.list_instances() == []
    assert await storage.next_alarm_at() is None
    assert await queue_size(storage, k) == 0
    assert [d.id for d in await storage.dead_letters()] == ["d1"]
    assert await has_seen(storage, k, "e1")


async def test_queue_pushes_after_a_purge_in_one_block_survive(storage: Storage) -> None:
    k = key(kind=JobKind.WORKER_POOL)
    async with storage.instance(k) as tx:
        tx.queue_push(item("old"))
    async with storage.instance(k) as tx:
        tx.purge()
        tx.queue_push(item("new"))
        assert await tx.queue_size() == 1
    assert await queue_ids(storage, k) == ["new"]


async def test_purging_an_unknown_instance_is_harmless(storage: Storage) -> None:
    async with storage.instance(key()) as tx:
        tx.purge()
    assert await storage.read(key()) is None


# -- remembered event ids ------------------------------------------------------------------


async def test_remembered_ids_are_seen_in_the_block_and_after_it(storage: Storage) -> None:
    async with storage.instance(key()) as tx:
        assert not await tx.has_seen("e1")
        tx.remember("e1", T0)
        assert await tx.has_seen("e1")
        assert not await tx.has_seen("e2")
    assert await has_seen(storage, key(), "e1")
    assert not await has_seen(storage, key(), "e2")


async def test_remembered_ids_belong_to_one_instance(storage: Storage) -> None:
    async with storage.instance(key("a")) as tx:
        tx.remember("e1", T0)
    assert not await has_seen(storage, key("b"), "e1")
    assert not await has_seen(storage, key("a", job="other"), "e1")
    assert not await has_seen(storage, key("a", kind=JobKind.DEBOUNCE), "e1")


async def test_forget_seen_before_drops_strictly_older_ids(storage: Storage) -> None:
    async with storage.instance(key("a")) as tx:
        tx.remember("old", at(0))
        tx.remember("edge", at(10))
    async with storage.instance(key("b")) as tx:
        tx.remember("old-b", at(5))
        tx.remember("new-b", at(20))
    assert await storage.forget_seen_before(at(10)) == 2
    assert not await has_seen(storage, key("a"), "old")
    assert await has_seen(storage, key("a"), "edge")
    assert not await has_seen(storage, key("b"), "old-b")
    assert await has_seen(storage, key("b"), "new-b")
    assert await storage.forget_seen_before(at(10)) == 0
    assert await storage.forget_seen_before(at(100)) == 2


# -- queues --------------------------------------------------------------------------------


async def test_queue_is_priority_first_then_fifo(storage: Storage) -> None:
    k = key(kind=JobKind.WORKER_POOL)
    async with storage.instance(k) as tx:
        tx.queue_push(item("low-1", priority=-1))
        tx.queue_push(item("mid-1"))
        tx.queue_push(item("high-1", priority=5))
    async with storage.instance(k) as tx:
        tx.queue_push(item("mid-2"))
        tx.queue_push(item("high-2", priority=5))
        tx.queue_push(item("low-2", priority=-1))
    assert await queue_ids(storage, k) == ["high-1", "high-2", "mid-1", "mid-2", "low-1", "low-2"]


async def test_queue_push_assigns_increasing_seq(storage: Storage) -> None:
    k = key(kind=JobKind.WORKER_POOL)
    seqs: list[int] = []
    for name in ("a", "b", "c"):
        async with storage.instance(k) as tx:
            tx.queue_push(item(name))
    async with storage.instance(k) as tx:
        while (head := await tx.queue_peek()) is not None:
            seqs.append(head.seq)
            await tx.queue_remove(head.event_id)
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 3


async def test_queue_items_round_trip(storage: Storage) -> None:
    k = key(kind=JobKind.WORKER_POOL)
    pushed = QueueItem(
        event_id="e1",
        event={"to": "a@example.com", "tags": ["x", "y"]},
        priority=3,
        partition_key="customer-9",
        enqueued_at=at(1),
    )
    async with storage.instance(k) as tx:
        tx.queue_push(pushed)
    async with storage.instance(k) as tx:
        head = await tx.queue_peek()
    assert head is not None
    assert head.seq > 0
    assert head == QueueItem(
        event_id="e1",
        event={"to": "a@example.com", "tags": ["x", "y"]},
        priority=3,
        partition_key="customer-9",
        enqueued_at=at(1),
        seq=head.seq,
    )


async def test_queue_peek_does_not_remove(storage: Storage) -> None:
    k = key(kind=JobKind.WORKER_POOL)
    async with storage.instance(k) as tx:
        tx.queue_push(item("a"))
    for _ in range(2):
        async with storage.instance(k) as tx:
            head = await tx.queue_peek()
            assert head is not None
            assert head.event_id == "a"
    assert await queue_size(storage, k) == 1


async def test_queue_remove_and_size(storage: Storage) -> None:
    k = key(kind=JobKind.WORKER_POOL)
    async with storage.instance(k) as tx:
        assert await tx.queue_size() == 0
        assert await tx.queue_peek() is None
        for name in ("a", "b", "c"):
            tx.queue_push(item(name))
        assert await tx.queue_size() == 3
        assert await tx.queue_remove("b")  # removing an item pushed in this block
        assert await tx.queue_size() == 2
    async with storage.instance(k) as tx:
        assert await tx.queue_remove("a")
        assert not await tx.queue_remove("a")
        assert not await tx.queue_remove("missing")
        assert await tx.queue_size() == 1
        head = await tx.queue_peek()
        assert head is not None
        assert head.event_id == "c"
    assert await queue_ids(storage, k) == ["c"]
    assert await queue_size(storage, k) == 1


async def test_queue_sees_own_pushes_mixed_with_stored_items(storage: Storage) -> None:
    k = key(kind=JobKind.WORKER_POOL)
    async with storage.instance(k) as tx:
        tx.queue_push(item("stored"))
    async with storage.instance(k) as tx:
        tx.queue_push(item("urgent", priority=1))
        tx.queue_push(item("later"))
        head = await tx.queue_peek()
        assert head is not None
        assert head.event_id == "urgent"
        assert await tx.queue_remove("urgent")
        head = await tx.queue_peek()
        assert head is not None
        assert head.event_id == "stored"
        assert await tx.queue_size() == 2
    assert await queue_ids(storage, k) == ["stored", "later"]


async def test_queues_belong_to_one_instance(storage: Storage) -> None:
    p0 = key("0", kind=JobKind.WORKER_POOL)
    p1 = key("1", kind=JobKind.WORKER_POOL)
    async with storage.instance(p0) as tx:
        tx.queue_push(item("a"))
    async with storage.instance(p1) as tx:
        tx.queue_push(item("b"))
        assert not await tx.queue_remove("a")
    assert await queue_ids(storage, p0) == ["a"]
    assert await queue_ids(storage, p1) == ["b"]


async def test_queue_event_json_is_not_aliased(storage: Storage) -> None:
    k = key(kind=JobKind.WORKER_POOL)
    event: dict[str, JsonValue] = {"n": 1}
    async with storage.instance(k) as tx:
        tx.queue_push(item("a", event=event))
        event["n"] = 2
    async with storage.instance(k) as tx:
        head = await tx.queue_peek()
        assert head is not None
        assert head.event == {"n": 1}
        assert isinstance(head.event, dict)
        head.event["n"] = 3
    async with storage.instance(k) as tx:
        head = await tx.queue_peek()
        assert head is not None
        assert head.event == {"n": 1}


async def test_a_queue_only_instance_has_no_record(storage: Storage) -> None:
    k = key(kind=JobKind.WORKER_POOL)
    async with storage.instance(k) as tx:
        tx.queue_push(item("a"))
    assert await storage.read(k) is None
    assert await storage.list_instances() == []


# -- listing -------------------------------------------------------------------------------


async def test_list_instances_orders_by_kind_job_id_and_filters_by_job(storage: Storage) -> None:
    keys = [
        key("b", job="zeta", kind=JobKind.WORKER_POOL),
        key("2", job="beta", kind=JobKind.TASK),
        key("1", job="beta", kind=JobKind.TASK),
        key("x", job="alpha", kind=JobKind.TASK),
        key("y", job="zeta", kind=JobKind.DEBOUNCE),
        key("z", job="omega", kind=JobKind.CONTINUOUS),
    ]
    for k in keys:
        await put(storage, record(k))
    listed = [r.key for r in await storage.list_instances()]
    assert listed == [
        key("z", job="omega", kind=JobKind.CONTINUOUS),
        key("y", job="zeta", kind=JobKind.DEBOUNCE),
        key("x", job="alpha", kind=JobKind.TASK),
        key("1", job="beta", kind=JobKind.TASK),
        key("2", job="beta", kind=JobKind.TASK),
        key("b", job="zeta", kind=JobKind.WORKER_POOL),
    ]
    zeta = [r.key for r in await storage.list_instances("zeta")]
    assert zeta == [
        key("y", job="zeta", kind=JobKind.DEBOUNCE),
        key("b", job="zeta", kind=JobKind.WORKER_POOL),
    ]
    assert await storage.list_instances("nobody") == []


# -- dead letters --------------------------------------------------------------------------


async def test_dead_letters_round_trip_oldest_first_and_filter_by_job(storage: Storage) -> None:
    a = key("1", job="mail")
    b = key("2", job="billing")
    full = DeadLetter(
        id="d-late",
        key=a,
        state={"emails": ["x"]},
        event={"email": "x"},
        error="MailError(503)",
        reason="max_attempts",
        attempts=5,
        at=at(30),
    )
    async with storage.instance(a) as tx:
        tx.add_dead_letter(full)
    async with storage.instance(b) as tx:
        tx.add_dead_letter(letter("d-early", b, at(10)))
    async with storage.instance(a) as tx:
        tx.add_dead_letter(letter("d-mid", a, at(20)))
    assert [d.id for d in await storage.dead_letters()] == ["d-early", "d-mid", "d-late"]
    assert [d.id for d in await storage.dead_letters("mail")] == ["d-mid", "d-late"]
    assert await storage.dead_letters("nobody") == []
    assert (await storage.dead_letters("mail"))[-1] == full


async def test_delete_dead_letter(storage: Storage) -> None:
    async with storage.instance(key()) as tx:
        tx.add_dead_letter(letter("d1", key(), at(1)))
        tx.add_dead_letter(letter("d2", key(), at(2)))
    assert await storage.delete_dead_letter("d1")
    assert not await storage.delete_dead_letter("d1")
    assert not await storage.delete_dead_letter("missing")
    assert [d.id for d in await storage.dead_letters()] == ["d2"]


async def test_dead_letter_json_is_not_aliased(storage: Storage) -> None:
    state: dict[str, JsonValue] = {"n": 1}
    async with storage.instance(key()) as tx:
        tx.add_dead_letter(letter("d1", key(), T0, state=state))
        state["n"] = 2
    (got,) = await storage.dead_letters()
    assert got.state == {"n": 1}
    assert isinstance(got.state, dict)
    got.state["n"] = 3
    (again,) = await storage.dead_letters()
    assert again.state == {"n": 1}


async def test_dead_letters_outlive_their_instance(storage: Storage) -> None:
    async with storage.instance(key()) as tx:
        tx.save(record(state=1))
    async with storage.instance(key()) as tx:
        tx.add_dead_letter(letter("d1", key(), T0, state=1))
        tx.purge()
    assert await storage.read(key()) is None
    assert [d.state for d in await storage.dead_letters()] == [1]


async def test_a_dead_letter_is_removed_with_the_block(storage: Storage) -> None:
    k = key()
    async with storage.instance(k) as tx:
        tx.add_dead_letter(letter("d1", k, T0))
        tx.add_dead_letter(letter("d2", k, T0))

    async def changes(tx: InstanceTransaction) -> None:
        tx.remove_dead_letter("d1")

    await in_failing_block(storage, k, changes)
    assert [d.id for d in await storage.dead_letters()] == ["d1", "d2"]
    async with storage.instance(key("other")) as tx:
        tx.remove_dead_letter("d1")  # a letter of any instance
        tx.remove_dead_letter("unknown")
        tx.save(record(key("other"), state=1))
    assert [d.id for d in await storage.dead_letters()] == ["d2"]
    assert await storage.read(key("other")) is not None


async def test_dead_letter_meta_and_event_round_trip(storage: Storage) -> None:
    k = key()
    full = attrs.evolve(letter("d1", k, T0, state={"s": [1]}), meta={"count": 2}, event={"e": "x"})
    async with storage.instance(k) as tx:
        tx.add_dead_letter(full)
    assert list(await storage.dead_letters()) == [full]
