"""
The errors durable-jobs raises, as one tree::

    DurableJobsError                 base of everything below
    ├── InvalidDefinitionError       bad definition arguments (also a ValueError)
    ├── DuplicateJobError            two jobs with one name in an Engine (also a ValueError)
    ├── JobNotFoundError             a definition not registered with this engine (LookupError)
    ├── InstanceNotFoundError        an instance that does not exist (LookupError)
    ├── DeadLetterNotFoundError      a dead letter that does not exist (LookupError)
    ├── ConflictError                an operator action that would overwrite live data
    ├── ValidationError              data from outside does not fit its type (ValueError);
    │                                `path` names the failing field
    ├── StorageError                 the storage backend failed or holds unreadable data
    │   └── SchemaMismatchError      the database's schema is older (`durable-jobs migrate`)
    │                                or newer than this version of durable-jobs
    └── ExecutionError               user code raised where no retry is possible
                                     (a Task's `on_event`, a Debounce's `on_event`)

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
    """Data from outside (JSON, CLI arguments, stored state) does not fit its declared type."""

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


class ExecutionError(DurableJobsError):
    """User code raised where the engine cannot retry it; nothing was stored."""

    def __init__(self, message: str, *, job: str, id: str) -> None:
        super().__init__(message)
        self.job = job
        """The job's name."""
        self.id = id
        """The instance id."""
