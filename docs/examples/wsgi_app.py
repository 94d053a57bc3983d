"""A plain WSGI app (no async anywhere) enqueues work from its request threads."""

import asyncio
import tempfile
import threading
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

import attrs

from durable_jobs import (
    Engine,
    Ok,
    SqliteStorage,
    SyncClient,
    WorkerPool,
    WorkerPoolContext,
)


@attrs.frozen
class Thumbnail:
    image: str


made: list[str] = []


def make_thumbnail(ctx: WorkerPoolContext[Thumbnail]) -> Ok[None]:
    made.append(ctx.event.image)
    return Ok(None)


thumbnails = WorkerPool(name="thumbnails", event=Thumbnail, concurrency=4, execute=make_thumbnail)


def web_app(db: Path) -> "WebApp":
    # one SyncClient for the whole process: every request thread shares it
    return WebApp(SyncClient(jobs=[thumbnails], storage=SqliteStorage(db)))


class WebApp:
    def __init__(self, jobs: SyncClient) -> None:
        self.jobs = jobs

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        image = environ["PATH_INFO"].removeprefix("/upload/")
        queued = self.jobs.worker_pool(thumbnails).enqueue(Thumbnail(image))  # no await
        start_response("202 Accepted", [("Content-Type", "text/plain")])
        return [queued.event_id.encode()]


class ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


queued: list[str] = []


def upload(port: int, image: str) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/upload/{image}", timeout=10) as reply:
        assert reply.status == 202
        queued.append(reply.read().decode())


async def run_worker(db: Path) -> None:
    # the worker is another process in production (`durable-jobs worker ...`)
    engine = Engine(jobs=[thumbnails], storage=SqliteStorage(db))
    async with engine, asyncio.timeout(5):
        for event_id in queued:
            await engine.client.worker_pool(thumbnails).wait(event_id)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "jobs.db"
        server = make_server("127.0.0.1", 0, web_app(db), ThreadingServer, QuietHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_address[1]
        # eight clients upload at once; each request runs in a thread of its own
        clients = [threading.Thread(target=upload, args=(port, f"{n}.png")) for n in range(8)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(timeout=10)
        server.shutdown()
        asyncio.run(run_worker(db))
    assert sorted(made) == sorted(f"{n}.png" for n in range(8))


if __name__ == "__main__":
    main()
    print("8 uploads from 8 request threads, 8 thumbnails:", ", ".join(sorted(made)))
