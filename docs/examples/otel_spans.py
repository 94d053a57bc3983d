"""OpenTelemetry: the spans and metrics of a Debounce flush that fails once, then succeeds."""

import asyncio
from datetime import timedelta

import attrs
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

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


@attrs.frozen
class MailDown(Exception):
    status: int


clock = TestClock()
attempts: list[int] = []


def send(ctx: DebounceExecuteContext[str]) -> Result[None, MailDown]:
    attempts.append(ctx.attempt)
    clock.set(clock.now() + timedelta(seconds=2))  # sending takes 2 s (of the test clock)
    return Err(MailDown(503)) if len(attempts) == 1 else Ok(None)


digests = Debounce(
    name="digests",
    event=str,
    flush_after="1 minute",
    execute=send,
    retry=Retry(max_attempts=3, delay=Backoff.fixed("10 seconds")),
)


async def main() -> list[str]:
    exported = InMemorySpanExporter()
    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(exported))
    observer = OpenTelemetryObserver(tracer_provider=tracing)
    engine = Engine(
        jobs=[digests],
        storage=MemoryStorage(),
        clock=clock,
        observers=[observer],
        random=lambda: 0.5,
    )
    await engine.client.debounce(digests).add("team-7", "a@example.com")
    await clock.advance("1 minute")  # attempt 1: 503, retried in 10 s
    await clock.advance("10 seconds")  # attempt 2 succeeds
    lines: list[str] = []
    for span in exported.get_finished_spans():
        attributes = dict(span.attributes or {})
        assert span.start_time is not None
        assert span.end_time is not None
        lines.append(
            f"{span.name}  attempt={attributes['durable_jobs.attempt']}"
            f"  outcome={attributes['durable_jobs.outcome']}"
            f"  status={span.status.status_code.name}"
            f"  duration={(span.end_time - span.start_time) / 1e9:.0f}s"
        )
    return lines


if __name__ == "__main__":
    spans = asyncio.run(main())
    assert len(spans) == 2
    assert "status=ERROR" in spans[0]
    assert "status=UNSET" in spans[1]
    print("\n".join(spans))
