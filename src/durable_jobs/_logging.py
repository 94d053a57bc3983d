"""
Log lines a worker's operator can read and grep: time, level, worker, pid, job, instance,
attempt, on every line, as text or as one JSON object per line.

`durable-jobs worker --log-level LEVEL --log-format text|json` calls `configure_logging`.
The job fields come from the `JobEvent` a line is about (the engine logs each event with
it), or else from the run the line is logged in: any line logged while a worker runs an
execution, the user's own lines in `execute` included (sync callbacks too: their thread
sees the run's context), carries that run's job, instance and attempt.
"""

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Literal, TextIO, TypeAlias

from ._observe import JobEvent, current_run


LogFormat: TypeAlias = Literal["text", "json"]
"""How `configure_logging` writes lines: `text` (key=value) or `json` (one object a line)."""

_FIELDS = ("worker", "pid", "job", "instance", "attempt")


class JobFields(logging.Filter):
    """Adds `worker`, `pid`, `job`, `instance`, `attempt` (and `kind`) to every record."""

    def __init__(self, worker_id: str) -> None:
        super().__init__()
        self._worker_id = worker_id

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate `record` (never drops it)."""
        event = getattr(record, "job_event", None)
        run = current_run()
        kind: str | None = None
        job: str | None = None
        instance: str | None = None
        attempt: int | None = None
        if isinstance(event, JobEvent):
            kind, job, instance, attempt = event.kind.value, event.job, event.id, event.attempt
        elif run is not None:
            kind, job, instance, attempt = run.kind.value, run.job, run.id, run.attempt
        worker = run.worker_id if run is not None and run.worker_id else self._worker_id
        record.worker = worker
        record.pid = os.getpid()
        record.kind = kind
        record.job = job
        record.instance = instance
        record.attempt = attempt
        return True


def _time(record: logging.LogRecord) -> str:
    when = datetime.fromtimestamp(record.created, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text_value(value: object) -> str:
    if value is None:
        return "-"
    text = str(value)
    return json.dumps(text) if (not text or any(c.isspace() or c == '"' for c in text)) else text


class TextFormatter(logging.Formatter):
    """`TIME LEVEL worker=... pid=... job=... instance=... attempt=... logger: message`."""

    def format(self, record: logging.LogRecord) -> str:
        """One line (a traceback follows on the next lines, as usual)."""
        fields = " ".join(f"{name}={_text_value(getattr(record, name, None))}" for name in _FIELDS)
        line = f"{_time(record)} {record.levelname} {fields} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        elif record.exc_text:
            line = f"{line}\n{record.exc_text}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: `time`, `level`, the job fields, `logger`, `message`, ..."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object on one line (a traceback is its `exc_info` field)."""
        line: dict[str, object] = {"time": _time(record), "level": record.levelname}
        for name in (*_FIELDS, "kind"):
            line[name] = getattr(record, name, None)
        line["logger"] = record.name
        line["message"] = record.getMessage()
        event = getattr(record, "job_event", None)
        if isinstance(event, JobEvent):
            line["event"] = event_json(event)
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def event_json(event: JobEvent) -> dict[str, object]:
    """A `JobEvent` as JSON-ready values (times ISO 8601, durations in seconds)."""
    return {
        "type": event.type,
        "kind": event.kind.value,
        "job": event.job,
        "id": event.id,
        "at": event.at.isoformat(),
        "attempt": event.attempt,
        "error": event.error,
        "will_retry": event.will_retry,
        "retry_at": None if event.retry_at is None else event.retry_at.isoformat(),
        "reason": event.reason,
        "event_count": event.event_count,
        "scheduled_at": None if event.scheduled_at is None else event.scheduled_at.isoformat(),
        "event_id": event.event_id,
        "batch_id": event.batch_id,
        "defect": event.defect,
        "duration": None if event.duration is None else event.duration.total_seconds(),
        "queue_latency": (
            None if event.queue_latency is None else event.queue_latency.total_seconds()
        ),
        "run_count": event.run_count,
        "worker_id": event.worker_id,
    }


def configure_logging(
    *,
    level: int | str = logging.INFO,
    format: LogFormat = "text",
    worker_id: str,
    stream: TextIO | None = None,
) -> logging.Handler:
    """
    Send every log line of the process to `stream` (default stderr) in `format`, from
    `level` up, each with the worker's fields; returns the handler it installed on the
    root logger (replacing the handlers there).
    """
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.addFilter(JobFields(worker_id))
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
