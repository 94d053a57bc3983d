"""attrs validators shared by the definitions; every message names its field."""

from datetime import timedelta
from typing import TypeVar

import attrs

from .._duration import DurationInput, to_timedelta
from .._errors import InvalidDefinitionError
from .._retry import Retry
from .._type_forms import is_type_form


T = TypeVar("T")


_TYPE_FORM = "a class or a generic alias such as list[int]"


def is_class(_instance: object, attribute: "attrs.Attribute[T]", value: T) -> None:
    """The value must be a type form (the runtime type of events or state; `_type_forms`)."""
    if not is_type_form(value):
        msg = f"{attribute.name}: expected {_TYPE_FORM}, got {value!r}"
        raise InvalidDefinitionError(msg)


def is_optional_class(_instance: object, attribute: "attrs.Attribute[T]", value: T) -> None:
    """The value must be a class or None."""
    if value is not None:
        is_class(_instance, attribute, value)


def is_callable(_instance: object, attribute: "attrs.Attribute[T]", value: T) -> None:
    """The value must be callable."""
    if not callable(value):
        msg = f"{attribute.name}: expected a callable, got {value!r}"
        raise InvalidDefinitionError(msg)


def is_optional_callable(_instance: object, attribute: "attrs.Attribute[T]", value: T) -> None:
    """The value must be callable or None."""
    if value is not None:
        is_callable(_instance, attribute, value)


def is_optional_retry(_instance: object, attribute: "attrs.Attribute[T]", value: T) -> None:
    """The value must be a `Retry` or None."""
    if value is not None and not isinstance(value, Retry):
        msg = f"{attribute.name}: expected Retry(...) or None, got {value!r}"
        raise InvalidDefinitionError(msg)


def positive_int(field: str, value: object) -> int:
    """An int >= 1 (bools are not ints here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"{field}: expected an integer >= 1, got {value!r}"
        raise InvalidDefinitionError(msg)
    return value


def flush_after(value: DurationInput) -> timedelta:
    """Converter of `Debounce.flush_after`: a positive duration."""
    delta = to_timedelta(value, field="flush_after")
    if delta <= timedelta(0):
        msg = f"flush_after: must be longer than zero, got {value!r}"
        raise InvalidDefinitionError(msg)
    return delta


def optional_duration(value: DurationInput | None) -> timedelta | None:
    """Converter of an optional duration field (`Debounce.max_wait`)."""
    return None if value is None else to_timedelta(value, field="max_wait")


def timeout(value: DurationInput | None) -> timedelta | None:
    """Converter of every definition's `timeout`: None, or a positive duration."""
    if value is None:
        return None
    delta = to_timedelta(value, field="timeout")
    if delta <= timedelta(0):
        msg = f"timeout: must be longer than zero, got {value!r}"
        raise InvalidDefinitionError(msg)
    return delta


def require_class(field: str, value: object) -> None:
    """Runtime guard for untyped callers: `value` must be a type form (`_type_forms`)."""
    if not is_type_form(value):
        msg = f"{field}: expected {_TYPE_FORM}, got {value!r}"
        raise InvalidDefinitionError(msg)


def require_callable(field: str, value: object, *, optional: bool = False) -> None:
    """Runtime guard for untyped callers: `value` must be callable (or None if optional)."""
    if optional and value is None:
        return
    if not callable(value):
        msg = f"{field}: expected a callable, got {value!r}"
        raise InvalidDefinitionError(msg)


def require_type(field: str, value: object, cls: type, expected: str) -> None:
    """Runtime guard for untyped callers: `value` must be a `cls`."""
    if not isinstance(value, cls):
        msg = f"{field}: expected {expected}, got {value!r}"
        raise InvalidDefinitionError(msg)
