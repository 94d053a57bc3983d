"""
Runner overhead per execution, in memory: ours vs. a direct call vs. tenacity.

The same small function runs three ways: as a `Continuous` job's `execute` through
`client.continuous(job).trigger(id)` then `engine.run_due()` on `MemoryStorage` (the
trigger's block, the claim, context, runner, outcome bookkeeping, the fenced finish, and
the next-alarm look), called directly, and wrapped by tenacity's `Retrying` (it succeeds,
so tenacity makes one attempt).
"""

import importlib.metadata
import time
from collections.abc import Callable

import attrs

from durable_jobs import Continuous, ContinuousContext, Engine, MemoryStorage, Ok, Result, every
from durable_jobs.testing import TestClock

from ._harness import Settings, Stats, quiet


DIRECT_FACTOR = 20
"""The direct call is so cheap that it is timed over this many more calls."""


@attrs.frozen
class Account:
    """The job's state."""

    name: str
    balance: int


def work(account: Account) -> Result[None, ValueError]:
    """The function under test: a little arithmetic, then success."""
    if account.balance * 3 + 1 < 0:
        return Ok(None)
    return Ok(None)


def execute(ctx: ContinuousContext[Account]) -> Result[None, ValueError]:
    """`work` as a job's `execute` (sync: the engine runs it in its thread pool)."""
    return work(ctx.state)


async def execute_async(ctx: ContinuousContext[Account]) -> Result[None, ValueError]:
    """`work` as an async `execute` (the engine runs it on the event loop)."""
    return work(ctx.state)


async def ours(settings: Settings, *, sync: bool = True) -> Stats:
    """Microseconds per execution through `trigger` + `run_due` on `MemoryStorage`."""
    job = Continuous(
        name="accounts",
        state=Account,
        schedule=every("1 hour"),
        execute=execute if sync else execute_async,
        start_immediately=False,
    )
    costs: list[float] = []
    for _ in range(settings.reps):
        engine = Engine(jobs=[job], storage=MemoryStorage(), clock=TestClock())
        client = engine.client.continuous(job)
        await client.start("acct-1", Account("acct-1", 100))
        for _ in range(50):  # warm-up
            await client.trigger("acct-1")
            await engine.run_due()
        if (await client.status("acct-1")).run_count < 50:
            msg = "trigger + run_due did not run the job"
            raise RuntimeError(msg)
        quiet()
        start = time.perf_counter()
        for _ in range(settings.runner_calls):
            await client.trigger("acct-1")
            await engine.run_due()
        costs.append((time.perf_counter() - start) / settings.runner_calls * 1e6)
    return Stats(tuple(costs))


def _per_call(settings: Settings, call: Callable[[], object], calls: int) -> Stats:
    costs: list[float] = []
    for _ in range(settings.reps):
        for _ in range(50):
            call()
        quiet()
        start = time.perf_counter()
        for _ in range(calls):
            call()
        costs.append((time.perf_counter() - start) / calls * 1e6)
    return Stats(tuple(costs))


def direct(settings: Settings) -> Stats:
    """Microseconds per direct call of `work`."""
    account = Account("acct-1", 100)
    return _per_call(settings, lambda: work(account), settings.runner_calls * DIRECT_FACTOR)


def with_tenacity(settings: Settings) -> Stats:
    """
    Microseconds per call of `work` through `tenacity.Retrying` (3 attempts, no wait).

    Raises `ImportError` when tenacity is not installed (`pip install -e '.[bench]'`).
    """
    import tenacity  # noqa: PLC0415 - optional: only the bench extra installs it

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_none(), reraise=True
    )
    account = Account("acct-1", 100)
    return _per_call(settings, lambda: retrying(work, account), settings.runner_calls)


def tenacity_version() -> str:
    """The installed tenacity's version, or why there is none."""
    try:
        return importlib.metadata.version("tenacity")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
