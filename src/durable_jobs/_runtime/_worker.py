"""
The worker: claims due work, runs it holding a lease, keeps the leases alive.

One loop claims due instances (`Storage.claim_due`) and ready pool events
(`Storage.claim_items`) into free slots and starts each as a task; the lease keeper renews
every lease in flight in one storage call, and marks a run lost when its lease is gone
(revoked by a client's `terminate`, or expired): an async run is cancelled, a sync one
(a thread cannot be stopped) has its result refused. Every lost run is reported with a
`job.lease_lost` event and a log line.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from .._errors import SchemaMismatchError, UndecodableDataError
from .._observe import JobEvent
from .._storage._interface import (
    Claim,
    InstanceKey,
    ItemClaim,
    LeaseLostError,
    PoolRate,
)
from ._invoke import RunHandle
from ._services import RegisteredJob, Services
from ._undecodable import park


logger = logging.getLogger("durable_jobs")

_MIN_IDLE = timedelta(milliseconds=5)
_MAX_IDLE = timedelta(seconds=1)
_EARLY_RENEWAL = 0.2
"""Seconds between two renewals at least, however often the keeper is poked."""
_PRUNE_EVERY = timedelta(hours=1)
"""How often a worker forgets event ids older than the retention window (engine clock)."""


class LeaseKeeper:
    """Renews the leases of the runs in flight, in one storage call every third of a lease."""

    def __init__(self, services: Services, lease: timedelta) -> None:
        self._services = services
        self._lease = lease
        self._runs: dict[str, RunHandle] = {}
        self._task: asyncio.Task[None] | None = None
        self._poked: asyncio.Event | None = None
        self._poke_early = False
        """Poked before the keeper task first ran: it renews at once when it starts."""

    @property
    def lease(self) -> timedelta:
        """How long a lease lasts without renewal."""
        return self._lease

    def hold(self, run: RunHandle) -> None:
        """Keep `run`'s lease alive until `drop`."""
        self._runs[run.token] = run
        task = self._task
        if task is None or task.done():
            self._poked = None  # until the new task runs, a poke is kept by `_poke_early`
            self._task = asyncio.create_task(self._keep(), name="durable-jobs-leases")

    def drop(self, run: RunHandle) -> None:
        """Stop renewing `run`'s lease (its run ended)."""
        self._runs.pop(run.token, None)

    def poke(self) -> None:
        """Renew (and so learn of revoked leases) soon, not only at the next period."""
        if self._poked is None:
            self._poke_early = True
        else:
            self._poked.set()

    async def close(self) -> None:
        """Stop renewing."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _keep(self) -> None:
        lease = self._lease.total_seconds()
        period = lease / 3
        margin = min(lease / 6, 5.0)
        # one per keeper task: an engine may serve on one event loop after another
        poked = self._poked = asyncio.Event()
        if self._poke_early:
            self._poke_early = False
            poked.set()
        last = time.monotonic()
        while self._runs:
            deadline = min(run.expires for run in self._runs.values()) - margin
            wait = max(0.0, min(period, deadline - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(poked.wait(), wait)
            poked.clear()
            # a poke (another process wrote, a client revoked) renews early, but no more
            # often than every _EARLY_RENEWAL: a busy storage must not become a renewal storm
            gap = last + min(_EARLY_RENEWAL, period) - time.monotonic()
            if gap > 0:
                await asyncio.sleep(gap)
            last = time.monotonic()
            # a run writing its outcome is judged by its fence: renewing it would race the
            # commit that ends its lease
            tokens = [token for token, run in self._runs.items() if not run.finishing]
            if not tokens:
                break
            started = time.monotonic()
            try:
                async with asyncio.timeout(period):
                    renewed = await self._services.storage.renew(tokens, self._lease)
            except Exception:
                logger.warning("renewing %d lease(s) failed; retrying", len(tokens), exc_info=True)
                now = time.monotonic()
                for token in tokens:
                    run = self._runs.get(token)
                    if run is not None and now >= run.expires - margin:
                        run.lose()  # it would expire before we could renew: give it up
                await asyncio.sleep(min(1.0, period))
                continue
            for token in tokens:
                run = self._runs.get(token)
                if run is None:
                    continue
                if token in renewed:
                    run.expires = started + lease
                else:
                    run.lose()
            await self._stop_cancelled(renewed)

    async def _stop_cancelled(self, renewed: frozenset[str]) -> None:
        """Ask the runs of pool events a client cancelled to stop (see `RunHandle.stop`)."""
        asking = [
            token
            for token in renewed
            if (run := self._runs.get(token)) is not None
            and run.cancellable
            and run.stopped is None
        ]
        if not asking:
            return
        try:
            cancelled = await self._services.storage.cancel_requests(asking)
        except Exception:  # asked again at the next renewal
            logger.warning("reading cancel requests failed; retrying", exc_info=True)
            return
        for token in cancelled:
            run = self._runs.get(token)
            if run is not None:
                run.stop_with("cancelled")


class Worker:
    """Claims due work into a bounded number of slots and runs it (one per engine)."""

    def __init__(
        self,
        services: Services,
        jobs: Mapping[str, RegisteredJob],
        *,
        concurrency: int,
        lease: timedelta,
        event_id_retention: timedelta | None = None,
    ) -> None:
        self._services = services
        self._retention = event_id_retention
        self._pruned_at: datetime | None = None
        self._jobs = jobs
        self._concurrency = concurrency
        self._keeper = LeaseKeeper(services, lease)
        self._pools: dict[InstanceKey, int] = {
            job.pool: job.concurrency for job in jobs.values() if job.pool is not None
        }
        self._rates: dict[InstanceKey, PoolRate] = {
            job.pool: job.rate
            for job in jobs.values()
            if job.pool is not None and job.rate is not None
        }
        self.sleeping_until: datetime | None = None
        """When `serve` looks for work next unless woken (None: it is looking right now)."""

    @property
    def keeper(self) -> LeaseKeeper:
        """The lease keeper of this worker's runs."""
        return self._keeper

    async def next_alarm_at(self) -> datetime | None:
        """When due work can next be claimed (None: nothing is scheduled)."""
        return await self._services.storage.next_alarm_at(self._pools, self._rates or None)

    async def claim(self, limit: int) -> list[Claim | ItemClaim]:
        """Claim up to `limit` due instances and ready pool events."""
        storage = self._services.storage
        lease = self._keeper.lease
        now = self._services.clock.now()
        claimed: list[Claim | ItemClaim] = []
        if limit <= 0:
            return claimed
        claimed.extend(await storage.claim_due(now, limit=limit, lease=lease))
        if self._pools and len(claimed) < limit:
            now = self._services.clock.now()  # a rate limit counts starts at this time
            claimed.extend(
                await storage.claim_items(
                    self._pools,
                    now,
                    limit=limit - len(claimed),
                    lease=lease,
                    rates=self._rates or None,
                )
            )
        return claimed

    def start(self, work: Claim | ItemClaim) -> asyncio.Task[None]:
        """Run one claimed piece of work as a task."""
        key = work.key if isinstance(work, Claim) else work.pool
        expires = time.monotonic() + self._keeper.lease.total_seconds()
        run = RunHandle(key, work.token, expires, cancellable=isinstance(work, ItemClaim))
        task = asyncio.create_task(self._run(work, run), name=f"durable-jobs {key.job}:{key.id}")
        run.task = task
        return task

    async def prune(self) -> None:
        """
        Forget remembered event ids older than the retention window, about once an hour
        (engine clock). A failure is logged, never raised: pruning can wait.
        """
        if self._retention is None:
            return
        now = self._services.clock.now()
        if self._pruned_at is not None and now - self._pruned_at < _PRUNE_EVERY:
            return
        self._pruned_at = now
        try:
            forgotten = await self._services.storage.forget_seen_before(now - self._retention)
        except Exception:
            logger.warning("forgetting old event ids failed; trying again later", exc_info=True)
            return
        if forgotten:
            logger.info("forgot %d event id(s) older than %s", forgotten, self._retention)

    async def run_due(self) -> datetime | None:
        """Claim and run everything due now (bounded concurrency); the next alarm time."""
        await self.prune()
        while True:
            claimed = await self.claim(self._concurrency)
            if not claimed:
                break
            async with asyncio.TaskGroup() as group:
                for work in claimed:
                    group.create_task(_wait(self.start(work)))
        return await self.next_alarm_at()

    async def serve(
        self, wake: asyncio.Event, should_stop: Callable[[], bool], poll: timedelta
    ) -> None:
        """Run until `should_stop()`; `wake` is set when there may be new work."""
        clock = self._services.clock
        running: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            running.discard(task)
            wake.set()

        blocked = 0  # looks in a row that found due work nobody could claim
        try:
            while not should_stop():
                wake.clear()
                self.sleeping_until = None
                await self.prune()
                try:
                    next_at = await self._claim_into(running, finished)
                except SchemaMismatchError:
                    raise  # this version must not run against that database: stop
                except Exception:
                    logger.exception("worker iteration failed; retrying shortly")
                    next_at = clock.now() + timedelta(seconds=1)
                if should_stop():
                    break
                now = clock.now()
                if next_at is not None and next_at <= now:
                    # never busy-wait: work that is due but not claimable (its slots are full
                    # in other workers) is looked at again after a growing pause; a storage
                    # change or a finished run still wakes the loop at once
                    blocked += 1
                    next_at = now + min(_MIN_IDLE * 2 ** min(blocked - 1, 16), _MAX_IDLE)
                else:
                    blocked = 0
                # a dead worker's leases expire unannounced: look again at least every `poll`
                latest = now + poll
                next_at = latest if next_at is None else min(next_at, latest)
                self.sleeping_until = next_at
                await clock.sleep_until(next_at, wake)
        except BaseException:
            await self._abandon(running)
            raise
        # graceful: runs in flight finish and write their outcome
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    async def close(self) -> None:
        """Stop renewing leases."""
        await self._keeper.close()

    async def _claim_into(
        self,
        running: set[asyncio.Task[None]],
        finished: Callable[[asyncio.Task[None]], None],
    ) -> datetime | None:
        """Start due work in free slots; the time to look again (None: only when woken)."""
        while True:
            free = self._concurrency - len(running)
            if free <= 0:
                return None  # a finishing run wakes the loop
            claimed = await self.claim(free)
            for work in claimed:
                task = self.start(work)
                running.add(task)
                task.add_done_callback(finished)
            if len(claimed) < free:
                return await self.next_alarm_at()

    async def _abandon(self, running: set[asyncio.Task[None]]) -> None:
        """A hard stop: cancel runs in flight and give their instances back at once."""
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    async def _run(self, work: Claim | ItemClaim, run: RunHandle) -> None:
        # events and log lines of this task (and of its callbacks' threads) name this run
        self._services.events.enter_run(work, self._services.clock.now())
        keeper = self._keeper
        keeper.hold(run)
        try:
            job = self._jobs.get(run.key.job)
            if isinstance(work, Claim):
                runner = None if job is None or job.kind is not run.key.kind else job.run_claim
                if runner is None:
                    _unknown(run.key)
                    return
                await runner(work, run)
            else:
                item_runner = None if job is None else job.run_item
                if item_runner is None:
                    _unknown(run.key)
                    return
                await item_runner(work, run)
        except UndecodableDataError as bad:
            # its data will not start decoding by itself: parked now, not retried per lease
            try:
                run.finish()
                await park(self._services, work, bad)
            except LeaseLostError as lost:
                self._report(run, str(lost))
            except Exception:
                # the storage failed: the lease expires and the next claim parks it again
                logger.exception("parking %s:%s:%s failed", *_names(run.key))
        except LeaseLostError as lost:
            self._report(run, str(lost))
        except asyncio.CancelledError:
            if run.lost:
                self._report(run, "its lease was lost and the run was cancelled")
                return
            if not run.abandoned:
                # stopping: this run wrote nothing; let another worker take it right away
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._services.storage.release([run.token]))
            raise
        except Exception:
            # the lease expires and the work runs again; other work goes on
            logger.exception("run of %s:%s:%s failed", run.key.kind.value, run.key.job, run.key.id)
        finally:
            keeper.drop(run)

    def _report(self, run: RunHandle, why: str) -> None:
        key = run.key
        self._services.events.emit(
            JobEvent(
                type="job.lease_lost",
                kind=key.kind,
                job=key.job,
                id=key.id,
                at=self._services.clock.now(),
                reason=why,
            )
        )


def _names(key: InstanceKey) -> tuple[str, str, str]:
    return (key.kind.value, key.job, key.id)


async def _wait(task: asyncio.Task[None]) -> None:
    await task


def _unknown(key: InstanceKey) -> None:
    # another worker may know the job: leave the claim to expire rather than drop the work
    logger.warning(
        "claimed %s:%s:%s, which is not registered here", key.kind.value, key.job, key.id
    )
