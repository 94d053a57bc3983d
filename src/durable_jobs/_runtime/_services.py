"""What every handler shares: storage, clock, events, randomness, the defect policy, threads."""

from collections.abc import Awaitable, Callable
from datetime import datetime

import attrs

from .._clock import Clock
from .._limits import DataLimits
from .._observe import EventSink
from .._retry import Backoff
from .._storage._interface import Claim, InstanceKey, ItemClaim, JobKind, PoolRate, Storage
from ._invoke import Invoker, RunHandle


@attrs.frozen(kw_only=True)
class DefectPolicy:
    """
    How the engine treats a defect (user code raised instead of returning `Err`).

    The instance's alarm is retried `max_retries` times with `backoff`; after that the
    instance is parked as failed with a dead-letter record, its state kept.
    """

    max_retries: int = attrs.field(default=5, validator=attrs.validators.ge(0))
    backoff: Backoff = attrs.field(factory=lambda: Backoff.exponential("1 second", max="5 minutes"))


@attrs.frozen(kw_only=True)
class Services:
    """The engine's shared machinery, handed to every handler (engine-internal)."""

    storage: Storage
    clock: Clock
    events: EventSink
    random: Callable[[], float]
    defect_policy: DefectPolicy
    invoker: Invoker
    wake: Callable[[datetime], None]
    """Tell a local worker that an alarm at this time exists (it may be earlier than it knows)."""
    limits: DataLimits = attrs.field(factory=DataLimits)
    """How large an event or a state may be when it enters storage."""


@attrs.frozen(kw_only=True)
class RegisteredJob:
    """
    A definition after registration: `I, S, E` erased, closures keep them (internal).

    A worker hands it the work it claimed: an instance (`run_claim`) or, for a worker pool,
    one event (`run_item`; `pool` and `concurrency` say which pool and how wide it is).
    """

    name: str
    kind: JobKind
    definition: object
    """The user's definition object, so a client can check it is the registered one."""
    run_claim: Callable[[Claim, RunHandle], Awaitable[None]] | None = None
    run_item: Callable[[ItemClaim, RunHandle], Awaitable[None]] | None = None
    pool: InstanceKey | None = None
    concurrency: int = 0
    rate: PoolRate | None = None
    """The pool's rate limit, enforced by the storage in each claim."""
