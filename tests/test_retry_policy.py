"""
The runner's retry, error and defect semantics (SPEC §5), seen through the public client.

Most scenarios use a Debounce job whose batch is flushed by hand at a known instant (so
attempt 1 starts at `T0`) and whose retries then run on alarms as `TestClock` advances.
Every execution records its attempt number, start time and batch, so the retry delays can
be read off exactly. Client calls only make work due: what an execution came to is
observed as a user would, through observer `JobEvent`s, `status`, dead letters and the
executions recorded here.
"""

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from itertools import pairwise

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durable_jobs import (
    Backoff,
    Continuous,
    ContinuousContext,
    Debounce,
    DebounceClient,
    DebounceExecuteContext,
    DefectPolicy,
    Engine,
    Err,
    ErrorContext,
    JobEvent,
    MemoryStorage,
    Observer,
    Ok,
    Result,
    Retry,
    every,
)
from durable_jobs.testing import DEFAULT_START, TestClock


T0 = DEFAULT_START
SECOND = timedelta(seconds=1)


@attrs.frozen
class Ping:
    n: int


class ApiError(Exception):
    def __init__(self, status: int, retry_after: float = 0.0) -> None:
        super().__init__(status)
        self.status = status
        self.retry_after = retry_after


@attrs.frozen
class Run:
    attempt: int
    is_retry: bool
    at: datetime
    batch_id: str = attrs.field(eq=False)
    state: Ping = attrs.field(eq=False)


OnError = Callable[[ApiError, ErrorContext[Ping]], None]


@attrs.define
class Harness:
    """A Debounce job that fails `fail_times` times (or raises), with everything recorded."""

    clock: TestClock
    retry: Retry[ApiError] | None = None
    on_error: OnError | None = None
    fail_times: int = 10**9
    status: int = 503
    retry_after: float = 0.0
    raises: bool = False
    runs: list[Run] = attrs.field(factory=list[Run])
    errors: list[ApiError] = attrs.field(factory=list[ApiError])
    events: list[JobEvent] = attrs.field(factory=list[JobEvent])
    storage: MemoryStorage = attrs.Factory(MemoryStorage)

    def job(self) -> Debounce[Ping, Ping, ApiError]:
        def execute(ctx: DebounceExecuteContext[Ping]) -> Result[None, ApiError]:
            self.runs.append(Run(ctx.attempt, ctx.is_retry, ctx.now, ctx.batch_id, ctx.state))
            if self.raises:
                msg = f"boom on attempt {ctx.attempt}"
                raise RuntimeError(msg)
            if len(self.runs) <= self.fail_times:
                error = ApiError(self.status, self.retry_after)
                self.errors.append(error)
                return Err(error)
            return Ok(None)

        return Debounce(
            name="pings",
            event=Ping,
            flush_after="1 hour",
            execute=execute,
            retry=self.retry,
            on_error=self.on_error,
        )

    def client(
        self,
        *,
        random: Callable[[], float] | None = None,
        defect_policy: DefectPolicy | None = None,
        observers: Sequence[Observer] = (),
    ) -> DebounceClient[Ping, Ping]:
        job = self.job()
        engine = Engine(
            jobs=[job],
            storage=self.storage,
            clock=self.clock,
            random=random,
            defect_policy=defect_policy,
            observers=[self.events.append, *observers],
        )
        return engine.client.debounce(job)

    @property
    def times(self) -> list[datetime]:
        return [run.at for run in self.runs]

    @property
    def delays(self) -> list[timedelta]:
        return [b - a for a, b in pairwise(self.times)]

    def outcomes(self) -> list[JobEvent]:
        """The `job.*` events: what each execution came to, in order."""
        return [e for e in self.events if e.type.startswith("job.")]

    async def start(self, client: DebounceClient[Ping, Ping], id: str = "p") -> None:
        """
        Add one event, flush it, and run what is due: attempt 1 runs at the current instant.

        `flush` only makes the batch due (a client never runs `execute`); the worker that
        `clock.run_due()` drives runs it.
        """
        await client.add(id, Ping(1))
        await client.flush(id)
        await self.clock.run_due()


def seconds(*values: float) -> list[timedelta]:
    return [timedelta(seconds=v) for v in values]


# -- exact delays per backoff shape ---------------------------------------------------------


@pytest.mark.parametrize(
    ("delay", "expected"),
    [
        pytest.param(Backoff.fixed("10 seconds"), seconds(10, 10, 10, 10), id="fixed"),
        pytest.param(Backoff.fixed(2.5), seconds(2.5, 2.5, 2.5, 2.5), id="fixed-float"),
        pytest.param(Backoff.linear("5 s", "3 s"), seconds(5, 8, 11, 14), id="linear"),
        pytest.param(Backoff.linear(5, 3, max=10), seconds(5, 8, 10, 10), id="linear-max"),
        pytest.param(Backoff.exponential("1 second"), seconds(1, 2, 4, 8), id="exponential"),
        pytest.param(
            Backoff.exponential("1 second", max="5 seconds"), seconds(1, 2, 4, 5), id="exp-max"
        ),
        pytest.param(
            Backoff.exponential("2 seconds", factor=3), seconds(2, 6, 18, 54), id="exp-factor"
        ),
        pytest.param(
            Backoff.exponential(timedelta(milliseconds=500), max="1.5 s", factor=1.5),
            seconds(0.5, 0.75, 1.125, 1.5),
            id="exp-float-factor-max",
        ),
        pytest.param("7 seconds", seconds(7, 7, 7, 7), id="plain-duration"),
    ],
)
async def test_retry_delays_follow_the_backoff_exactly(
    clock: TestClock, delay: Backoff | str, expected: list[timedelta]
) -> None:
    harness = Harness(clock, retry=Retry(max_attempts=5, delay=delay, jitter=False))
    client = harness.client()
    await harness.start(client)
    for step in expected:
        status = await client.status("p")
        assert status.status == "retrying"
        assert status.next_flush_at == clock.now() + step
        await clock.advance(step)
    assert harness.delays == expected
    assert [run.attempt for run in harness.runs] == [1, 2, 3, 4, 5]
    assert harness.times[0] == T0
    # every retry saw the same sealed batch
    assert len({run.batch_id for run in harness.runs}) == 1


@pytest.mark.parametrize("raises", [False, True], ids=["err", "defect"])
async def test_retry_delay_counts_from_the_end_of_the_failed_attempt(
    clock: TestClock, raises: bool
) -> None:
    """
    An attempt that takes 7 s and fails is retried 10 s after it ended, not after it began.

    The execution moves the engine's clock on by 7 s, as a slow call to a failing service
    would. The old release counted the delay from the attempt's start (`retry_at = start +
    delay`, for `Err` retries and defect retries alike): its retry alarm would be T0 + 10 s,
    3 s after the attempt ended, so this test fails there.
    """
    took = 7 * SECOND
    starts: list[datetime] = []

    async def execute(ctx: DebounceExecuteContext[Ping]) -> Result[None, ApiError]:
        starts.append(ctx.now)
        clock.set(clock.now() + took)  # the attempt lasts 7 s of the engine's time
        if raises:
            msg = "slow and broken"
            raise RuntimeError(msg)
        return Err(ApiError(503))

    job = Debounce(
        name="slow",
        event=Ping,
        flush_after="1 hour",
        execute=execute,
        retry=Retry(max_attempts=2, delay=Backoff.fixed(10), jitter=False),
    )
    events: list[JobEvent] = []
    engine = Engine(
        jobs=[job],
        storage=MemoryStorage(),
        clock=clock,
        observers=[events.append],
        defect_policy=DefectPolicy(max_retries=1, backoff=Backoff.fixed(10)),
    )
    client = engine.client.debounce(job)
    await client.add("p", Ping(1))
    await client.flush("p")
    await clock.run_due()

    ended = T0 + took
    assert (starts, clock.now()) == ([T0], ended)
    assert [
        (e.type, e.will_retry, e.retry_at, e.defect) for e in events if e.type == "job.failed"
    ] == [("job.failed", True, ended + 10 * SECOND, raises)]
    assert (await client.status("p")).next_flush_at == ended + 10 * SECOND
    await clock.advance(9)
    assert len(starts) == 1
    await clock.advance(1)
    assert starts == [T0, ended + 10 * SECOND]


async def test_default_delay_is_exponential_from_one_second_capped_at_thirty(
    clock: TestClock,
) -> None:
    harness = Harness(clock, retry=Retry(max_attempts=8, jitter=False))
    await harness.start(harness.client())
    await clock.advance("10 minutes")
    assert harness.delays == seconds(1, 2, 4, 8, 16, 30, 30)


async def test_retry_after_callable_uses_the_typed_error(clock: TestClock) -> None:
    seen: list[tuple[ApiError, int]] = []

    def retry_after(e: ApiError, attempt: int) -> float:
        seen.append((e, attempt))
        return e.retry_after * attempt

    harness = Harness(
        clock,
        retry_after=7.5,
        retry=Retry(max_attempts=4, delay=retry_after, jitter=False),
    )
    await harness.start(harness.client())
    await clock.advance("10 minutes")
    assert harness.delays == seconds(7.5, 15, 22.5)
    # the callable got the very error objects execute returned, with their attempt numbers
    assert [attempt for _, attempt in seen] == [1, 2, 3]
    assert all(got is made for (got, _), made in zip(seen, harness.errors, strict=False))


async def test_retry_after_lambda_returning_text(clock: TestClock) -> None:
    harness = Harness(
        clock,
        status=429,
        retry=Retry(
            max_attempts=3,
            delay=lambda e, attempt: f"{e.status - 400 + attempt} seconds",
            jitter=False,
        ),
    )
    await harness.start(harness.client())
    await clock.advance("5 minutes")
    assert harness.delays == seconds(30, 31)


async def test_absurd_retry_after_is_capped_not_a_crash(clock: TestClock) -> None:
    # epoch milliseconds by mistake: a valid timedelta, but past the last datetime
    harness = Harness(
        clock, retry=Retry(max_attempts=3, delay=lambda e, attempt: 1.7e12, jitter=False)
    )
    client = harness.client()
    await harness.start(client)
    failed = harness.outcomes()
    assert [(e.type, e.will_retry, e.retry_at) for e in failed] == [
        ("job.failed", True, T0 + timedelta(days=365))
    ]
    assert (await client.status("p")).next_flush_at == T0 + timedelta(days=365)


YEAR = timedelta(days=365)


@pytest.mark.parametrize(
    ("delay", "first"),
    [
        pytest.param("400 days", YEAR, id="plain"),
        pytest.param(Backoff.fixed("400 days"), YEAR, id="backoff"),
        pytest.param(Backoff.linear("300 days", "300 days"), timedelta(days=300), id="linear"),
    ],
)
async def test_every_delay_is_capped_at_a_year(
    clock: TestClock, delay: Backoff | str, first: timedelta
) -> None:
    harness = Harness(clock, retry=Retry(max_attempts=3, delay=delay, jitter=False))
    await harness.start(harness.client())
    await clock.advance("1000 days")
    assert harness.delays == [first, YEAR]


async def test_retry_after_returning_garbage_is_a_defect(clock: TestClock) -> None:
    handled: list[Handled] = []
    harness = Harness(
        clock,
        retry=Retry(max_attempts=3, delay=lambda e, attempt: "whenever"),
        on_error=recording_on_error(handled),
    )
    client = harness.client(defect_policy=DefectPolicy(max_retries=0))
    await harness.start(client)
    failed, lettered = harness.outcomes()
    assert (failed.type, failed.defect, failed.will_retry) == ("job.failed", True, False)
    assert failed.error is not None
    assert "whenever" in failed.error
    assert (lettered.type, lettered.reason) == ("job.dead_lettered", "defect")
    assert handled == []
    assert (await client.status("p")).status == "failed"


# -- jitter ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("jitter", "fraction"),
    [pytest.param(True, 0.1, id="true-is-10%"), pytest.param(0.25, 0.25, id="fraction")],
)
@pytest.mark.parametrize("low", [True, False], ids=["random-0", "random-1"])
async def test_jitter_stays_within_its_fraction(
    clock: TestClock, jitter: bool | float, fraction: float, low: bool
) -> None:
    base = timedelta(seconds=100)
    harness = Harness(clock, retry=Retry(max_attempts=4, delay=Backoff.fixed(base), jitter=jitter))
    draw = 0.0 if low else 0.999999
    await harness.start(harness.client(random=lambda: draw))
    await clock.advance("1 hour")
    assert len(harness.delays) == 3
    for delay in harness.delays:
        assert base * (1 - fraction) <= delay <= base * (1 + fraction)
        # the extreme draws reach the edges of the band: the jitter is really applied
        if low:
            assert delay <= base * (1 - fraction) + SECOND / 100
        else:
            assert delay >= base * (1 + fraction) - SECOND / 100


async def test_jitter_false_is_exact_whatever_the_random_source(clock: TestClock) -> None:
    harness = Harness(
        clock, retry=Retry(max_attempts=3, delay=Backoff.exponential(10), jitter=False)
    )
    await harness.start(harness.client(random=lambda: 0.0))
    await clock.advance("1 hour")
    assert harness.delays == seconds(10, 20)


async def test_jitter_spreads_the_backoff_not_a_fixed_amount(clock: TestClock) -> None:
    harness = Harness(
        clock, retry=Retry(max_attempts=4, delay=Backoff.exponential(10), jitter=True)
    )
    await harness.start(harness.client(random=lambda: 0.0))
    await clock.advance("1 hour")
    assert harness.delays == seconds(9, 18, 36)


# -- attempts and final failures ------------------------------------------------------------


@attrs.define
class Handled:
    error: ApiError
    reason: str
    attempts: int
    state: Ping
    at: datetime


def recording_on_error(handled: list[Handled]) -> OnError:
    def on_error(e: ApiError, ctx: ErrorContext[Ping]) -> None:
        handled.append(Handled(e, ctx.reason, ctx.attempts, ctx.state, ctx.now))

    return on_error


async def test_max_attempts_counts_every_run_then_on_error(clock: TestClock) -> None:
    handled: list[Handled] = []
    harness = Harness(
        clock,
        retry=Retry(max_attempts=3, delay="10 seconds", jitter=False),
        on_error=recording_on_error(handled),
    )
    client = harness.client()
    await harness.start(client)
    assert (await client.status("p")).attempt == 2
    await clock.advance("1 hour")
    assert [(r.attempt, r.is_retry) for r in harness.runs] == [(1, False), (2, True), (3, True)]
    assert [(h.reason, h.attempts, h.state) for h in handled] == [("max_attempts", 3, Ping(1))]
    assert handled[0].error is harness.errors[-1]
    assert handled[0].at == T0 + 20 * SECOND
    assert (await client.status("p")).status == "not_found"
    assert await harness.storage.dead_letters() == []


async def test_max_attempts_one_means_a_single_run(clock: TestClock) -> None:
    handled: list[Handled] = []
    harness = Harness(clock, retry=Retry(max_attempts=1), on_error=recording_on_error(handled))
    client = harness.client()
    await harness.start(client)
    assert [(e.type, e.reason, e.attempt) for e in harness.outcomes()] == [
        ("job.retry_exhausted", "max_attempts", 1)
    ]
    await clock.advance("1 hour")
    assert len(harness.runs) == 1
    assert [(h.reason, h.attempts) for h in handled] == [("max_attempts", 1)]


async def test_success_after_retries_resets_and_skips_on_error(clock: TestClock) -> None:
    handled: list[Handled] = []
    harness = Harness(
        clock,
        fail_times=2,
        retry=Retry(max_attempts=5, delay=Backoff.fixed(3), jitter=False),
        on_error=recording_on_error(handled),
    )
    client = harness.client()
    await harness.start(client)
    await clock.advance("1 hour")
    assert [r.attempt for r in harness.runs] == [1, 2, 3]
    assert handled == []
    assert (await client.status("p")).status == "not_found"
    # a new batch starts again at attempt 1
    await harness.start(client)
    assert harness.runs[-1].attempt == 1


async def test_should_retry_false_is_final_with_the_same_error(clock: TestClock) -> None:
    asked: list[ApiError] = []

    def should_retry(e: ApiError) -> bool:
        asked.append(e)
        return e.status >= 500

    handled: list[Handled] = []
    harness = Harness(
        clock,
        status=404,
        retry=Retry(max_attempts=5, delay=1, should_retry=should_retry),
        on_error=recording_on_error(handled),
    )
    client = harness.client()
    await harness.start(client)
    assert [(e.type, e.will_retry, e.reason) for e in harness.outcomes()] == [
        ("job.failed", False, "not_retryable")
    ]
    await clock.advance("1 hour")
    assert len(harness.runs) == 1
    assert len(asked) == 1
    assert asked[0] is harness.errors[0]
    assert [(h.reason, h.attempts) for h in handled] == [("not_retryable", 1)]
    assert handled[0].error is harness.errors[0]
    assert (await client.status("p")).status == "not_found"


async def test_should_retry_true_keeps_retrying(clock: TestClock) -> None:
    handled: list[Handled] = []
    harness = Harness(
        clock,
        status=503,
        retry=Retry(max_attempts=3, delay=1, jitter=False, should_retry=lambda e: e.status >= 500),
        on_error=recording_on_error(handled),
    )
    await harness.start(harness.client())
    await clock.advance("1 hour")
    assert len(harness.runs) == 3
    assert [h.reason for h in handled] == ["max_attempts"]


async def test_without_retry_the_failure_is_final_at_once(clock: TestClock) -> None:
    handled: list[Handled] = []
    harness = Harness(clock, on_error=recording_on_error(handled))
    client = harness.client()
    await harness.start(client)
    # on_error handled it: no dead letter
    assert [(e.type, e.will_retry, e.reason) for e in harness.outcomes()] == [
        ("job.failed", False, "no_retry")
    ]
    assert await harness.storage.dead_letters() == []
    await clock.advance("1 day")
    assert len(harness.runs) == 1
    assert [(h.reason, h.attempts) for h in handled] == [("no_retry", 1)]
    assert (await client.status("p")).status == "not_found"


async def test_max_duration_ends_the_retries(clock: TestClock) -> None:
    handled: list[Handled] = []
    harness = Harness(
        clock,
        retry=Retry(
            max_attempts=100, delay=Backoff.fixed(10), jitter=False, max_duration="25 seconds"
        ),
        on_error=recording_on_error(handled),
    )
    client = harness.client()
    await harness.start(client)
    await clock.advance("1 hour")
    # runs at 0, 10, 20 s are within 25 s of the first attempt; the one at 30 s is not
    assert harness.times == [T0 + k * 10 * SECOND for k in range(4)]
    assert [(h.reason, h.attempts) for h in handled] == [("max_duration", 4)]
    assert (await client.status("p")).status == "not_found"


async def test_max_duration_counts_from_the_first_failure_of_each_sequence(
    clock: TestClock,
) -> None:
    handled: list[Handled] = []

    def on_error(e: ApiError, ctx: ErrorContext[Ping]) -> None:
        handled.append(Handled(e, ctx.reason, ctx.attempts, ctx.state, ctx.now))
        if len(handled) == 1:
            ctx.reschedule("1 hour")

    harness = Harness(
        clock,
        retry=Retry(max_attempts=100, delay=15, jitter=False, max_duration=20),
        on_error=on_error,
    )
    await harness.start(harness.client())
    await clock.advance("1 day")
    restart = T0 + 30 * SECOND + timedelta(hours=1)
    assert harness.times == [
        T0,
        T0 + 15 * SECOND,
        T0 + 30 * SECOND,
        restart,
        restart + 15 * SECOND,
        restart + 30 * SECOND,
    ]
    assert [(h.reason, h.attempts) for h in handled] == [
        ("max_duration", 3),
        ("max_duration", 3),
    ]


# -- what on_error can do -------------------------------------------------------------------


async def test_reschedule_from_on_error_runs_again_at_that_time(clock: TestClock) -> None:
    handled: list[Handled] = []
    rescheduled: list[datetime | None] = []

    def on_error(e: ApiError, ctx: ErrorContext[Ping]) -> None:
        handled.append(Handled(e, ctx.reason, ctx.attempts, ctx.state, ctx.now))
        if len(handled) == 1:
            assert ctx.rescheduled_at is None
            ctx.reschedule("5 minutes")
            rescheduled.append(ctx.rescheduled_at)

    harness = Harness(
        clock,
        retry=Retry(max_attempts=2, delay=Backoff.fixed(10), jitter=False),
        on_error=on_error,
    )
    client = harness.client()
    await harness.start(client)
    await clock.advance(10)
    again = T0 + 10 * SECOND + timedelta(minutes=5)
    assert rescheduled == [again]
    status = await client.status("p")
    assert (status.status, status.next_flush_at, status.attempt) == ("retrying", again, 1)
    # the batch is kept, sealed, until the rescheduled run
    [batch] = status.batches
    assert (batch.batch_id, batch.stage, batch.due_at, batch.event_count) == (
        harness.runs[0].batch_id,
        "retrying",
        again,
        1,
    )
    await clock.advance("1 hour")
    assert harness.times == [T0, T0 + 10 * SECOND, again, again + 10 * SECOND]
    # the rescheduled run starts a fresh retry sequence, on the same batch
    assert [r.attempt for r in harness.runs] == [1, 2, 1, 2]
    assert {(r.batch_id, r.state) for r in harness.runs} == {(batch.batch_id, Ping(1))}
    assert [(h.reason, h.attempts) for h in handled] == [("max_attempts", 2)] * 2
    assert (await client.status("p")).status == "not_found"


async def test_an_on_error_lambda_that_reschedules(clock: TestClock) -> None:
    """`on_error=lambda e, ctx: ctx.reschedule(...)`: the lambda returns None, a valid result."""
    harness = Harness(clock, fail_times=1, on_error=lambda e, ctx: ctx.reschedule("5 minutes"))
    client = harness.client()
    await harness.start(client)
    assert (await client.status("p")).next_flush_at == T0 + timedelta(minutes=5)
    await clock.advance("5 minutes")
    assert harness.times == [T0, T0 + timedelta(minutes=5)]
    assert (await client.status("p")).status == "not_found"
    assert await harness.storage.dead_letters() == []


async def test_reschedule_with_no_retry_outcome_reports_the_time(clock: TestClock) -> None:
    def on_error(e: ApiError, ctx: ErrorContext[Ping]) -> None:
        ctx.reschedule(90)

    harness = Harness(clock, fail_times=1, on_error=on_error)
    client = harness.client()
    await harness.start(client)
    assert [(e.type, e.reason) for e in harness.outcomes()] == [("job.failed", "no_retry")]
    status = await client.status("p")
    assert (status.status, status.next_flush_at) == ("retrying", T0 + 90 * SECOND)
    await clock.advance(89)
    assert len(harness.runs) == 1
    await clock.advance(1)
    assert harness.times == [T0, T0 + 90 * SECOND]
    assert (await client.status("p")).status == "not_found"


async def test_terminate_from_on_error_purges_without_dead_letter(clock: TestClock) -> None:
    def on_error(e: ApiError, ctx: ErrorContext[Ping]) -> None:
        ctx.terminate("gave up")

    harness = Harness(clock, retry=Retry(max_attempts=1), on_error=on_error)
    client = harness.client()
    await harness.start(client)
    assert [(e.type, e.reason) for e in harness.outcomes()] == [
        ("job.retry_exhausted", "max_attempts"),
        ("job.terminated", "gave up"),
    ]
    assert (await client.status("p")).status == "not_found"
    assert await client.get_state("p") is None
    assert await harness.storage.dead_letters() == []
    assert await harness.storage.list_instances() == []


async def test_terminate_from_on_error_after_retries(clock: TestClock) -> None:
    def on_error(e: ApiError, ctx: ErrorContext[Ping]) -> None:
        ctx.terminate()

    harness = Harness(clock, retry=Retry(max_attempts=3, delay=5, jitter=False), on_error=on_error)
    client = harness.client()
    await harness.start(client)
    await clock.advance("1 hour")
    assert len(harness.runs) == 3
    assert await harness.storage.list_instances() == []
    assert await harness.storage.dead_letters() == []


async def test_async_on_error_is_awaited(clock: TestClock) -> None:
    handled: list[str] = []

    async def on_error(e: ApiError, ctx: ErrorContext[Ping]) -> None:
        await asyncio.sleep(0)
        handled.append(f"{e.status}:{ctx.reason}")

    job_runs: list[int] = []

    async def execute(ctx: DebounceExecuteContext[Ping]) -> Result[None, ApiError]:
        await asyncio.sleep(0)
        job_runs.append(ctx.attempt)
        return Err(ApiError(502))

    job = Debounce(
        name="async",
        event=Ping,
        flush_after=1,
        execute=execute,
        retry=Retry(max_attempts=2, delay=1, jitter=False),
        on_error=on_error,
    )
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    await engine.client.debounce(job).add("p", Ping(1))
    await clock.advance(5)
    assert job_runs == [1, 2]
    assert handled == ["502:max_attempts"]


# -- events -------------------------------------------------------------------------------


def job_events(events: list[JobEvent]) -> list[tuple[object, ...]]:
    return [
        (e.type, e.attempt, e.will_retry, e.retry_at, e.reason, e.error, e.defect)
        for e in events
        if e.type.startswith("job.")
    ]


async def test_events_carry_the_real_error_and_the_reason(clock: TestClock) -> None:
    events: list[JobEvent] = []
    harness = Harness(clock, retry=Retry(max_attempts=3, delay=10, jitter=False))
    await harness.start(harness.client(observers=[events.append]))
    await clock.advance("1 hour")
    error = "ApiError: 503"
    assert job_events(events) == [
        ("job.failed", 1, True, T0 + 10 * SECOND, None, error, False),
        ("job.failed", 2, True, T0 + 20 * SECOND, None, error, False),
        ("job.retry_exhausted", 3, None, None, "max_attempts", error, False),
        ("job.dead_lettered", 3, None, None, "max_attempts", error, False),
    ]
    assert {(e.job, e.id) for e in events} == {("pings", "p")}


async def test_events_name_max_duration_and_not_retryable(clock: TestClock) -> None:
    events: list[JobEvent] = []
    harness = Harness(clock, retry=Retry(max_attempts=9, delay=10, jitter=False, max_duration=5))
    await harness.start(harness.client(observers=[events.append]))
    await clock.advance("1 hour")
    assert [(e.type, e.reason) for e in events if e.type == "job.retry_exhausted"] == [
        ("job.retry_exhausted", "max_duration")
    ]

    events.clear()
    harness = Harness(clock, status=400, retry=Retry(max_attempts=9, should_retry=lambda e: False))
    await harness.start(harness.client(observers=[events.append]), id="q")
    assert job_events(events) == [
        ("job.failed", 1, False, None, "not_retryable", "ApiError: 400", False),
        ("job.dead_lettered", 1, None, None, "not_retryable", "ApiError: 400", False),
    ]


async def test_defect_events_are_marked(clock: TestClock) -> None:
    events: list[JobEvent] = []
    harness = Harness(clock, raises=True)
    policy = DefectPolicy(max_retries=1, backoff=Backoff.fixed(3))
    await harness.start(harness.client(observers=[events.append], defect_policy=policy))
    await clock.advance("1 hour")
    summary = [(e.type, e.will_retry, e.retry_at, e.defect) for e in events]
    assert [s for s in summary if s[0] != "debounce.started"] == [
        ("job.failed", True, T0 + 3 * SECOND, True),
        ("job.failed", False, None, True),
        ("job.dead_lettered", None, None, False),
    ]
    failed = [e for e in events if e.type == "job.failed"]
    assert all(e.error is not None and "boom" in e.error for e in failed)


# -- dead letters ---------------------------------------------------------------------------


async def test_dead_letter_records_the_final_failure(clock: TestClock) -> None:
    harness = Harness(
        clock, status=500, retry=Retry(max_attempts=2, delay=Backoff.fixed(10), jitter=False)
    )
    client = harness.client()
    await client.add("team-7", Ping(42))
    await client.flush("team-7")
    assert await harness.storage.dead_letters() == []
    await clock.advance("1 hour")
    letters = await harness.storage.dead_letters()
    assert len(letters) == 1
    letter = letters[0]
    assert (letter.key.job, letter.key.id) == ("pings", "team-7")
    assert letter.error == "ApiError: 500"
    assert (letter.reason, letter.attempts) == ("max_attempts", 2)
    assert letter.at == T0 + 10 * SECOND
    assert letter.state == {"n": 42}
    assert (await client.status("team-7")).status == "not_found"


async def test_dead_letter_per_final_failure_reason(clock: TestClock) -> None:
    harness = Harness(clock, status=400, retry=Retry(max_attempts=3, should_retry=lambda e: False))
    client = harness.client()
    await harness.start(client, id="a")
    assert [(e.type, e.reason) for e in harness.outcomes()] == [
        ("job.failed", "not_retryable"),
        ("job.dead_lettered", "not_retryable"),
    ]
    letters = await harness.storage.dead_letters("pings")
    assert [(d.key.id, d.reason, d.attempts, d.error) for d in letters] == [
        ("a", "not_retryable", 1, "ApiError: 400")
    ]
    assert await harness.storage.dead_letters("other") == []


# -- defects --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "gaps"),
    [
        pytest.param(
            DefectPolicy(max_retries=2, backoff=Backoff.fixed(7)), seconds(7, 7), id="fixed"
        ),
        pytest.param(
            DefectPolicy(max_retries=3, backoff=Backoff.exponential("2 seconds")),
            seconds(2, 4, 8),
            id="exponential",
        ),
        pytest.param(DefectPolicy(max_retries=0), [], id="no-retries"),
    ],
)
async def test_defect_is_retried_by_the_policy_then_parked(
    clock: TestClock, policy: DefectPolicy, gaps: list[timedelta]
) -> None:
    asked: list[ApiError] = []
    handled: list[Handled] = []

    def should_retry(e: ApiError) -> bool:
        asked.append(e)
        return True

    harness = Harness(
        clock,
        raises=True,
        retry=Retry(max_attempts=10, delay=1, should_retry=should_retry),
        on_error=recording_on_error(handled),
    )
    client = harness.client(defect_policy=policy)
    await client.add("p", Ping(5))
    await client.flush("p")
    await clock.run_due()
    first = harness.outcomes()[0]
    assert (first.type, first.defect, first.will_retry) == (
        "job.failed",
        True,
        policy.max_retries > 0,
    )
    await clock.advance("1 day")
    assert harness.delays == gaps
    # a defect keeps the attempt number: it is not an E retry
    assert all(run.attempt == 1 for run in harness.runs)
    # never given to the E handlers
    assert asked == []
    assert handled == []
    status = await client.status("p")
    assert status.status == "failed"
    assert status.next_flush_at is None
    assert status.last_error is not None
    assert "boom" in status.last_error
    # parked with its batch kept (the letter below holds its state)
    assert [(b.stage, b.event_count) for b in status.batches] == [("failed", 1)]
    assert {run.state for run in harness.runs} == {Ping(5)}
    letters = await harness.storage.dead_letters()
    assert len(letters) == 1
    assert letters[0].reason == "defect"
    assert "RuntimeError" in letters[0].error
    assert "boom" in letters[0].error
    assert letters[0].state == {"n": 5}
    assert letters[0].at == harness.times[-1]
    # parked: nothing runs any more
    await clock.advance("30 days")
    assert len(harness.runs) == len(gaps) + 1


async def test_defect_retry_status_is_retrying(clock: TestClock) -> None:
    harness = Harness(clock, raises=True)
    client = harness.client(defect_policy=DefectPolicy(max_retries=1, backoff=Backoff.fixed(30)))
    await harness.start(client)
    assert [(e.type, e.defect, e.will_retry, e.retry_at) for e in harness.outcomes()] == [
        ("job.failed", True, True, T0 + 30 * SECOND)
    ]
    status = await client.status("p")
    assert (status.status, status.next_flush_at) == ("retrying", T0 + 30 * SECOND)


async def test_defects_then_success_resets_the_defect_budget(clock: TestClock) -> None:
    outcomes = iter(["raise", "ok", "raise", "raise", "ok"])
    runs: list[datetime] = []

    def execute(ctx: ContinuousContext[Ping]) -> Result[None, ApiError]:
        runs.append(ctx.now)
        if next(outcomes) == "raise":
            msg = "flaky"
            raise RuntimeError(msg)
        return Ok(None)

    job = Continuous(name="c", state=Ping, schedule=every("1 hour"), execute=execute)
    engine = Engine(
        jobs=[job],
        storage=MemoryStorage(),
        clock=clock,
        defect_policy=DefectPolicy(max_retries=2, backoff=Backoff.fixed(10)),
    )
    client = engine.client.continuous(job)
    await client.start("c", Ping(0))  # the first run is due now
    await clock.advance(timedelta(hours=1, seconds=30))
    hour = timedelta(hours=1)
    assert runs == [
        T0,
        T0 + 10 * SECOND,
        T0 + 10 * SECOND + hour,
        T0 + 20 * SECOND + hour,
        T0 + 30 * SECOND + hour,
    ]
    # the last run succeeded: the instance waits for its next scheduled run
    status = await client.status("c")
    assert (status.status, status.next_run_at) == ("scheduled", T0 + 30 * SECOND + 2 * hour)


async def test_should_retry_that_raises_is_a_defect(clock: TestClock) -> None:
    def should_retry(e: ApiError) -> bool:
        msg = "bad predicate"
        raise KeyError(msg)

    handled: list[Handled] = []
    harness = Harness(
        clock,
        retry=Retry(max_attempts=3, should_retry=should_retry),
        on_error=recording_on_error(handled),
    )
    client = harness.client(defect_policy=DefectPolicy(max_retries=0))
    await harness.start(client)
    failed, lettered = harness.outcomes()
    assert (failed.type, failed.defect, failed.will_retry) == ("job.failed", True, False)
    assert failed.error is not None
    assert "bad predicate" in failed.error
    assert (lettered.type, lettered.reason) == ("job.dead_lettered", "defect")
    assert handled == []
    assert (await client.status("p")).status == "failed"


async def test_on_error_that_raises_is_parked(clock: TestClock) -> None:
    def on_error(e: ApiError, ctx: ErrorContext[Ping]) -> None:
        msg = f"handler broke on {e.status}"
        raise ValueError(msg)

    harness = Harness(clock, retry=Retry(max_attempts=2, delay=4, jitter=False), on_error=on_error)
    client = harness.client()
    await client.add("p", Ping(9))
    await client.flush("p")
    await clock.advance("1 day")
    assert len(harness.runs) == 2
    status = await client.status("p")
    assert status.status == "failed"
    assert status.next_flush_at is None
    # parked with its batch kept (the letter below holds its state)
    assert [(b.stage, b.event_count) for b in status.batches] == [("failed", 1)]
    letters = await harness.storage.dead_letters()
    assert [(d.key.id, d.reason, d.state) for d in letters] == [("p", "defect", {"n": 9})]
    assert "handler broke on 503" in letters[0].error
    assert letters[0].at == T0 + 4 * SECOND
    await clock.advance("30 days")
    assert len(harness.runs) == 2


async def test_on_error_that_raises_reports_a_parked_defect(clock: TestClock) -> None:
    def on_error(e: ApiError, ctx: ErrorContext[Ping]) -> None:
        raise RuntimeError

    harness = Harness(clock, on_error=on_error)
    client = harness.client()
    await harness.start(client)
    # the E failure is reported, then on_error's exception parks the batch: no retry
    assert [(e.type, e.reason, e.will_retry) for e in harness.outcomes()] == [
        ("job.failed", "no_retry", False),
        ("job.dead_lettered", "defect", None),
    ]
    status = await client.status("p")
    assert (status.status, status.next_flush_at) == ("failed", None)


# -- Continuous: discarded state changes, next run after recovery ---------------------------


async def test_failed_attempt_discards_its_state_changes(clock: TestClock) -> None:
    seen: list[tuple[int, int]] = []

    def execute(ctx: ContinuousContext[Ping]) -> Result[None, ApiError]:
        seen.append((ctx.attempt, ctx.state.n))
        ctx.set_state(Ping(ctx.state.n + 1))
        return Err(ApiError(500)) if ctx.attempt < 3 else Ok(None)

    job = Continuous(
        name="counter",
        state=Ping,
        schedule=every("1 hour"),
        execute=execute,
        retry=Retry(max_attempts=3, delay=Backoff.linear(10, 10), jitter=False),
    )
    events: list[JobEvent] = []
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock, observers=[events.append])
    client = engine.client.continuous(job)
    started = await client.start("c", Ping(0))
    assert started.next_run_at == T0  # due now: the worker runs it
    await clock.run_due()
    assert [(e.type, e.retry_at) for e in events if e.type == "job.failed"] == [
        ("job.failed", T0 + 10 * SECOND)
    ]
    assert (await client.status("c")).next_run_at == T0 + 10 * SECOND
    assert await client.get_state("c") == Ping(0)
    await clock.advance(30)
    assert seen == [(1, 0), (2, 0), (3, 0)]
    assert await client.get_state("c") == Ping(1)
    status = await client.status("c")
    # runs at 0, 10 and 30 s; the next scheduled run counts from the successful one
    assert (status.status, status.attempt, status.next_run_at) == (
        "scheduled",
        1,
        T0 + 30 * SECOND + timedelta(hours=1),
    )


async def test_continuous_final_failure_without_retry_purges(clock: TestClock) -> None:
    reasons: list[str] = []

    def execute(ctx: ContinuousContext[Ping]) -> Result[None, ApiError]:
        return Err(ApiError(500))

    def on_error(e: ApiError, ctx: ErrorContext[Ping]) -> None:
        reasons.append(ctx.reason)

    job = Continuous(name="c", state=Ping, schedule=every(60), execute=execute, on_error=on_error)
    events: list[JobEvent] = []
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock, observers=[events.append])
    client = engine.client.continuous(job)
    await client.start("c", Ping(0))
    assert reasons == []  # start only made the run due
    await clock.run_due()
    assert reasons == ["no_retry"]
    assert [(e.type, e.will_retry, e.reason) for e in events if e.type == "job.failed"] == [
        ("job.failed", False, "no_retry")
    ]
    assert (await client.status("c")).status == "not_found"


# -- Backoff as a value: properties ---------------------------------------------------------


def formula(shape: str, base: int, step: int, attempt: int) -> int:
    if shape == "fixed":
        return base
    if shape == "linear":
        return base + step * (attempt - 1)
    return base * int(step ** (attempt - 1))


def build(shape: str, base: int, step: int, cap: int | None) -> Backoff:
    if shape == "fixed":
        return Backoff.fixed(base)
    if shape == "linear":
        return Backoff.linear(base, step, max=cap)
    return Backoff.exponential(base, max=cap, factor=step)


backoff_args = st.tuples(
    st.sampled_from(["fixed", "linear", "exponential"]),
    st.integers(0, 1000),
    st.integers(1, 5),
    st.none() | st.integers(0, 100_000),
).map(lambda t: (t[0], t[1], t[2], None if t[3] is None else t[1] + t[3]))


@given(args=backoff_args, attempt=st.integers(1, 40))
def test_backoff_delay_matches_its_formula_and_cap(
    args: tuple[str, int, int, int | None], attempt: int
) -> None:
    shape, base, step, cap = args
    backoff = build(shape, base, step, cap)
    expected = formula(shape, base, step, attempt)
    if cap is not None:
        expected = min(expected, cap)
    expected = min(expected, 365 * 86400)
    delay = backoff.delay_for(attempt)
    assert delay == timedelta(seconds=expected)
    if cap is not None:
        assert delay <= timedelta(seconds=cap)
    # never shrinks from one attempt to the next
    assert backoff.delay_for(attempt + 1) >= delay


@given(
    base=st.floats(0.001, 3600),
    factor=st.floats(1, 10),
    extra=st.floats(0, 10**6),
    attempt=st.integers(1, 10**4),
)
def test_exponential_never_exceeds_its_max(
    base: float, factor: float, extra: float, attempt: int
) -> None:
    cap = base + extra
    backoff = Backoff.exponential(base, max=cap, factor=factor)
    assert backoff.delay_for(attempt) <= timedelta(seconds=cap)
    assert backoff.delay_for(attempt) >= timedelta(seconds=base) - timedelta(microseconds=1)


def observed_delays(backoff: Backoff, attempts: int) -> Sequence[timedelta]:
    """Run a job that always fails through the engine; the gaps between its runs."""

    async def scenario() -> list[timedelta]:
        harness = Harness(
            TestClock(), retry=Retry(max_attempts=attempts, delay=backoff, jitter=False)
        )
        await harness.start(harness.client())
        await harness.clock.advance("4000 days")
        assert len(harness.runs) == attempts
        return harness.delays

    return asyncio.run(scenario())


@settings(max_examples=30, deadline=None)
@given(args=backoff_args, attempts=st.integers(1, 7))
def test_engine_waits_exactly_delay_for_attempt(
    args: tuple[str, int, int, int | None], attempts: int
) -> None:
    shape, base, step, cap = args
    backoff = build(shape, base, step, cap)
    delays = observed_delays(backoff, attempts)
    assert list(delays) == [backoff.delay_for(n) for n in range(1, attempts)]
    if cap is not None:
        assert all(d <= timedelta(seconds=cap) for d in delays)
