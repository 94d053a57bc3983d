"""
What `event=` and `state=` accept at runtime: what both type checkers accept as `type[X]`.

The checkers accept a class, and also a parameterised generic such as `list[int]` or
`dict[str, Point]`, a `TypedDict` and (mypy) a `NewType`; the runtime must agree, so each of
these is a *type form* here. Storage decodes JSON into the full form (cattrs handles all of
them); the guard for data that bypassed the checker tests the instance against the form's
runtime class (`list` for `list[int]`, `dict` for a `TypedDict`, the supertype of a
`NewType`) and, for a form that is not a plain class, that it survives the trip to JSON.
Unions, `Literal`, `Annotated` and `Protocol` classes are refused: neither checker accepts
the first three as `type[X]`, and a Protocol cannot be stored.
"""

import types
import typing

import typing_extensions

from . import _serde  # the module, not its names: _serde uses runtime_class too
from ._errors import ValidationError


# origins that are classes at runtime but whose forms are not classes of values
_NOT_CLASSES: tuple[object, ...] = (types.UnionType, typing.Union, typing.Annotated)


def runtime_class(form: object) -> type | None:
    """The class every value of `form` is an instance of, or None if `form` is not supported."""
    if isinstance(form, typing.NewType):
        return runtime_class(form.__supertype__)
    origin = typing.get_origin(form)
    if origin is not None:
        # `list[int]`, `typing.List[int]`; not unions, Literal or Annotated
        return origin if isinstance(origin, type) and origin not in _NOT_CLASSES else None
    if not isinstance(form, type):
        return None
    if typing_extensions.is_typeddict(form):
        return dict
    if typing_extensions.is_protocol(form):
        return None
    return form


def is_type_form(form: object) -> bool:
    """Whether `form` can be the type of events or state (see the module docstring)."""
    return runtime_class(form) is not None


def is_instance(value: object, form: type[object]) -> bool:
    """
    Whether `value` is a value of `form`, as far as the runtime can tell.

    A class: `isinstance`. Another form: an instance of its runtime class that also survives
    the trip to JSON and back as `form` (so `["a"]` is not a `list[int]`): what storage
    would do with it.
    """
    cls = runtime_class(form)
    if cls is None or not isinstance(value, cls):
        return False
    if cls is form:
        return True
    try:
        _serde.decode(_serde.encode(value), form)
    except (ValidationError, TypeError, ValueError):
        return False
    return True


def type_name(form: object) -> str:
    """How error messages name `form`: `Digest`, `list[int]`."""
    if isinstance(form, typing.NewType):
        return form.__name__
    if isinstance(form, type) and typing.get_origin(form) is None:
        return form.__qualname__
    return repr(form).removeprefix("typing.")
