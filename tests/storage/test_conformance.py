"""
The storage conformance suite: what every backend must do (see `_storage/_interface.py`).

Every test runs against each backend registered in `conftest.BACKENDS`. Nothing here
sleeps: concurrency is shown by interleaving coroutines with events and `sleep(0)`.
"""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

import attrs
import pytest

from durable_jobs._storage._interface import (
    Claim,
    DeadLetter,
    InstanceKey,
    InstanceRecord,
    InstanceStatus,
    InstanceTransaction,
    ItemClaim,
    ItemFinish,
    ItemRetry,
    JobKind,
    LeaseLostError,
    PoolCounts,
    PoolRate,
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
        assert await storage.next_alarm_at({}) is None
    assert await storage.read(k) == record(k, state={"n": 1}, alarm=at(10))
    assert [d.id for d in await storage.dead_letters()] == ["d1"]
    assert await has_seen(storage, k, "e1")
    assert await queue_ids(storage, k) == ["q1"]
    assert await storage.next_alarm_at({}) == at(10)


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
    assert await storage.next_alarm_at({}) is None
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
    assert await storage.next_alarm_at({}) == at(5)


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


# -- claiming due instances ----------------------------------------------------------------


async def claimed_keys(storage: Storage, now: datetime, limit: int = 10) -> list[InstanceKey]:
    return [claim.key for claim in await storage.claim_due(now, limit=limit, lease=LEASE)]


async def claim_one(
    storage: Storage, k: InstanceKey | None = None, *, lease: timedelta = LEASE
) -> Claim:
    """Claim the first due instance (`k`, if given, must be it)."""
    (claim,) = await storage.claim_due(at(1000), limit=1, lease=lease)
    assert k is None or claim.key == k
    return claim


async def test_claim_due_orders_by_alarm_then_key_and_respects_limit(storage: Storage) -> None:
    await put(storage, record(key("c"), alarm=at(1)))
    await put(storage, record(key("b"), alarm=at(2)))
    await put(storage, record(key("a"), alarm=at(2)))
    await put(storage, record(key("x", kind=JobKind.CONTINUOUS), alarm=at(2)))
    await put(storage, record(key("later"), alarm=at(100)))
    await put(storage, record(key("none")))

    first = await claimed_keys(storage, at(10), limit=3)
    assert first == [key("c"), key("x", kind=JobKind.CONTINUOUS), key("a")]
    assert await claimed_keys(storage, at(10), limit=3) == [key("b")]
    assert await claimed_keys(storage, at(10), limit=3) == []


async def test_claim_due_includes_an_alarm_exactly_at_now(storage: Storage) -> None:
    await put(storage, record(alarm=at(10)))
    assert await claimed_keys(storage, at(9)) == []
    assert await claimed_keys(storage, at(10)) == [key()]


async def test_claim_due_with_zero_limit_claims_nothing(storage: Storage) -> None:
    await put(storage, record(alarm=at(1)))
    assert await claimed_keys(storage, at(10), limit=0) == []
    assert await claimed_keys(storage, at(10), limit=1) == [key()]


async def test_a_claim_returns_the_record_with_its_new_lease(storage: Storage) -> None:
    rec = record(alarm=at(1), state={"n": 1}, meta={"m": 2})
    await put(storage, rec)
    claim = await claim_one(storage, key())
    lease = claim.record.lease
    assert lease is not None
    assert lease.token == claim.token
    assert attrs.evolve(claim.record, lease=None) == rec
    assert await storage.read(key()) == claim.record  # the stored lease is the returned one
    async with storage.instance(key()) as tx:
        assert tx.record == claim.record


async def test_parked_and_paused_instances_are_not_claimed(storage: Storage) -> None:
    parked = attrs.evolve(record(key("parked"), alarm=at(1)), status=InstanceStatus.FAILED)
    paused = attrs.evolve(record(key("paused"), alarm=at(1)), status=InstanceStatus.PAUSED)
    await put(storage, parked)
    await put(storage, paused)
    assert await claimed_keys(storage, at(10)) == []
    assert await storage.next_alarm_at({}) is None


async def test_a_live_lease_hides_the_instance_from_claims(storage: Storage) -> None:
    await put(storage, record(alarm=at(1)))
    await claim_one(storage)
    # however late the engine clock: the lease is timed by the storage's own clock
    assert await claimed_keys(storage, at(10)) == []
    assert await claimed_keys(storage, at(10**6)) == []


async def test_an_expired_lease_can_be_claimed_again_with_a_new_token(storage: Storage) -> None:
    await put(storage, record(alarm=at(1)))
    first = await claim_one(storage, lease=timedelta(0))  # expired as soon as it is granted
    assert (await storage.read(key())) == attrs.evolve(first.record, lease=None)
    second = await claim_one(storage, key())
    assert second.token != first.token
    assert second.record.lease is not None
    assert second.record.lease.token == second.token


async def test_every_claim_gets_its_own_token(storage: Storage) -> None:
    for name in ("a", "b", "c"):
        await put(storage, record(key(name), alarm=at(1)))
    claims = await storage.claim_due(at(1), limit=10, lease=LEASE)
    assert len({claim.token for claim in claims}) == 3


async def test_saving_the_record_keeps_the_lease(storage: Storage) -> None:
    await put(storage, record(alarm=at(1)))
    claim = await claim_one(storage)
    async with storage.instance(key()) as tx:  # e.g. a client's `send` during the run
        tx.save(record(alarm=at(2), state="changed"))
        current = tx.record
        assert current is not None
        assert current.lease == claim.record.lease
    saved = await storage.read(key())
    assert saved is not None
    assert saved.state == "changed"
    assert saved.lease == claim.record.lease
    assert await claimed_keys(storage, at(10)) == []


async def test_a_block_that_raises_keeps_the_lease(storage: Storage) -> None:
    await put(storage, record(alarm=at(1)))
    claim = await claim_one(storage)

    async def changes(tx: InstanceTransaction) -> None:
        tx.fence(claim.token)
        tx.revoke_lease()

    await in_failing_block(storage, key(), changes)
    got = await storage.read(key())
    assert got is not None
    assert got.lease == claim.record.lease


async def test_purging_clears_the_lease(storage: Storage) -> None:
    await put(storage, record(alarm=at(1)))
    await claim_one(storage)
    async with storage.instance(key()) as tx:
        tx.purge()
    assert await claimed_keys(storage, at(10)) == []
    await put(storage, record(alarm=at(2)))
    fresh = await storage.read(key())
    assert fresh is not None
    assert fresh.lease is None
    assert await claimed_keys(storage, at(10)) == [key()]


async def test_clearing_or_moving_the_alarm_changes_what_is_due(storage: Storage) -> None:
    await put(storage, record(key("a"), alarm=at(1)))
    await put(storage, record(key("b"), alarm=at(2)))
    await put(storage, record(key("a")))  # alarm cleared
    await put(storage, record(key("b"), alarm=at(50)))  # moved later
    assert await claimed_keys(storage, at(10)) == []
    assert await storage.next_alarm_at({}) == at(50)
    assert await claimed_keys(storage, at(50)) == [key("b")]


# -- fenced finishes -----------------------------------------------------------------------


async def test_a_fenced_finish_with_the_lease_commits_and_releases(storage: Storage) -> None:
    k = key(kind=JobKind.WORKER_POOL)
    await put(storage, record(k, alarm=at(1)))
    claim = await claim_one(storage, k)
    async with storage.instance(k) as tx:
        assert tx.fence(claim.token)
        tx.save(record(k, state="done", alarm=at(5)))
        tx.add_dead_letter(letter("d1", k, T0))
        tx.queue_push(item("q1"))
    got = await storage.read(k)
    assert got == record(k, state="done", alarm=at(5))  # no lease any more
    assert [d.id for d in await storage.dead_letters()] == ["d1"]
    assert await queue_ids(storage, k) == ["q1"]
    assert await claimed_keys(storage, at(10)) == [k]


async def test_a_fence_without_release_keeps_the_lease(storage: Storage) -> None:
    await put(storage, record(alarm=at(1)))
    claim = await claim_one(storage)
    async with storage.instance(key()) as tx:
        assert tx.fence(claim.token, release=False)
        tx.save(record(alarm=at(1), state="sealed"))
    got = await storage.read(key())
    assert got is not None
    assert got.state == "sealed"
    assert got.lease == claim.record.lease
    async with storage.instance(key()) as tx:  # the run's final write
        assert tx.fence(claim.token)
    released = await storage.read(key())
    assert released is not None
    assert released.lease is None


async def stale_finish(storage: Storage, k: InstanceKey, token: str) -> None:
    """A finish for `token` that would write everything; it must raise `LeaseLostError`."""

    async def write() -> None:
        async with storage.instance(k) as tx:
            assert not tx.fence(token)
            tx.save(record(k, state="stale", alarm=at(99)))
            tx.add_dead_letter(letter("stale-letter", k, T0))
            tx.remember("stale-event", T0)
            tx.queue_push(item("stale-item"))

    with pytest.raises(LeaseLostError):
        await write()


async def assert_nothing_stale_was_written(storage: Storage, k: InstanceKey) -> None:
    got = await storage.read(k)
    assert got is None or got.state != "stale"
    assert "stale-letter" not in [d.id for d in await storage.dead_letters()]
    assert not await has_seen(storage, k, "stale-event")
    assert "stale-item" not in await queue_ids(storage, k)


async def test_a_stale_token_writes_nothing(storage: Storage) -> None:
    k = key(kind=JobKind.WORKER_POOL)
    await put(storage, record(k, alarm=at(1), state="before"))
    lost = await claim_one(storage, k, lease=timedelta(0))
    taken = await claim_one(storage, k)  # another worker took the expired claim
    await stale_finish(storage, k, lost.token)
    await assert_nothing_stale_was_written(storage, k)
    got = await storage.read(k)
    assert got is not None
    assert got.state == "before"
    assert got.lease == taken.record.lease  # the new holder keeps its lease


async def test_an_expired_lease_cannot_finish(storage: Storage) -> None:
    k = key(kind=JobKind.WORKER_POOL)
    await put(storage, record(k, alarm=at(1), state="before"))
    expired = await claim_one(storage, k, lease=timedelta(0))
    await stale_finish(storage, k, expired.token)
    await assert_nothing_stale_was_written(storage, k)


async def test_a_fence_after_a_purge_is_refused(storage: Storage) -> None:
    k = key(kind=JobKind.WORKER_POOL)
    await put(storage, record(k, alarm=at(1)))
    claim = await claim_one(storage, k)
    async with storage.instance(k) as tx:  # a client's `terminate`
        tx.purge()
    await stale_finish(storage, k, claim.token)
    await assert_nothing_stale_was_written(storage, k)
    assert await storage.read(k) is None


async def test_a_revoked_lease_cannot_finish(storage: Storage) -> None:
    k = key(kind=JobKind.WORKER_POOL)
    await put(storage, record(k, alarm=at(1), state="before"))
    claim = await claim_one(storage, k)
    async with storage.instance(k) as tx:  # e.g. `Engine.resume` of a parked instance
        tx.revoke_lease()
        current = tx.record
        assert current is not None
        assert current.lease is None
    revoked = await storage.read(k)
    assert revoked is not None
    assert revoked.lease is None
    await stale_finish(storage, k, claim.token)
    await assert_nothing_stale_was_written(storage, k)
    again = await claim_one(storage, k)  # free for the next claim
    assert again.token != claim.token


async def test_a_fenced_block_that_raises_writes_nothing_and_keeps_the_lease(
    storage: Storage,
) -> None:
    await put(storage, record(alarm=at(1), state="before"))
    claim = await claim_one(storage)

    async def changes(tx: InstanceTransaction) -> None:
        assert tx.fence(claim.token)
        tx.save(record(state="after"))

    await in_failing_block(storage, key(), changes)
    got = await storage.read(key())
    assert got is not None
    assert got.state == "before"
    assert got.lease == claim.record.lease


# -- renewing and releasing leases ---------------------------------------------------------


async def test_renew_extends_live_leases_only(storage: Storage) -> None:
    await put(storage, record(key("live"), alarm=at(1)))
    await put(storage, record(key("expired"), alarm=at(2)))
    live = await claim_one(storage, key("live"))
    expired = await claim_one(storage, key("expired"), lease=timedelta(0))
    before = live.record.lease
    assert before is not None

    renewed = await storage.renew([live.token, expired.token, "unknown"], 2 * LEASE)
    assert renewed == {live.token}
    after = await storage.read(key("live"))
    assert after is not None
    assert after.lease is not None
    assert after.lease.token == live.token
    assert after.lease.expires_at > before.expires_at
    gone = await storage.read(key("expired"))
    assert gone is not None
    assert gone.lease is None


async def test_a_lease_taken_over_or_revoked_is_not_renewed(storage: Storage) -> None:
    await put(storage, record(key("a"), alarm=at(1)))
    await put(storage, record(key("b"), alarm=at(2)))
    lost = await claim_one(storage, key("a"), lease=timedelta(0))
    taken = await claim_one(storage, key("a"))
    revoked = await claim_one(storage, key("b"))
    async with storage.instance(key("b")) as tx:
        tx.revoke_lease()
    assert await storage.renew([lost.token, taken.token, revoked.token], LEASE) == {taken.token}


async def test_released_leases_are_gone(storage: Storage) -> None:
    await put(storage, record(key("a"), alarm=at(1)))
    await put(storage, record(key("b"), alarm=at(2)))
    a = await claim_one(storage, key("a"))
    b = await claim_one(storage, key("b"))
    await storage.release([a.token, "unknown"])
    released = await storage.read(key("a"))
    assert released is not None
    assert released.lease is None
    kept = await storage.read(key("b"))
    assert kept == b.record
    assert await storage.renew([a.token], LEASE) == frozenset()
    again = await claim_one(storage, key("a"))  # claimable at once
    assert again.token != a.token
    await storage.release([])


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
    assert await storage.next_alarm_at({}) is None
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


async def test_forget_seen_before_keeps_queued_ids_and_live_debounce_ids(
    storage: Storage,
) -> None:
    pool = key("pool", job="pool", kind=JobKind.WORKER_POOL)
    assert await storage.push_items(pool, [item("waiting"), item("done")], now=at(0)) == [
        True,
        True,
    ]
    assert await storage.cancel_item(pool, "done") == "cancelled"
    open_batch = key("d", kind=JobKind.DEBOUNCE)
    async with storage.instance(open_batch) as tx:
        tx.save(record(open_batch))
        tx.remember("folded", at(0))
    gone = key("gone", kind=JobKind.DEBOUNCE)  # no record: its batches are over
    async with storage.instance(gone) as tx:
        tx.remember("flushed", at(0))
    assert await storage.forget_seen_before(at(100)) == 2  # "done" and "flushed"
    assert await has_seen(storage, pool, "waiting")
    assert not await has_seen(storage, pool, "done")
    assert await has_seen(storage, open_batch, "folded")
    assert not await has_seen(storage, gone, "flushed")
    assert await storage.cancel_item(pool, "waiting") == "cancelled"
    async with storage.instance(open_batch) as tx:
        tx.purge()
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


# -- pool events: push, claim, finish ------------------------------------------------------


POOL = InstanceKey(JobKind.WORKER_POOL, "thumbs", "pool")


def event(
    event_id: str,
    *,
    priority: int = 0,
    partition_key: str | None = None,
    enqueued: datetime = T0,
) -> QueueItem:
    return QueueItem(
        event_id=event_id,
        event={"id": event_id},
        priority=priority,
        partition_key=partition_key,
        enqueued_at=enqueued,
    )


async def push(storage: Storage, *items: QueueItem, pool: InstanceKey = POOL) -> None:
    accepted = await storage.push_items(pool, items, now=T0)
    assert all(accepted)


async def claim_items(
    storage: Storage,
    concurrency: int = 10,
    *,
    now: datetime = T0,
    limit: int = 10,
    lease: timedelta = LEASE,
) -> list[ItemClaim]:
    return list(await storage.claim_items({POOL: concurrency}, now, limit=limit, lease=lease))


def ids(claims: Sequence[ItemClaim]) -> list[str]:
    return [claim.item.event_id for claim in claims]


async def finish(storage: Storage, claim: ItemClaim, **fields: object) -> None:
    await storage.finish_item(
        claim.pool, ItemFinish(event_id=claim.item.event_id, token=claim.token, **fields)
    )


def retry_at(when: datetime, attempt: int = 2) -> ItemRetry:
    return ItemRetry(
        available_at=when, attempt=attempt, retry_started_at=T0, defects=0, last_error="503"
    )


async def processed(storage: Storage, pool: InstanceKey = POOL) -> JsonValue:
    rec = await storage.read(pool)
    assert rec is not None
    assert isinstance(rec.meta, dict)
    return rec.meta.get("processed")


async def test_push_items_queues_in_order_and_creates_the_pool(storage: Storage) -> None:
    accepted = await storage.push_items(
        POOL, [event("a"), event("b", priority=3, partition_key="k")], now=at(5)
    )
    assert list(accepted) == [True, True]
    pool = await storage.read(POOL)
    assert pool == InstanceRecord(
        key=POOL,
        status=InstanceStatus.ACTIVE,
        meta={"processed": 0},
        created_at=at(5),
        updated_at=at(5),
    )
    a = await storage.read_item(POOL, "a")
    b = await storage.read_item(POOL, "b")
    assert a is not None
    assert b is not None
    assert a == attrs.evolve(event("a"), seq=a.seq)
    assert b == attrs.evolve(event("b", priority=3, partition_key="k"), seq=b.seq)
    assert 0 < a.seq < b.seq
    assert await has_seen(storage, POOL, "a")
    assert await has_seen(storage, POOL, "b")


async def test_push_items_refuses_seen_ids_and_repeats_in_one_batch(storage: Storage) -> None:
    await push(storage, event("old"))
    accepted = await storage.push_items(
        POOL, [event("old"), event("new"), event("new"), event("other")], now=at(1)
    )
    assert list(accepted) == [False, True, False, True]
    assert await queue_ids(storage, POOL) == ["old", "new", "other"]
    # a seen id stays refused after its event is gone
    (claim,) = await claim_items(storage, 1)
    await finish(storage, claim)
    assert list(await storage.push_items(POOL, [event("old")], now=at(2))) == [False]
    assert await queue_ids(storage, POOL) == ["new", "other"]


async def test_push_items_keeps_an_existing_pool_record(storage: Storage) -> None:
    paused = InstanceRecord(
        key=POOL,
        status=InstanceStatus.PAUSED,
        meta={"processed": 7},
        created_at=T0,
        updated_at=T0,
    )
    await put(storage, paused)
    await push(storage, event("a"))
    assert await storage.read(POOL) == paused


async def test_seq_follows_push_order_across_pools_and_blocks(storage: Storage) -> None:
    other = InstanceKey(JobKind.WORKER_POOL, "exports", "pool")
    await push(storage, event("p1"))
    await push(storage, event("o1"), pool=other)
    async with storage.instance(POOL) as tx:
        tx.queue_push(event("p2"))
    await push(storage, event("p3"))
    seqs = []
    for pool, event_id in [(POOL, "p1"), (other, "o1"), (POOL, "p2"), (POOL, "p3")]:
        got = await storage.read_item(pool, event_id)
        assert got is not None
        seqs.append(got.seq)
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 4


async def test_claim_items_takes_priority_then_fifo_and_returns_the_lease(
    storage: Storage,
) -> None:
    await push(storage, event("low"), event("high", priority=5), event("low-2"))
    await push(storage, event("high-2", priority=5), event("below", priority=-1))
    claims = await claim_items(storage, limit=4)
    assert ids(claims) == ["high", "high-2", "low", "low-2"]
    assert len({claim.token for claim in claims}) == 4
    for claim in claims:
        assert claim.pool == POOL
        assert claim.item.lease is not None
        assert claim.item.lease.token == claim.token
        assert await storage.read_item(POOL, claim.item.event_id) == claim.item
    assert ids(await claim_items(storage)) == ["below"]
    assert await claim_items(storage) == []


async def test_concurrency_counts_the_leases_of_earlier_claims(storage: Storage) -> None:
    await push(storage, event("a"), event("b"), event("c"), event("d"))
    first = await claim_items(storage, 2, limit=1)
    assert ids(first) == ["a"]
    assert ids(await claim_items(storage, 2)) == ["b"]  # one slot left
    assert await claim_items(storage, 2) == []  # the pool is at its concurrency
    await finish(storage, first[0])
    assert ids(await claim_items(storage, 2)) == ["c"]
    assert ids(await claim_items(storage, 3)) == ["d"]  # a larger concurrency: more slots


async def test_expired_item_leases_free_their_slot_and_item(storage: Storage) -> None:
    await push(storage, event("a"), event("b"))
    (lost,) = await claim_items(storage, 1, lease=timedelta(0))
    assert lost.item.event_id == "a"
    (again,) = await claim_items(storage, 1)  # the expired lease neither counts nor hides
    assert again.item.event_id == "a"
    assert again.token != lost.token
    assert await claim_items(storage, 1) == []


async def test_a_partition_key_runs_one_event_at_a_time_in_fifo_order(storage: Storage) -> None:
    await push(
        storage,
        event("a1", partition_key="A"),
        event("a2", partition_key="A", priority=9),  # priority never jumps its key's queue
        event("b1", partition_key="B"),
        event("n1"),
        event("n2"),
    )
    claims = {claim.item.event_id: claim for claim in await claim_items(storage)}
    assert sorted(claims) == ["a1", "b1", "n1", "n2"]
    await finish(storage, claims["n1"])
    assert await claim_items(storage) == []  # a2 still waits for a1
    await finish(storage, claims["a1"])
    assert ids(await claim_items(storage)) == ["a2"]


async def test_a_head_waiting_for_its_retry_holds_its_key(storage: Storage) -> None:
    await push(storage, event("a1", partition_key="A"), event("a2", partition_key="A"))
    await push(storage, event("n1"))
    claims = {claim.item.event_id: claim for claim in await claim_items(storage)}
    assert sorted(claims) == ["a1", "n1"]
    await finish(storage, claims["a1"], retry=retry_at(at(60)))
    # a1 is not available before at(60), and a2 may not pass it
    assert await claim_items(storage, now=at(59)) == []
    (retried,) = await claim_items(storage, now=at(60))
    assert retried.item.event_id == "a1"
    assert retried.item.attempt == 2
    await finish(storage, retried)
    assert ids(await claim_items(storage, now=at(60))) == ["a2"]


async def test_available_at_is_respected_without_a_key(storage: Storage) -> None:
    await push(storage, event("a"), event("b"))
    claims = await claim_items(storage, limit=1)
    await finish(storage, claims[0], retry=retry_at(at(30)))
    assert ids(await claim_items(storage, now=at(29))) == ["b"]
    assert ids(await claim_items(storage, now=at(30))) == ["a"]


async def test_a_paused_pool_yields_nothing(storage: Storage) -> None:
    await push(storage, event("a"))
    pool = await storage.read(POOL)
    assert pool is not None
    await put(storage, attrs.evolve(pool, status=InstanceStatus.PAUSED))
    assert await claim_items(storage) == []
    assert await storage.next_alarm_at({POOL: 10}) is None
    await put(storage, attrs.evolve(pool, status=InstanceStatus.ACTIVE))
    assert ids(await claim_items(storage)) == ["a"]


async def test_a_pool_without_a_record_is_active(storage: Storage) -> None:
    async with storage.instance(POOL) as tx:
        tx.queue_push(event("a"))
    assert await storage.read(POOL) is None
    assert ids(await claim_items(storage)) == ["a"]


async def test_claim_items_respects_its_limit_across_pools(storage: Storage) -> None:
    other = InstanceKey(JobKind.WORKER_POOL, "exports", "pool")
    await push(storage, event("p1"), event("p2"))
    await push(storage, event("o1"), event("o2"), pool=other)
    claims = await storage.claim_items({POOL: 5, other: 5}, T0, limit=3, lease=LEASE)
    assert len(claims) == 3
    rest = await storage.claim_items({POOL: 5, other: 5}, T0, limit=3, lease=LEASE)
    assert sorted(ids([*claims, *rest])) == ["o1", "o2", "p1", "p2"]
    for claim in [*claims, *rest]:
        assert claim.pool == (other if claim.item.event_id.startswith("o") else POOL)
    assert await storage.claim_items({POOL: 5}, T0, limit=0, lease=LEASE) == []


async def test_finish_removes_the_event_counts_it_and_writes_letters(storage: Storage) -> None:
    await push(storage, event("a"), event("b"))
    a, b = await claim_items(storage)
    await finish(storage, a, processed=1)
    await finish(storage, b, processed=0, letters=(letter("d1", POOL, at(3)),))
    assert await storage.read_item(POOL, "a") is None
    assert await storage.read_item(POOL, "b") is None
    assert await processed(storage) == 1
    assert [d.id for d in await storage.dead_letters()] == ["d1"]
    assert await storage.pool_counts(POOL) == PoolCounts(queued=0, running=0, retrying=0)


async def test_the_processed_counter_adds_up_and_keeps_other_meta(storage: Storage) -> None:
    await put(
        storage,
        InstanceRecord(
            key=POOL, meta={"processed": 40, "note": "kept"}, created_at=T0, updated_at=T0
        ),
    )
    await push(storage, event("a"), event("b"))
    a, b = await claim_items(storage)
    await finish(storage, a, processed=1)
    await finish(storage, b, processed=2)
    pool = await storage.read(POOL)
    assert pool is not None
    assert pool.meta == {"processed": 43, "note": "kept"}


async def test_a_retry_keeps_the_event_in_place_with_its_bookkeeping(storage: Storage) -> None:
    await push(storage, event("a", partition_key="A"))
    await push(storage, event("b"))
    (claim,) = await claim_items(storage, limit=1)
    before = await storage.read_item(POOL, "a")
    assert before is not None
    retry = ItemRetry(
        available_at=at(60), attempt=3, retry_started_at=at(1), defects=1, last_error="boom"
    )
    await finish(storage, claim, retry=retry)
    assert await storage.read_item(POOL, "a") == attrs.evolve(
        before,
        lease=None,
        available_at=at(60),
        attempt=3,
        retry_started_at=at(1),
        defects=1,
        last_error="boom",
    )
    assert await processed(storage) == 0
    assert await queue_ids(storage, POOL) == ["a", "b"]  # still first in line


async def test_a_stale_item_token_writes_nothing(storage: Storage) -> None:
    await push(storage, event("a"))
    (lost,) = await claim_items(storage, lease=timedelta(0))
    (taken,) = await claim_items(storage)
    for stale in (lost, attrs.evolve(taken, token="forged")):
        with pytest.raises(LeaseLostError):
            await finish(storage, stale, processed=1, letters=(letter("d1", POOL, T0),), retry=None)
        with pytest.raises(LeaseLostError):
            await finish(storage, stale, retry=retry_at(at(60)))
    assert await storage.read_item(POOL, "a") == taken.item
    assert await processed(storage) == 0
    assert await storage.dead_letters() == []
    await finish(storage, taken)  # the holder still finishes
    assert await storage.read_item(POOL, "a") is None


async def test_finishing_an_expired_or_unknown_item_is_refused(storage: Storage) -> None:
    await push(storage, event("a"))
    (expired,) = await claim_items(storage, lease=timedelta(0))
    with pytest.raises(LeaseLostError):
        await finish(storage, expired)
    assert await storage.read_item(POOL, "a") is not None
    with pytest.raises(LeaseLostError):
        await finish(storage, attrs.evolve(expired, item=event("missing")))


async def test_read_item_reports_only_a_live_lease(storage: Storage) -> None:
    assert await storage.read_item(POOL, "a") is None
    await push(storage, event("a"), event("b"))
    await claim_items(storage, limit=1, lease=timedelta(0))
    got = await storage.read_item(POOL, "a")
    assert got is not None
    assert got.lease is None
    (live,) = await claim_items(storage, limit=1)
    held = await storage.read_item(POOL, "a")
    assert held is not None
    assert held.lease == live.item.lease
    other = InstanceKey(JobKind.WORKER_POOL, "exports", "pool")
    assert await storage.read_item(other, "a") is None


async def test_cancel_item_removes_only_events_that_do_not_run(storage: Storage) -> None:
    await push(storage, event("running"), event("retrying"), event("expired"), event("queued"))
    (running,) = await claim_items(storage, limit=1)
    (retrying,) = await claim_items(storage, limit=1)
    await finish(storage, retrying, retry=retry_at(at(60)))
    (expired,) = await claim_items(storage, limit=1, lease=timedelta(0))
    assert expired.item.event_id == "expired"
    assert await storage.cancel_item(POOL, "running") == "running"
    assert await storage.cancel_item(POOL, "expired") == "cancelled"
    assert await storage.cancel_item(POOL, "retrying") == "cancelled"
    assert await storage.cancel_item(POOL, "queued") == "cancelled"
    assert await storage.cancel_item(POOL, "queued") == "not_found"
    assert await storage.cancel_item(POOL, "never") == "not_found"
    assert await queue_ids(storage, POOL) == ["running"]
    with pytest.raises(LeaseLostError):
        await finish(storage, expired)
    await finish(storage, running)
    assert running.item.event_id == "running"


async def test_pool_counts(storage: Storage) -> None:
    assert await storage.pool_counts(POOL) == PoolCounts(queued=0, running=0, retrying=0)
    await push(storage, *(event(name) for name in ("run", "retry", "defect", "lost", "new")))
    run, retry, defect = await claim_items(storage, limit=3)
    await finish(storage, retry, retry=retry_at(at(60)))
    await finish(
        storage,
        defect,
        retry=ItemRetry(
            available_at=at(60), attempt=1, retry_started_at=None, defects=1, last_error="x"
        ),
    )
    (lost,) = await claim_items(storage, limit=1, lease=timedelta(0))  # expired: queued again
    assert lost.item.event_id == "lost"
    assert await storage.pool_counts(POOL) == PoolCounts(queued=2, running=1, retrying=2)
    assert run.item.event_id == "run"


async def test_purging_a_pool_removes_its_events(storage: Storage) -> None:
    await push(storage, event("a"), event("b"))
    (claim,) = await claim_items(storage, limit=1)
    async with storage.instance(POOL) as tx:
        tx.purge()
    assert await storage.read_item(POOL, "a") is None
    assert await storage.pool_counts(POOL) == PoolCounts(queued=0, running=0, retrying=0)
    with pytest.raises(LeaseLostError):
        await finish(storage, claim)
    assert await storage.renew([claim.token], LEASE) == frozenset()


async def test_item_leases_renew_and_release(storage: Storage) -> None:
    await push(storage, event("a"), event("b"))
    a, b = await claim_items(storage, lease=LEASE)
    assert a.item.lease is not None
    renewed = await storage.renew([a.token, b.token], 2 * LEASE)
    assert renewed == {a.token, b.token}
    longer = await storage.read_item(POOL, "a")
    assert longer is not None
    assert longer.lease is not None
    assert longer.lease.expires_at > a.item.lease.expires_at
    await storage.release([a.token])
    released = await storage.read_item(POOL, "a")
    assert released is not None
    assert released.lease is None
    assert await storage.renew([a.token, b.token], LEASE) == {b.token}
    assert ids(await claim_items(storage)) == ["a"]  # free again


async def test_expired_item_leases_are_not_renewed(storage: Storage) -> None:
    await push(storage, event("a"))
    (claim,) = await claim_items(storage, lease=timedelta(0))
    assert await storage.renew([claim.token], LEASE) == frozenset()


# -- when to look again --------------------------------------------------------------------


async def test_next_alarm_at_is_when_the_next_claim_can_succeed(storage: Storage) -> None:
    assert await storage.next_alarm_at({}) is None
    await put(storage, record(key("a")))
    assert await storage.next_alarm_at({}) is None
    await put(storage, record(key("b"), alarm=at(20)))
    await put(storage, record(key("c"), alarm=at(10)))
    assert await storage.next_alarm_at({}) == at(10)
    assert await claimed_keys(storage, at(15)) == [key("c")]
    # c is leased: it is not counted (its worker looks again when it finishes)
    assert await storage.next_alarm_at({}) == at(20)
    await put(storage, record(key("b"), alarm=at(60)))
    assert await storage.next_alarm_at({}) == at(60)
    await put(storage, record(key("b")))
    assert await storage.next_alarm_at({}) is None
    async with storage.instance(key("c")) as tx:
        tx.purge()
    assert await storage.next_alarm_at({}) is None


async def test_next_alarm_at_counts_an_expired_lease(storage: Storage) -> None:
    await put(storage, record(alarm=at(10)))
    await claim_one(storage, lease=timedelta(0))
    assert await storage.next_alarm_at({}) == at(10)


async def test_next_alarm_at_counts_ready_pool_events(storage: Storage) -> None:
    await push(storage, event("a", enqueued=at(7)), event("b", enqueued=at(3)))
    assert await storage.next_alarm_at({}) is None  # pools not asked about are not counted
    assert await storage.next_alarm_at({POOL: 2}) == at(3)
    await put(storage, record(key("x"), alarm=at(1)))
    assert await storage.next_alarm_at({POOL: 2}) == at(1)
    await put(storage, record(key("x"), alarm=at(50)))
    assert await storage.next_alarm_at({POOL: 2}) == at(3)


async def test_next_alarm_at_skips_a_pool_at_its_concurrency(storage: Storage) -> None:
    await push(storage, event("a", enqueued=at(1)), event("b", enqueued=at(2)))
    await claim_items(storage, 1)
    assert await storage.next_alarm_at({POOL: 1}) is None
    assert await storage.next_alarm_at({POOL: 2}) == at(2)


async def test_next_alarm_at_skips_events_behind_their_key(storage: Storage) -> None:
    await push(
        storage,
        event("a1", partition_key="A", enqueued=at(1)),
        event("a2", partition_key="A", enqueued=at(2)),
        event("b1", partition_key="B", enqueued=at(9)),
    )
    await claim_items(storage, limit=1)
    assert await storage.next_alarm_at({POOL: 5}) == at(9)  # a2 waits for a1, leased


async def test_next_alarm_at_uses_available_at_of_a_retry(storage: Storage) -> None:
    await push(storage, event("a", enqueued=at(1)))
    (claim,) = await claim_items(storage)
    assert await storage.next_alarm_at({POOL: 5}) is None  # leased
    await finish(storage, claim, retry=retry_at(at(90)))
    assert await storage.next_alarm_at({POOL: 5}) == at(90)


async def test_next_alarm_at_skips_a_paused_pool_and_parked_instances(storage: Storage) -> None:
    await push(storage, event("a"))
    pool = await storage.read(POOL)
    assert pool is not None
    await put(storage, attrs.evolve(pool, status=InstanceStatus.PAUSED))
    await put(storage, attrs.evolve(record(alarm=at(1)), status=InstanceStatus.FAILED))
    assert await storage.next_alarm_at({POOL: 5}) is None


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


# -- scheduling: cancelling a running event, abandoned leases, delays, rate limits ---------


async def pool_meta(storage: Storage, field: str, pool: InstanceKey = POOL) -> JsonValue:
    rec = await storage.read(pool)
    assert rec is not None
    assert isinstance(rec.meta, dict)
    return rec.meta.get(field)


async def test_cancelling_a_running_event_asks_it_to_stop(storage: Storage) -> None:
    await push(storage, event("a"), event("b"))
    a, b = await claim_items(storage)
    assert await storage.cancel_item(POOL, "a") == "running"
    held = await storage.read_item(POOL, "a")
    assert held is not None
    assert held.cancel_requested
    assert held.lease == a.item.lease  # it keeps running, and holding its slot
    assert await storage.cancel_requests([a.token, b.token, "unknown"]) == {a.token}
    assert await claim_items(storage) == []
    await finish(storage, a, cancelled=True)
    assert await storage.read_item(POOL, "a") is None
    assert await pool_meta(storage, "cancelled") == 1
    assert await pool_meta(storage, "processed") == 0


async def test_an_event_asked_to_stop_is_never_kept_for_a_retry(storage: Storage) -> None:
    await push(storage, event("a", partition_key="k"), event("b", partition_key="k"))
    (a,) = await claim_items(storage)
    assert await storage.cancel_item(POOL, "a") == "running"
    await finish(storage, a, retry=retry_at(at(60)))  # the run never knew
    assert await storage.read_item(POOL, "a") is None
    assert await pool_meta(storage, "cancelled") == 1
    assert ids(await claim_items(storage)) == ["b"]  # its key goes on


async def test_cancelling_a_waiting_event_counts_it_cancelled(storage: Storage) -> None:
    await push(storage, event("a"), event("b"))
    assert await storage.cancel_item(POOL, "a") == "cancelled"
    assert await storage.cancel_item(POOL, "b") == "cancelled"
    assert await pool_meta(storage, "cancelled") == 2


async def test_an_event_asked_to_stop_whose_worker_is_gone_is_removed(storage: Storage) -> None:
    await push(storage, event("a", partition_key="k"), event("b", partition_key="k"))
    (a,) = await claim_items(storage)
    assert await storage.cancel_item(POOL, "a") == "running"
    await storage.release([a.token])  # its worker stopped: the lease is gone
    assert await storage.cancel_requests([a.token]) == frozenset()
    assert await storage.next_alarm_at({POOL: 1}) == T0  # a claim must look at it
    assert ids(await claim_items(storage)) == ["b"]
    assert await storage.read_item(POOL, "a") is None
    assert await pool_meta(storage, "cancelled") == 1


async def test_a_stopped_run_s_lease_can_be_marked_abandoned(storage: Storage) -> None:
    await put(storage, record(alarm=at(1)))
    claim = await claim_one(storage)
    await push(storage, event("a"), event("b"))
    a, b = await claim_items(storage)
    assert claim.record.lease is not None
    assert not claim.record.lease.abandoned
    await storage.abandon([claim.token, a.token, "unknown"])
    rec = await storage.read(key())
    assert rec is not None
    assert rec.lease is not None
    assert rec.lease.abandoned
    held = await storage.read_item(POOL, "a")
    assert held is not None
    assert held.lease is not None
    assert held.lease.abandoned
    assert (await storage.pool_counts(POOL)).abandoned == 1
    # renewing keeps the mark; the lease goes on until its run ends
    assert await storage.renew([claim.token, a.token, b.token], LEASE) == {
        claim.token,
        a.token,
        b.token,
    }
    renewed = await storage.read(key())
    assert renewed is not None
    assert renewed.lease is not None
    assert renewed.lease.abandoned
    async with storage.instance(key()) as tx:
        assert tx.fence(claim.token)
    await storage.release([a.token])
    again = await claim_one(storage)
    assert again.record.lease is not None
    assert not again.record.lease.abandoned
    (a_again,) = await claim_items(storage)
    assert a_again.item.lease is not None
    assert not a_again.item.lease.abandoned


async def test_an_expired_lease_is_not_marked_abandoned(storage: Storage) -> None:
    await push(storage, event("a"))
    (a,) = await claim_items(storage, lease=timedelta(0))
    await storage.abandon([a.token])
    (again,) = await claim_items(storage)
    assert again.item.lease is not None
    assert not again.item.lease.abandoned


async def test_pool_counts_tell_delayed_events_apart(storage: Storage) -> None:
    later = attrs.evolve(event("later"), available_at=at(60))
    await push(storage, event("now"), later)
    assert await storage.pool_counts(POOL, now=T0) == PoolCounts(
        queued=1, running=0, retrying=0, delayed=1
    )
    assert await storage.pool_counts(POOL) == PoolCounts(queued=2, running=0, retrying=0)
    assert ids(await claim_items(storage)) == ["now"]
    assert await storage.next_alarm_at({POOL: 5}) == at(60)
    assert ids(await claim_items(storage, now=at(60))) == ["later"]


async def test_a_rate_limit_bounds_starts_per_period(storage: Storage) -> None:
    rates = {POOL: PoolRate(limit=2, period=timedelta(seconds=10))}
    await push(storage, *(event(name) for name in "abcde"))

    async def claim(now: datetime) -> list[str]:
        claims = await storage.claim_items({POOL: 10}, now, limit=10, lease=LEASE, rates=rates)
        for claimed in claims:
            await finish(storage, claimed)
        return ids(claims)

    assert await claim(T0) == ["a", "b"]
    assert await storage.next_alarm_at({POOL: 10}, rates) == at(10)
    assert await storage.next_alarm_at({POOL: 10}) == T0  # without the limit: due now
    assert await claim(at(9)) == []
    assert await claim(at(10)) == ["c", "d"]  # the starts at T0 are a period old
    assert await claim(at(15)) == []
    assert await storage.next_alarm_at({POOL: 10}, rates) == at(20)
    assert await claim(at(20)) == ["e"]
    assert await storage.next_alarm_at({POOL: 10}, rates) is None


async def test_every_start_counts_a_retry_too(storage: Storage) -> None:
    rates = {POOL: PoolRate(limit=2, period=timedelta(seconds=10))}
    await push(storage, event("a"), event("b"))
    first = await storage.claim_items({POOL: 1}, T0, limit=10, lease=LEASE, rates=rates)
    await finish(storage, first[0], retry=retry_at(at(1)))
    again = await storage.claim_items({POOL: 1}, at(1), limit=10, lease=LEASE, rates=rates)
    assert ids(again) == ["a"]
    await finish(storage, again[0])
    assert await storage.claim_items({POOL: 1}, at(2), limit=10, lease=LEASE, rates=rates) == []
    assert await storage.next_alarm_at({POOL: 1}, rates) == at(10)


async def test_a_rate_limit_per_key_gives_each_key_its_budget(storage: Storage) -> None:
    rates = {POOL: PoolRate(limit=1, period=timedelta(seconds=10), per_key=True)}
    await push(
        storage,
        event("a1", partition_key="A"),
        event("a2", partition_key="A"),
        event("b1", partition_key="B"),
        event("n1"),
        event("n2", priority=5),
    )

    async def claim(now: datetime) -> list[str]:
        claims = await storage.claim_items({POOL: 10}, now, limit=10, lease=LEASE, rates=rates)
        for claimed in claims:
            await finish(storage, claimed)
        return ids(claims)

    # one start per key, and one for the events without a key (they share a budget)
    assert await claim(T0) == ["n2", "a1", "b1"]
    assert await claim(at(5)) == []
    assert await storage.next_alarm_at({POOL: 10}, rates) == at(10)
    assert await claim(at(10)) == ["a2", "n1"]


async def test_a_rate_limit_is_per_pool(storage: Storage) -> None:
    other = InstanceKey(JobKind.WORKER_POOL, "exports", "pool")
    rate = PoolRate(limit=1, period=timedelta(seconds=10))
    await push(storage, event("a"), event("b"))
    await push(storage, event("x"), event("y"), pool=other)
    claims = await storage.claim_items(
        {POOL: 5, other: 5}, T0, limit=10, lease=LEASE, rates={POOL: rate, other: rate}
    )
    assert sorted(ids(claims)) == ["a", "x"]
    unlimited = await storage.claim_items({other: 5}, at(1), limit=10, lease=LEASE)
    assert ids(unlimited) == ["y"]


async def test_a_rate_limit_counts_starts_a_later_now_recorded(storage: Storage) -> None:
    # two processes take `now` before their claims: the one with the earlier time may
    # claim second, and must still see the other's start
    rates = {POOL: PoolRate(limit=1, period=timedelta(seconds=10))}
    await push(storage, event("a"), event("b"))
    first = await storage.claim_items({POOL: 5}, at(10), limit=5, lease=LEASE, rates=rates)
    assert ids(first) == ["a"]
    late = await storage.claim_items({POOL: 5}, at(9), limit=5, lease=LEASE, rates=rates)
    assert late == []
    again = await storage.claim_items({POOL: 5}, at(20), limit=5, lease=LEASE, rates=rates)
    assert ids(again) == ["b"]
