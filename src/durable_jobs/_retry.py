"""Retry policies: `Backoff` shapes and `Retry[E]` (values only; the runner decides)."""

from collections.abc import Callable
from datetime import timedelta
from typing import Generic, TypeVar

import attrs

from ._duration import DurationInput, to_timedelta
from ._errors import InvalidDefinitionError


E = TypeVar("E")
T = TypeVar("T")

MAX_DELAY = timedelta(days=365)
"""
No computed retry delay exceeds this: it keeps huge attempt numbers from overflowing, and a
retry-after callable returning an absurd value (say epoch milliseconds) from pushing the
alarm past the last representable datetime.
"""


@attrs.frozen(kw_only=True)
class Backoff:
    """
    A delay shape: the delay before the retry after failed attempt `n` (1-based).

    `fixed: d`; `linear: base + increment*(n-1)`; `exponential: base * factor**(n-1)`;
    each capped at `max`. Build one with `Backoff.fixed`, `Backoff.linear` or
    `Backoff.exponential`.
    """

    shape: str
    base: timedelta
    increment: timedelta = timedelta(0)
    factor: float = 2.0
    max: timedelta | None = None

    @staticmethod
    def fixed(delay: DurationInput) -> "Backoff":
        """The same delay before every retry."""
        return Backoff(shape="fixed", base=to_timedelta(delay, field="delay"))

    @staticmethod
    def linear(
        base: DurationInput, increment: DurationInput, max: DurationInput | None = None
    ) -> "Backoff":
        """`base`, then `base + increment`, `base + 2*increment`, ... capped at `max`."""
        return Backoff(
            shape="linear",
            base=to_timedelta(base, field="base"),
            increment=to_timedelta(increment, field="increment"),
            max=_cap(base, max),
        )

    @staticmethod
    def exponential(
        base: DurationInput, max: DurationInput | None = None, factor: float = 2
    ) -> "Backoff":
        """`base`, then `base*factor`, `base*factor**2`, ... capped at `max`."""
        if not _is_number_at_least_one(factor):
            msg = f"factor: expected a number >= 1, got {factor!r}"
            raise InvalidDefinitionError(msg)
        return Backoff(
            shape="exponential",
            base=to_timedelta(base, field="base"),
            factor=float(factor),
            max=_cap(base, max),
        )

    def delay_for(self, attempt: int) -> timedelta:
        """The delay after failed attempt number `attempt` (1 = the first try)."""
        n = max(1, attempt)
        if self.shape == "fixed":
            delay = self.base
        elif self.shape == "linear":
            delay = self.base + self.increment * min(n - 1, 10**6)
        else:
            seconds = self.base.total_seconds()
            limit = (self.max or MAX_DELAY).total_seconds()
            value = seconds
            for _ in range(n - 1):  # multiply until the cap: no float overflow
                if value >= limit:
                    break
                value *= self.factor
            delay = timedelta(seconds=min(value, MAX_DELAY.total_seconds()))
        delay = min(delay, MAX_DELAY)
        return delay if self.max is None else min(delay, self.max)


def _is_number_at_least_one(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and value >= 1


def _cap(base: DurationInput, cap: DurationInput | None) -> timedelta | None:
    if cap is None:
        return None
    limit = to_timedelta(cap, field="max")
    if limit < to_timedelta(base, field="base"):
        msg = f"max: {cap!r} is shorter than base {base!r}"
        raise InvalidDefinitionError(msg)
    return limit


def _max_attempts(_instance: object, _attribute: "attrs.Attribute[int]", value: int) -> None:
    _check_max_attempts(value)


def _check_max_attempts(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"max_attempts: expected an integer >= 1 (it counts the first run), got {value!r}"
        raise InvalidDefinitionError(msg)


def _jitter(_instance: object, _attribute: "attrs.Attribute[T]", value: T) -> None:
    _check_jitter(value)


def _check_jitter(value: object) -> None:
    if isinstance(value, bool):
        return
    if not isinstance(value, int | float) or not 0 <= value <= 1:
        msg = f"jitter: expected True, False or a fraction in [0, 1], got {value!r}"
        raise InvalidDefinitionError(msg)


def _delay(_instance: object, _attribute: "attrs.Attribute[T]", value: T) -> None:
    if isinstance(value, Backoff) or callable(value):
        return
    if isinstance(value, timedelta | int | float | str):
        to_timedelta(value, field="delay")
        return
    msg = f"delay: expected a duration, a Backoff or a callable (error, attempt), got {value!r}"
    raise InvalidDefinitionError(msg)


def _max_duration(_instance: object, _attribute: "attrs.Attribute[T]", value: T) -> None:
    if value is not None:
        if not isinstance(value, timedelta | int | float | str):
            msg = f"max_duration: expected a duration or None, got {value!r}"
            raise InvalidDefinitionError(msg)
        to_timedelta(value, field="max_duration")


def _should_retry(_instance: object, _attribute: "attrs.Attribute[T]", value: T) -> None:
    if value is not None and not callable(value):
        msg = f"should_retry: expected a callable (error) -> bool or None, got {value!r}"
        raise InvalidDefinitionError(msg)


def _default_delay() -> Backoff:
    return Backoff.exponential("1 second", max="30 seconds")


@attrs.frozen(kw_only=True)
class Retry(Generic[E]):
    """
    How failed executions (`Err(e)`) are retried.

    `max_attempts` counts executions including the first (3 → at most 3 runs). `delay` is a
    duration, a `Backoff`, or a typed "retry-after" `(error, attempt) -> duration`; the
    default is exponential from 1 second, capped at 30 seconds. `jitter=True` spreads each
    delay by ±10 %, a float sets the fraction, False none. `max_duration` bounds the time
    since the first failed attempt started. `should_retry(e)` returning False makes the
    failure final at once.

    Type parameters:
        E: the job's error type: what `should_retry` and a callable `delay` receive.
    """

    max_attempts: int = attrs.field(validator=_max_attempts)
    delay: DurationInput | Backoff | Callable[[E, int], DurationInput] = attrs.field(
        factory=_default_delay, validator=_delay
    )
    jitter: bool | float = attrs.field(default=True, validator=_jitter)
    max_duration: DurationInput | None = attrs.field(default=None, validator=_max_duration)
    should_retry: Callable[[E], bool] | None = attrs.field(default=None, validator=_should_retry)

    @property
    def jitter_fraction(self) -> float:
        """The jitter as a fraction: ±`jitter_fraction` of each delay."""
        if self.jitter is True:
            return 0.1
        if self.jitter is False:
            return 0.0
        return float(self.jitter)

    @property
    def max_duration_delta(self) -> timedelta | None:
        """`max_duration` as a `timedelta`, or None."""
        if self.max_duration is None:
            return None
        return to_timedelta(self.max_duration, field="max_duration")
