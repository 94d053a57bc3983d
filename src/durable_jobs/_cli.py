"""
The `durable-jobs` command: run a worker, look at instances and dead letters, run the demo.

Exit codes: 0 success, 1 unexpected failure, 2 bad usage (arguments, module path),
3 not found (job, instance, dead letter), 4 storage unreadable or failing (or its schema
needs `durable-jobs migrate`), 5 conflict.
"""

import argparse
import asyncio
import contextlib
import importlib
import importlib.metadata
import json
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol, TextIO, TypeGuard, runtime_checkable

import attrs

from . import demo as demo_module
from ._clock import Clock, SystemClock
from ._duration import to_timedelta
from ._errors import (
    ConflictError,
    DeadLetterNotFoundError,
    InstanceNotFoundError,
    StorageError,
)
from ._logging import LogFormat, configure_logging
from ._runtime import _admin
from ._runtime._engine import Engine
from ._storage._interface import (
    DeadLetter,
    InstanceRecord,
    InstanceStatus,
    JobKind,
    PoolCounts,
    Storage,
)
from ._storage._sqlite import DEFAULT_DATABASE, SqliteStorage


_log = logging.getLogger("durable_jobs.worker")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_STORAGE = 4
EXIT_CONFLICT = 5


class UsageError(Exception):
    """A bad argument the parser could not catch (e.g. a module path)."""


@runtime_checkable
class Existing(Protocol):
    """A storage that can tell whether its database exists without creating it."""

    async def exists(self) -> bool:
        """Whether the database (SQLite file, PostgreSQL schema) exists."""
        ...


@runtime_checkable
class Migratable(Protocol):
    """A storage with a versioned schema (SQLite, PostgreSQL)."""

    async def migrate(self) -> tuple[int, int]:
        """Apply pending schema migrations; the version before and after."""
        ...


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.run
    try:
        return command(args)
    except UsageError as exc:
        _fail(f"durable-jobs: {exc}")
        return EXIT_USAGE
    except (InstanceNotFoundError, DeadLetterNotFoundError) as exc:
        _fail(f"durable-jobs: {exc}")
        return EXIT_NOT_FOUND
    except StorageError as exc:
        _fail(f"durable-jobs: storage error: {exc}")
        return EXIT_STORAGE
    except ConflictError as exc:
        _fail(f"durable-jobs: {exc}")
        return EXIT_CONFLICT
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="durable-jobs", description="Durable background jobs: worker and operator tools."
    )
    parser.add_argument(
        "--version", action="version", version=f"durable-jobs {_version()}", help="print it"
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    worker = commands.add_parser(
        "worker", help="run the alarm loop of an engine until SIGTERM or SIGINT"
    )
    worker.add_argument("app", metavar="MODULE:ENGINE", help="where the Engine lives")
    worker.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="the lowest level logged (default: INFO; DEBUG adds every event)",
    )
    worker.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="text: one key=value line per record; json: one JSON object per line",
    )
    worker.set_defaults(run=_worker)

    status = commands.add_parser(
        "status", help="per job: instances, running, retrying, failed, backlog, lag, next alarm"
    )
    _storage_options(status)
    _json_option(status)
    status.add_argument(
        "--watch",
        metavar="SECONDS",
        type=_positive_seconds,
        help="print it again every SECONDS until Ctrl-C (with --json: one object per line)",
    )
    status.set_defaults(run=_status)

    inspect = commands.add_parser("inspect", help="one instance: state, alarm, attempts, error")
    _storage_options(inspect)
    _json_option(inspect)
    inspect.add_argument("job")
    inspect.add_argument("id")
    inspect.set_defaults(run=_inspect)

    letters = commands.add_parser("dead-letters", help="list, show, resume or discard")
    actions = letters.add_subparsers(required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every dead letter, oldest first")
    _storage_options(listing)
    _json_option(listing)
    listing.add_argument("--job", help="only this job's letters")
    listing.set_defaults(run=_letters_list)
    show = actions.add_parser("show", help="one letter as JSON")
    _storage_options(show)
    _json_option(show)
    show.add_argument("letter_id", metavar="LETTER_ID")
    show.set_defaults(run=_letters_show)
    for name, run, text in (
        ("resume", _letters_resume, "run letters' work again (due now), delete the letters"),
        ("discard", _letters_discard, "delete letters"),
    ):
        action = actions.add_parser(name, help=text)
        _storage_options(action)
        which = action.add_mutually_exclusive_group(required=True)
        which.add_argument("letter_id", metavar="LETTER_ID", nargs="?", help="one letter")
        which.add_argument("--job", help="every letter of this job")
        action.set_defaults(run=run)

    prune = commands.add_parser(
        "prune", help="delete old dead letters and failed instances (nothing by default)"
    )
    _storage_options(prune)
    prune.add_argument(
        "--dead-letters-older-than",
        metavar="DURATION",
        help='delete dead letters written longer ago than this, e.g. "30 days"',
    )
    prune.add_argument(
        "--failed-older-than",
        metavar="DURATION",
        help="delete instances that failed finally and were not updated for this long",
    )
    prune.set_defaults(run=_prune)

    migrate = commands.add_parser(
        "migrate", help="upgrade the database schema (stop every worker first; no downgrade)"
    )
    _storage_options(migrate)
    migrate.set_defaults(run=_migrate)

    demo = commands.add_parser("demo", help="run the self-contained demo on SQLite")
    demo_module.add_arguments(demo)
    demo.set_defaults(run=_demo)
    return parser


def _storage_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--db", type=Path, help=f"a SQLite database file (default: ./{DEFAULT_DATABASE})"
    )
    where.add_argument("--app", metavar="MODULE:ENGINE", help="use this engine's storage")
    where.add_argument("--dsn", help="a PostgreSQL connection string (needs the postgres extra)")
    parser.add_argument(
        "--schema", default="durable_jobs", help="the PostgreSQL schema (with --dsn)"
    )


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        msg = f"expected a number of seconds above zero, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return seconds


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


# -- commands -------------------------------------------------------------------------------


def _worker(args: argparse.Namespace) -> int:
    engine = _load_engine(args.app)
    log_format: LogFormat = "json" if args.log_format == "json" else "text"
    configure_logging(level=args.log_level, format=log_format, worker_id=engine.worker_id)
    return asyncio.run(_serve(engine))


async def _serve(engine: Engine[object]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()

    def on_signal() -> None:
        # first signal: finish in-flight alarms; second: give them up (their leases expire
        # and another worker runs them again, so nothing is lost either way)
        if stop.is_set() and main_task is not None:
            main_task.cancel()
        stop.set()

    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, on_signal)
    names = ", ".join(engine.job_names) or "no jobs"
    _log.info("serving %s", names)
    try:
        async with engine:
            serving = engine.serving

            async def until_signalled() -> None:
                await stop.wait()

            waiting = asyncio.ensure_future(until_signalled())
            watched = {waiting} if serving is None else {waiting, serving}
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            stopped = None
            if serving is not None and serving.done() and not serving.cancelled():
                stopped = serving.exception()
            if stopped is not None:
                raise stopped  # the worker stopped on its own (a schema it must not run on)
            _log.info("stopping after in-flight work")
    finally:
        await engine.storage.close()
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    as_json: bool = args.json
    watch: float | None = args.watch

    async def show(storage: Storage, clock: Clock) -> None:
        now = clock.now()
        records = await storage.list_instances()
        letters = await storage.dead_letters()
        rows = await _status_rows(storage, records, now)
        instances = sum(row.instances for row in rows)  # a pool's record is not one
        if as_json:
            shown: dict[str, object] = {
                "at": _time(now),
                "jobs": [row.as_json(now) for row in rows],
                "instances": instances,
                "dead_letters": len(letters),
            }
            if watch is None:
                _print_json(shown)
            else:  # JSON Lines: one snapshot a line
                print(json.dumps(shown, ensure_ascii=False), flush=True)
            return
        if watch is not None:
            clear = "\x1b[H\x1b[2J" if sys.stdout.isatty() else ""
            print(f"{clear}status at {now.isoformat(timespec='seconds')}\n")
        header = ["JOB", "KIND", "INSTANCES", "RUNNING", "RETRYING", "FAILED", "PAUSED"]
        header += ["BACKLOG", "LAG", "NEXT ALARM"]
        _table(sys.stdout, header, [row.cells(now) for row in rows])
        print(f"\n{_count(instances, 'instance')}, {_count(len(letters), 'dead letter')}")
        sys.stdout.flush()

    async def run(storage: Storage, clock: Clock) -> int:
        await show(storage, clock)
        if watch is None:
            return EXIT_OK
        # Ctrl-C (or SIGTERM) ends watching between snapshots: a flag the loop looks at, not
        # a cancellation landing inside a storage call
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        handled: list[signal.Signals] = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, stop.set)
                handled.append(signum)
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(watch):
                        await stop.wait()
                if not stop.is_set():
                    await show(storage, clock)
        finally:
            for signum in handled:
                loop.remove_signal_handler(signum)
        return EXIT_OK

    if watch is None:
        return _with_storage(args, run)
    try:
        return _with_storage(args, run)
    except KeyboardInterrupt:  # where no signal handler can be set (Windows)
        return EXIT_OK


@attrs.define
class _JobRow:
    """One line of `status`: a job's instances (or its pool's events) at a glance."""

    job: str
    kind: JobKind
    instances: int = 0
    running: int = 0
    retrying: int = 0
    failed: int = 0
    paused: int = 0
    backlog: int = 0
    """
    Work due now that no worker has started: due instances, or a pool's queued events
    (not the delayed ones, which wait for their `not_before`).
    """
    oldest_due: datetime | None = None
    next_alarm: datetime | None = None
    pool: PoolCounts | None = None

    def add(self, record: InstanceRecord, now: datetime) -> None:
        if self.kind is JobKind.WORKER_POOL:  # its events are counted from `pool`
            self.paused += record.status is InstanceStatus.PAUSED
            return
        self.instances += 1
        if record.status is InstanceStatus.FAILED:
            self.failed += 1
            return
        if record.status is InstanceStatus.PAUSED:
            self.paused += 1
        if record.lease is not None:
            self.running += 1
        elif record.attempt > 1 or record.defects > 0:
            self.retrying += 1
        alarm = record.alarm_at
        if record.lease is not None or alarm is None:
            return
        if alarm <= now:
            self.backlog += 1
            self.oldest_due = alarm if self.oldest_due is None else min(self.oldest_due, alarm)
        else:
            self.next_alarm = alarm if self.next_alarm is None else min(self.next_alarm, alarm)

    def lag(self, now: datetime) -> timedelta | None:
        """How long the oldest due instance has waited for a worker (None: nothing is due)."""
        return None if self.oldest_due is None else now - self.oldest_due

    def cells(self, now: datetime) -> list[str]:
        counts = [self.instances, self.running, self.retrying, self.failed, self.paused]
        lag = self.lag(now)
        cells = [str(count) for count in counts]
        if self.pool is not None:
            cells[0] = "-"  # a pool has events, not instances
        return [
            self.job,
            self.kind.value,
            *cells,
            str(self.backlog),
            "-" if lag is None else _span_text(lag),
            "-" if self.next_alarm is None else self.next_alarm.isoformat(timespec="seconds"),
        ]

    def as_json(self, now: datetime) -> dict[str, object]:
        lag = self.lag(now)
        return {
            "job": self.job,
            "kind": self.kind.value,
            "instances": self.instances,
            "running": self.running,
            "retrying": self.retrying,
            "failed": self.failed,
            "paused": self.paused,
            "backlog": self.backlog,
            "lag_seconds": None if lag is None else lag.total_seconds(),
            "oldest_due_at": _time(self.oldest_due),
            "next_alarm_at": _time(self.next_alarm),
            "pool": None
            if self.pool is None
            else {
                "queued": self.pool.queued,
                "delayed": self.pool.delayed,
                "running": self.pool.running,
                "retrying": self.pool.retrying,
                "abandoned": self.pool.abandoned,
            },
        }


async def _status_rows(
    storage: Storage, records: Sequence[InstanceRecord], now: datetime
) -> list[_JobRow]:
    rows: dict[tuple[str, JobKind], _JobRow] = {}
    for record in records:
        key = record.key
        row = rows.get((key.job, key.kind))
        if row is None:
            row = rows[key.job, key.kind] = _JobRow(key.job, key.kind)
        row.add(record, now)
        if key.kind is JobKind.WORKER_POOL:
            counts = await storage.pool_counts(key, now=now)  # delayed events are not due
            row.pool = counts
            row.running += counts.running
            row.retrying += counts.retrying
            row.backlog += counts.queued
    return [rows[name] for name in sorted(rows, key=lambda k: (k[0], k[1].value))]


def _span_text(span: timedelta) -> str:
    seconds = max(int(span.total_seconds()), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
    return f"{seconds // 86400}d{seconds // 3600 % 24:02d}h"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _inspect(args: argparse.Namespace) -> int:
    job: str = args.job
    id: str = args.id

    async def run(storage: Storage, clock: Clock) -> int:
        record = await _admin.find_instance(storage, job, id)
        shown = _record_json(record)
        if record.key.kind is JobKind.WORKER_POOL:
            # a pool's events are not in its record: delayed ones wait for their not_before
            counts = await storage.pool_counts(record.key, now=clock.now())
            shown["events"] = {
                "queued": counts.queued,
                "delayed": counts.delayed,
                "running": counts.running,
                "retrying": counts.retrying,
                "abandoned": counts.abandoned,
            }
        _print_json(shown)
        return EXIT_OK

    return _with_storage(args, run)


def _letters_list(args: argparse.Namespace) -> int:
    job: str | None = args.job
    as_json: bool = args.json

    async def run(storage: Storage, clock: Clock) -> int:
        del clock
        letters = await storage.dead_letters(job)
        if as_json:
            _print_json({"dead_letters": [_letter_json(letter) for letter in letters]})
            return EXIT_OK
        table = [
            [
                letter.id,
                letter.key.job,
                letter.key.id,
                letter.reason,
                str(letter.attempts),
                letter.at.isoformat(timespec="seconds"),
                _shorten(letter.error),
            ]
            for letter in letters
        ]
        _table(sys.stdout, ["ID", "JOB", "INSTANCE", "REASON", "ATTEMPTS", "AT", "ERROR"], table)
        print(f"\n{_count(len(letters), 'dead letter')}")
        return EXIT_OK

    return _with_storage(args, run)


def _letters_show(args: argparse.Namespace) -> int:
    letter_id: str = args.letter_id

    async def run(storage: Storage, clock: Clock) -> int:
        del clock
        _print_json(_letter_json(await _admin.find_dead_letter(storage, letter_id)))
        return EXIT_OK

    return _with_storage(args, run)


async def _chosen_letters(storage: Storage, letter_id: str | None, job: str | None) -> list[str]:
    """The ids `LETTER_ID` or `--job JOB` name (a job without letters names none)."""
    if letter_id is not None:
        return [letter_id]
    return [letter.id for letter in await storage.dead_letters(job)]


def _letters_resume(args: argparse.Namespace) -> int:
    letter_id: str | None = args.letter_id
    job: str | None = args.job

    async def run(storage: Storage, clock: Clock) -> int:
        chosen = await _chosen_letters(storage, letter_id, job)
        refused = 0
        for one in chosen:
            try:
                result = await _admin.resume(storage, clock, one)
            except ConflictError as exc:
                if letter_id is not None:
                    raise
                refused += 1  # one refusal does not stop the others: it is reported
                _fail(f"durable-jobs: {one}: {exc}")
                continue
            key = result.key
            print(f"{result.action}: {key.kind.value} {key.job} {key.id}, due now; letter deleted")
        if job is not None:
            resumed = len(chosen) - refused
            print(f"resumed {_count(resumed, 'dead letter')} of {job}", end="")
            print(f", {refused} refused (conflict)" if refused else "")
        return EXIT_CONFLICT if refused else EXIT_OK

    return _with_storage(args, run)


def _letters_discard(args: argparse.Namespace) -> int:
    letter_id: str | None = args.letter_id
    job: str | None = args.job

    async def run(storage: Storage, clock: Clock) -> int:
        del clock
        chosen = await _chosen_letters(storage, letter_id, job)
        discarded = 0
        for one in chosen:
            try:
                await _admin.discard(storage, one)
            except DeadLetterNotFoundError:
                if letter_id is not None:
                    raise
                continue  # resumed or discarded by someone else meanwhile
            discarded += 1
            print(f"discarded {one}")
        if job is not None:
            print(f"discarded {_count(discarded, 'dead letter')} of {job}")
        return EXIT_OK

    return _with_storage(args, run)


def _prune(args: argparse.Namespace) -> int:
    letters_age = _duration("--dead-letters-older-than", args.dead_letters_older_than)
    failed_age = _duration("--failed-older-than", args.failed_older_than)
    if letters_age is None and failed_age is None:
        msg = "prune: give --dead-letters-older-than and/or --failed-older-than (keeps all)"
        raise UsageError(msg)

    async def run(storage: Storage, clock: Clock) -> int:
        now = clock.now()
        letters, instances = await _admin.prune(
            storage,
            letters_before=None if letters_age is None else now - letters_age,
            failed_before=None if failed_age is None else now - failed_age,
        )
        print(f"pruned {letters} dead letters and {instances} failed instances")
        return EXIT_OK

    return _with_storage(args, run)


def _duration(option: str, text: str | None) -> timedelta | None:
    if text is None:
        return None
    try:
        return to_timedelta(text, field=option)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _migrate(args: argparse.Namespace) -> int:
    async def run(storage: Storage, clock: Clock) -> int:
        del clock
        if not isinstance(storage, Migratable):
            msg = f"a {type(storage).__name__} has no schema to migrate"
            raise UsageError(msg)
        before, after = await storage.migrate()
        if before == after:
            print(f"schema version {after}: up to date")
        else:
            print(f"schema version {before} -> {after}: migrated")
        return EXIT_OK

    return _with_storage(args, run)


def _demo(args: argparse.Namespace) -> int:
    return demo_module.run(args)


# -- helpers --------------------------------------------------------------------------------


def _with_storage(
    args: argparse.Namespace, run: Callable[[Storage, Clock], Coroutine[None, None, int]]
) -> int:
    """Run `run` against the storage of `--app`, `--dsn`, or the SQLite file of `--db`."""
    app: str | None = args.app
    db: Path | None = args.db
    dsn: str | None = args.dsn
    storage: Storage
    clock: Clock
    if app is not None:
        engine = _load_engine(app)
        storage, clock = engine.storage, engine.clock
    elif dsn is not None:
        storage, clock = _postgres(dsn, args.schema), SystemClock()
    else:
        path = db if db is not None else Path(DEFAULT_DATABASE)
        if not path.is_file():
            msg = f"no database file at {str(path)!r} (give --db PATH or --app MODULE:ENGINE)"
            raise StorageError(msg)
        storage, clock = SqliteStorage(path), SystemClock()

    async def go() -> int:
        try:
            # an operator command never creates a database: a wrong --db, --dsn/--schema or
            # --app path must not silently show an empty one
            if isinstance(storage, Existing) and not await storage.exists():
                msg = f"no durable-jobs database at {_where(storage)} (check the path or name)"
                raise StorageError(msg)
            return await run(storage, clock)
        finally:
            await storage.close()

    return asyncio.run(go())


def _where(storage: Storage) -> str:
    if isinstance(storage, SqliteStorage):
        return f"SQLite file {str(storage.path)!r}"
    schema = getattr(storage, "schema", None)
    return f"PostgreSQL schema {schema!r}" if isinstance(schema, str) else type(storage).__name__


def _postgres(dsn: str, schema: str) -> Storage:
    try:
        from .postgres import PostgresStorage  # noqa: PLC0415 - psycopg is an optional extra
    except ImportError as exc:
        msg = f"--dsn needs the postgres extra (pip install 'durable-jobs[postgres]'): {exc}"
        raise UsageError(msg) from exc
    try:
        return PostgresStorage(dsn, schema=schema)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _load_engine(spec: str) -> Engine[object]:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        msg = f"expected MODULE:ENGINE (like myapp.jobs:engine), got {spec!r}"
        raise UsageError(msg)
    # the current directory is where users keep their app, as with other task runners
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        msg = f"cannot import module {module_name!r}: {exc}"
        raise UsageError(msg) from exc
    value: object = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            msg = f"module {module_name!r} has no attribute {attribute!r}"
            raise UsageError(msg)
        value = getattr(value, part)
    if not _is_engine(value):
        msg = f"{spec} is a {type(value).__name__}, not a durable_jobs.Engine"
        raise UsageError(msg)
    return value


def _is_engine(value: object) -> TypeGuard[Engine[object]]:
    # the CLI uses no deps-typed API of the engine, so any R will do
    return isinstance(value, Engine)


def _record_json(record: InstanceRecord) -> dict[str, object]:
    return {
        "kind": record.key.kind.value,
        "job": record.key.job,
        "id": record.key.id,
        "status": record.status.value,
        "state": record.state,
        "meta": record.meta,
        "alarm_at": _time(record.alarm_at),
        "running": record.lease is not None,
        # a stopped run (timed out, cancelled) whose sync callback still runs in a thread
        "abandoned": record.lease is not None and record.lease.abandoned,
        "attempt": record.attempt,
        "retry_started_at": _time(record.retry_started_at),
        "defects": record.defects,
        "last_error": record.last_error,
        "created_at": _time(record.created_at),
        "updated_at": _time(record.updated_at),
        # a row the storage could not fully parse: what, and where (state/meta show its text)
        "unreadable": record.unreadable,
    }


def _letter_json(letter: DeadLetter) -> dict[str, object]:
    return {
        "id": letter.id,
        "kind": letter.key.kind.value,
        "job": letter.key.job,
        "instance": letter.key.id,
        "reason": letter.reason,
        "attempts": letter.attempts,
        "at": _time(letter.at),
        "error": letter.error,
        "state": letter.state,
        "event": letter.event,
    }


def _time(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


def _print_json(value: dict[str, object]) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _shorten(text: str, width: int = 60) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def _table(out: TextIO, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [len(name) for name in header]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    for row in (header, *rows):
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        out.write("\n")


def _version() -> str:
    try:
        return importlib.metadata.version("durable-jobs")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a checkout
        return "unknown"


def _fail(message: str) -> None:
    print(message, file=sys.stderr)


def run() -> None:
    """Console-script entry point."""
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
