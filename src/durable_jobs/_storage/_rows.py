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


def lenient_status(status: object, problems: list[str]) -> InstanceStatus:
    """
    A stored status; one this version does not know reads as FAILED and is noted in
    `problems` (the record's `unreadable`), so the runtime parks it instead of every read
    of the table failing.
    """
    try:
        return InstanceStatus(status)
    except ValueError:
        problems.append(f"status: unknown status {str(status)[:40]!r}")
        return InstanceStatus.FAILED
