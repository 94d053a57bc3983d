"""What the SQL backends (SQLite, PostgreSQL) share about stored rows: columns and keys."""

from typing import Final

from .._errors import StorageError
from ._interface import InstanceKey, InstanceStatus, JobKind


RECORD_COLUMNS: Final = (
    "kind, job, id, status, state, meta, alarm_at, attempt, retry_started_at, defects,"
    " last_error, created_at, updated_at"
)
"""The `instances` columns that make an `InstanceRecord`, in the order `record_of` reads."""


def key_params(key: InstanceKey) -> tuple[str, str, str]:
    """The key columns' values: kind, job, id."""
    return (key.kind.value, key.job, key.id)


def key_of(kind: object, job: object, id: object) -> InstanceKey:
    """The key of a stored row; `StorageError` for a kind this version does not know."""
    try:
        return InstanceKey(JobKind(kind), str(job), str(id))
    except ValueError as exc:
        msg = f"stored instance {job}:{id} has an unknown kind {kind!r}"
        raise StorageError(msg) from exc


def status_of(status: object, what: str) -> InstanceStatus:
    """A stored status; `StorageError` for one this version does not know."""
    try:
        return InstanceStatus(status)
    except ValueError as exc:
        msg = f"stored instance {what} has an unknown status {status!r}"
        raise StorageError(msg) from exc
