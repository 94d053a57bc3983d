"""
What an editor shows, proven with a real language server: `pyright-langserver --stdio` is
asked for completions and hovers in a jobs module, as an IDE would ask.
"""

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


SRC = Path(__file__).resolve().parent.parent / "src"

MARK = re.compile(r"<(state|deps|retry|hover|error)>")
# `<state>` etc. mark where the editor's cursor is; they are removed from the text.
JOBS = """\
from typing import Protocol
import attrs
from durable_jobs import Debounce, DebounceExecuteContext, Engine, Err, Ok, Result, Retry

class MailError(Exception):
    def __init__(self, status: int, retry_after: float) -> None:
        self.status = status
        self.retry_after = retry_after

@attrs.frozen
class Digest:
    emails: tuple[str, ...]
    team_name: str

class Mailer(Protocol):
    def send_digest(self, to: str, emails: tuple[str, ...]) -> bool: ...

class HasMailer(Protocol):
    @property
    def mailer(self) -> Mailer: ...

def flush(ctx: DebounceExecuteContext[Digest, HasMailer]) -> Result[None, MailError]:
    ctx.state.<state>
    ctx.deps.<deps>
    return Ok(None)

job = Debounce(
    name="digests",
    event=Digest,
    flush_after="1 minute",
    execute=flush,
    retry=Retry(max_attempts=3, should_retry=lambda e: e.<retry>status >= 500),
    on_error=lambda <hover>e, ctx: print(e.<error>status),
)
"""


def _cursor(text: str) -> tuple[str, dict[str, tuple[int, int]]]:
    """The text without markers, and each marker's (line, character)."""
    marks: dict[str, tuple[int, int]] = {}
    lines: list[str] = []
    for number, line in enumerate(text.splitlines()):
        clean = line
        while (found := MARK.search(clean)) is not None:
            marks[found.group(1)] = (number, found.start())
            clean = clean[: found.start()] + clean[found.end() :]
        lines.append(clean)
    return "\n".join(lines) + "\n", marks


class LanguageServer:
    """A minimal LSP client over stdio (Content-Length framing, JSON-RPC 2.0)."""

    def __init__(self, root: Path) -> None:
        server = Path(sys.executable).parent / "pyright-langserver"
        self.process = subprocess.Popen(
            [str(server), "--stdio"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(SRC)},
        )
        self.next_id = 0
        self.root = root

    def send(self, message: dict[str, object]) -> None:
        assert self.process.stdin is not None
        body = json.dumps(message).encode()
        self.process.stdin.write(f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        self.process.stdin.flush()

    def receive(self) -> dict[str, object]:
        assert self.process.stdout is not None
        length = 0
        while True:
            header = self.process.stdout.readline()
            if not header:
                raise EOFError("the language server exited")
            if header in (b"\r\n", b"\n"):
                break
            name, _, value = header.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value.strip())
        message: dict[str, object] = json.loads(self.process.stdout.read(length))
        return message

    def request(self, method: str, params: dict[str, object]) -> object:
        self.next_id += 1
        ident = self.next_id
        self.send({"jsonrpc": "2.0", "id": ident, "method": method, "params": params})
        while True:
            message = self.receive()
            if message.get("id") == ident and "method" not in message:
                return message.get("result")
            if "method" in message and "id" in message:  # a request from the server
                self.send({"jsonrpc": "2.0", "id": message["id"], "result": None})

    def notify(self, method: str, params: dict[str, object]) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def close(self) -> None:
        try:
            self.request("shutdown", {})
            self.notify("exit", {})
            self.process.wait(timeout=10)
        except (EOFError, OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def editor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LanguageServer, str]]:
    root = tmp_path_factory.mktemp("workspace")
    config = {"pythonVersion": "3.11", "extraPaths": [str(SRC)], "typeCheckingMode": "strict"}
    (root / "pyrightconfig.json").write_text(json.dumps(config))
    text, _ = _cursor(JOBS)
    path = root / "jobs.py"
    path.write_text(text)
    server = LanguageServer(root)
    uri = path.as_uri()
    capabilities = {
        "textDocument": {
            "completion": {"completionItem": {"snippetSupport": False}},
            "hover": {"contentFormat": ["markdown", "plaintext"]},
        }
    }
    server.request(
        "initialize",
        {
            "processId": os.getpid(),
            "rootUri": root.as_uri(),
            "capabilities": capabilities,
            "initializationOptions": {},
        },
    )
    server.notify("initialized", {})
    server.notify(
        "textDocument/didOpen",
        {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": text}},
    )
    try:
        yield server, uri
    finally:
        server.close()


def _position(mark: str) -> dict[str, int]:
    line, character = _cursor(JOBS)[1][mark]
    return {"line": line, "character": character}


def _completions(editor: tuple[LanguageServer, str], mark: str) -> set[str]:
    server, uri = editor
    deadline = time.monotonic() + 30
    while True:  # the first answers may come before the analysis is done
        result = server.request(
            "textDocument/completion", {"textDocument": {"uri": uri}, "position": _position(mark)}
        )
        items = result.get("items", []) if isinstance(result, dict) else result or []
        labels = {str(item["label"]) for item in items if isinstance(item, dict)}
        if labels or time.monotonic() > deadline:
            return labels
        time.sleep(0.2)


def test_the_error_type_completes_inside_an_unannotated_on_error_lambda(
    editor: tuple[LanguageServer, str],
) -> None:
    assert {"status", "retry_after", "args", "with_traceback"} <= _completions(editor, "error")


def test_the_error_type_completes_inside_an_unannotated_should_retry_lambda(
    editor: tuple[LanguageServer, str],
) -> None:
    assert {"status", "retry_after"} <= _completions(editor, "retry")


def test_the_state_fields_complete_inside_execute(editor: tuple[LanguageServer, str]) -> None:
    assert {"emails", "team_name"} <= _completions(editor, "state")


def test_the_dependencies_complete_inside_execute(editor: tuple[LanguageServer, str]) -> None:
    assert "mailer" in _completions(editor, "deps")


def test_hover_on_the_lambda_parameter_shows_the_error_type(
    editor: tuple[LanguageServer, str],
) -> None:
    server, uri = editor
    result = server.request(
        "textDocument/hover", {"textDocument": {"uri": uri}, "position": _position("hover")}
    )
    assert isinstance(result, dict)
    contents = result["contents"]
    shown = contents["value"] if isinstance(contents, dict) else str(contents)
    assert "e: MailError" in shown
