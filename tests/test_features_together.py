"""State tracking and persistence together: transitions and events reach incremental backups."""

from __future__ import annotations

from pathlib import Path

import pytest

from sessioncache import EventType, initialize_sessions, shutdown_sessions
from sessioncache.system import SessionSystem

from .conftest import drop_namespace, unique_namespace


@pytest.mark.parametrize("which", ["redis_url", "memory_url"])
async def test_a_chain_restore_keeps_transitions_and_event_counts(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = request.getfixturevalue(which)
    kind = "MEMORY" if url.startswith("memory://") else "REDIS"
    ns = unique_namespace()
    system: SessionSystem = await initialize_sessions(
        storage_type=kind, storage_config={"url": url}, namespace=ns, backup_dir=str(tmp_path)
    )
    try:
        a = await system.create_session("c1", "u1", "telegram")
        b = await system.create_session("c2", "u1", "discord")
        await system.create_backup(description="full")
        await system.transition(a.session_id, "active")
        await system.track_event(b.session_id, EventType.MESSAGE_RECEIVED, text="hi")
        await system.create_backup(description="incremental", incremental=True)
        expected = {s.session_id: s for s in await system.list_user_sessions("u1")}
        assert expected[a.session_id].state == "active"
        assert expected[b.session_id].message_count == 1

        await system.delete_session(a.session_id)
        await system.update_session(b.session_id, data={"later": True})
        last = system.list_backups()[-1]
        report = await system.restore_backup(last.backup_id, strategy="replace")
        assert report is not None
        restored = {s.session_id: s for s in await system.list_user_sessions("u1")}
        assert restored.keys() == expected.keys()
        for sid, session in expected.items():
            got = restored[sid]
            assert (got.state, got.version, got.message_count, got.data) == (
                session.state,
                session.version,
                session.message_count,
                session.data,
            )
    finally:
        await drop_namespace(system.store.client, ns)
        await shutdown_sessions()
