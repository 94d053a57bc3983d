"""
OpenTelemetry for durable-jobs: `pip install 'durable-jobs[otel]'`.

    from durable_jobs.otel import OpenTelemetryObserver

    engine = Engine(jobs=[...], observers=[OpenTelemetryObserver()])

`OpenTelemetryObserver` records a span per execution and the engine's metrics through the
tracer and meter providers of the OpenTelemetry SDK you configure (see
docs/retries-and-errors.md, "OpenTelemetry").
"""

from ._otel import OUTCOMES, OpenTelemetryObserver


__all__ = ["OUTCOMES", "OpenTelemetryObserver"]
