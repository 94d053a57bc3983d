"""Shared pieces: settings, repetition statistics, result rows and the Markdown table."""

import gc
import math
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence

import attrs


@attrs.frozen
class Settings:
    """How much work each benchmark does (`--quick` shrinks everything for a smoke run)."""

    reps: int = 5
    """Repetitions of each throughput measurement (each on a fresh database)."""
    timed_reps: int = 3
    """Repetitions of the fixed-wall-time and latency measurements."""
    ids: int = 100
    """Debounce ids per repetition."""
    events_per_id: int = 5
    """Events added to each id per repetition."""
    adders: int = 50
    """Concurrent adders in the concurrent debounce variant."""
    worker_seconds: float = 2.0
    """Wall time counted per repetition of the worker throughput benchmark."""
    latency_samples: int = 100
    """Alarms measured per latency repetition."""
    runner_calls: int = 3000
    """Executions timed per repetition of the runner overhead benchmark."""
    drain_items: int = 1000
    """Due pieces of work each per-kind throughput repetition drains."""
    busy_adds: int = 100
    """Adds timed per phase of the add-during-a-flush benchmark."""

    @classmethod
    def quick(cls) -> "Settings":
        """A run of a few seconds: checks that everything works, numbers are rough."""
        return cls(
            reps=2,
            timed_reps=1,
            ids=20,
            events_per_id=3,
            adders=10,
            worker_seconds=0.5,
            latency_samples=20,
            runner_calls=300,
            drain_items=150,
            busy_adds=30,
        )


@attrs.frozen
class Stats:
    """One measured quantity over its repetitions."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)


@attrs.frozen
class Row:
    """One line of the results table."""

    id: str
    what: str
    value: str
    spread: str
    unit: str
    versus: str


@attrs.frozen
class Section:
    """A titled group of rows, with notes printed under the table."""

    title: str
    rows: tuple[Row, ...]
    notes: tuple[str, ...] = ()


def load_average() -> str:
    """The machine's load average over 1, 5 and 15 minutes, as text."""
    try:
        return " / ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def quiet() -> None:
    """Collect garbage before a timed part, so one repetition does not pay for another."""
    gc.collect()


def timed(fn: Callable[[], object]) -> float:
    """Seconds one synchronous call of `fn` takes."""
    quiet()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


async def timed_async(fn: Callable[[], Awaitable[object]]) -> float:
    """Seconds one await of `fn()` takes."""
    quiet()
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


def percentile(values: Sequence[float], fraction: float) -> float:
    """The `fraction` quantile (0..1) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * fraction
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    weight = position - lower
    return ordered[lower] * (1 - weight) + ordered[upper] * weight


def number(value: float) -> str:
    """A readable number: thousands separated, about three significant digits."""
    if math.isnan(value):
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def row(id: str, what: str, stats: Stats, unit: str, versus: str = "") -> Row:
    """A table row showing the median and the min-max of `stats`."""
    spread = f"{number(stats.low)}-{number(stats.high)}" if len(stats.values) > 1 else "—"
    return Row(id, what, number(stats.median), spread, unit, versus)


def missing(id: str, what: str, reason: str) -> Row:
    """A row for a measurement that could not be made, saying why."""
    return Row(id, what, "not measured", "—", "—", reason)


def ratio(ours: float, baseline: float) -> float:
    """`ours / baseline`, NaN when the baseline is zero."""
    return ours / baseline if baseline else float("nan")


def times(value: float) -> str:
    """A ratio written as `0.42x`."""
    return f"{number(value)}x"


def render(sections: Sequence[Section]) -> str:
    """The whole report as one Markdown table, then each section's notes."""
    header = "| # | measurement | median | min-max | unit | vs. baseline / target |"
    lines = [header, "| --- | --- | ---: | ---: | --- | --- |"]
    for section in sections:
        lines.append(f"| | **{section.title}** | | | | |")
        lines.extend(
            f"| {r.id} | {_cell(r.what)} | {r.value} | {r.spread} | {r.unit} | {_cell(r.versus)} |"
            for r in section.rows
        )
    notes = [
        f"- {section.title.split(' ', 1)[0]} {note}"
        for section in sections
        for note in section.notes
    ]
    if notes:
        lines.extend(["", "Notes:", "", *notes])
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
