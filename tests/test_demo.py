"""`durable-jobs demo`: the scenario reaches its end on SQLite, live log and summary."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from durable_jobs import demo


CHECKS = [
    "[ok] webhooks: failed finally and handled by on_error: umbrella",
    "[ok] orders: order-17 went placed -> paid -> shipped; finished",
    "[ok] report: ran 4 of 4 times; terminated itself",
    "[ok] thumbnails: 10 of 10 rendered, 0 pending; first to start: cover.jpg;"
    " albums in order: yes",
    "[ok] dead letters: 0",
    "all work done",
]


def test_demo_finishes_all_work(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    assert demo.main(["--quiet", "--db", str(db)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    for line in CHECKS:
        assert line in lines
    # Usually 4 batches, but a slow machine may split an account's trickle into two windows.
    delivered = re.search(
        r"^\[ok\] webhooks: 17 of 17 contacts delivered in (\d) batches;", out, re.M
    )
    assert delivered is not None, out
    batches = int(delivered.group(1))
    # every batch is refused twice (retries), the broken account's once (a final failure)
    runs, retries = 3 * batches + 1, 2 * batches
    assert re.search(rf"^webhooks +debounce +{runs} +{retries} +1$", out, re.MULTILINE), out
    assert re.search(r"^report +continuous +4 +0 +0$", out, re.MULTILINE), out
    assert re.search(r"^thumbnails +worker_pool +10 +0 +0$", out, re.MULTILINE), out
    assert "attempt 1 failed" not in out  # --quiet: no live log
    assert f"the database is kept: durable-jobs status --db {db}" in out
    assert err == ""
    assert db.exists()


def test_demo_wants_a_new_database_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    db.write_bytes(b"someone's data")
    assert demo.main(["--quiet", "--db", str(db)]) == 2
    assert "exists; give a new path to --db" in capsys.readouterr().err
    assert db.read_bytes() == b"someone's data"


def test_demo_says_what_is_missing_when_the_time_runs_out(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert demo.main(["--quiet", "--timeout", "0"]) == 1
    out, err = capsys.readouterr()
    assert "NOT all work done" in out.splitlines()
    assert "[!!] report: ran 1 of 4 times; scheduled" in out.splitlines()
    assert err.startswith("durable-jobs demo: not done within 0 s: ")


def test_the_console_command_prints_a_live_log() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "durable_jobs", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()

    def logged(pattern: str) -> bool:
        return any(re.fullmatch(r" *\d+\.\d\ds  " + pattern, line) for line in lines)

    assert logged(r"demo +4 jobs on (?P<db>.+demo\.db)")
    assert logged(r"webhooks +hooli +attempt 1 failed: SendError: HTTP 503 -> retry in \d+ ms")
    assert logged(r"webhooks +hooli +sent batch of 5 \(max_events\) on attempt 3")
    assert logged(r"webhooks +acme +sent batch of \d \(flush_after\) on attempt 3")
    assert logged(r"webhooks +umbrella +attempt 1 failed: SendError: HTTP 410 -> final .*")
    assert logged(r"webhooks +umbrella +on_error: HTTP 410, dropped 1 contact\(s\)")
    assert logged(r"orders +order-17 +placed -> paid \(shipping in 200 ms\)")
    assert logged(r"orders +order-17 +alarm: paid -> shipped")
    assert logged(r"orders +order-17 +terminated \(delivered\)")
    assert logged(r"report +daily +terminated \(enough reports\)")
    assert logged(r"thumbnails +- +rendered cover\.jpg \(priority 10, queued last\)")
    for line in CHECKS:
        assert line in lines
    # the temporary folder and its database are gone
    first = re.search(r"4 jobs on (.+demo\.db)$", lines[0])
    assert first is not None
    assert not Path(first.group(1)).exists()
    assert "the temporary database was deleted" in lines[-1]
