"""sessioncache link ... and conflicts ... against a real Redis."""

from __future__ import annotations

import asyncio
import json

import pytest

from sessioncache.cli import main
from sessioncache.identity_links import IdentityLinks
from sessioncache.store import SessionStore
from sessioncache.sync import SyncConfig, SyncManager

from .support.namespaces import drop_namespace, unique_namespace


def test_link_and_conflicts_cli(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    ns = unique_namespace()
    opts = ["--url", redis_url, "--namespace", ns, "--json"]
    assert main(["link", "start", "telegram", "123", *opts]) == 0
    code = json.loads(capsys.readouterr().out)["code"]
    assert main(["link", "confirm", "discord", "987", "WRONG1-WRONGWRO", *opts]) == 1
    assert "nothing was linked" in capsys.readouterr().err
    assert main(["link", "confirm", "discord", "987", code, *opts]) == 0
    assert json.loads(capsys.readouterr().out)["identities"] == ["discord:987", "telegram:123"]
    assert main(["link", "list", "telegram", "123", *opts]) == 0
    assert json.loads(capsys.readouterr().out) == ["discord:987", "telegram:123"]

    async def conflict() -> None:
        store = await SessionStore.connect(redis_url, namespace=ns)
        try:
            sync = SyncManager(store, IdentityLinks(store.client, store.keys),
                               SyncConfig(shared_fields=["topic"], strategy="manual",
                                          mode="manual"))
            tg = (await store.create(123, 123, "telegram")).session_id
            dc = (await store.create(987, 987, "discord")).session_id
            await sync.write(tg, {"topic": "tg"})
            await sync.write(dc, {"topic": "dc"})
            await sync.sync_sessions(tg)
        finally:
            await store.close()

    asyncio.run(conflict())
    assert main(["conflicts", "list", *opts]) == 0
    [c] = json.loads(capsys.readouterr().out)
    assert (c["stored"], c["incoming"]) == ("dc", "tg")
    assert main(["conflicts", "resolve", c["conflict_id"], "--choose", "stored", *opts]) == 0
    capsys.readouterr()
    assert main(["conflicts", "list", *opts]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["link", "remove", "discord", "987", *opts]) == 0
    assert main(["link", "remove", "discord", "987", *opts]) == 1

    async def cleanup() -> None:
        store = await SessionStore.connect(redis_url, namespace=ns)
        try:
            assert (await store.get("telegram:123:123")).data["topic"] == "dc"
            await drop_namespace(store.client, ns)
        finally:
            await store.close()

    asyncio.run(cleanup())
