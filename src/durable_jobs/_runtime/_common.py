"""Small pieces every handler uses."""

from datetime import datetime

import attrs

from .._contexts import ExecutionInfo
from .._errors import ValidationError
from .._storage._interface import InstanceKey, InstanceRecord, InstanceTransaction, JobKind
from .._type_forms import is_instance, type_name


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


def is_due(record: InstanceRecord | None, now: datetime) -> bool:
    """Whether `record` has an alarm due at `now` and is not parked."""
    return (
        record is not None
        and record.alarm_at is not None
        and record.alarm_at <= now
        and record.status.value != "failed"
    )


def touched(record: InstanceRecord, now: datetime) -> InstanceRecord:
    """`record` with `updated_at` set to `now`."""
    return attrs.evolve(record, updated_at=now)


def key_of(kind: JobKind, job: str, id: str) -> InstanceKey:
    """Validate a user id and build the instance key."""
    _require_id(id)
    return InstanceKey(kind, job, id)


def require_instance(field: str, value: object, cls: type) -> None:
    """Runtime guard for data that bypassed the type checker: `value` must be a `cls`."""
    if not is_instance(value, cls):  # `cls` may be a type form such as list[int]
        raise ValidationError(field, f"expected {type_name(cls)}, got {value!r}")


def _require_id(value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValidationError("id", f"expected a non-empty string, got {value!r}")


def alarm_of(tx: InstanceTransaction) -> datetime | None:
    """The alarm of the record as it stands in `tx` (None when there is no record)."""
    record = tx.record
    return None if record is None else record.alarm_at
