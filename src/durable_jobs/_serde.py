"""The one private cattrs converter: state, events and metadata to JSON and back."""

import json
from datetime import datetime, timedelta
from typing import TypeVar

import cattrs
from cattrs.errors import BaseValidationError
from cattrs.v import transform_error

from ._errors import ValidationError
from ._types import JsonValue


T = TypeVar("T")

_converter = cattrs.Converter()
_converter.register_unstructure_hook(datetime, lambda value: value.isoformat())
_converter.register_structure_hook(datetime, lambda value, _: _datetime(value))
_converter.register_unstructure_hook(timedelta, lambda value: value.total_seconds())
_converter.register_structure_hook(timedelta, lambda value, _: timedelta(seconds=float(value)))


def _strict_str(value: object, _: object) -> str:
    if not isinstance(value, str):
        msg = f"expected a string, got {value!r}"
        raise TypeError(msg)
    return value


def _strict_int(value: object, _: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"expected an integer, got {value!r}"
        raise TypeError(msg)
    return value


def _strict_float(value: object, _: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"expected a number, got {value!r}"
        raise TypeError(msg)
    return float(value)


def _strict_bool(value: object, _: object) -> bool:
    if not isinstance(value, bool):
        msg = f"expected true or false, got {value!r}"
        raise TypeError(msg)
    return value


# no silent coercion of data from outside: "5" is not an int, 5 is not a str
_converter.register_structure_hook(str, _strict_str)
_converter.register_structure_hook(int, _strict_int)
_converter.register_structure_hook(float, _strict_float)
_converter.register_structure_hook(bool, _strict_bool)
# the library's own bookkeeping may hold an already-encoded JSON value (a sealed batch's state)
_converter.register_structure_hook_func(lambda type_: type_ is JsonValue, lambda value, _: value)


def _datetime(value: object) -> datetime:
    if not isinstance(value, str):
        msg = f"expected an ISO 8601 string, got {value!r}"
        raise TypeError(msg)
    return datetime.fromisoformat(value)


def encode(value: object) -> JsonValue:
    """A JSON value representing `value` (attrs classes, primitives, containers, datetimes)."""
    encoded: JsonValue = _converter.unstructure(value)
    return encoded


def decode(data: JsonValue, cls: type[T]) -> T:
    """Rebuild a `cls` from `data`; `ValidationError` names the failing field path."""
    try:
        return _converter.structure(data, cls)
    except BaseValidationError as error:
        messages: list[str] = transform_error(error, path="$")
        first = messages[0] if messages else str(error)
        message, _, path = first.partition(" @ ")
        raise ValidationError(path or "$", message) from error
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise ValidationError(
            "$", f"cannot read {data!r} as {cls.__qualname__}: {error}"
        ) from error


def encode_json_text(value: object) -> str:
    """`value` as JSON text."""
    return json.dumps(encode(value), separators=(",", ":"), sort_keys=True)


def decode_json_text(text: str | bytes, cls: type[T]) -> T:
    """Parse JSON text and rebuild a `cls`; bad JSON is a `ValidationError` at `$`."""
    try:
        data: JsonValue = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValidationError("$", f"invalid JSON: {error}") from error
    return decode(data, cls)
