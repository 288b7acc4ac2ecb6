"""The command line: script management against a real server, and the demo."""

from __future__ import annotations

import pytest

from sessioncache.cli import main
from sessioncache.embedded import EmbeddedRedis


def test_scripts_check_load_list(capsys: pytest.CaptureFixture[str]) -> None:
    with EmbeddedRedis() as server:
        assert main(["scripts", "check", "--url", server.url]) == 1
        assert "MISSING create" in capsys.readouterr().out.replace("  ", " ").replace("  ", " ")
        assert main(["scripts", "load", "--url", server.url]) == 0
        assert "loaded" in capsys.readouterr().out
        assert main(["scripts", "check", "--url", server.url]) == 0
        assert "MISSING" not in capsys.readouterr().out
    assert main(["scripts", "list"]) == 0
    listed = capsys.readouterr().out
    assert "update" in listed and "create" in listed


def test_demo_runs_on_the_embedded_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "refused   stale write" in out and "user_1 has 2 sessions" in out
    assert "state     active (version 3)" in out and "cannot move from 'active' to 'new'" in out
