"""`Result[T, E] = Ok[T] | Err[E]`: how callbacks succeed or fail with a typed error."""

from collections.abc import Callable
from typing import Generic, Literal, Never, TypeAlias, TypeVar, final

import attrs


T = TypeVar("T", covariant=True)
E = TypeVar("E", covariant=True)
U = TypeVar("U")
F = TypeVar("F")
D = TypeVar("D")
_T = TypeVar("_T")
_E = TypeVar("_E")


@final
@attrs.frozen
class Ok(Generic[T]):
    """
    Success carrying `value`.

    Type parameters:
        T: the value's type (`None` for callbacks that only succeed or fail).
    """

    value: T

    def is_ok(self) -> Literal[True]:
        """Always True."""
        return True

    def is_err(self) -> Literal[False]:
        """Always False."""
        return False

    def map(self, fn: Callable[[T], U]) -> "Ok[U]":
        """`Ok(fn(value))`."""
        return Ok(fn(self.value))

    def map_err(self, fn: Callable[[Never], object]) -> "Ok[T]":
        """Itself: there is no error to map."""
        del fn
        return self

    def unwrap_or(self, default: object) -> T:
        """The value."""
        del default
        return self.value


@final
@attrs.frozen
class Err(Generic[E]):
    """
    Failure carrying `error`, an expected error of your own type.

    Type parameters:
        E: the error's type; it reaches `should_retry` and `on_error` unchanged.
    """

    error: E

    def is_ok(self) -> Literal[False]:
        """Always False."""
        return False

    def is_err(self) -> Literal[True]:
        """Always True."""
        return True

    def map(self, fn: Callable[[Never], object]) -> "Err[E]":
        """Itself: there is no value to map."""
        del fn
        return self

    def map_err(self, fn: Callable[[E], F]) -> "Err[F]":
        """`Err(fn(error))`."""
        return Err(fn(self.error))

    def unwrap_or(self, default: D) -> D:
        """`default`."""
        return default


Result: TypeAlias = Ok[_T] | Err[_E]
"""`Ok[T] | Err[E]`: narrow it with `match` or `isinstance`."""
