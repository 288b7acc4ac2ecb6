"""Every CLI command against a dead server: one line on stderr, exit 1, no traceback, no secret."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sessioncache.embedded import free_port

from .test_backup_cli import cli

SECRET = "cli-Pw-7f3a9c"

COMMANDS = [
    pytest.param(["demo"], id="demo"),
    pytest.param(["scripts", "load"], id="scripts-load"),
    pytest.param(["scripts", "check"], id="scripts-check"),
    pytest.param(["stats"], id="stats"),
    pytest.param(["stats", "--json"], id="stats-json"),
    pytest.param(["backup"], id="backup"),
    pytest.param(["backup", "--list"], id="backup-list"),
    pytest.param(["backup", "--incremental", "--events"], id="backup-incremental"),
    pytest.param(["restore", "20260101T000000Z-full"], id="restore"),
    pytest.param(["verify", "20260101T000000Z-full"], id="verify"),
    pytest.param(["export", "telegram:c:u", "-o", "{tmp}/out.json"], id="export"),
    pytest.param(["import", "{tmp}/in.json"], id="import"),
    pytest.param(["migrate", "20260101T000000Z-full", "--to", "json"], id="migrate"),
    pytest.param(["snapshot"], id="snapshot"),
]
PERSISTENCE = {"backup", "restore", "verify", "export", "import", "migrate", "snapshot"}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return cli(*args, key=None)


@pytest.fixture(scope="module")
def dead_url() -> str:
    """A URL with a password, on a loopback port nothing listens on."""
    return f"redis://bot:{SECRET}@127.0.0.1:{free_port()}/0?password={SECRET}"


@pytest.mark.parametrize("command", COMMANDS)
def test_a_dead_server_gives_one_line_and_a_failure_status(
    command: list[str], dead_url: str, tmp_path: Path
) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in command] + ["--url", dead_url]
    if command[0] in PERSISTENCE:
        args += ["--dir", str(tmp_path / "backups")]
    done = run_cli(*args)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"sessioncache {command[0]}: error: ")
    assert "127.0.0.1" in lines[0]  # it says what it could not reach
    assert SECRET not in done.stderr + done.stdout


def test_a_bad_url_gives_one_line_without_the_password() -> None:
    done = run_cli("scripts", "check", "--url", f"redsi://bot:{SECRET}@127.0.0.1:1")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "unsupported URL" in done.stderr and SECRET not in done.stderr


def test_scripts_list_needs_no_server(dead_url: str) -> None:
    done = run_cli("scripts", "list", "--url", dead_url)
    assert done.returncode == 0 and done.stderr == ""
    assert "create" in done.stdout
