"""
The pure values: `Ok`/`Err`, durations, `Backoff`, `Retry`, schedules, and definition checks.

Deliberately ill-typed inputs (what an untyped caller could pass) go through variables
typed `Any`, so the runtime checks are exercised without silencing the type checkers.
"""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durable_jobs import (
    Backoff,
    Continuous,
    ContinuousContext,
    Debounce,
    DebounceExecuteContext,
    DuplicateJobError,
    DurableJobsError,
    DurationInput,
    Engine,
    Err,
    InvalidDefinitionError,
    MemoryStorage,
    Ok,
    Result,
    Retry,
    Task,
    TaskEventContext,
    TaskExecuteContext,
    WorkerPool,
    WorkerPoolContext,
    cron,
    every,
)
from durable_jobs._duration import to_timedelta
from durable_jobs.testing import TestClock


# -- Ok / Err -------------------------------------------------------------------------------


def test_ok_and_err_report_their_side() -> None:
    ok: Result[int, str] = Ok(1)
    err: Result[int, str] = Err("bad")
    assert ok.is_ok() is True
    assert ok.is_err() is False
    assert err.is_ok() is False
    assert err.is_err() is True


def test_map_applies_to_ok_only() -> None:
    calls: list[object] = []

    def record(value: object) -> object:
        calls.append(value)
        return value

    assert Ok(2).map(lambda v: v * 10) == Ok(20)
    assert Ok(2).map(str) == Ok("2")
    err = Err("bad")
    assert err.map(record) is err
    assert calls == []


def test_map_err_applies_to_err_only() -> None:
    calls: list[object] = []

    def record(value: object) -> object:
        calls.append(value)
        return value

    assert Err(3).map_err(lambda e: f"code {e}") == Err("code 3")
    ok = Ok(1)
    assert ok.map_err(record) is ok
    assert calls == []


def test_unwrap_or() -> None:
    assert Ok(5).unwrap_or(0) == 5
    assert Ok(None).unwrap_or(0) is None
    assert Err("bad").unwrap_or(0) == 0


def test_equality_and_hash() -> None:
    assert Ok(1) == Ok(1)
    assert hash(Ok((1, 2))) == hash(Ok((1, 2)))
    assert Ok(1) != Ok(2)
    assert Err("a") == Err("a")
    assert Err("a") != Err("b")
    ok: object = Ok(1)
    assert ok != Err(1)
    assert ok != 1
    assert len({Ok(1), Ok(1), Err(1)}) == 2


@pytest.mark.parametrize(
    ("value", "field"), [pytest.param(Ok(1), "value"), pytest.param(Err("x"), "error")]
)
def test_results_are_frozen(value: object, field: str) -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(value, field, 2)


def describe(result: Result[int, ValueError]) -> str:
    match result:
        case Ok(value):
            return f"ok {value}"
        case Err(error):
            return f"err {error}"


def test_results_pattern_match() -> None:
    assert describe(Ok(3)) == "ok 3"
    assert describe(Err(ValueError("nope"))) == "err nope"


def test_err_keeps_the_error_object() -> None:
    error = ValueError("x")
    assert Err(error).error is error
    assert Err(error).map_err(lambda e: e).error is error


# -- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90 seconds", timedelta(seconds=90)),
        ("1.5 hours", timedelta(minutes=90)),
        ("500 ms", timedelta(milliseconds=500)),
        ("5 seconds", timedelta(seconds=5)),
        ("30m", timedelta(minutes=30)),
        ("1 hour", timedelta(hours=1)),
        ("2 days", timedelta(days=2)),
        ("1 week", timedelta(weeks=1)),
        ("1 minute", timedelta(minutes=1)),
        ("10s", timedelta(seconds=10)),
        ("  3 Hours ", timedelta(hours=3)),
        (".5 s", timedelta(milliseconds=500)),
        ("0 seconds", timedelta(0)),
        ("250 milliseconds", timedelta(milliseconds=250)),
    ],
)
def test_duration_strings(text: str, expected: timedelta) -> None:
    assert to_timedelta(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, timedelta(0)),
        (5, timedelta(seconds=5)),
        (1.5, timedelta(seconds=1.5)),
        (0.001, timedelta(milliseconds=1)),
        # a large number is a duration in seconds, never an absolute timestamp
        (1_700_000_000, timedelta(seconds=1_700_000_000)),
    ],
)
def test_numbers_are_seconds(value: float, expected: timedelta) -> None:
    assert to_timedelta(value) == expected


def test_timedelta_passes_through() -> None:
    delta = timedelta(minutes=3, microseconds=7)
    assert to_timedelta(delta) == delta


@pytest.mark.parametrize(
    "value",
    [
        "five seconds",
        "5 fortnights",
        "5",
        "seconds",
        "",
        "-5 seconds",
        "1.5.5 hours",
        "1e3 seconds",
        "5 seconds ago",
        -1,
        -0.5,
        float("nan"),
        float("inf"),
        True,
        None,
        [5],
        timedelta(seconds=-1),
    ],
    ids=repr,
)
def test_bad_durations_name_the_field_and_the_input(value: Any) -> None:
    with pytest.raises(InvalidDefinitionError) as info:
        to_timedelta(value, field="flush_after")
    message = str(info.value)
    assert message.startswith("flush_after: ")
    if isinstance(value, str):
        assert repr(value) in message
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, DurableJobsError)


@pytest.mark.parametrize(
    "value",
    [
        10**20,
        1e300,
        "999999999999 days",
        "9" * 400 + " seconds",
        (timedelta.max.days + 1) * 86400.0,
    ],
)
def test_out_of_range_durations_are_definition_errors(value: Any) -> None:
    with pytest.raises(InvalidDefinitionError, match=r"^max_duration: "):
        to_timedelta(value, field="max_duration")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("90 seconds", 90), ("1.5 hours", 5400), (45, 45), (0.25, 0.25), (timedelta(hours=2), 7200)],
)
def test_public_inputs_parse_durations(value: DurationInput, expected: float) -> None:
    def execute(ctx: DebounceExecuteContext[int]) -> Result[None, str]:
        return Ok(None)

    job = Debounce(name="d", event=int, flush_after=value, execute=execute)
    assert job.flush_after == timedelta(seconds=expected)
    retry: Retry[str] = Retry(max_attempts=2, delay=value, max_duration=value)
    assert retry.max_duration_delta == timedelta(seconds=expected)


async def test_flush_after_text_sets_the_alarm(clock: TestClock) -> None:
    def execute(ctx: DebounceExecuteContext[int]) -> Result[None, str]:
        return Ok(None)

    job = Debounce(name="d", event=int, flush_after="1.5 hours", execute=execute)
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    added = await engine.client.debounce(job).add("x", 1)
    assert added.will_flush_at == clock.now() + timedelta(minutes=90)


# -- Backoff --------------------------------------------------------------------------------


def test_backoff_constructors_store_their_shape() -> None:
    fixed = Backoff.fixed("5 seconds")
    assert [fixed.delay_for(n) for n in (1, 2, 10)] == [timedelta(seconds=5)] * 3
    linear = Backoff.linear("1 s", "2 s", max="6 s")
    assert [linear.delay_for(n).total_seconds() for n in range(1, 6)] == [1, 3, 5, 6, 6]
    exp = Backoff.exponential("100 ms", factor=10)
    assert [exp.delay_for(n).total_seconds() for n in range(1, 4)] == [0.1, 1.0, 10.0]


def test_backoff_attempt_below_one_is_the_first_delay() -> None:
    assert Backoff.linear(1, 1).delay_for(0) == timedelta(seconds=1)
    assert Backoff.exponential(1).delay_for(-3) == timedelta(seconds=1)


def test_backoff_without_max_is_bounded() -> None:
    assert Backoff.exponential(1).delay_for(10_000) == timedelta(days=365)
    assert Backoff.linear(1, "1 day").delay_for(10**9) == timedelta(days=365)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        pytest.param(lambda: Backoff.fixed("soon"), "delay", id="fixed-text"),
        pytest.param(lambda: Backoff.fixed(-1), "delay", id="fixed-negative"),
        pytest.param(lambda: Backoff.linear("x", 1), "base", id="linear-base"),
        pytest.param(lambda: Backoff.linear(1, "x"), "increment", id="linear-increment"),
        pytest.param(lambda: Backoff.linear(1, -1), "increment", id="linear-negative"),
        pytest.param(lambda: Backoff.linear(10, 1, max=5), "max", id="linear-max-below-base"),
        pytest.param(lambda: Backoff.linear(1, 1, max="x"), "max", id="linear-max-text"),
        pytest.param(lambda: Backoff.exponential("x"), "base", id="exp-base"),
        pytest.param(lambda: Backoff.exponential(10, max=5), "max", id="exp-max-below-base"),
        pytest.param(lambda: Backoff.exponential(1, factor=0.5), "factor", id="exp-factor-low"),
        pytest.param(lambda: Backoff.exponential(1, factor=0), "factor", id="exp-factor-zero"),
        pytest.param(
            lambda: Backoff.exponential(1, factor=float("nan")), "factor", id="exp-factor-nan"
        ),
    ],
)
def test_backoff_validation_names_the_field(make: Any, field: str) -> None:
    with pytest.raises(InvalidDefinitionError, match=rf"^{field}: "):
        make()


def test_backoff_factor_must_be_a_number() -> None:
    bad: Any = True
    with pytest.raises(InvalidDefinitionError, match=r"^factor: "):
        Backoff.exponential(1, factor=bad)
    text: Any = "2"
    with pytest.raises(InvalidDefinitionError, match=r"^factor: "):
        Backoff.exponential(1, factor=text)


def test_backoff_max_equal_to_base_is_allowed() -> None:
    assert Backoff.exponential(5, max=5).delay_for(4) == timedelta(seconds=5)


# -- Retry ----------------------------------------------------------------------------------


def test_retry_defaults() -> None:
    retry: Retry[str] = Retry(max_attempts=3)
    assert retry.jitter is True
    assert retry.jitter_fraction == 0.1
    assert retry.max_duration_delta is None
    assert retry.should_retry is None
    assert retry.delay == Backoff.exponential("1 second", max="30 seconds")


@pytest.mark.parametrize(("jitter", "fraction"), [(True, 0.1), (False, 0.0), (0.3, 0.3), (0, 0.0)])
def test_retry_jitter_fraction(jitter: bool | float, fraction: float) -> None:
    assert Retry[str](max_attempts=2, jitter=jitter).jitter_fraction == fraction


def test_retry_max_duration_delta() -> None:
    assert Retry[str](max_attempts=2, max_duration="2 minutes").max_duration_delta == timedelta(
        minutes=2
    )
    assert Retry[str](max_attempts=2, max_duration=30).max_duration_delta == timedelta(seconds=30)


@pytest.mark.parametrize("value", [0, -1, True, False, 1.5, "3", None])
def test_retry_max_attempts_must_be_at_least_one(value: Any) -> None:
    with pytest.raises(InvalidDefinitionError, match=r"^max_attempts: "):
        Retry(max_attempts=value)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"jitter": 1.5}, "jitter"),
        ({"jitter": -0.1}, "jitter"),
        ({"jitter": float("nan")}, "jitter"),
        ({"jitter": "yes"}, "jitter"),
        ({"delay": "soon"}, "delay"),
        ({"delay": -1}, "delay"),
        ({"delay": None}, "delay"),
        ({"delay": [1]}, "delay"),
        ({"max_duration": "forever"}, "max_duration"),
        ({"max_duration": -5}, "max_duration"),
        ({"max_duration": [1]}, "max_duration"),
        ({"should_retry": 5}, "should_retry"),
    ],
    ids=repr,
)
def test_retry_validation_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidDefinitionError, match=rf"^{field}: "):
        Retry(max_attempts=3, **kwargs)


def test_retry_is_frozen() -> None:
    retry: Retry[str] = Retry(max_attempts=3)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(retry, "max_attempts", 5)  # noqa: B010 - deliberately bypassing the checker


# -- schedules ------------------------------------------------------------------------------


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_every_adds_its_interval() -> None:
    now = at("2026-01-01T10:00:00.123456+00:00")
    assert every("5 minutes").next_after(now) == now + timedelta(minutes=5)
    assert every(90).next_after(now) == now + timedelta(seconds=90)
    assert every(timedelta(hours=2)).next_after(now) == now + timedelta(hours=2)


@pytest.mark.parametrize("value", [0, "0 seconds", -1, "often", timedelta(0)], ids=repr)
def test_every_rejects_bad_intervals(value: Any) -> None:
    with pytest.raises(InvalidDefinitionError, match=r"^every: "):
        every(value)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        ("2026-01-01T12:03:00+00:00", "2026-01-01T12:05:00+00:00"),
        ("2026-01-01T12:04:59.999999+00:00", "2026-01-01T12:05:00+00:00"),
        # strictly after: a match at `now` itself is not next
        ("2026-01-01T12:05:00+00:00", "2026-01-01T12:10:00+00:00"),
        ("2026-01-01T12:05:00.000001+00:00", "2026-01-01T12:10:00+00:00"),
        ("2026-01-01T23:58:00+00:00", "2026-01-02T00:00:00+00:00"),
        # other offsets are converted: 13:03+01:00 is 12:03Z
        ("2026-01-01T13:03:00+01:00", "2026-01-01T12:05:00+00:00"),
    ],
)
def test_cron_every_five_minutes(now: str, expected: str) -> None:
    result = cron("*/5 * * * *").next_after(at(now))
    assert result == at(expected)
    assert result.utcoffset() == timedelta(0)


def test_cron_daily_in_a_timezone_follows_daylight_saving() -> None:
    nine = cron("0 9 * * *", tz="Europe/Berlin")
    # winter: CET is UTC+1
    assert nine.next_after(at("2026-01-01T00:00:00+00:00")) == at("2026-01-01T08:00:00+00:00")
    assert nine.next_after(at("2026-01-01T08:00:00+00:00")) == at("2026-01-02T08:00:00+00:00")
    # summer: CEST is UTC+2
    assert nine.next_after(at("2026-07-01T00:00:00+00:00")) == at("2026-07-01T07:00:00+00:00")
    # across the switch on 2026-03-29: the same local 09:00 is an hour earlier in UTC
    assert nine.next_after(at("2026-03-28T08:30:00+00:00")) == at("2026-03-29T07:00:00+00:00")


def test_cron_timezone_changes_the_day() -> None:
    monday_nine = cron("0 9 * * 1", tz="America/New_York")
    # 2026-01-05 is a Monday; 09:00 EST is 14:00Z
    assert monday_nine.next_after(at("2026-01-01T00:00:00+00:00")) == at(
        "2026-01-05T14:00:00+00:00"
    )
    assert cron("0 9 * * 1").next_after(at("2026-01-01T00:00:00+00:00")) == at(
        "2026-01-05T09:00:00+00:00"
    )


def test_cron_result_is_utc() -> None:
    result = cron("30 6 * * *", tz="Asia/Tokyo").next_after(datetime(2026, 1, 1, tzinfo=UTC))
    assert result == at("2026-01-01T21:30:00+00:00")
    assert result.tzinfo == UTC


def test_cron_interval_runs_through_the_repeated_dst_hour() -> None:
    # 2026-10-25 Europe/Berlin: 03:00 CEST falls back to 02:00 CET; 02:xx happens twice
    half_hourly = cron("*/30 * * * *", tz="Europe/Berlin")
    runs = [at("2026-10-24T23:50:00+00:00")]
    for _ in range(6):
        runs.append(half_hourly.next_after(runs[-1]))
    pairs = [("00", "00"), ("00", "30"), ("01", "00"), ("01", "30"), ("02", "00"), ("02", "30")]
    assert runs[1:] == [at(f"2026-10-25T{hh}:{mm}:00+00:00") for hh, mm in pairs]


def test_cron_fixed_time_never_returns_the_past_in_the_repeated_hour() -> None:
    daily = cron("30 2 * * *", tz="Europe/Berlin")
    # 02:30 CEST (00:30Z) ran already; at 02:10 CET (01:10Z) the next run is tomorrow
    assert daily.next_after(at("2026-10-25T01:10:00+00:00")) == at("2026-10-26T01:30:00+00:00")
    # once only on the fall-back day (the first 02:30), like Debian cron
    assert daily.next_after(at("2026-10-24T23:00:00+00:00")) == at("2026-10-25T00:30:00+00:00")
    # on the spring-forward day 02:30 does not exist: it runs when the clock jumps (03:00)
    assert daily.next_after(at("2026-03-28T23:00:00+00:00")) == at("2026-03-29T01:00:00+00:00")


async def test_continuous_cron_started_in_the_repeated_hour_waits_for_tomorrow() -> None:
    clock = TestClock(at("2026-10-25T01:10:00+00:00"))
    runs: list[datetime] = []

    def execute(ctx: ContinuousContext[Item]) -> Result[None, str]:
        runs.append(ctx.now)
        return Ok(None)

    job = Continuous(
        name="nightly",
        state=Item,
        schedule=cron("30 2 * * *", tz="Europe/Berlin"),
        execute=execute,
        start_immediately=False,
    )
    engine = Engine(jobs=[job], storage=MemoryStorage(), clock=clock)
    started = await engine.client.continuous(job).start("x", Item(0))
    assert started.next_run_at == at("2026-10-26T01:30:00+00:00")
    await asyncio.wait_for(clock.advance("25 hours"), timeout=10)
    assert runs == [at("2026-10-26T01:30:00+00:00")]


TRANSITIONS = [  # 2026 DST switches (UTC instants), and a zone without any
    ("Europe/Berlin", at("2026-03-29T01:00:00+00:00")),
    ("Europe/Berlin", at("2026-10-25T01:00:00+00:00")),
    ("America/New_York", at("2026-03-08T07:00:00+00:00")),
    ("America/New_York", at("2026-11-01T06:00:00+00:00")),
    ("UTC", at("2026-10-25T01:00:00+00:00")),
]
CRONS = ["*/30 * * * *", "30 2 * * *", "0 * * * *", "15 1-3 * * *", "*/7 2 * * *", "0 9 * * *"]
HOURS = 3600 * 10**6


@settings(max_examples=400, deadline=None)
@given(
    expression=st.sampled_from(CRONS),
    transition=st.sampled_from(TRANSITIONS),
    offset=st.integers(-36 * HOURS, 36 * HOURS),
    split=st.floats(0, 1),
)
def test_cron_next_is_strictly_after_and_the_earliest(
    expression: str, transition: tuple[str, datetime], offset: int, split: float
) -> None:
    tz, instant = transition
    schedule = cron(expression, tz=tz)
    now = instant + timedelta(microseconds=offset)
    nxt = schedule.next_after(now)
    assert nxt > now
    assert nxt.tzinfo == UTC
    # any instant in [now, nxt) leads to the same next run: nothing was skipped in between
    between = now + (nxt - now) * split
    if between < nxt:
        assert schedule.next_after(between) == nxt


@pytest.mark.xfail(
    reason="cronsim skips matches after the 30-minute DST shift of Australia/Lord_Howe "
    "(it yields 02:35 for '*/7 2 * * *' right after 02:00 falls back to 01:30); "
    "a dependency's limitation, not the comparison in Cron.next_after",
    strict=True,
)
def test_cron_in_a_half_hour_dst_zone() -> None:
    schedule = cron("*/7 2 * * *", tz="Australia/Lord_Howe")
    # 2026-04-05 02:00 LHDT (+11) falls back to 01:30 LHST (+10:30) at 15:00Z
    assert schedule.next_after(at("2026-04-04T15:00:00+00:00")) == at("2026-04-04T15:30:00+00:00")


@pytest.mark.parametrize(
    "expression", ["not a cron", "61 * * * *", "* * * *", "*/0 * * * *", "", "* * 32 * *"]
)
def test_bad_cron_expression(expression: str) -> None:
    with pytest.raises(InvalidDefinitionError, match=r"^cron: ") as info:
        cron(expression)
    assert repr(expression) in str(info.value)


def test_bad_cron_timezone() -> None:
    with pytest.raises(InvalidDefinitionError, match=r"^cron: .*Mars/Olympus"):
        cron("* * * * *", tz="Mars/Olympus")


# -- definitions ----------------------------------------------------------------------------


@attrs.frozen
class Item:
    n: int


def debounce_execute(ctx: DebounceExecuteContext[Item]) -> Result[None, str]:
    return Ok(None)


def continuous_execute(ctx: ContinuousContext[Item]) -> Result[None, str]:
    return Ok(None)


def task_on_event(ctx: TaskEventContext[Item, Item]) -> None:
    return None


def task_execute(ctx: TaskExecuteContext[Item]) -> Result[None, str]:
    return Ok(None)


def pool_execute(ctx: WorkerPoolContext[Item]) -> Result[None, str]:
    return Ok(None)


def make_debounce(name: str = "d", **overrides: Any) -> Debounce[Item, Item, str]:
    fields: dict[str, Any] = {"flush_after": "1 minute", **overrides}
    return Debounce(name=name, event=Item, execute=debounce_execute, **fields)


def make_continuous(name: str = "c", schedule: Any = None) -> Continuous[Item, Item, str]:
    return Continuous(
        name=name,
        state=Item,
        schedule=schedule if schedule is not None else every("1 hour"),
        execute=continuous_execute,
    )


def make_task(name: str = "t") -> Task[Item, Item, str]:
    return Task(name=name, event=Item, state=Item, on_event=task_on_event, execute=task_execute)


def make_pool(name: str = "p", concurrency: Any = 2) -> WorkerPool[Item, None, str]:
    return WorkerPool(name=name, event=Item, concurrency=concurrency, execute=pool_execute)


def test_valid_definitions() -> None:
    assert make_debounce().name == "d"
    assert make_debounce(max_events=1).max_events == 1
    assert make_continuous().name == "c"
    assert make_task().name == "t"
    assert make_pool(concurrency=1).concurrency == 1


@pytest.mark.parametrize("name", ["", "   ", " padded", "a:b"], ids=repr)
@pytest.mark.parametrize("make", [make_debounce, make_continuous, make_task, make_pool])
def test_every_kind_rejects_bad_names(make: Any, name: str) -> None:
    with pytest.raises(InvalidDefinitionError, match=r"^name: "):
        make(name)


@pytest.mark.parametrize("make", [make_debounce, make_continuous, make_task, make_pool])
def test_every_kind_rejects_a_non_string_name(make: Any) -> None:
    with pytest.raises(InvalidDefinitionError, match=r"^name: "):
        make(None)


@pytest.mark.parametrize("value", [0, -3, True, 2.0])
def test_debounce_max_events_must_be_positive(value: Any) -> None:
    with pytest.raises(InvalidDefinitionError, match=r"^max_events: "):
        make_debounce(max_events=value)


@pytest.mark.parametrize("value", ["soon", 0, "0 seconds", -5, timedelta(0)], ids=repr)
def test_debounce_flush_after_must_be_a_positive_duration(value: Any) -> None:
    with pytest.raises(InvalidDefinitionError, match=r"^flush_after: "):
        make_debounce(flush_after=value)


@pytest.mark.parametrize("value", [0, -1, True, 1.5, None])
def test_worker_pool_concurrency_must_be_positive(value: Any) -> None:
    with pytest.raises(InvalidDefinitionError, match=r"^concurrency: "):
        make_pool(concurrency=value)


def test_continuous_schedule_must_be_a_schedule() -> None:
    with pytest.raises(InvalidDefinitionError, match=r"^schedule: "):
        make_continuous(schedule="5 minutes")
    with pytest.raises(InvalidDefinitionError, match=r"^every: "):
        make_continuous(schedule=every("sometimes"))


def test_retry_argument_must_be_a_retry() -> None:
    with pytest.raises(InvalidDefinitionError, match=r"^retry: "):
        make_debounce(retry=3)


def test_duplicate_job_names_are_rejected() -> None:
    with pytest.raises(DuplicateJobError, match="'same'"):
        Engine(jobs=[make_debounce("same"), make_debounce("same")], storage=MemoryStorage())


def test_duplicate_job_names_across_kinds_are_rejected() -> None:
    with pytest.raises(DuplicateJobError, match="'shared'") as info:
        Engine(jobs=[make_task("shared"), make_pool("shared")], storage=MemoryStorage())
    assert isinstance(info.value, DurableJobsError)


def test_distinct_names_register() -> None:
    engine = Engine(
        jobs=[make_debounce("a"), make_continuous("b"), make_task("c"), make_pool("d")],
        storage=MemoryStorage(),
    )
    assert engine.job_names == ("a", "b", "c", "d")


def test_a_duration_past_a_hundred_years_is_a_definition_error() -> None:
    def execute(ctx: DebounceExecuteContext[str]) -> Result[None, Exception]:
        return Ok(None)

    with pytest.raises(InvalidDefinitionError, match=r"flush_after: .*too long"):
        Debounce(name="d", event=str, flush_after="5000000 days", execute=execute)
