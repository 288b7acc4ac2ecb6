"""Every CLI command: --url defaulting to $SESSIONCACHE_URL, --json on each that reads, progress
lines on long runs, and JSON from the persistence and expiry commands against a real Redis."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from sessioncache.cli import build_parser, main
from sessioncache.storage import URL_ENV
from sessioncache.system import SessionSystem

from .support.namespaces import drop_namespace, unique_namespace

# Commands that only write (their result line is an id or a path) or act on a server process.
WRITES = {"sessions delete", "export", "import", "migrate", "snapshot"}


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every leaf command: "health", "sessions list", ..."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                children = _commands(sub)
                if children:
                    found.update({f"{name} {child}": p for child, p in children.items()})
                else:
                    found[name] = sub
    return found


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in parser._actions if flag in a.option_strings), None)


def test_every_command_takes_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(URL_ENV, "redis://fleet.example:6390/0")
    commands = _commands(build_parser())
    assert {"demo", "health", "expire", "archive", "backup", "restore", "verify"} <= set(commands)
    assert {"sessions list", "server status", "scripts"} <= set(commands)
    for name, parser in commands.items():
        url = _option(parser, "--url")
        assert url is not None, f"{name} has no --url"
        assert url.default == "redis://fleet.example:6390/0", name


def test_every_reading_command_has_json() -> None:
    for name, parser in _commands(build_parser()).items():
        if name not in WRITES:
            assert _option(parser, "--json") is not None, f"{name} has no --json"


async def _idle_sessions(url: str, ns: str, rules: list[dict[str, object]], n: int) -> None:
    system = await SessionSystem.open(
        "REDIS", {"url": url}, namespace=ns, expiry_rules=rules, health_interval=None
    )
    try:
        sids = [(await system.create_session(f"c{i}", "u")).session_id for i in range(n)]
        info = await system.get_expiry_info(sids[-1])
        assert info is not None and info.deadline_ms is not None
        while await system.expiry._now() < info.deadline_ms:
            await asyncio.sleep(0.02)
    finally:
        await system.shutdown()


def test_expire_uses_the_environment_url_and_draws_progress(
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ns = unique_namespace()
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\npolicy = "idle"\nafter = 0.1\naction = "delete"\n')
    asyncio.run(
        _idle_sessions(redis_url, ns, [{"policy": "idle", "after": 0.1, "action": "delete"}], 5)
    )
    monkeypatch.setenv(URL_ENV, redis_url)
    assert main(["expire", "--namespace", ns, "--rules", str(rules), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["actions"] == {"delete": 5}
    assert "expire: 5 sessions" in captured.err
    assert main(["archive", "list", "--namespace", ns, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_persistence_commands_print_json(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ns = unique_namespace()

    async def seed() -> None:
        system = await SessionSystem.open(
            "REDIS", {"url": redis_url}, namespace=ns, health_interval=None
        )
        try:
            for i in range(3):
                await system.create_session(f"c{i}", "u", "telegram")
        finally:
            await system.shutdown()

    asyncio.run(seed())
    common = ["--url", redis_url, "--namespace", ns, "--dir", str(tmp_path), "--json"]
    try:
        assert main(["backup", *common]) == 0
        backup_id = json.loads(capsys.readouterr().out)["backup_id"]
        assert main(["backup", "--list", *common]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert [(b["backup_id"], b["sessions"]) for b in listed] == [(backup_id, 3)]
        assert main(["verify", backup_id, *common]) == 0
        verified = json.loads(capsys.readouterr().out)
        assert verified["ok"] is True and verified["sessions"] == 3
        assert main(["restore", backup_id, *common]) == 0
        captured = capsys.readouterr()
        assert json.loads(captured.out)["written"] + json.loads(captured.out)["kept"] == 3
        assert "sessions" in captured.err  # the progress line
    finally:

        async def drop() -> None:
            system = await SessionSystem.open(
                "REDIS", {"url": redis_url}, namespace=ns, health_interval=None
            )
            try:
                await drop_namespace(system.store.client, ns)
            finally:
                await system.shutdown()

        asyncio.run(drop())


def test_a_bad_env_url_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(URL_ENV, "nosuch://host")
    for argv in (["expire", "--rules", "x.toml"], ["archive", "list"], ["stats"]):
        assert main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"sessioncache {argv[0]}: error:"), err
