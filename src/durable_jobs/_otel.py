"""
OpenTelemetry for durable-jobs: an `Observer` that records spans and metrics.

Needs the `otel` extra (`pip install 'durable-jobs[otel]'`, which brings
`opentelemetry-api`); you configure the SDK and its exporters as usual::

    engine = Engine(jobs=[...], observers=[OpenTelemetryObserver()])

Each execution a worker runs becomes one span, named `"<kind> <job>"`, from the run's start
to its outcome (engine clock), with the instance, attempt, run count, worker and queue
latency as attributes; a failure sets the span's status to ERROR. The metrics are counters
of executions (by outcome), failures, retries and dead letters, and histograms of the
execution duration and of the queue latency (due to start), all in seconds and labelled by
kind and job.
"""

from collections.abc import Mapping
from datetime import datetime
from typing import Final

from opentelemetry.metrics import MeterProvider, get_meter
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider, get_tracer

from ._observe import EventType, JobEvent


OUTCOMES: Final[frozenset[EventType]] = frozenset(
    {"job.executed", "job.failed", "job.retry_exhausted", "job.terminated", "job.lease_lost"}
)
"""The event types that end an execution: one span each."""

_FAILED: Final[frozenset[EventType]] = frozenset(
    {"job.failed", "job.retry_exhausted", "job.lease_lost"}
)

_SCOPE = "durable_jobs"


def _nanos(when: datetime) -> int:
    return int(when.timestamp() * 1_000_000) * 1_000


class OpenTelemetryObserver:
    """
    An `Observer` recording a span per execution and the engine's metrics (see the module
    docstring); pass it in `Engine(observers=[...])`.

    `tracer_provider` and `meter_provider` default to the global ones that the
    OpenTelemetry SDK's setup installs.
    """

    __slots__ = (
        "_dead_letters",
        "_duration",
        "_executions",
        "_failures",
        "_latency",
        "_retries",
        "_tracer",
    )

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        """Get a tracer and a meter named `durable_jobs` from the providers."""
        self._tracer = get_tracer(_SCOPE, tracer_provider=tracer_provider)
        meter = get_meter(_SCOPE, meter_provider=meter_provider)
        self._executions = meter.create_counter(
            "durable_jobs.executions", unit="{execution}", description="Executions, by outcome"
        )
        self._failures = meter.create_counter(
            "durable_jobs.failures", unit="{execution}", description="Failed executions"
        )
        self._retries = meter.create_counter(
            "durable_jobs.retries", unit="{execution}", description="Failures that will retry"
        )
        self._dead_letters = meter.create_counter(
            "durable_jobs.dead_letters", unit="{letter}", description="Dead letters written"
        )
        self._duration = meter.create_histogram(
            "durable_jobs.execution.duration", unit="s", description="Execution duration"
        )
        self._latency = meter.create_histogram(
            "durable_jobs.queue.latency", unit="s", description="From due to started"
        )

    def __call__(self, event: JobEvent, /) -> None:
        """Record `event`: a span and metrics for an outcome, a counter for a dead letter."""
        labels: Mapping[str, str] = {
            "durable_jobs.kind": event.kind.value,
            "durable_jobs.job": event.job,
        }
        if event.type == "job.dead_lettered":
            self._dead_letters.add(1, labels)
            return
        if event.type not in OUTCOMES:
            return
        self._executions.add(1, {**labels, "durable_jobs.outcome": event.type})
        if event.type in _FAILED:
            self._failures.add(1, {**labels, "durable_jobs.defect": str(event.defect).lower()})
        if event.will_retry:
            self._retries.add(1, labels)
        if event.duration is not None:
            self._duration.record(event.duration.total_seconds(), labels)
        if event.queue_latency is not None:
            self._latency.record(event.queue_latency.total_seconds(), labels)
        self._span(event)

    def _span(self, event: JobEvent) -> None:
        ended = _nanos(event.at)
        started = ended if event.duration is None else _nanos(event.at - event.duration)
        attributes: dict[str, str | int | float | bool] = {
            "durable_jobs.kind": event.kind.value,
            "durable_jobs.job": event.job,
            "durable_jobs.instance": event.id,
            "durable_jobs.outcome": event.type,
        }
        optional: dict[str, str | int | float | bool | None] = {
            "durable_jobs.attempt": event.attempt,
            "durable_jobs.run_count": event.run_count,
            "durable_jobs.worker_id": event.worker_id,
            "durable_jobs.event_id": event.event_id,
            "durable_jobs.batch_id": event.batch_id,
            "durable_jobs.will_retry": event.will_retry,
            "durable_jobs.reason": event.reason,
            "durable_jobs.queue_latency": (
                None if event.queue_latency is None else event.queue_latency.total_seconds()
            ),
        }
        attributes.update({name: value for name, value in optional.items() if value is not None})
        span = self._tracer.start_span(
            f"{event.kind.value} {event.job}",
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            start_time=started,
        )
        if event.type in _FAILED:  # a success leaves the status unset, as instrumentations do
            span.set_status(Status(StatusCode.ERROR, event.error or event.reason))
            if event.defect:
                span.set_attribute("durable_jobs.defect", True)
        span.end(end_time=ended)
