"""The facade and the origin document's module-level API, on memory, a real Redis and a Cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sessioncache import (
    Platform,
    SessionCacheError,
    ValidationError,
    create_session,
    delete_session,
    get_session,
    initialize_sessions,
    shutdown_sessions,
    update_session,
)
from sessioncache.backends import forget_memory_server
from sessioncache.system import SessionSystem

from .support.namespaces import drop_namespace, unique_namespace


@pytest.fixture(autouse=True)
async def _no_leftover_system() -> AsyncIterator[None]:
    forget_memory_server("default")
    yield
    await shutdown_sessions()
    forget_memory_server("default")


async def test_origin_basic_usage_runs_as_written() -> None:
    manager = await initialize_sessions()
    session = await create_session(chat_id="chat_1", user_id="user_1", platform=Platform.TELEGRAM)
    assert isinstance(manager, SessionSystem)
    assert session.session_id == "telegram:chat_1:user_1" and session.version == 1
    updated = await update_session(session.session_id, data={"step": 2})
    assert updated.data == {"step": 2}
    fetched = await get_session(session.session_id)
    assert fetched is not None and fetched.data == {"step": 2}
    assert await delete_session(session.session_id) is True
    assert await get_session(session.session_id) is None
    await shutdown_sessions()
    with pytest.raises(SessionCacheError, match="initialize_sessions"):
        await create_session(chat_id="c", user_id="u")


@pytest.mark.parametrize(
    ("storage_type", "fixture"),
    [("REDIS", "redis_url"), pytest.param("CLUSTER", "cluster_url", marks=pytest.mark.cluster)],
)
async def test_same_calls_on_a_real_server(
    storage_type: str, fixture: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(fixture).replace("+cluster", "")
    ns = unique_namespace()
    system = await initialize_sessions(
        storage_type=storage_type, storage_config={"url": url, "socket_timeout": 3.0}, namespace=ns
    )
    try:
        assert system.store.is_cluster == (storage_type == "CLUSTER")
        session = await create_session(
            chat_id="chat_1", user_id="user_1", platform=Platform.TELEGRAM
        )
        session = await update_session(session.session_id, data={"a": 1}, expected_version=1)
        assert session.version == 2
        again = await system.get_or_create_session("chat_1", "user_1", Platform.TELEGRAM)
        assert again.session_id == session.session_id and again.data == {"a": 1}
        await system.touch_session(session.session_id, messages=2)
        assert [s.message_count for s in await system.list_user_sessions("user_1")] == [2]
        assert await system.count_sessions() == 1
        health = await system.health_check()
        assert health["healthy"] is True and health["missing_scripts"] == []
    finally:
        await drop_namespace(system.store.client, ns)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"storage_type": "SQLITE"}, "storage_type"),
        ({"colour": "blue"}, "unknown option"),
        (
            {"storage_type": "REDIS", "storage_config": {"url": "redis://x", "sockettimeout": 1}},
            "sockettimeout",
        ),
        ({"storage_type": "REDIS", "storage_config": {"url": "http://x"}}, "unsupported URL"),
        (
            {"storage_type": "REDIS", "storage_config": {"url": "redis://x", "socket_timeout": 0}},
            "socket_timeout",
        ),
        ({"storage_type": "MEMORY", "storage_config": {"url": "redis://x"}}, "memory://"),
        ({"namespace": "bad{ns}"}, "namespace"),
        ({"enable_all_features": "yes"}, "bool"),
    ],
)
async def test_bad_options_raise_before_connecting(kwargs: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValidationError, match=message):
        await initialize_sessions(**kwargs)


async def test_unreachable_server_raises_backend_unavailable() -> None:
    from sessioncache import BackendUnavailable
    from sessioncache.embedded import free_port

    with pytest.raises(BackendUnavailable, match="cannot use Redis"):
        await initialize_sessions(
            storage_type="REDIS",
            storage_config={"url": f"redis://:secret@127.0.0.1:{free_port()}", "retries": 0},
        )


async def test_memory_backends_are_shared_by_name() -> None:
    a = await SessionSystem.open("MEMORY", {"name": "shared-test"})
    b = await SessionSystem.open("MEMORY", {"name": "shared-test"})
    c = await SessionSystem.open("MEMORY", {"name": "other-test"})
    try:
        s = await a.create_session("c", "u", Platform.WEB)
        assert await b.get_session(s.session_id) is not None
        assert await c.get_session(s.session_id) is None
    finally:
        for system in (a, b, c):
            await system.store.client.flushall()
            await system.shutdown()


async def test_enable_all_features_with_a_backup_dir(tmp_path: Path) -> None:
    system = await initialize_sessions(enable_all_features=True, backup_dir=str(tmp_path))
    s = await system.create_session("c", "u", Platform.TELEGRAM)
    await system.transition(s.session_id, "active")
    backup_id = await system.create_backup(description="all features")
    report = await system.verify_backup(backup_id)
    assert (report.ok, report.sessions, report.error) == (True, 1, None)
    assert [b.backup_id for b in system.list_backups()] == [backup_id]
