"""Small pieces every handler uses."""

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TypeAlias

from .._contexts import ExecutionInfo
from .._duration import DurationInput, to_timedelta
from .._errors import UndecodableDataError, ValidationError
from .._observe import JobEvent
from .._serde import check_id, preview
from .._storage._interface import (
    InstanceKey,
    InstanceRecord,
    InstanceTransaction,
    JobKind,
    LeaseLostError,
)
from .._type_forms import is_instance, type_name
from ._services import Services


def instance_name(key: InstanceKey) -> str:
    """`kind:job:id`: unique across the engine."""
    return f"{key.kind.value}:{key.job}:{key.id}"


def new_record(key: InstanceKey, now: datetime) -> InstanceRecord:
    """A fresh record (not yet saved)."""
    return InstanceRecord(key=key, created_at=now, updated_at=now)


def execution_info(key: InstanceKey, attempt: int, now: datetime) -> ExecutionInfo:
    """The immutable facts of one execution of `key`."""
    return ExecutionInfo(
        job_name=key.job, id=key.id, instance_id=instance_name(key), attempt=attempt, now=now
    )


def key_of(kind: JobKind, job: str, id: str) -> InstanceKey:
    """Validate a user id and build the instance key."""
    return InstanceKey(kind, job, check_id("id", id))


def require_instance(field: str, value: object, cls: type) -> None:
    """Runtime guard for data that bypassed the type checker: `value` must be a `cls`."""
    if not is_instance(value, cls):  # `cls` may be a type form such as list[int]
        raise ValidationError(field, f"expected {type_name(cls)}, got {preview(value)}")


def unreadable_record(record: InstanceRecord) -> None:
    """`UndecodableDataError` when the storage could not read part of `record`'s row."""
    if record.unreadable is not None:
        raise UndecodableDataError("row", record.unreadable, where=instance_name(record.key))


def fenced(tx: InstanceTransaction, token: str, *, release: bool = True) -> InstanceRecord:
    """
    The record, in a block that writes for the run holding `token` (its finish).

    Raises `LeaseLostError` when that run no longer holds the instance (a client purged or
    resumed it, or the lease expired and another worker took it): nothing may be written.
    """
    if not tx.fence(token, release=release):
        msg = (
            f"the lease of {instance_name(tx.key)} is no longer held by this run;"
            " its result is discarded"
        )
        raise LeaseLostError(msg)
    record = tx.record
    if record is None:  # pragma: no cover - a held lease implies a record
        msg = f"{tx.key} has a lease but no record"
        raise LeaseLostError(msg)
    return record


NotBefore: TypeAlias = DurationInput | datetime
"""When delayed work may start: a delay from now, or a timezone-aware time."""


def not_before_time(value: NotBefore | None, now: datetime) -> datetime | None:
    """
    The time delayed work may start (None: at once); a time not after `now` is None too.

    Raises `ValidationError` for a naive datetime or a value that is no duration.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValidationError("not_before", f"expected a timezone-aware time, got {value!r}")
        at = value
    else:
        try:
            delay = to_timedelta(value, field="not_before")
        except ValueError as error:
            raise ValidationError("not_before", str(error)) from error
        if delay <= timedelta(0):
            return None
        at = now + delay
    return at if at > now else None


def emit_all(services: Services, events: Iterable[JobEvent]) -> None:
    """Deliver events once what they describe has been committed."""
    for event in events:
        services.events.emit(event)
