"""
An opt-in mypy plugin: clear messages for the mistakes whose plain mypy message is cryptic.

Enable it in the mypy configuration::

    [mypy]
    plugins = durable_jobs.mypy_plugin

It changes no type that mypy infers for correct code; it replaces these messages:

* `Engine(jobs=..., deps=...)` whose deps lacks what a job needs. Plain mypy: "Cannot infer
  value of type parameter "R" of "Engine"". With the plugin: which job, which dependency
  type it needs, and which members the deps lack. The jobs are checked one by one, so a
  tuple of jobs needing different Protocols works as a list does.
* A `retry=` policy for another error type than `execute`'s. Plain mypy blames `execute`,
  printing its whole callable type; the plugin names the policy's and execute's error types.
* A named `on_error` for an unrelated error type. Plain mypy: "Cannot infer value of type
  parameter "E" of "Debounce""; the plugin names the handler's and execute's error types.
* A `functools.partial` as `on_error`, `should_retry` or a retry-after `delay`. Plain mypy
  checks a partial through its `__call__(*args: Any, **kwargs: Any)`, which turns the job's
  `E` into `Any`; the plugin keeps `E` from the other arguments and checks the partial's
  real signature against it.
* A job whose callbacks need different dependency Protocols (plain mypy infers `R = Never`
  and reports nothing until `Engine`): the plugin names both types.

Every message uses the error code `arg-type`. The plugin looks at the types of
non-lambda arguments before mypy infers the call (with errors suppressed), and at the
inferred call afterwards; lambdas are never evaluated early.
"""

from collections.abc import Callable, Iterable
from typing import Protocol

from mypy.checker import LocalTypeMap, TypeChecker
from mypy.errorcodes import ARG_TYPE
from mypy.messages import format_type, get_conflict_protocol_types, get_missing_protocol_members
from mypy.nodes import (
    CallExpr,
    Context,
    Expression,
    LambdaExpr,
    ListExpr,
    MemberExpr,
    NameExpr,
    RefExpr,
    TupleExpr,
)
from mypy.options import Options
from mypy.plugin import FunctionContext, FunctionSigContext, Plugin
from mypy.subtypes import is_subtype
from mypy.types import (
    AnyType,
    CallableType,
    Instance,
    NoneType,
    ProperType,
    TupleType,
    Type,
    UninhabitedType,
    UnionType,
    flatten_nested_unions,
    get_proper_type,
)


KINDS = frozenset({"Continuous", "Debounce", "Task", "WorkerPool"})
"""The definition classes whose constructor calls the plugin looks at."""
_PACKAGE = "durable_jobs."
_PARTIAL = "functools.partial"
_CALLBACKS = ("on_error", "should_retry", "delay")


def _ours(fullname: str, names: Iterable[str]) -> str | None:
    """The short name if `fullname` is one of `names` defined in durable_jobs, else None."""
    if not fullname.startswith(_PACKAGE):
        return None
    short = fullname.rsplit(".", 1)[-1]
    return short if short in names else None


class DurableJobsPlugin(Plugin):
    """The plugin class mypy instantiates (see the module docstring)."""

    def get_function_signature_hook(
        self, fullname: str
    ) -> Callable[[FunctionSigContext], CallableType] | None:
        """Before inference: check what can be checked, and keep partials out of it."""
        short = _ours(fullname, {*KINDS, "Engine", "Retry"})
        if short == "Engine":
            return _engine_signature
        if short is not None:
            return _callbacks_signature
        return None

    def get_function_hook(self, fullname: str) -> Callable[[FunctionContext], Type] | None:
        """After inference: check partials against the inferred `E`, and the job's `R`."""
        if _ours(fullname, {*KINDS, "Retry"}) is not None:
            return _after_inference
        return None


def plugin(version: str) -> type[Plugin]:
    """The entry point mypy calls (`plugins = durable_jobs.mypy_plugin`)."""
    del version
    return DurableJobsPlugin


# -- looking at arguments before inference


def _probe(ctx: FunctionSigContext, expression: Expression) -> ProperType | None:
    """The type of a non-lambda argument, computed early without side effects, or None."""
    api = ctx.api
    if isinstance(expression, LambdaExpr) or not isinstance(api, TypeChecker):
        return None
    if not isinstance(expression, RefExpr | CallExpr | ListExpr | TupleExpr):
        return None
    if isinstance(expression, CallExpr) and any(
        isinstance(arg, LambdaExpr) for arg in expression.args
    ):
        return None  # its lambdas need the context mypy gives them later
    with api.msg.filter_errors(), LocalTypeMap(api):
        found = get_proper_type(api.get_expression_type(expression))
    return None if _is_vague(found) else found


def _is_vague(typ: ProperType) -> bool:
    """Any or Never: nothing worth a message can be said about it."""
    return isinstance(typ, AnyType | UninhabitedType)


def _argument(ctx: FunctionSigContext, name: str) -> Expression | None:
    """The one expression passed for the parameter `name`, if any."""
    names = ctx.default_signature.arg_names
    if name not in names:
        return None
    given = ctx.args[names.index(name)]
    return given[0] if len(given) == 1 else None


class _Copyable(Protocol):
    """
    `CallableType.copy_modified` as this module calls it.

    mypy annotates its parameters with `Bogus[...]` (a mypyc device), which pyright cannot
    read; seen through this Protocol, both checkers know the types.
    """

    def copy_modified(self, *, arg_types: list[Type]) -> CallableType: ...


def _replaced(signature: CallableType, replacements: dict[str, Type]) -> CallableType:
    """`signature` with the types of some parameters replaced."""
    if not replacements:
        return signature
    types = [
        replacements.get(name or "", typ)
        for name, typ in zip(signature.arg_names, signature.arg_types, strict=True)
    ]
    return _as_copyable(signature).copy_modified(arg_types=types)


def _as_copyable(signature: _Copyable) -> _Copyable:
    return signature


def _object(ctx: FunctionSigContext) -> Type:
    return ctx.api.named_generic_type("builtins.object", [])


def _show(typ: Type, options: Options) -> str:
    return format_type(typ, options)


def _callee(ctx: FunctionSigContext) -> str:
    return ctx.default_signature.name or "call"


# -- the kinds and Retry


def _callbacks_signature(ctx: FunctionSigContext) -> CallableType:
    """Partials out of inference; a retry or on_error for another error type, explained."""
    signature = ctx.default_signature
    options = ctx.api.options
    replacements: dict[str, Type] = {}
    for name in _CALLBACKS:
        expression = _argument(ctx, name)
        if expression is not None and _partial_signature(_probe(ctx, expression)) is not None:
            replacements[name] = _object(ctx)  # checked after inference, against the real E
    execute = _argument(ctx, "execute")
    failure = _error_type(_probe(ctx, execute)) if execute is not None else None
    if failure is not None and not isinstance(get_proper_type(failure), UninhabitedType):
        callee = _callee(ctx)
        retry = _argument(ctx, "retry")
        policy = _probe(ctx, retry) if retry is not None else None
        handled = _retry_error(policy)
        if retry is not None and handled is not None and not is_subtype(failure, handled):
            # (a Retry[Never] or Retry[Any] counts as unknown: see _retry_error)
            ctx.api.fail(
                f"{callee}(retry=...): the Retry handles {_show(handled, options)}, but"
                f" execute fails with {_show(failure, options)}; use a"
                f" Retry[{_bare(failure, options)}]",
                retry,
                code=ARG_TYPE,
            )
            replacements["retry"] = _object(ctx)
        on_error = _argument(ctx, "on_error")
        handler = _probe(ctx, on_error) if on_error is not None else None
        takes = None if "on_error" in replacements else _first_parameter(handler)
        if on_error is not None and takes is not None and not is_subtype(failure, takes):
            ctx.api.fail(
                f"{callee}(on_error=...): the handler takes {_show(takes, options)}, but"
                f" execute fails with {_show(failure, options)}",
                on_error,
                code=ARG_TYPE,
            )
            replacements["on_error"] = _object(ctx)
    return _replaced(signature, replacements)


def _after_inference(ctx: FunctionContext) -> Type:
    """Check the partials against the inferred E; explain an R no engine can satisfy."""
    made = get_proper_type(ctx.default_return_type)
    if not isinstance(made, Instance) or not made.args:
        return ctx.default_return_type
    short = made.type.name
    options = ctx.api.options
    error = made.args[0] if short == "Retry" else made.args[2]
    for name, expressions, types in zip(ctx.callee_arg_names, ctx.args, ctx.arg_types, strict=True):
        if name not in _CALLBACKS or len(types) != 1:
            continue
        real = _partial_signature(get_proper_type(types[0]))
        takes = _first_parameter(real)
        proper_error = get_proper_type(error)
        if takes is None or isinstance(proper_error, AnyType | UninhabitedType):
            continue
        if not is_subtype(error, takes):
            ctx.api.fail(
                f"{short}({name}=...): the functools.partial takes {_show(takes, options)},"
                f" but the job's errors are {_show(error, options)}",
                expressions[0],
                code=ARG_TYPE,
            )
    if short in KINDS:
        requirement = get_proper_type(made.args[3])
        if isinstance(requirement, UninhabitedType):
            needs = _requirements(ctx)
            if len(needs) > 1:
                listed = ", ".join(f"{n} needs {_show(t, options)}" for n, t in needs)
                ctx.api.fail(
                    f"{short}(...): the callbacks need different dependency types ({listed});"
                    " declare one Protocol that inherits all of them and use it for the"
                    " contexts, or as the job's R",
                    ctx.context,
                    code=ARG_TYPE,
                )
    return ctx.default_return_type


def _requirements(ctx: FunctionContext) -> list[tuple[str, Type]]:
    """(callback, R of its context) for each typed callback argument."""
    found: list[tuple[str, Type]] = []
    for name, types in zip(ctx.callee_arg_names, ctx.arg_types, strict=True):
        callback = get_proper_type(types[0]) if len(types) == 1 else None
        if not isinstance(callback, CallableType) or not callback.arg_types:
            continue
        context = get_proper_type(callback.arg_types[-1])
        if isinstance(context, Instance) and context.args and name:
            requirement = context.args[-1]
            if not any(is_subtype(requirement, seen) for _, seen in found):
                found.append((name, requirement))
    return found


def _partial_signature(typ: ProperType | None) -> CallableType | None:
    """The real signature of a `functools.partial` object, as mypy's own plugin records it."""
    if not isinstance(typ, Instance) or typ.type.fullname != _PARTIAL or not typ.extra_attrs:
        return None
    real = get_proper_type(typ.extra_attrs.attrs.get("__mypy_partial"))
    return real if isinstance(real, CallableType) else None


def _first_parameter(typ: ProperType | None) -> Type | None:
    """The type of the first parameter of a callable (or of a partial's real signature)."""
    callable_type = _partial_signature(typ) or typ
    if not isinstance(callable_type, CallableType) or not callable_type.arg_types:
        return None
    return callable_type.arg_types[0]


def _error_type(execute: ProperType | None) -> Type | None:
    """What `execute` returns in `Err` (Never if it cannot fail), or None if not known."""
    if not isinstance(execute, CallableType):
        return None
    returned = get_proper_type(execute.ret_type)
    if isinstance(returned, Instance) and returned.type.fullname in (
        "typing.Coroutine",
        "typing.Awaitable",
    ):
        returned = get_proper_type(returned.args[-1])
    items = flatten_nested_unions([returned])
    errors: list[Type] = []
    for item in items:
        proper = get_proper_type(item)
        if not isinstance(proper, Instance) or _ours(proper.type.fullname, {"Ok", "Err"}) is None:
            return None  # not a Result: leave it to mypy
        if proper.type.name == "Err":
            errors.append(proper.args[0])
    return UnionType.make_union(errors) if errors else UninhabitedType()


def _retry_error(policy: ProperType | None) -> Type | None:
    """The `E` of a `Retry[E]` value."""
    if isinstance(policy, Instance) and _ours(policy.type.fullname, {"Retry"}) and policy.args:
        error = policy.args[0]
        return None if _is_vague(get_proper_type(error)) else error
    return None


def _bare(typ: Type, options: Options) -> str:
    return format_type(typ, options).strip('"')


# -- Engine


def _engine_signature(ctx: FunctionSigContext) -> CallableType:
    """Check each job against the deps, one by one, and say what is missing."""
    signature = ctx.default_signature
    call = ctx.context
    deps_expression = _argument(ctx, "deps")
    jobs_expression = _argument(ctx, "jobs")
    given_deps = isinstance(call, CallExpr) and "deps" in call.arg_names
    if jobs_expression is None or given_deps != ("deps" in signature.arg_names):
        return signature  # the call does not fit this overload
    options = ctx.api.options
    deps: Type = NoneType()
    if deps_expression is not None:
        probed = _probe(ctx, deps_expression)
        if probed is None:
            return signature
        deps = probed
    jobs = _jobs(ctx, jobs_expression)
    if jobs is None:
        return signature
    for expression, job in jobs:
        requirement = _requirement(job)
        if requirement is None:
            if isinstance(job, Instance) and job.type.fullname == "builtins.object":
                ctx.api.fail(
                    f"Engine(jobs=...): mypy joined the jobs' types to {_show(job, options)};"
                    " write the jobs in the call, or annotate the variable"
                    f" list[Registrable[{_bare(deps, options)}]]",
                    expression,
                    code=ARG_TYPE,
                )
                continue
            return signature  # something mypy should judge itself
        if isinstance(job, Instance) and not is_subtype(deps, requirement):
            message = _deps_message(expression, job, deps, requirement, options)
            if deps_expression is None:
                message = f"{message.partition(', but deps is')[0]}, but no deps were given"
            ctx.api.fail(message, expression, code=ARG_TYPE)
    return _replaced(signature, {"jobs": _object(ctx)})


_Jobs = list[tuple[Context, ProperType]]
"""The jobs given to `Engine`: each one's expression and type."""


def _jobs(ctx: FunctionSigContext, expression: Expression) -> _Jobs | None:
    """Each job passed (its expression, its type), or None when they cannot be told apart."""
    if isinstance(expression, ListExpr | TupleExpr):
        found: _Jobs = []
        for item in expression.items:
            typ = _probe(ctx, item)
            if typ is None:
                return None
            found.append((item, typ))
        return found
    typ = _probe(ctx, expression)
    if isinstance(typ, TupleType):
        return [(expression, get_proper_type(item)) for item in typ.items]
    if isinstance(typ, Instance) and len(typ.args) == 1:
        return [(expression, get_proper_type(typ.args[0]))]
    return None


def _requirement(job: ProperType) -> Type | None:
    """A job's `R`: the last type argument of a definition, `JobDefinition` or `Registrable`."""
    if not isinstance(job, Instance) or not job.args:
        return None
    if _ours(job.type.fullname, {*KINDS, "JobDefinition", "Registrable"}) is None:
        return None
    return job.args[-1]


def _deps_message(
    expression: Context, job: Instance, deps: Type, requirement: Type, options: Options
) -> str:
    name = expression.name if isinstance(expression, NameExpr | MemberExpr) else job.type.name
    text = (
        f'Engine(...): job "{name}" ({job.type.name}) needs deps of type'
        f" {_show(requirement, options)}, but deps is {_show(deps, options)}"
    )
    proper_deps = get_proper_type(deps)
    proper_requirement = get_proper_type(requirement)
    if isinstance(proper_requirement, UninhabitedType):
        return (
            f'Engine(...): job "{name}" ({job.type.name}) can run on no engine: its callbacks'
            " need different dependency types (see the error at its definition)"
        )
    if not (
        isinstance(proper_deps, Instance)
        and isinstance(proper_requirement, Instance)
        and proper_requirement.type.is_protocol
    ):
        return text
    missing = get_missing_protocol_members(proper_deps, proper_requirement, skip=[])
    if missing:
        return f"{text}, which lacks {_names(missing)}"
    conflicts = get_conflict_protocol_types(
        proper_deps, proper_deps, proper_requirement, options=options
    )
    return f"{text}, whose {_names(c[0] for c in conflicts)} has another type"


def _names(names: Iterable[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)
