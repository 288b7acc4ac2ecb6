"""The integration examples run end to end: three worker processes each, no network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(150)  # three worker processes started by the example; it allows them 120 s
@pytest.mark.parametrize("example", ["aiogram_workers.py", "telegram_workers.py"])
def test_example_runs(example: str, redis_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / example), "--url", redis_url,
         "--users", "3", "--notes", "30"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "OK"
    assert "notes stored: 30 of 30" in lines
    assert sum("handled" in line for line in lines) == 3
    assert sum(line.startswith("user ") and "steps by workers" in line for line in lines) == 3


def test_example_uses_its_own_server_without_url() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "telegram_workers.py"),
         "--users", "1", "--notes", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "OK"
