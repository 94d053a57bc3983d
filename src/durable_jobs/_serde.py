"""
The data boundary: every value is checked here before it enters storage, and every stored
value is read back here.

One rule decides what may be stored: a value is accepted only if its JSON reads back, under
the strict converter, as a value whose JSON is the same. The check (`to_json`) runs before
any write, so nothing that cannot be read back is ever stored:

- the JSON is plain JSON: objects with string keys, arrays, strings, finite numbers,
  booleans, null; integers within the library's one range (a signed 64-bit integer, what
  every backend stores natively); strings of valid Unicode without NUL (PostgreSQL refuses
  U+0000, and lone surrogates are not UTF-8);
- it is nested at most `DataLimits.max_depth` levels and at most `DataLimits.max_bytes`
  long (compact UTF-8 JSON);
- it decodes strictly: no string read as a list, no object read as an empty list, no "5"
  read as 5, no extra field dropped from outside data unless the caller says so;
- it re-encodes to the same JSON (compared as JSON, not as objects: attrs classes may
  have `eq=False`).

Error messages name the failing path (`event.emails[0]`) and show the value as a preview
of at most `PREVIEW_CHARS` characters, never the whole payload. Stored data that does not
decode (a class changed shape, a corrupted row) raises `UndecodableDataError` instead.
"""

import collections
import collections.abc
import json
import math
import reprlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final, Literal, TypeAlias, TypeVar, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    BaseValidationError,
    ForbiddenExtraKeysError,
    IterableValidationNote,
    StructureHandlerNotFoundError,
)
from typing_extensions import TypeIs

from . import _type_forms  # the module, not its names: _type_forms uses encode and decode
from ._errors import UndecodableDataError, ValidationError
from ._limits import (
    ID_MAX_BYTES,
    INT_MAX,
    INT_MIN,
    PREVIEW_CHARS,
    PRIORITY_MAX,
    PRIORITY_MIN,
    DataLimits,
)
from ._types import JsonValue


T = TypeVar("T")

Extra: TypeAlias = Literal["forbid", "ignore"]
"""What outside JSON may do with fields its class does not have: be refused, or be dropped."""

_KEY_CHARS: Final = 40
"""The longest object key a path shows."""
_BOOKKEEPING_DEPTH: Final = 512
"""Bookkeeping holds user states (a sealed batch's), which are at most `max_depth` deep."""


# -- previews -------------------------------------------------------------------------------

_REPR = reprlib.Repr()
_REPR.maxstring = PREVIEW_CHARS
_REPR.maxother = PREVIEW_CHARS
_REPR.maxlong = PREVIEW_CHARS // 2
_REPR.maxlevel = 3
for _name in ("maxlist", "maxtuple", "maxset", "maxfrozenset", "maxdeque", "maxdict"):
    setattr(_REPR, _name, 6)


def preview(value: object) -> str:
    """`value` as a short repr: at most `PREVIEW_CHARS` characters, cut with `…`."""
    try:
        text = _REPR.repr(value)
    except Exception:  # a user class whose repr raises
        text = f"<{type(value).__qualname__}>"
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def truncate(text: str) -> str:
    """`text` cut to at most `PREVIEW_CHARS` characters (with `…`), for messages and logs."""
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


_short = truncate


def _type_name(cls: object) -> str:
    name = getattr(cls, "__qualname__", None)
    return name if isinstance(name, str) and getattr(cls, "__args__", None) is None else repr(cls)


def _cut(path: str) -> str:
    """A path short enough for a message: its head and tail around `…`."""
    return path if len(path) <= 2 * PREVIEW_CHARS else f"{path[:PREVIEW_CHARS]}…{path[-40:]}"


def key_path(key: object) -> str:
    """One step into an object: `.name` for an identifier, else `["key"]`; cut if long."""
    text = str(key)
    if len(text) > _KEY_CHARS:
        text = text[: _KEY_CHARS - 1] + "…"
    return f".{text}" if text.isidentifier() else f"[{json.dumps(text)}]"


# -- the strict converter -------------------------------------------------------------------


class _Mismatch(TypeError):
    """A stored or outside value of the wrong JSON type (the message shows a preview)."""


class _Items(Exception):
    """Items of an array or object that did not structure: (path step, error), in order."""

    def __init__(self, errors: list[tuple[str, Exception]]) -> None:
        super().__init__(f"{len(errors)} item(s) do not fit")
        self.errors = errors


def _expected(what: str, value: object) -> _Mismatch:
    return _Mismatch(f"expected {what}, got {preview(value)}")


def _strict_str(value: object, _: object) -> str:
    if not isinstance(value, str):
        raise _expected("a string", value)
    return value


def _strict_int(value: object, _: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _expected("an integer", value)
    return value


def _strict_float(value: object, _: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _expected("a number", value)
    return float(value)


def _strict_bool(value: object, _: object) -> bool:
    if not isinstance(value, bool):
        raise _expected("true or false", value)
    return value


def _structure_datetime(value: object, _: object) -> datetime:
    if not isinstance(value, str):
        raise _expected("an ISO 8601 time string", value)
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise _expected("an ISO 8601 time string", value) from None


def _structure_timedelta(value: object, _: object) -> timedelta:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _expected("a number of seconds", value)
    return timedelta(seconds=value)


_ARRAYS: Final[dict[object, Callable[[list[Any]], object]]] = {
    list: list,
    tuple: tuple,
    set: set,
    frozenset: frozenset,
    collections.deque: collections.deque,
    collections.abc.Sequence: tuple,
    collections.abc.MutableSequence: list,
    collections.abc.Set: frozenset,
    collections.abc.MutableSet: set,
}
"""Array-like types and what a JSON array becomes for each (abstract ones: an immutable
or a mutable builtin)."""
_MAPPINGS: Final = (dict, collections.abc.Mapping, collections.abc.MutableMapping)
_SETS: Final = (set, frozenset, collections.abc.Set, collections.abc.MutableSet)


def _is_list(value: object) -> TypeIs[list[object]]:
    return isinstance(value, list)


def _is_dict(value: object) -> TypeIs[dict[object, object]]:
    return isinstance(value, dict)


def _is_sequence(value: object) -> TypeIs[list[object] | tuple[object, ...]]:
    return isinstance(value, list | tuple)


def _is_set_value(value: object) -> TypeIs[set[object] | frozenset[object]]:
    return isinstance(value, set | frozenset)


def _is_array_value(
    value: object,
) -> TypeIs[list[object] | tuple[object, ...] | collections.deque[object]]:
    return isinstance(value, list | tuple | collections.deque)


def _is_mapping_value(value: object) -> TypeIs[collections.abc.Mapping[object, object]]:
    return isinstance(value, collections.abc.Mapping)


def _items_of(value: object) -> collections.abc.Iterable[object]:
    if _is_set_value(value) or _is_array_value(value):
        return value
    return ()


def _origin(type_: object) -> object:
    return get_origin(type_) or type_


def _is_array(type_: object) -> bool:
    origin = _origin(type_)
    if origin is tuple and isinstance(type_, type) and hasattr(type_, "_fields"):
        return False  # a named tuple: cattrs' own hooks
    return origin in _ARRAYS


def _is_mapping(type_: object) -> bool:
    origin = _origin(type_)
    return any(origin is mapping for mapping in _MAPPINGS)


def _make_converter(*, forbid_extra: bool) -> cattrs.Converter:
    """
    The converter: strict about JSON types; `forbid_extra` refuses unknown object fields.

    cattrs by default reads any iterable as a list (a string becomes a list of letters, an
    object the list of its keys) and any value as a str or an int; these hooks read only
    what the JSON says.
    """
    converter = cattrs.Converter(forbid_extra_keys=forbid_extra)
    converter.register_unstructure_hook(datetime, lambda value: value.isoformat())
    converter.register_structure_hook(datetime, _structure_datetime)
    converter.register_unstructure_hook(timedelta, lambda value: value.total_seconds())
    converter.register_structure_hook(timedelta, _structure_timedelta)
    converter.register_structure_hook(str, _strict_str)
    converter.register_structure_hook(int, _strict_int)
    converter.register_structure_hook(float, _strict_float)
    converter.register_structure_hook(bool, _strict_bool)
    # the library's own bookkeeping may hold an already-encoded value (a sealed batch's state)
    converter.register_structure_hook_func(lambda type_: type_ is JsonValue, lambda value, _: value)

    def arrays(type_: Any) -> Callable[[Any, Any], Any]:
        return _array_hook(converter, type_)

    def mappings(type_: Any) -> Callable[[Any, Any], Any]:
        return _mapping_hook(converter, type_)

    def encode_arrays(type_: Any) -> Callable[[Any], Any]:
        return _array_unstructure(converter, type_)

    def encode_mappings(type_: Any) -> Callable[[Any], Any]:
        return _mapping_unstructure(converter, type_)

    def encode_classes(type_: Any) -> Callable[[Any], Any]:
        return _attrs_unstructure(converter, type_)

    converter.register_structure_hook_factory(_is_array, arrays)
    converter.register_structure_hook_factory(_is_mapping, mappings)
    converter.register_unstructure_hook_factory(_is_array, encode_arrays)
    converter.register_unstructure_hook_factory(_is_mapping, encode_mappings)
    converter.register_unstructure_hook_factory(_is_attrs_class, encode_classes)
    return converter


def _is_attrs_class(type_: object) -> bool:
    origin = _origin(type_)
    return isinstance(origin, type) and attrs.has(origin)


def _attrs_unstructure(converter: cattrs.Converter, type_: Any) -> Callable[[Any], Any]:
    """cattrs' own encoding of an attrs class; a failure names the field it happened in."""
    encode_fields = converter.gen_unstructure_attrs_fromdict(type_)
    origin: Any = _origin(type_)
    fields = attrs.fields(origin)

    def hook(value: object) -> object:
        try:
            return encode_fields(value)
        except (_Refused, _Mismatch) as failure:
            # only on failure: find the field, so the message can name the path
            for field in fields:
                try:
                    converter.unstructure(getattr(value, field.name), unstructure_as=field.type)
                except _Refused as refused:
                    raise _Refused(
                        f"{key_path(field.name)}{refused.path}", refused.message
                    ) from None
                except _Mismatch as mismatch:
                    raise _Refused(key_path(field.name), str(mismatch)) from None
                except Exception:
                    continue
            raise failure from None

    return hook


def _array_hook(converter: cattrs.Converter, type_: Any) -> Callable[[Any, Any], Any]:
    """Read a JSON array, and nothing else, as `type_` (a list, tuple, set, ...)."""
    build = _ARRAYS[_origin(type_)]
    args: tuple[Any, ...] = get_args(type_)
    fixed = _origin(type_) is tuple and bool(args) and not (len(args) == 2 and args[1] is ...)
    element_types: tuple[Any, ...] = args if fixed else (args[0] if args else Any,)

    def hook(value: object, _: object) -> object:
        if not _is_list(value):
            raise _expected("a list (a JSON array)", value)
        if fixed and len(value) != len(element_types):
            raise _Mismatch(f"expected {len(element_types)} items, got {len(value)}")
        items: list[object] = []
        errors: list[tuple[str, Exception]] = []
        for index, item in enumerate(value):
            element_type = element_types[index if fixed else 0]
            try:
                items.append(converter.structure(item, element_type))
            except Exception as exc:
                errors.append((f"[{index}]", exc))
        if errors:
            raise _Items(errors)
        return build(items)

    return hook


def _mapping_hook(converter: cattrs.Converter, type_: Any) -> Callable[[Any, Any], Any]:
    """Read a JSON object, and nothing else, as `type_` (a dict or mapping)."""
    args: tuple[Any, ...] = get_args(type_)
    key_type: Any = args[0] if args else Any
    value_type: Any = args[1] if len(args) > 1 else Any

    def hook(value: object, _: object) -> object:
        if not _is_dict(value):
            raise _expected("an object", value)
        items: dict[object, object] = {}
        errors: list[tuple[str, Exception]] = []
        for key, item in value.items():
            try:
                items[converter.structure(key, key_type)] = converter.structure(item, value_type)
            except Exception as exc:
                errors.append((key_path(key), exc))
        if errors:
            raise _Items(errors)
        return items

    return hook


def _array_unstructure(converter: cattrs.Converter, type_: Any) -> Callable[[Any], Any]:
    """Encode only what the declared type says: a string is not a list, a dict is not a set."""
    origin = _origin(type_)
    is_set = any(origin is kind for kind in _SETS)
    args: tuple[Any, ...] = get_args(type_)
    fixed = origin is tuple and bool(args) and not (len(args) == 2 and args[1] is ...)
    element_types: tuple[Any, ...] = args if fixed else (args[0] if args else Any,)

    def hook(value: object) -> object:
        if is_set and not _is_set_value(value):
            raise _expected("a set", value)
        if not is_set and not _is_array_value(value):
            raise _expected("a list or tuple", value)
        items: list[object] = []
        for index, item in enumerate(_items_of(value)):
            element_type = element_types[index if fixed and index < len(element_types) else 0]
            try:
                items.append(converter.unstructure(item, unstructure_as=element_type))
            except _Refused as refused:
                raise _Refused(f"[{index}]{refused.path}", refused.message) from None
            except _Mismatch as mismatch:
                raise _Refused(f"[{index}]", str(mismatch)) from None
        # JSON has no sets: a sorted array, so one set always has one encoding
        return sorted(items, key=_sort_key) if is_set else items

    return hook


def _mapping_unstructure(converter: cattrs.Converter, type_: Any) -> Callable[[Any], Any]:
    """Encode only a mapping where the declared type is one."""
    args: tuple[Any, ...] = get_args(type_)
    value_type: Any = args[1] if len(args) > 1 else Any

    def hook(value: object) -> object:
        if not _is_mapping_value(value):
            raise _expected("a mapping", value)
        fields: dict[object, object] = {}
        for key, item in value.items():
            try:
                fields[key] = converter.unstructure(item, unstructure_as=value_type)
            except _Refused as refused:
                raise _Refused(f"{key_path(key)}{refused.path}", refused.message) from None
            except _Mismatch as mismatch:
                raise _Refused(key_path(key), str(mismatch)) from None
        return fields

    return hook


def _sort_key(item: object) -> str:
    return json.dumps(item, sort_keys=True, default=repr)


_strict = _make_converter(forbid_extra=True)
_lenient = _make_converter(forbid_extra=False)
"""Stored data is read leniently about extra fields: a field removed from a class in a
deploy is dropped, not an error (a field added without a default is one)."""


# -- why a structure failed ------------------------------------------------------------------


def _problem(exc: BaseException) -> tuple[str, str]:
    """The path (relative, e.g. `.emails[0]`) and description of a structure failure."""
    path = ""
    while True:
        if isinstance(exc, _Items):
            step, exc = exc.errors[0]
            path += step
            continue
        if not isinstance(exc, BaseValidationError) or not exc.exceptions:
            break
        first: BaseException = exc.exceptions[0]
        for note in reversed(getattr(first, "__notes__", [])):
            if isinstance(note, AttributeValidationNote):
                path += key_path(note.name)
                break
            if isinstance(note, IterableValidationNote):
                index: object = note.index
                path += f"[{index}]" if isinstance(index, int) else key_path(index)
                break
        exc = first
    if isinstance(exc, ForbiddenExtraKeysError):
        fields = sorted(exc.extra_fields)
        path += key_path(fields[0])
        more = f" (and {len(fields) - 1} more)" if len(fields) > 1 else ""
        cls = _type_name(exc.cl)
        return path, f"unexpected field: {cls} has no such field{more}"
    return path, _describe(exc)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _Mismatch):
        return str(exc)
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, StructureHandlerNotFoundError):
        return f"durable-jobs cannot read this type from JSON: {_short(str(exc.type_))}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    text = str(exc)
    return _short(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


# -- checking JSON --------------------------------------------------------------------------


class _Refused(Exception):
    """A JSON value breaks a rule at `path` (relative; prefixed as it propagates)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def check_text(text: str) -> str | None:
    """Why `text` cannot be stored (a NUL, a lone surrogate), or None."""
    if "\x00" in text:
        return "contains a NUL character (U+0000)"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "is not valid Unicode (it holds a lone surrogate)"
    return None


def _normalize(value: object, depth: int, max_depth: int) -> JsonValue:
    """`value` as plain JSON (tuples become lists), or `_Refused` naming the rule it breaks."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            msg = (
                f"{preview(value)} is outside the integer range of durable-jobs (-2**63 to 2**63-1)"
            )
            raise _Refused("", msg)
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Refused("", f"{value!r} is not a finite number (JSON has no NaN or infinity)")
        return float(value)
    if isinstance(value, str):
        problem = check_text(value)
        if problem is not None:
            raise _Refused("", f"{preview(value)} {problem}")
        return str(value)
    if (_is_sequence(value) or _is_dict(value)) and depth >= max_depth:
        msg = f"is nested more than {max_depth} levels deep (DataLimits.max_depth)"
        raise _Refused("", msg)
    if _is_sequence(value):
        items: list[JsonValue] = []
        for index, item in enumerate(value):
            try:
                items.append(_normalize(item, depth + 1, max_depth))
            except _Refused as refused:
                raise _Refused(f"[{index}]{refused.path}", refused.message) from None
        return items
    if _is_dict(value):
        fields: dict[str, JsonValue] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Refused("", f"has a key that is not a string: {preview(key)}")
            problem = check_text(key)
            if problem is not None:
                raise _Refused(key_path(key), f"the key {preview(key)} {problem}")
            try:
                fields[key] = _normalize(item, depth + 1, max_depth)
            except _Refused as refused:
                raise _Refused(f"{key_path(key)}{refused.path}", refused.message) from None
        return fields
    raise _Refused("", f"a {type(value).__qualname__} is not a JSON value: {preview(value)}")


def _difference(first: JsonValue, second: JsonValue) -> tuple[str, JsonValue, JsonValue] | None:
    """Where two JSON values differ first (path, one, other), or None when they are alike."""
    if isinstance(first, bool) or isinstance(second, bool):
        same = type(first) is type(second) and first == second
        return None if same else ("", first, second)
    if isinstance(first, int | float) and isinstance(second, int | float):
        return None if first == second else ("", first, second)  # 1 and 1.0 are one number
    if isinstance(first, list) and isinstance(second, list):
        if len(first) != len(second):
            return ("", first, second)
        for index, (one, other) in enumerate(zip(first, second, strict=True)):
            found = _difference(one, other)
            if found is not None:
                return (f"[{index}]{found[0]}", found[1], found[2])
        return None
    if isinstance(first, dict) and isinstance(second, dict):
        for key in first.keys() | second.keys():
            if key not in first or key not in second:
                return (key_path(key), first.get(key), second.get(key))
            found = _difference(first[key], second[key])
            if found is not None:
                return (f"{key_path(key)}{found[0]}", found[1], found[2])
        return None
    same = type(first) is type(second) and first == second
    return None if same else ("", first, second)


def _json_size(data: JsonValue) -> int:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return len(text.encode("utf-8"))


def _plain(value: object, cls: type[object], field: str, limits: DataLimits) -> JsonValue:
    """`value` encoded as `cls` and checked as plain JSON (no round trip yet)."""
    try:
        raw: object = _strict.unstructure(value, unstructure_as=cls)
        return _normalize(raw, 0, limits.max_depth)
    except _Refused as refused:
        raise ValidationError(_cut(f"{field}{refused.path}"), refused.message) from None
    except RecursionError:
        raise ValidationError(field, "is nested too deeply, or contains itself") from None
    except _Mismatch as mismatch:
        raise ValidationError(field, str(mismatch)) from None
    except Exception as exc:
        msg = f"cannot be encoded as JSON: {_describe(exc)}"
        raise ValidationError(field, msg) from None


def to_json(value: object, cls: type[object], *, field: str, limits: DataLimits) -> JsonValue:
    """
    The boundary: `value` as the JSON to store, once it is known to read back as a `cls`.

    `ValidationError` names the path from `field` (`event.emails[0]`) and shows a preview
    of the value; nothing has been stored then.
    """
    expected = _type_forms.runtime_class(cls)  # `cls` may be a type form: `list` for `list[int]`
    if expected is None or not isinstance(value, expected):
        raise ValidationError(field, f"expected {_type_name(cls)}, got {preview(value)}")
    data = _plain(value, cls, field, limits)
    size = _json_size(data)
    if size > limits.max_bytes:
        msg = (
            f"is {size} bytes of JSON, more than the limit of {limits.max_bytes}"
            " (DataLimits.max_bytes)"
        )
        raise ValidationError(field, msg)
    try:
        back: object = _strict.structure(data, cls)
    except RecursionError:
        raise ValidationError(field, "is nested too deeply to read back") from None
    except Exception as exc:
        path, message = _problem(exc)
        msg = f"would not read back as {_type_name(cls)}: {message}"
        raise ValidationError(_cut(f"{field}{path}"), msg) from None
    again = _plain(back, cls, field, limits)
    found = _difference(data, again)
    if found is not None:
        path, stored, read = found
        msg = (
            f"would read back as {preview(read)}, not {preview(stored)}"
            f" ({_type_name(cls)} does not encode it the same way twice)"
        )
        raise ValidationError(_cut(f"{field}{path}"), msg)
    return data


def check_json(data: JsonValue, *, field: str, limits: DataLimits) -> JsonValue:
    """Check an already-encoded JSON value (no class to read it back as): plain and small."""
    plain = _plain(data, object, field, limits)
    size = _json_size(plain)
    if size > limits.max_bytes:
        msg = f"is {size} bytes of JSON, more than the limit of {limits.max_bytes}"
        raise ValidationError(field, msg)
    return plain


def _no_constant(name: str) -> object:
    msg = f"{name} is not JSON (JSON has no NaN or infinity)"
    raise ValueError(msg)


def from_json(
    payload: str | bytes | JsonValue,
    cls: type[T],
    *,
    field: str,
    limits: DataLimits,
    extra: Extra = "forbid",
) -> T:
    """
    Outside data (JSON text, or a parsed JSON value) read strictly as a `cls`.

    Fields `cls` does not have are refused unless `extra="ignore"`; JSON text longer than
    `limits.max_bytes` is refused before it is parsed.
    """
    data: object
    if isinstance(payload, str | bytes):
        size = len(
            payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload
        )
        if size > limits.max_bytes:
            msg = f"is {size} bytes of JSON text, more than the limit of {limits.max_bytes}"
            raise ValidationError(field, msg)
        try:
            data = json.loads(payload, parse_constant=_no_constant)
        except RecursionError:
            raise ValidationError(field, "is nested too deeply") from None
        except (ValueError, UnicodeDecodeError) as error:
            raise ValidationError(field, f"is not valid JSON: {_short(str(error))}") from None
    else:
        data = payload
    converter = _strict if extra == "forbid" else _lenient
    try:
        return converter.structure(data, cls)
    except RecursionError:
        raise ValidationError(field, "is nested too deeply") from None
    except Exception as exc:
        path, message = _problem(exc)
        raise ValidationError(_cut(f"{field}{path}"), message) from None


def read_stored(data: JsonValue, cls: type[T], *, field: str, where: str) -> T:
    """
    Stored data read back as a `cls`; `UndecodableDataError` names the path when it does not
    decode (extra fields are dropped: a field removed from a class is not an error).
    """
    try:
        return _lenient.structure(data, cls)
    except RecursionError:
        raise UndecodableDataError(field, "nested too deeply", where=where) from None
    except Exception as exc:
        path, message = _problem(exc)
        raise UndecodableDataError(_cut(f"{field}{path}"), message, where=where) from None


def encode(value: object) -> JsonValue:
    """The library's own bookkeeping (its attrs classes) as JSON; not for user data."""
    raw: object = _strict.unstructure(value)
    try:
        return _normalize(raw, 0, _BOOKKEEPING_DEPTH)
    except _Refused as refused:
        raise ValidationError(f"${refused.path}", refused.message) from None


def decode(data: JsonValue, cls: type[T]) -> T:
    """Rebuild a `cls` from stored JSON; `ValidationError` names the failing field path."""
    try:
        return _lenient.structure(data, cls)
    except Exception as exc:
        path, message = _problem(exc)
        raise ValidationError(f"${path}", message) from None


# -- ids and numbers ------------------------------------------------------------------------


def check_id(field: str, value: object) -> str:
    """
    An id, event id or partition key: a non-empty string of at most `ID_MAX_BYTES` UTF-8
    bytes, without control characters or surrounding whitespace.
    """
    if not isinstance(value, str):
        raise ValidationError(field, f"expected a string, got {preview(value)}")
    if not value:
        raise ValidationError(field, "must not be empty")
    problem = check_text(value)
    if problem is not None:
        raise ValidationError(field, f"{preview(value)} {problem}")
    if any(ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 for char in value):
        raise ValidationError(field, f"{preview(value)} contains a control character")
    if value != value.strip():
        raise ValidationError(field, f"{preview(value)} has surrounding whitespace")
    size = len(value.encode("utf-8"))
    if size > ID_MAX_BYTES:
        msg = f"is {size} bytes long, more than the limit of {ID_MAX_BYTES} (UTF-8)"
        raise ValidationError(field, msg)
    return value


def check_int(field: str, value: object) -> int:
    """An integer (not a bool) within the library's range (a signed 64-bit integer)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, f"expected an integer, got {preview(value)}")
    if not INT_MIN <= value <= INT_MAX:
        msg = f"{preview(value)} is outside the integer range of durable-jobs (-2**63 to 2**63-1)"
        raise ValidationError(field, msg)
    return int(value)


def check_priority(value: object) -> int:
    """A worker-pool priority: an integer (not a bool) from -2**31 to 2**31-1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("priority", f"expected an integer, got {preview(value)}")
    if not PRIORITY_MIN <= value <= PRIORITY_MAX:
        msg = f"{preview(value)} is outside the priority range (-2**31 to 2**31-1)"
        raise ValidationError("priority", msg)
    return int(value)
