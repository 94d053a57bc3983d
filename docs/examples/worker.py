"""A worker in your own process: `async with engine:` on the default SQLite storage."""

import asyncio
import os
import tempfile

from getting_started import Digest, Signup, collect, outbox, send_digest

from durable_jobs import Debounce, Engine


# The getting-started digest with a 100 ms window, so that this example ends quickly.
digests = Debounce(
    name="digests",
    event=Signup,
    state=Digest,
    flush_after="100 ms",
    on_event=collect,
    execute=send_digest,
)


async def main() -> None:
    engine = Engine(jobs=[digests])  # storage: SqliteStorage("durable_jobs.db")
    async with engine:  # runs the worker until the block exits
        client = engine.client.debounce(digests)
        added = await client.add("team-7", Signup("a@example.com"))
        print("the batch flushes at", added.will_flush_at)
        await client.add("team-7", Signup("b@example.com"))
        assert added.batch_id is not None
        async with asyncio.timeout(5):  # the worker flushes the batch after 100 ms
            await client.wait_flushed("team-7", added.batch_id)
    await engine.storage.close()
    assert outbox == [("a@example.com", "b@example.com")]


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)  # the default storage is ./durable_jobs.db
        asyncio.run(main())
    print("mailed", outbox)
