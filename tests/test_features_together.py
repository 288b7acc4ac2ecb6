"""State tracking and persistence together: transitions and events reach incremental backups."""

from __future__ import annotations

from pathlib import Path

import pytest

from sessioncache import EventType, initialize_sessions, shutdown_sessions
from sessioncache.system import SessionSystem

from .support.namespaces import drop_namespace, unique_namespace


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


@pytest.mark.parametrize("which", ["redis_url", "memory_url"])
async def test_backup_events_option_restores_the_event_history(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = request.getfixturevalue(which)
    kind = "MEMORY" if url.startswith("memory://") else "REDIS"
    system: SessionSystem = await initialize_sessions(
        storage_type=kind,
        storage_config={"url": url},
        namespace=unique_namespace(),
        backup_dir=str(tmp_path),
        backup_events=True,
    )
    try:
        a = await system.create_session("c1", "u1", "telegram")
        await system.transition(a.session_id, "active", reason="hello")
        await system.track_event(a.session_id, EventType.MESSAGE_RECEIVED, text="hi")
        full = await system.create_backup(description="full")
        await system.track_event(a.session_id, EventType.MESSAGE_SENT, text="hello back")
        await system.create_backup(incremental=True)
        expected = await system.get_events(a.session_id)
        assert [e.type for e in expected] == [
            "created",
            "state_changed",
            "message_received",
            "message_sent",
        ]
        without = await system.create_backup(events=False)  # the option is only a default
        assert [b.events for b in system.list_backups()] == [1, 1, 0]

        await system.delete_session(a.session_id)
        await system.track_event(
            (await system.create_session("c1", "u1", "telegram")).session_id,
            EventType.ERROR,
            text="new life",
        )
        report = await system.restore_backup(system.list_backups()[1].backup_id, "replace")
        assert report.chain[0] == full and (report.written, report.events) == (1, 1)
        assert await system.get_events(a.session_id) == expected
        report = await system.restore_backup(without, "replace")  # the wipe takes the stream
        assert (report.written, report.events) == (1, 0)
        assert await system.get_events(a.session_id) == []
    finally:
        await system.persistence.changes.disarm()
        await drop_namespace(system.store.client, system.store.keys.namespace)
        await shutdown_sessions()
