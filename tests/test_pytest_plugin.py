"""The pytest plugin (entry point `pytest11`): its fixtures under pytest-asyncio auto/strict."""

import pytest


pytest_plugins = ("pytester",)

USER_TESTS = """
import pytest

from durable_jobs import Debounce, DebounceExecuteContext, Engine, Err, Ok, Result, Retry
from durable_jobs.testing import TestClock

outbox: list[str] = []
calls: list[int] = []


class Busy(Exception):
    pass


def send(ctx: DebounceExecuteContext[str]) -> Result[None, Busy]:
    calls.append(1)
    if len(calls) == 1:
        return Err(Busy())
    outbox.append(ctx.state)
    return Ok(None)


digest = Debounce(
    name="digest",
    event=str,
    flush_after="1 minute",
    execute=send,
    retry=Retry(max_attempts=3, delay="10 seconds", jitter=0.5),
)


@pytest.fixture(autouse=True)
def fresh() -> None:
    outbox.clear()
    calls.clear()


{mark}
async def test_memory_engine(memory_engine, durable_clock: TestClock) -> None:
    engine = memory_engine(jobs=[digest])
    assert engine.clock is durable_clock
    await engine.client.debounce(digest).add("team", "a")
    await durable_clock.advance("1 minute")  # attempt 1 fails
    await durable_clock.advance("10 seconds")  # exactly: the fixture's engines have no jitter
    assert outbox == ["a"]


{mark}
async def test_sqlite_engine(sqlite_engine, durable_clock: TestClock, tmp_path) -> None:
    engine = sqlite_engine(jobs=[digest])
    await engine.client.debounce(digest).add("team", "b")
    await durable_clock.advance("70 seconds")
    assert outbox == ["b"]
    assert (tmp_path / "durable_jobs.db").is_file()
    second = sqlite_engine(jobs=[digest])
    assert await second.client.debounce(digest).get_state("team") is None
    assert (tmp_path / "durable_jobs_2.db").is_file()


def test_a_sync_test_uses_the_sync_client(memory_engine) -> None:
    engine = memory_engine(jobs=[digest])
    added = engine.sync_client.debounce(digest).add("team", "c")
    assert added.created
    assert engine.sync_client.debounce(digest).get_state("team") == "c"
"""


@pytest.mark.parametrize("mode", ["auto", "strict"])
def test_fixtures_work_under_pytest_asyncio(pytester: pytest.Pytester, mode: str) -> None:
    mark = "@pytest.mark.asyncio" if mode == "strict" else ""
    pytester.makepyfile(test_user=USER_TESTS.replace("{mark}", mark))
    result = pytester.runpytest(
        *("-p", "no:cacheprovider", "-o", f"asyncio_mode={mode}"),
        *("-o", "asyncio_default_fixture_loop_scope=function"),
    )
    result.assert_outcomes(passed=3)
