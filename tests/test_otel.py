"""OpenTelemetryObserver: a span per execution and the metrics, on the SDK's in-memory exporters."""

from datetime import timedelta

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from durable_jobs import (
    Backoff,
    Debounce,
    DebounceExecuteContext,
    Engine,
    Err,
    MemoryStorage,
    Ok,
    Result,
    Retry,
)
from durable_jobs.otel import OpenTelemetryObserver
from durable_jobs.testing import TestClock


class Busy(Exception):
    pass


def metric_points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, object], float]]]:
    """Every data point by metric name: (attributes, value or histogram sum)."""
    found: dict[str, list[tuple[dict[str, object], float]]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    total = value if value is not None else getattr(point, "sum", 0)
                    found.setdefault(metric.name, []).append((dict(point.attributes or {}), total))
    return found


async def test_a_debounce_flush_with_one_retry_is_two_spans_and_its_metrics() -> None:
    spans = InMemorySpanExporter()
    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    observer = OpenTelemetryObserver(
        tracer_provider=tracing, meter_provider=MeterProvider(metric_readers=[reader])
    )
    clock = TestClock()
    calls = 0

    def flush(ctx: DebounceExecuteContext[int]) -> Result[None, Busy]:
        nonlocal calls
        calls += 1
        clock.set(clock.now() + timedelta(seconds=2))  # each attempt takes 2 s
        return Err(Busy("try later")) if calls == 1 else Ok(None)

    digest = Debounce(
        name="digest",
        event=int,
        flush_after="1 minute",
        execute=flush,
        retry=Retry(max_attempts=3, delay=Backoff.fixed("10 seconds")),
    )
    engine = Engine(
        jobs=[digest],
        storage=MemoryStorage(),
        clock=clock,
        observers=[observer],
        random=lambda: 0.5,
    )
    await engine.client.debounce(digest).add("team", 1)
    await clock.advance("1 minute")
    await clock.advance("10 seconds")

    first, second = spans.get_finished_spans()
    assert first.name == second.name == "debounce digest"
    assert first.status.status_code is StatusCode.ERROR
    assert first.status.description == "Busy: try later"
    assert second.status.status_code is StatusCode.UNSET
    assert first.attributes is not None
    assert second.attributes is not None
    assert (
        first.attributes["durable_jobs.attempt"],
        second.attributes["durable_jobs.attempt"],
    ) == (1, 2)
    assert second.attributes["durable_jobs.run_count"] == 2
    assert second.attributes["durable_jobs.worker_id"] == engine.worker_id
    assert first.attributes["durable_jobs.will_retry"] is True
    # the spans follow the engine clock: 2 s each, the retry 10 s after the first ended
    assert first.start_time is not None
    assert first.end_time is not None
    assert second.start_time is not None
    assert second.end_time is not None
    assert first.end_time - first.start_time == 2_000_000_000
    assert second.start_time - first.end_time == 10_000_000_000

    points = metric_points(reader)
    labels = {"durable_jobs.kind": "debounce", "durable_jobs.job": "digest"}
    assert sorted(
        (str(attributes["durable_jobs.outcome"]), value)
        for attributes, value in points["durable_jobs.executions"]
    ) == [("job.executed", 1), ("job.failed", 1)]
    assert points["durable_jobs.retries"] == [(labels, 1)]
    assert points["durable_jobs.failures"] == [({**labels, "durable_jobs.defect": "false"}, 1)]
    assert points["durable_jobs.execution.duration"] == [(labels, 4.0)]
    assert points["durable_jobs.queue.latency"] == [(labels, 0.0)]
    assert "durable_jobs.dead_letters" not in points
