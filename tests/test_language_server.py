"""
IDE completion on durable-jobs definitions, proven with a real language server.

`pyright-langserver --stdio` (the dev extra's pyright) is started on a temporary workspace
whose pyrightconfig.json puts this checkout's `src` on `extraPaths`. A tiny JSON-RPC
client below speaks LSP to it: it opens a jobs module written the way users write one and
asks for completions where a user would type a dot: `e.` inside the unannotated
`should_retry` and `on_error` lambdas (the error type `E` of `execute` must reach them),
`ctx.state.` and `ctx.deps.` inside `execute`, and `ctx.deps.` inside the `on_error`
lambda. Hover on the lambda's `e` must name the error type.

Each probe is its own document holding exactly one incomplete `x.`, so one hole cannot
disturb the parse around another.
"""

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


SRC = Path(__file__).resolve().parent.parent / "src"
LANGSERVER = Path(sys.executable).parent / "pyright-langserver"
TIMEOUT = 20.0  # seconds for any one answer, and for analysis to settle

# The jobs module. `{should_retry}`, `{on_error}`, `{state}`, `{deps}` and
# `{on_error_deps}` are filled with complete code, except the one being probed.
MODULE = """\
from typing import Protocol

import attrs

from durable_jobs import Backoff, Debounce, DebounceExecuteContext, Err, Ok, Result, Retry


@attrs.frozen
class Signup:
    email: str


@attrs.frozen
class Digest:
    recipients: tuple[str, ...]
    first_signup_at: float


class MailerDownError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"mailer answered {{status}}")
        self.status: int = status

    def is_transient(self) -> bool:
        return self.status >= 500


class Mailer(Protocol):
    @property
    def sender_address(self) -> str: ...

    def send_digest(self, to: tuple[str, ...]) -> bool: ...


async def send(ctx: DebounceExecuteContext[Digest, Mailer]) -> Result[None, MailerDownError]:
    recipients = {state}
    sent = {deps}
    return Ok(None) if sent else Err(MailerDownError(503))


digests = Debounce(
    name="digests",
    event=Signup,
    state=Digest,
    flush_after="1 minute",
    on_event=lambda ctx: Digest(
        (*(ctx.state.recipients if ctx.state else ()), ctx.event.email), 0.0
    ),
    execute=send,
    retry=Retry(
        max_attempts=5,
        delay=Backoff.exponential("1 second"),
        should_retry=lambda e: {should_retry},
    ),
    on_error=lambda e, ctx: {on_error},
)
"""

COMPLETE = {
    "should_retry": "e.is_transient()",
    "on_error": "print(e.status, {on_error_deps})",
    "on_error_deps": "ctx.deps.sender_address",
    "state": "ctx.state.recipients",
    "deps": "ctx.deps.send_digest(recipients)",
}


def module(hole: str | None = None) -> str:
    """The module with every placeholder complete, or with `hole` cut back to `<name>.`."""
    parts = dict(COMPLETE)
    if hole is not None:
        parts[hole] = PROBES[hole]
    parts["on_error"] = parts["on_error"].replace("{on_error_deps}", parts.pop("on_error_deps"))
    return MODULE.format(**parts)


# What a user has typed at each probe: the text ends at the cursor.
PROBES = {
    "should_retry": "e.",
    "on_error": "e.",
    "state": "ctx.state.",
    "deps": "ctx.deps.",
    "on_error_deps": "ctx.deps.",
}


def cursor(text: str, hole: str) -> dict[str, int]:
    """The LSP position right after the probe's dot."""
    anchor = {
        "should_retry": "should_retry=lambda e: e.",
        "on_error": "on_error=lambda e, ctx: e.",
        "state": "recipients = ctx.state.",
        "deps": "sent = ctx.deps.",
        "on_error_deps": "on_error=lambda e, ctx: print(e.status, ctx.deps.",
    }[hole]
    offset = text.index(anchor) + len(anchor)
    assert text.count(anchor) == 1
    line = text.count("\n", 0, offset)
    return {"line": line, "character": offset - (text.rfind("\n", 0, offset) + 1)}


class LanguageServer:
    """A minimal LSP client over stdio: Content-Length framed JSON-RPC 2.0."""

    def __init__(self, command: list[str], cwd: Path, log: Path) -> None:
        self._log = log.open("wb")
        self._process = subprocess.Popen(
            command,
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env={**os.environ, "PYTHONPATH": ""},
        )
        self._next_id = 0
        self._write_lock = threading.Lock()
        self._pending: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._pending_lock = threading.Lock()
        self.notifications: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read_forever, daemon=True)
        self._reader.start()

    # -- framing --------------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        assert self._process.stdin is not None
        with self._write_lock:
            self._process.stdin.write(f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            self._process.stdin.flush()

    def _read_message(self) -> dict[str, Any] | None:
        stdout = self._process.stdout
        assert stdout is not None
        length = None
        while True:
            header = stdout.readline()
            if not header:
                return None  # the server exited
            header = header.strip()
            if not header:
                break
            name, _, value = header.decode("ascii").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        assert length is not None, "an LSP message without Content-Length"
        message: dict[str, Any] = json.loads(stdout.read(length))
        return message

    def _read_forever(self) -> None:
        while (message := self._read_message()) is not None:
            if "method" in message and "id" in message:
                self._answer_server_request(message)
            elif "method" in message:
                self.notifications.put(message)
            else:
                with self._pending_lock:
                    waiter = self._pending.pop(message["id"], None)
                if waiter is not None:
                    waiter.put(message)

    def _answer_server_request(self, request: dict[str, Any]) -> None:
        result: Any = None
        if request["method"] == "workspace/configuration":
            # The interpreter whose site-packages hold attrs; analysis of open files only.
            settings = {
                "python": {"pythonPath": sys.executable},
                "python.analysis": {"diagnosticMode": "openFilesOnly"},
            }
            result = [
                settings.get(item.get("section", ""), {}) for item in request["params"]["items"]
            ]
        self._send({"id": request["id"], "result": result})

    # -- requests ---------------------------------------------------------------------------

    def request(self, method: str, params: Any, timeout: float = TIMEOUT) -> Any:
        self._next_id += 1
        waiter: queue.Queue[dict[str, Any]] = queue.Queue()
        with self._pending_lock:
            self._pending[self._next_id] = waiter
        self._send({"id": self._next_id, "method": method, "params": params})
        try:
            response = waiter.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no answer to {method} within {timeout} s") from None
        assert "error" not in response, f"{method} failed: {response['error']}"
        return response.get("result")

    def notify(self, method: str, params: Any) -> None:
        self._send({"method": method, "params": params})

    def close(self) -> None:
        """shutdown + exit, and kill the server if it does not leave."""
        try:
            if self._process.poll() is None:
                self.request("shutdown", None, timeout=5)
                self.notify("exit", None)
                self._process.wait(timeout=5)
        except (AssertionError, OSError, subprocess.TimeoutExpired):
            pass
        finally:
            if self._process.poll() is None:
                self._process.kill()
                self._process.wait(timeout=5)
            for stream in (self._process.stdin, self._process.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
            self._log.close()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lsp_workspace")
    config = {"extraPaths": [str(SRC)], "pythonVersion": "3.11", "typeCheckingMode": "strict"}
    if sys.prefix != sys.base_prefix:  # a venv: name it, as a project's config would
        config |= {"venvPath": str(Path(sys.prefix).parent), "venv": Path(sys.prefix).name}
    (root / "pyrightconfig.json").write_text(json.dumps(config))
    (root / "jobs.py").write_text(module())
    for hole in PROBES:
        (root / f"probe_{hole}.py").write_text(module(hole))
    return root


@pytest.fixture(scope="module")
def server(workspace: Path) -> Iterator[LanguageServer]:
    assert LANGSERVER.exists(), f"{LANGSERVER} missing: install the dev extra"
    lsp = LanguageServer([str(LANGSERVER), "--stdio"], workspace, workspace / "server.log")
    try:
        lsp.request(
            "initialize",
            {
                "processId": os.getpid(),
                "rootUri": workspace.as_uri(),
                "workspaceFolders": [{"uri": workspace.as_uri(), "name": "jobs"}],
                "capabilities": {
                    "workspace": {"configuration": True},
                    "textDocument": {
                        "completion": {"completionItem": {"snippetSupport": False}},
                        "hover": {"contentFormat": ["markdown", "plaintext"]},
                    },
                },
            },
            timeout=30,
        )
        lsp.notify("initialized", {})
        for path in sorted(workspace.glob("*.py")):
            lsp.notify(
                "textDocument/didOpen",
                {
                    "textDocument": {
                        "uri": path.as_uri(),
                        "languageId": "python",
                        "version": 1,
                        "text": path.read_text(),
                    }
                },
            )
        yield lsp
    finally:
        lsp.close()


def diagnostics_of(server: LanguageServer, uri: str) -> list[dict[str, Any]]:
    """The first diagnostics the server publishes for `uri` (others are set aside)."""
    deadline = time.monotonic() + TIMEOUT
    set_aside: list[dict[str, Any]] = []
    try:
        while (left := deadline - time.monotonic()) > 0:
            try:
                note = server.notifications.get(timeout=left)
            except queue.Empty:
                break
            if note["method"] == "textDocument/publishDiagnostics" and note["params"]["uri"] == uri:
                found: list[dict[str, Any]] = note["params"]["diagnostics"]
                return found
            set_aside.append(note)
    finally:
        for note in set_aside:
            server.notifications.put(note)
    raise AssertionError(f"no diagnostics published for {uri} within {TIMEOUT} s")


def completion_labels(server: LanguageServer, workspace: Path, hole: str) -> set[str]:
    """Labels offered at the probe's cursor, asked again until analysis has produced some."""
    path = workspace / f"probe_{hole}.py"
    position = cursor(path.read_text(), hole)
    deadline = time.monotonic() + TIMEOUT
    while True:
        result = server.request(
            "textDocument/completion",
            {"textDocument": {"uri": path.as_uri()}, "position": position},
        )
        items = (result or {}).get("items", []) if isinstance(result, dict) else result or []
        if items or time.monotonic() > deadline:
            return {item["label"] for item in items}
        time.sleep(0.2)


def test_the_module_type_checks_cleanly_in_the_server(
    server: LanguageServer, workspace: Path
) -> None:
    # Guards the probes below: durable_jobs and attrs resolve, and the complete module
    # has no errors even in strict mode.
    diagnostics = diagnostics_of(server, (workspace / "jobs.py").as_uri())
    assert [d for d in diagnostics if d.get("severity", 1) == 1] == []


@pytest.mark.parametrize("hole", ["should_retry", "on_error"])
def test_e_in_an_unannotated_lambda_completes_to_the_error_types_members(
    server: LanguageServer, workspace: Path, hole: str
) -> None:
    labels = completion_labels(server, workspace, hole)
    assert {"status", "is_transient", "args", "with_traceback"} <= labels, sorted(labels)


def test_ctx_state_in_execute_completes_to_the_state_fields(
    server: LanguageServer, workspace: Path
) -> None:
    labels = completion_labels(server, workspace, "state")
    assert {"recipients", "first_signup_at"} <= labels, sorted(labels)
    assert "status" not in labels


@pytest.mark.parametrize("hole", ["deps", "on_error_deps"])
def test_ctx_deps_completes_to_the_deps_protocol(
    server: LanguageServer, workspace: Path, hole: str
) -> None:
    labels = completion_labels(server, workspace, hole)
    assert {"sender_address", "send_digest"} <= labels, sorted(labels)


@pytest.mark.parametrize(
    ("anchor", "expected"),
    [
        ("should_retry=lambda ", "MailerDownError"),
        ("on_error=lambda ", "MailerDownError"),
        ("on_error=lambda e, ", "ErrorContext[Digest, Mailer]"),
    ],
)
def test_hover_on_a_lambda_parameter_names_its_inferred_type(
    server: LanguageServer, workspace: Path, anchor: str, expected: str
) -> None:
    path = workspace / "jobs.py"
    text = path.read_text()
    offset = text.index(anchor) + len(anchor)
    line = text.count("\n", 0, offset)
    character = offset - (text.rfind("\n", 0, offset) + 1)
    hover = server.request(
        "textDocument/hover",
        {
            "textDocument": {"uri": path.as_uri()},
            "position": {"line": line, "character": character},
        },
    )
    assert hover is not None
    contents = hover["contents"]
    shown = contents["value"] if isinstance(contents, dict) else json.dumps(contents)
    assert "(parameter)" in shown
    assert expected in shown, shown
