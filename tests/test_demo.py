"""`durable-jobs demo`: the scenario reaches its end on SQLite, live log and summary."""

import subprocess
import sys
from pathlib import Path

import pytest

from durable_jobs import demo


def test_demo_finishes_all_work(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    assert demo.main(["--quiet", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "all work done" in out
    assert "contacts delivered: 17 of 17" in out
    assert "batches given up:   umbrella (handled by on_error)" in out
    assert "dead letters:       0" in out
    assert db.exists()  # --db keeps the file


def test_demo_gives_up_when_the_time_runs_out(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--quiet", "--timeout", "0"]) == 1
    assert "NOT all work done" in capsys.readouterr().out


def test_the_console_command_prints_a_live_log() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "durable_jobs", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any("attempt 1 failed: SendError: HTTP 503; retry in" in line for line in lines)
    assert any("batch of 5 events done (max_events)" in line for line in lines)
    assert any("orders/order-17" in line and "-> shipped" in line for line in lines)
    assert any("rendered photo-8.jpg" in line for line in lines)
    assert "all work done" in lines
    assert done.stderr == ""
