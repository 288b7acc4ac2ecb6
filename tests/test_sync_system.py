"""The cross-channel scenario through SessionSystem: Telegram -> link Discord -> continue."""

from __future__ import annotations

import pytest

from sessioncache.errors import ScopeError, ValidationError
from sessioncache.system import SessionSystem

from .support.namespaces import unique_namespace


def _kind(url: str) -> str:
    if url.startswith("memory://"):
        return "MEMORY"
    return "CLUSTER" if "cluster" in url or url.count(",") else "REDIS"


async def _open(url: str, **options: object) -> SessionSystem:
    return await SessionSystem.open(
        _kind(url), {"url": url}, namespace=unique_namespace(), health_interval=None,
        sync_shared_fields=["topic"], **options,
    )


@pytest.mark.parametrize("mode", ["auto", "manual"])
async def test_telegram_then_discord(backend_url: str, mode: str) -> None:
    system = await _open(backend_url, sync_mode=mode)
    try:
        tg = await system.scoped_session(123, 123, "telegram")
        await system.update_session(tg.session_id, {"topic": "Oslo trip", "draft": "x"})
        code = await system.start_link("telegram", 123)
        await system.confirm_link("discord", 987, code)
        dc = await system.scoped_session(987, 987, "discord")
        assert dc.data == {"topic": "Oslo trip"}  # shared context, not the private field
        await system.update_session(dc.session_id, {"topic": "Bergen trip"})
        if mode == "manual":
            assert (await system.get_session(tg.session_id)).data["topic"] == "Oslo trip"
            await system.sync_sessions(dc.session_id)
        assert (await system.get_session(tg.session_id)).data["topic"] == "Bergen trip"
        history = await system.sync_history(session_id=tg.session_id)
        assert [h.op for h in history] == ["update", "create"]
        assert await system.unlink("discord", 987)
        await system.update_session(dc.session_id, {"topic": "alone"})
        await system.sync_sessions(dc.session_id)
        assert (await system.get_session(tg.session_id)).data["topic"] == "Bergen trip"
        assert (await system.get_session(dc.session_id)).data["topic"] == "alone"
    finally:
        await system.shutdown()


async def test_person_scope_and_chat_scope(memory_url: str) -> None:
    system = await _open(memory_url, session_scope="person")
    try:
        code = await system.start_link("telegram", 1)
        await system.confirm_link("discord", 2, code)
        a = await system.scoped_session(1, 1, "telegram")
        b = await system.scoped_session(2, 2, "discord")
        assert a.session_id == b.session_id  # one unified session for the person
        c = await system.scoped_session(3, 3, "telegram")  # unlinked: its own
        assert c.session_id != a.session_id
    finally:
        await system.shutdown()
    system = await _open(memory_url, session_scope="chat")
    try:
        with pytest.raises(ScopeError, match="direct message"):
            await system.scoped_session("inbox", "alice", "web")
        g1 = await system.scoped_session(-5, "alice", "telegram", chat_type="group")
        g2 = await system.scoped_session(-5, "bob", "telegram", chat_type="group")
        assert g1.session_id == g2.session_id
    finally:
        await system.shutdown()
    with pytest.raises(ValidationError, match="session_scope"):
        await _open(memory_url, session_scope="everyone")
    with pytest.raises(ValidationError, match="sync_strategy"):
        await _open(memory_url, sync_strategy="newest")


@pytest.mark.parametrize("mode", ["delayed", "batch"])
async def test_delayed_and_batch_modes(backend_url: str, mode: str) -> None:
    system = await _open(backend_url, sync_mode=mode, sync_delay=60.0)
    try:
        code = await system.start_link("telegram", 1)
        await system.confirm_link("discord", 2, code)
        tg = await system.scoped_session(1, 1, "telegram")
        dc = await system.scoped_session(2, 2, "discord")
        await system.update_session(tg.session_id, {"topic": "a"})
        await system.update_session(tg.session_id, {"topic": "b"})
        assert "topic" not in (await system.get_session(dc.session_id)).data
        if mode == "delayed":
            await system.sync.flush()  # what shutdown() does; the timer would after 60 s
        else:
            assert await system.sync_job.run_once() == 1  # one pending session, once per fleet
        assert (await system.get_session(dc.session_id)).data["topic"] == "b"
        assert [h.op for h in await system.sync_history(session_id=dc.session_id)] == ["update"]
    finally:
        await system.shutdown()


@pytest.mark.parametrize("which", ["redis_url", "memory_url"])
async def test_near_cache_sees_synced_writes(request: pytest.FixtureRequest, which: str) -> None:
    url = str(request.getfixturevalue(which))
    system = await _open(url, near_cache=True)
    try:
        code = await system.start_link("telegram", 1)
        await system.confirm_link("discord", 2, code)
        tg = await system.scoped_session(1, 1, "telegram")
        dc = await system.scoped_session(2, 2, "discord")
        assert "topic" not in (await system.get_session(dc.session_id)).data  # now cached
        await system.update_session(tg.session_id, {"topic": "synced"})
        assert (await system.get_session(dc.session_id)).data["topic"] == "synced"
    finally:
        await system.shutdown()
