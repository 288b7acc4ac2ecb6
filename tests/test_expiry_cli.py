"""The expiry command line: a sweep (dry run and real, JSON), archive list and restore."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from sessioncache.cli import main
from sessioncache.system import SessionSystem

from .support.namespaces import unique_namespace

RULES = '[[rule]]\nname = "idle"\npolicy = "idle"\nafter = 0.2\naction = "archive"\n'


async def _prepare(url: str, ns: str, rules: Path) -> list[str]:
    system = await SessionSystem.start(
        "REDIS", {"url": url}, namespace=ns, expiry_rules=rules, expiry_interval=3600.0
    )
    try:
        sids = [(await system.create_session(f"c{i}", "u")).session_id for i in range(3)]
        info = await system.get_expiry_info(sids[-1])
        assert info is not None and info.deadline_ms is not None
        while await system.expiry._now() < info.deadline_ms:
            await asyncio.sleep(0.02)
        return sids
    finally:
        await system.shutdown()


def test_expire_and_archive_commands(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ns = unique_namespace()
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    sids = asyncio.run(_prepare(redis_url, ns, rules))
    common = ["--url", redis_url, "--namespace", ns]
    assert main(["expire", *common, "--rules", str(rules), "--dry-run", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["dry_run"] and dry["actions"] == {"archive": 3}
    assert main(["expire", *common, "--rules", str(rules)]) == 0
    assert "applied: archive 3" in capsys.readouterr().out
    assert main(["archive", "list", *common, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(a["session_id"] for a in listed) == sorted(sids)
    assert main(["archive", "restore", sids[0], *common]) == 0
    assert json.loads(capsys.readouterr().out)["restored"] == sids[0]
    assert main(["archive", "restore", sids[0], *common]) == 1
    assert "error: no archived session" in capsys.readouterr().err
    rules.write_text(RULES.replace("after = 0.2", "after = -1"))
    assert main(["expire", *common, "--rules", str(rules)]) == 1
    assert "rule 0 ('idle'), field 'after'" in capsys.readouterr().err
