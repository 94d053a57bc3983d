"""Schedules for `Continuous` jobs: `every(d)` and `cron(expression, tz=...)`."""

import abc
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from cronsim import CronSim, CronSimError

from ._duration import DurationInput, to_timedelta
from ._errors import InvalidDefinitionError


class Schedule(abc.ABC):
    """When a continuous job runs next."""

    __slots__ = ()

    @abc.abstractmethod
    def next_after(self, now: datetime) -> datetime:
        """The next run time strictly after `now` (both timezone-aware, UTC)."""


@attrs.frozen
class Every(Schedule):
    """Run `interval` after the previous run finished (fixed delay)."""

    interval: timedelta

    def next_after(self, now: datetime) -> datetime:
        """`now + interval`."""
        return now + self.interval


@attrs.frozen
class Cron(Schedule):
    """Run at the times a 5-field cron expression matches, in time zone `tz`."""

    expression: str
    tz: str

    def next_after(self, now: datetime) -> datetime:
        """The first match strictly after `now`."""
        zone = ZoneInfo(self.tz)
        after = now.astimezone(UTC)
        start = now.astimezone(zone).replace(second=0, microsecond=0)
        for candidate in CronSim(self.expression, start):
            # compare instants in UTC: two datetimes sharing one zone compare by wall time,
            # ignoring `fold`, which is wrong inside the hour a DST fall-back repeats
            at = candidate.astimezone(UTC)
            if at > after:
                return at
        msg = f"cron {self.expression!r} has no future match"  # pragma: no cover
        raise ValueError(msg)  # pragma: no cover


def every(interval: DurationInput) -> Every:
    """Run every `interval` (measured from the end of the previous run)."""
    delta = to_timedelta(interval, field="every")
    if delta <= timedelta(0):
        msg = f"every: the interval must be longer than zero, got {interval!r}"
        raise InvalidDefinitionError(msg)
    return Every(delta)


def cron(expression: str, *, tz: str = "UTC") -> Cron:
    """Run on a 5-field cron expression ("*/5 * * * *") evaluated in time zone `tz`."""
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as error:
        msg = f"cron: unknown time zone {tz!r}"
        raise InvalidDefinitionError(msg) from error
    try:
        CronSim(expression, datetime(2000, 1, 1, tzinfo=zone))
    except (CronSimError, TypeError, ValueError) as error:
        msg = f"cron: invalid expression {expression!r} ({error})"
        raise InvalidDefinitionError(msg) from error
    return Cron(expression, tz)
