"""
durable-jobs: strictly typed durable background jobs.

Define jobs (`Continuous`, `Debounce`, `Task`, `WorkerPool`), register them with an
`Engine`, and use `engine.client`. The error type `E` of a job's `execute` reaches
`should_retry` and `on_error` unchanged, under mypy and pyright.
"""

from ._clock import Clock as Clock
from ._clock import SystemClock as SystemClock
from ._contexts import ContinuousContext as ContinuousContext
from ._contexts import DebounceEventContext as DebounceEventContext
from ._contexts import DebounceExecuteContext as DebounceExecuteContext
from ._contexts import ErrorContext as ErrorContext
from ._contexts import FailureReason as FailureReason
from ._contexts import FlushReason as FlushReason
from ._contexts import IdleReason as IdleReason
from ._contexts import TaskEventContext as TaskEventContext
from ._contexts import TaskExecuteContext as TaskExecuteContext
from ._contexts import TaskIdleContext as TaskIdleContext
from ._contexts import WorkerPoolContext as WorkerPoolContext
from ._definitions._base import JobDefinition as JobDefinition
from ._definitions._base import Registrable as Registrable
from ._definitions._continuous import Continuous as Continuous
from ._definitions._debounce import Debounce as Debounce
from ._definitions._task import Task as Task
from ._definitions._worker_pool import RateLimit as RateLimit
from ._definitions._worker_pool import WorkerPool as WorkerPool
from ._duration import DurationInput as DurationInput
from ._errors import ConflictError as ConflictError
from ._errors import DeadLetterNotFoundError as DeadLetterNotFoundError
from ._errors import DuplicateJobError as DuplicateJobError
from ._errors import DurableJobsError as DurableJobsError
from ._errors import ExecutionError as ExecutionError
from ._errors import InstanceNotFoundError as InstanceNotFoundError
from ._errors import InvalidDefinitionError as InvalidDefinitionError
from ._errors import JobNotFoundError as JobNotFoundError
from ._errors import SchemaMismatchError as SchemaMismatchError
from ._errors import StorageError as StorageError
from ._errors import UndecodableDataError as UndecodableDataError
from ._errors import ValidationError as ValidationError
from ._limits import DataLimits as DataLimits
from ._observe import EventType as EventType
from ._observe import JobEvent as JobEvent
from ._observe import Observer as Observer
from ._result import Err as Err
from ._result import Ok as Ok
from ._result import Result as Result
from ._retry import Backoff as Backoff
from ._retry import Retry as Retry
from ._runtime._admin import ResumeAction as ResumeAction
from ._runtime._admin import ResumeResult as ResumeResult
from ._runtime._client import Client as Client
from ._runtime._client import ContinuousClient as ContinuousClient
from ._runtime._client import DebounceClient as DebounceClient
from ._runtime._client import TaskClient as TaskClient
from ._runtime._client import WorkerPoolClient as WorkerPoolClient
from ._runtime._common import NotBefore as NotBefore
from ._runtime._engine import Engine as Engine
from ._runtime._results import AddResult as AddResult
from ._runtime._results import BatchStage as BatchStage
from ._runtime._results import BatchStatus as BatchStatus
from ._runtime._results import CancelResult as CancelResult
from ._runtime._results import CancelStatus as CancelStatus
from ._runtime._results import ClearResult as ClearResult
from ._runtime._results import ContinuousStatus as ContinuousStatus
from ._runtime._results import DebounceStatus as DebounceStatus
from ._runtime._results import EnqueueResult as EnqueueResult
from ._runtime._results import FlushResult as FlushResult
from ._runtime._results import PoolStatus as PoolStatus
from ._runtime._results import SendResult as SendResult
from ._runtime._results import SendStatus as SendStatus
from ._runtime._results import StartResult as StartResult
from ._runtime._results import TaskStatus as TaskStatus
from ._runtime._results import TerminateResult as TerminateResult
from ._runtime._results import TriggerResult as TriggerResult
from ._runtime._services import DefectPolicy as DefectPolicy
from ._runtime._sync import SyncClient as SyncClient
from ._runtime._sync import SyncContinuousClient as SyncContinuousClient
from ._runtime._sync import SyncDebounceClient as SyncDebounceClient
from ._runtime._sync import SyncTaskClient as SyncTaskClient
from ._runtime._sync import SyncWorkerPoolClient as SyncWorkerPoolClient
from ._schedule import Cron as Cron
from ._schedule import Every as Every
from ._schedule import Schedule as Schedule
from ._schedule import cron as cron
from ._schedule import every as every
from ._storage._interface import DeadLetter as DeadLetter
from ._storage._interface import InstanceKey as InstanceKey
from ._storage._interface import InstanceRecord as InstanceRecord
from ._storage._interface import InstanceStatus as InstanceStatus
from ._storage._interface import JobKind as JobKind
from ._storage._interface import Lease as Lease
from ._storage._interface import Storage as Storage
from ._storage._memory import MemoryStorage as MemoryStorage
from ._storage._sqlite import SqliteStorage as SqliteStorage


__all__ = [
    "AddResult",
    "Backoff",
    "BatchStage",
    "BatchStatus",
    "CancelResult",
    "CancelStatus",
    "ClearResult",
    "Client",
    "Clock",
    "ConflictError",
    "Continuous",
    "ContinuousClient",
    "ContinuousContext",
    "ContinuousStatus",
    "Cron",
    "DataLimits",
    "DeadLetter",
    "DeadLetterNotFoundError",
    "Debounce",
    "DebounceClient",
    "DebounceEventContext",
    "DebounceExecuteContext",
    "DebounceStatus",
    "DefectPolicy",
    "DuplicateJobError",
    "DurableJobsError",
    "DurationInput",
    "Engine",
    "EnqueueResult",
    "Err",
    "ErrorContext",
    "EventType",
    "Every",
    "ExecutionError",
    "FailureReason",
    "FlushReason",
    "FlushResult",
    "IdleReason",
    "InstanceKey",
    "InstanceNotFoundError",
    "InstanceRecord",
    "InstanceStatus",
    "InvalidDefinitionError",
    "JobDefinition",
    "JobEvent",
    "JobKind",
    "JobNotFoundError",
    "Lease",
    "MemoryStorage",
    "NotBefore",
    "Observer",
    "Ok",
    "PoolStatus",
    "RateLimit",
    "Registrable",
    "Result",
    "ResumeAction",
    "ResumeResult",
    "Retry",
    "Schedule",
    "SchemaMismatchError",
    "SendResult",
    "SendStatus",
    "SqliteStorage",
    "StartResult",
    "Storage",
    "StorageError",
    "SyncClient",
    "SyncContinuousClient",
    "SyncDebounceClient",
    "SyncTaskClient",
    "SyncWorkerPoolClient",
    "SystemClock",
    "Task",
    "TaskClient",
    "TaskEventContext",
    "TaskExecuteContext",
    "TaskIdleContext",
    "TaskStatus",
    "TerminateResult",
    "TriggerResult",
    "UndecodableDataError",
    "ValidationError",
    "WorkerPool",
    "WorkerPoolClient",
    "WorkerPoolContext",
    "cron",
    "every",
]
