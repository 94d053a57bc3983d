"""The Continuous handler: runs `execute` on a schedule through the runner."""

from datetime import datetime
from typing import TYPE_CHECKING, Generic, Literal

import attrs
from typing_extensions import TypeVar

from .._contexts import ContinuousContext, StateCell
from .._observe import JobEvent
from .._serde import decode, encode
from .._storage._interface import InstanceKey, InstanceRecord, InstanceTransaction, JobKind
from ._common import alarm_of, execution_info, is_due, key_of, new_record, require_instance
from ._results import ContinuousStatus, StartResult, TerminateResult, TriggerResult
from ._runner import Execution, FailedFinally, Outcome, Succeeded, run_execution
from ._services import Services


if TYPE_CHECKING:
    from .._definitions._continuous import Continuous

I = TypeVar("I")
S = TypeVar("S")
E = TypeVar("E")
R = TypeVar("R")


@attrs.frozen(kw_only=True)
class ContinuousMeta:
    """A continuous instance's bookkeeping, stored in the record's `meta`."""

    run_count: int = 0
    last_run_at: datetime | None = None


class ContinuousHandler(Generic[I, S, E, R]):
    """
    Continuous operations for one definition.

    Type parameters:
        I, S, E, R: those of the `Continuous` definition.
    """

    __slots__ = ("_deps", "_job", "_services")

    def __init__(self, job: "Continuous[I, S, E, R]", deps: R, services: Services) -> None:
        self._job = job
        self._deps = deps
        self._services = services

    def key(self, id: str) -> InstanceKey:
        """The instance key of `id`."""
        return key_of(JobKind.CONTINUOUS, self._job.name, id)

    async def start(self, id: str, input: S) -> StartResult:
        """Create `id` with `input` as its state; run at once if `start_immediately`."""
        job = self._job
        require_instance("input", input, job.state)
        key = self.key(id)
        services = self._services
        async with services.storage.instance(key) as tx:
            now = services.clock.now()
            if tx.record is not None:
                return StartResult(created=False, next_run_at=tx.record.alarm_at)
            record = attrs.evolve(
                new_record(key, now), state=encode(input), meta=encode(ContinuousMeta())
            )
            tx.save(record)
            services.events.emit(
                JobEvent(type="job.started", kind=key.kind, job=key.job, id=key.id, at=now)
            )
            outcome: Outcome | None = None
            if job.start_immediately:
                outcome = await self._run(tx, now, new_run=True)
            else:
                self._schedule_next(tx, now)
            return StartResult(created=True, outcome=outcome, next_run_at=alarm_of(tx))

    async def trigger(self, id: str) -> TriggerResult:
        """Run `id` now; its schedule stays as it is."""
        async with self._services.storage.instance(self.key(id)) as tx:
            record = tx.record
            if record is None or record.status.value == "failed":
                return TriggerResult(triggered=False)
            outcome = await self._run(tx, self._services.clock.now(), new_run=True, keep=True)
            return TriggerResult(triggered=True, outcome=outcome)

    async def terminate(self, id: str, reason: str | None = None) -> TerminateResult:
        """Purge `id` (state and alarm)."""
        async with self._services.storage.instance(self.key(id)) as tx:
            record = tx.record
            if record is None:
                return TerminateResult(terminated=False)
            tx.purge()
            key = record.key
            self._services.events.emit(
                JobEvent(
                    type="job.terminated",
                    kind=key.kind,
                    job=key.job,
                    id=key.id,
                    at=self._services.clock.now(),
                    reason=reason,
                )
            )
            return TerminateResult(terminated=True, reason=reason)

    async def status(self, id: str) -> ContinuousStatus:
        """Where `id` stands."""
        record = await self._services.storage.read(self.key(id))
        if record is None:
            return ContinuousStatus(status="not_found")
        name: Literal["running", "retrying", "failed"] = (
            "failed"
            if record.status.value == "failed"
            else "retrying"
            if record.attempt > 1 or record.defects > 0
            else "running"
        )
        return ContinuousStatus(
            status=name,
            run_count=self._meta(record).run_count,
            next_run_at=record.alarm_at,
            attempt=record.attempt,
            last_error=record.last_error,
        )

    async def get_state(self, id: str) -> S | None:
        """The state of `id`, or None."""
        record = await self._services.storage.read(self.key(id))
        if record is None or record.state is None:
            return None
        return decode(record.state, self._job.state)

    async def on_alarm(self, key: InstanceKey) -> None:
        """The alarm fell due: run (a retry keeps its run number)."""
        async with self._services.storage.instance(key) as tx:
            now = self._services.clock.now()
            record = tx.record
            if not is_due(record, now):
                if record is not None:
                    tx.save(record)
                return
            # a retry (of an `Err` or of a defect) repeats its run: it keeps the run number
            retrying = record is not None and (record.attempt > 1 or record.defects > 0)
            await self._run(tx, now, new_run=not retrying)

    async def _run(
        self, tx: InstanceTransaction, now: datetime, *, new_run: bool, keep: bool = False
    ) -> Outcome:
        record = tx.record
        if record is None:  # pragma: no cover - callers check
            msg = "continuous run without a record"
            raise RuntimeError(msg)
        job = self._job
        meta = self._meta(record)
        run_count = meta.run_count + 1 if new_run or meta.run_count == 0 else meta.run_count
        previous_alarm = record.alarm_at
        record = attrs.evolve(
            record, meta=encode(attrs.evolve(meta, run_count=run_count, last_run_at=now))
        )
        state = decode(record.state, job.state)
        cell = StateCell(state)
        info = execution_info(record.key, record.attempt, now)
        context = ContinuousContext(info, self._deps, cell, run_count)
        outcome = await run_execution(
            self._services,
            tx,
            record,
            Execution(
                info=info,
                deps=self._deps,
                call=lambda: job.execute(context),
                retry=job.retry,
                on_error=job.on_error,
                error_state=state,
                state=cell,
            ),
        )
        if isinstance(outcome, Succeeded):
            if keep and previous_alarm is not None:
                saved = tx.record
                if saved is not None:
                    tx.save(attrs.evolve(saved, alarm_at=previous_alarm))
            else:
                self._schedule_next(tx, now)
        elif isinstance(outcome, FailedFinally) and outcome.rescheduled_at is None:
            tx.purge()
        return outcome

    def _schedule_next(self, tx: InstanceTransaction, now: datetime) -> None:
        record = tx.record
        if record is None:
            return
        at = self._job.schedule.next_after(now)
        tx.save(attrs.evolve(record, alarm_at=at, updated_at=now))
        self._services.wake(at)

    def _meta(self, record: InstanceRecord) -> ContinuousMeta:
        if record.meta is None:
            return ContinuousMeta()
        return decode(record.meta, ContinuousMeta)
