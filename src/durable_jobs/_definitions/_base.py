"""What every job definition is: named, and registrable with dependencies of type `R`."""

import abc
from typing import Any, Generic, Protocol

import attrs
from typing_extensions import TypeVar

from .._errors import InvalidDefinitionError, ValidationError
from .._runtime._services import RegisteredJob, Services
from .._serde import check_id


R = TypeVar("R", contravariant=True, default=object)


class Registrable(Protocol[R]):
    """
    What `Engine(jobs=...)` accepts: anything that registers with dependencies of type `R`.

    A structural type, which the definitions satisfy without inheriting it: that is what lets
    both checkers accept one list (or tuple) of jobs that need different dependency
    Protocols, as long as the engine's `deps` satisfies every one of them. (Through the
    common base class, the checkers would first join the jobs' types and lose their `R`.)

    Type parameters:
        R: the dependencies the job needs. Contravariant: a `Registrable[object]` (a job
            needing nothing) is a `Registrable[AppDeps]` for any `AppDeps`.
    """

    def register_with(self, deps: R, services: Services, /) -> RegisteredJob:
        """Register with the engine's `deps` and machinery (called by `Engine`; internal)."""
        ...


class JobDefinition(abc.ABC, Generic[R]):
    """
    The common base of `Continuous`, `Debounce`, `Task` and `WorkerPool`.

    Type parameters:
        R: what the job's callbacks need through `ctx.deps`. Contravariant: a job that needs
            `object` (nothing) runs on any engine; a job that needs `HasDb` runs only on an
            engine whose `deps` is a `HasDb`.
    """

    __slots__ = ()

    name: str

    @abc.abstractmethod
    def register_with(self, deps: R, services: Services) -> RegisteredJob:
        """Erase `I, S, E` behind closures that keep them (called by `Engine`; internal)."""


def check_name(_instance: object, _attribute: "attrs.Attribute[str]", value: str) -> None:
    """An attrs validator for job names."""
    validate_name(value)


def validate_name(value: object) -> None:
    """
    Job names are non-empty strings without ':' (it separates parts of instance ids), and
    follow the rule of ids: no control characters, at most 512 UTF-8 bytes.
    """
    if not isinstance(value, str) or not value.strip():
        msg = f"name: a job needs a non-empty name, got {value!r}"
        raise InvalidDefinitionError(msg)
    if ":" in value or value != value.strip():
        msg = f"name: {value!r} must not contain ':' or surrounding whitespace"
        raise InvalidDefinitionError(msg)
    try:
        check_id("name", value)
    except ValidationError as error:
        raise InvalidDefinitionError(str(error)) from None


def build(cls: type[Any], **fields: object) -> Any:
    """
    Create an instance of a definition class from already-typed fields.

    Used by `__new__` constructors whose signatures bind type parameters together (such as
    `Continuous`, where `I` is `S`): the runtime object is unspecialised by nature, and the
    signature of the calling `__new__` is what types every field put in here.
    """
    instance = object.__new__(cls)
    for name, value in fields.items():
        object.__setattr__(instance, name, value)
    return instance
