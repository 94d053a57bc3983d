"""
The errors durable-jobs raises, as one tree::

    DurableJobsError                 base of everything below
    ├── InvalidDefinitionError       bad definition arguments (also a ValueError)
    ├── DuplicateJobError            two jobs with one name in an Engine (also a ValueError)
    ├── JobNotFoundError             a definition not registered with this engine (LookupError)
    ├── InstanceNotFoundError        an instance that does not exist (LookupError)
    ├── DeadLetterNotFoundError      a dead letter that does not exist (LookupError)
    ├── ConflictError                an operator action that would overwrite live data
    ├── ValidationError              a value would not read back from storage as its type:
    │                                bad input, or a bad state from a callback (ValueError);
    │                                `path` names the failing field; nothing was stored
    ├── StorageError                 the storage backend failed (often transient)
    │   ├── SchemaMismatchError      the database's schema is older (`durable-jobs migrate`)
    │   │                            or newer than this version of durable-jobs
    │   └── UndecodableDataError     stored data does not decode with this version's
    │                                classes; the worker parks the work with a dead letter
    └── ExecutionError               user code raised where no retry is possible
                                     (a Task's `on_event`, a Debounce's `on_event`)

No exception of a database driver reaches callers: each backend maps them in one place
(`_storage/_sqlite.py: map_sqlite_errors`, `_storage/_postgres.py: map_driver_error`). A
value the driver refuses becomes `ValidationError` (the data; retrying cannot help), any
other driver error `StorageError` (often transient); the driver's exception is the
`__cause__`.

Errors of *your* jobs are not exceptions of this tree: `execute` returns `Err(e)` with
your own type `E`, which reaches `should_retry` and `on_error` unchanged.
"""


class DurableJobsError(Exception):
    """Base of every error raised by durable-jobs."""


class InvalidDefinitionError(DurableJobsError, ValueError):
    """A definition, schedule, duration or retry policy got a bad argument (names the field)."""


class DuplicateJobError(DurableJobsError, ValueError):
    """Two jobs registered with one engine share a name."""


class JobNotFoundError(DurableJobsError, LookupError):
    """A definition that is not registered with this engine was used with its client."""


class InstanceNotFoundError(DurableJobsError, LookupError):
    """An operation needed an instance that does not exist."""


class DeadLetterNotFoundError(DurableJobsError, LookupError):
    """An operation named a dead letter that does not exist."""


class ConflictError(DurableJobsError):
    """An operator action would overwrite an instance that is alive; nothing was changed."""


class ValidationError(DurableJobsError, ValueError):
    """
    A value would not read back from storage as its declared type; nothing was stored.

    Raised for data from outside (events, JSON, ids, event ids, partition keys, priorities)
    and for a state an `on_event` fold produced in a client call. The message shows the
    offending value as a short preview only, never the whole payload.
    """

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        """Where the data failed, e.g. `event.emails[0]`."""
        self.message = message
        """What is wrong there."""


class StorageError(DurableJobsError):
    """The storage backend failed, or holds data this version cannot read."""


class SchemaMismatchError(StorageError):
    """
    The database's schema is not the one this version of durable-jobs runs against.

    An older schema needs `durable-jobs migrate` (stop every worker first); a newer one needs
    a newer durable-jobs. A worker that meets it stops instead of running.
    """


class UndecodableDataError(StorageError):
    """
    Stored data does not decode with this version's classes, or its row is corrupt.

    A class changed shape since the data was written (a field added without a default,
    renamed, or given another type), or the row was edited by hand. Retrying does not
    help: the worker parks such work at once with a dead letter (reason `undecodable`)
    that names the path; fix the class and resume the letter, or discard it.
    """

    def __init__(self, path: str, message: str, *, where: str) -> None:
        super().__init__(f"undecodable stored data of {where} at {path}: {message}")
        self.path = path
        """Where the stored data failed, e.g. `state.emails[0]` or `meta`."""
        self.message = message
        """What is wrong there."""
        self.where = where
        """What the data belongs to, e.g. `debounce:digests:team-7`."""


class ExecutionError(DurableJobsError):
    """User code raised where the engine cannot retry it; nothing was stored."""

    def __init__(self, message: str, *, job: str, id: str) -> None:
        super().__init__(message)
        self.job = job
        """The job's name."""
        self.id = id
        """The instance id."""
