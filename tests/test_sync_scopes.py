"""session_scope on every entry path that resolves a session for a chat and user, and one
version per logical write of shared fields (memory://, a real Redis and a real Cluster)."""

from __future__ import annotations

import pytest

from sessioncache.errors import ScopeError, SessionExists
from sessioncache.origin import (
    create_session,
    get_or_create_session,
    initialize_sessions,
    list_user_sessions,
    shutdown_sessions,
    update_session,
)
from sessioncache.scopes import SCOPES
from sessioncache.system import SessionSystem

from .support.namespaces import unique_namespace


def _kind(url: str) -> str:
    if url.startswith("memory://"):
        return "MEMORY"
    return "CLUSTER" if "cluster" in url or url.count(",") else "REDIS"


def _options(url: str, **options: object) -> dict[str, object]:
    return {"storage_type": _kind(url), "storage_config": {"url": url},
            "namespace": unique_namespace(), "health_interval": None, **options}


async def _open(url: str, **options: object) -> SessionSystem:
    return await SessionSystem.open(**_options(url, **options))  # type: ignore[arg-type]


async def _link(system: SessionSystem, a: tuple[str, int], b: tuple[str, int]) -> str:
    return await system.confirm_link(*b, await system.start_link(*a))


async def test_person_scope_unlinked_starter_linking_again_gets_a_new_session(
    backend_url: str,
) -> None:
    """The starter of a person (its id) unlinks and links a new identity: the two share a new
    person's session, never the old person's, which its remaining identities keep."""
    system = await _open(backend_url, session_scope="person")
    try:
        old = await _link(system, ("telegram", 1), ("discord", 2))
        await _link(system, ("telegram", 1), ("slack", 3))
        kept = await system.get_or_create_session(2, 2, "discord")
        await system.update_session(kept.session_id, {"who": "old person"})
        assert await system.unlink("telegram", 1)
        new = await _link(system, ("telegram", 1), ("web", 4))
        assert new != old
        tg = await system.get_or_create_session(1, 1, "telegram")
        web = await system.get_or_create_session(4, 4, "web")
        assert tg.session_id == web.session_id != kept.session_id and tg.data == {}
        slack = await system.get_or_create_session(3, 3, "slack")
        assert slack.session_id == kept.session_id and slack.data == {"who": "old person"}
    finally:
        await system.shutdown()


async def test_person_scope_on_every_entry_path(backend_url: str) -> None:
    options = _options(backend_url, session_scope="person", sync_shared_fields=["topic"])
    system = await initialize_sessions(**options)  # type: ignore[arg-type]
    try:
        person = await _link(system, ("telegram", 1), ("discord", 2))
        tg = await system.get_or_create_session(1, 1, "telegram")
        dc = await system.get_or_create_session(2, 2, "discord", thread_id=9)
        via_module = await get_or_create_session(1, 1, "telegram", thread_id=4)
        via_alias = await system.scoped_session(2, 2, "discord")
        assert tg.session_id == dc.session_id == via_module.session_id == via_alias.session_id
        assert person == "telegram:1" and tg.session_id == "person:telegram%3A1:telegram%3A1"
        with pytest.raises(SessionExists):  # the person's one session exists already
            await create_session(2, 2, "discord")
        with pytest.raises(SessionExists):
            await system.create_session(1, 1, "telegram")
        await update_session(tg.session_id, {"topic": "Oslo"})
        assert (await system.get_or_create_session(2, 2, "discord")).data == {"topic": "Oslo"}
        # Another person (unlinked, or linked to someone else) never lands in it.
        other = await system.get_or_create_session(1, 5, "telegram")
        await _link(system, ("telegram", 6), ("discord", 7))
        third = await system.create_session(6, 7, "discord")
        assert len({tg.session_id, other.session_id, third.session_id}) == 3
        # Unlinking gives the identity its own session again; the person's stays as it was.
        assert await system.unlink("discord", 2)
        alone = await system.get_or_create_session(2, 2, "discord")
        assert alone.session_id != tg.session_id and alone.data == {}
        assert (await system.get_session(tg.session_id)).data == {"topic": "Oslo"}
    finally:
        await shutdown_sessions()


async def test_person_scope_lists_the_unified_session(backend_url: str) -> None:
    """list_user_sessions() of any of a linked person's identities finds the person's one
    session; an unlinked identity, or another person, does not."""
    options = _options(backend_url, session_scope="person")
    system = await initialize_sessions(**options)  # type: ignore[arg-type]
    try:
        await _link(system, ("telegram", 1), ("discord", 2))
        await _link(system, ("telegram", 3), ("kiosk", 4))  # a platform of the app's own
        unified = (await system.get_or_create_session(2, 2, "discord")).session_id
        other = (await system.get_or_create_session(3, 3, "telegram")).session_id
        lone = (await system.get_or_create_session(5, 5, "telegram")).session_id

        async def ids(user: int, platform: str | None = None) -> list[str]:
            return [s.session_id for s in await system.list_user_sessions(
                user, platform=platform)]

        assert await ids(1) == await ids(2) == [unified]
        assert await ids(1, "telegram") == await ids(2, "discord") == [unified]
        assert [s.session_id for s in await list_user_sessions(2)] == [unified]
        assert await ids(2, "telegram") == []  # telegram:2 is nobody
        assert await ids(3) == [other] and await ids(5) == [lone]
        # A platform of the app's own is looked up when named (or when the user has a
        # session on it): the built-in ones are tried without it.
        assert await ids(4) == [] and await ids(4, "kiosk") == [other]
        # Unlinked: the identity's own sessions only. A person left with one identity is
        # dissolved, so nobody lists its session any more; its user id (the person id) does.
        assert await system.unlink("discord", 2)
        alone = (await system.get_or_create_session(2, 2, "discord")).session_id
        assert await ids(2) == [alone] and await ids(1) == []
        assert [s.session_id for s in await system.list_user_sessions("telegram:1")] == [
            unified]
    finally:
        await shutdown_sessions()


async def test_chat_scope_refuses_direct_messages_everywhere(backend_url: str) -> None:
    options = _options(backend_url, session_scope="chat")
    system = await initialize_sessions(**options)  # type: ignore[arg-type]
    try:
        calls = [
            lambda: system.get_or_create_session("inbox", "alice", "web"),
            lambda: system.create_session("inbox", "bob", "web"),
            lambda: system.scoped_session("inbox", "alice", "web"),
            lambda: get_or_create_session("inbox", "alice", "web"),
            lambda: create_session("inbox", "bob", "web", chat_type="private"),
        ]
        for call in calls:
            with pytest.raises(ScopeError, match="different people's messages"):
                await call()
        assert await system.count_sessions() == 0  # refused before anything was written
        g1 = await get_or_create_session(-5, "alice", "telegram", chat_type="group")
        g2 = await system.get_or_create_session(-5, "bob", "telegram", chat_type="group")
        assert g1.session_id == g2.session_id
        with pytest.raises(SessionExists):
            await system.create_session(-5, "carol", "telegram", chat_type="group")
    finally:
        await shutdown_sessions()


@pytest.mark.parametrize("scope", SCOPES)
async def test_no_scope_mixes_two_peoples_direct_messages(backend_url: str, scope: str) -> None:
    """Alice and Bob write to the same inbox chat id (a web widget, a bot's single inbox),
    linked or not: each gets a session of their own, or the call is refused."""
    system = await _open(backend_url, session_scope=scope, sync_shared_fields=["topic"])
    try:
        await _link(system, ("web", "alice"), ("telegram", 11))  # Alice has two channels
        seen = {}
        for user, platform in [("alice", "web"), ("bob", "web"), ("carol", "telegram")]:
            for call in (system.get_or_create_session, system.scoped_session):
                try:
                    session = await call("inbox", user, platform)
                except ScopeError:
                    assert scope == "chat"
                    continue
                await system.update_session(session.session_id, {"topic": f"{user}'s"})
                seen.setdefault(user, set()).add(session.session_id)
        if scope == "chat":
            assert seen == {}
            return
        assert all(len(ids) == 1 for ids in seen.values())
        ids = [next(iter(v)) for v in seen.values()]
        assert len(set(ids)) == 3  # three people, three sessions
        for user, (sid,) in seen.items():
            assert (await system.get_session(sid)).data == {"topic": f"{user}'s"}
    finally:
        await system.shutdown()


async def test_default_scope_new_linked_session_takes_shared_fields(backend_url: str) -> None:
    system = await _open(backend_url, sync_shared_fields=["topic"], sync_mode="manual")
    try:
        tg = await system.get_or_create_session(1, 1, "telegram")
        await system.update_session(tg.session_id, {"topic": "Oslo", "draft": "x"})
        await _link(system, ("telegram", 1), ("discord", 2))
        dc = await system.create_session(2, 2, "discord")
        assert dc.data == {"topic": "Oslo"}  # the create op, on create_session too
        thread = await system.get_or_create_session(2, 2, "discord", thread_id=3)
        assert thread.data == {"topic": "Oslo"}
    finally:
        await system.shutdown()


@pytest.mark.parametrize("mode", ["auto", "manual"])
async def test_one_write_one_version(backend_url: str, mode: str) -> None:
    system = await _open(backend_url, sync_shared_fields=["topic"], sync_mode=mode)
    try:
        await _link(system, ("telegram", 1), ("discord", 2))
        tg = await system.get_or_create_session(1, 1, "telegram")
        dc = await system.get_or_create_session(2, 2, "discord")
        for i in range(3):
            written = await system.update_session(
                tg.session_id, {"topic": f"t{i}", "draft": i}, {"seen": i})
            assert written.version == tg.version + 1 + i  # shared and other fields: one step
            assert (await system.get_session(tg.session_id)).version == written.version
        if mode == "manual":
            assert (await system.get_session(dc.session_id)).version == dc.version
            await system.sync_sessions(tg.session_id)
            expected = dc.version + 1
        else:
            expected = dc.version + 3  # one version per synced write
        got = await system.get_session(dc.session_id)
        assert (got.version, got.data) == (expected, {"topic": "t2"})
        plain = await system.update_session(tg.session_id, {"draft": "only"})
        assert plain.version == written.version + 1
        deleted = await system.update_session(tg.session_id, delete=["topic", "draft"])
        assert deleted.version == plain.version + 1 and deleted.data == {}
    finally:
        await system.shutdown()
