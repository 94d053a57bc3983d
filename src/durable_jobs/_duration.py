"""Durations: `timedelta`, seconds as numbers, or strings such as "5 seconds"."""

import math
import re
from datetime import timedelta
from typing import TypeAlias

from ._errors import InvalidDefinitionError


DurationInput: TypeAlias = timedelta | int | float | str
"""A duration: a `timedelta`, seconds as `int | float`, or text like "500 ms", "1 hour"."""

_UNITS: dict[str, float] = {
    "ms": 0.001,
    "msec": 0.001,
    "msecs": 0.001,
    "millisecond": 0.001,
    "milliseconds": 0.001,
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hrs": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 604800,
    "week": 604800,
    "weeks": 604800,
}
MAX_DURATION = timedelta(days=36525)
"""The longest duration accepted (100 years): later times would not fit a `datetime`."""

_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-zA-Z]+)\s*$")
_EXAMPLES = "expected e.g. '500 ms', '5 seconds', '30m', '1 hour', '2 days'"


def to_timedelta(value: DurationInput, *, field: str | None = None) -> timedelta:
    """
    Convert a `DurationInput` to a `timedelta`.

    Numbers are seconds (never timestamps). Raises `InvalidDefinitionError` (a ValueError)
    naming `field` and the input when it is not a non-negative finite duration.
    """
    prefix = f"{field}: " if field else ""
    duration = _parse(prefix, value)
    if duration > MAX_DURATION:
        msg = f"{prefix}invalid duration {value!r} (too long: at most 100 years)"
        raise InvalidDefinitionError(msg)
    return duration


def to_capped_timedelta(
    value: DurationInput, *, cap: timedelta, field: str | None = None
) -> timedelta:
    """Like `to_timedelta`, but a duration longer than `cap` becomes `cap` (not an error)."""
    return min(_parse(f"{field}: " if field else "", value), cap)


def _parse(prefix: str, value: DurationInput) -> timedelta:
    if isinstance(value, timedelta):
        if value < timedelta(0):
            msg = f"{prefix}negative duration {value!r}"
            raise InvalidDefinitionError(msg)
        return value
    if isinstance(value, str):
        return _from_text(prefix, value)
    return _from_seconds(prefix, value)


def _from_text(prefix: str, value: str) -> timedelta:
    match = _PATTERN.match(value)
    unit = _UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        msg = f"{prefix}invalid duration {value!r} ({_EXAMPLES})"
        raise InvalidDefinitionError(msg)
    return _seconds(prefix, value, float(match.group(1)) * unit)


def _from_seconds(prefix: str, value: object) -> timedelta:
    # `value` is typed `object`: this also guards callers that bypass the type checker
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"{prefix}invalid duration {value!r} ({_EXAMPLES})"
        raise InvalidDefinitionError(msg)
    if not math.isfinite(value) or value < 0:
        msg = f"{prefix}invalid duration {value!r} (seconds must be finite and >= 0)"
        raise InvalidDefinitionError(msg)
    return _seconds(prefix, value, value)


def _seconds(prefix: str, value: object, seconds: float) -> timedelta:
    try:
        return timedelta(seconds=seconds)
    except OverflowError as error:  # beyond what a timedelta holds (about 2.7 million years)
        msg = f"{prefix}invalid duration {value!r} (too long)"
        raise InvalidDefinitionError(msg) from error
