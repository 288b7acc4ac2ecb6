"""The state machine: table enforced by transition.lua, versions, guards, hooks, shared table."""

from __future__ import annotations

import pytest

from sessioncache import (
    GuardRejected,
    InvalidTransition,
    SessionNotFound,
    TransitionTable,
    ValidationError,
    VersionConflict,
)
from sessioncache.models import Session
from sessioncache.states import DEFAULT_ALLOWED
from sessioncache.store import SessionStore
from sessioncache.tracker import StateTracker, TrackerConfig

from .support.tracker_helpers import new_tracker, snapshot


async def test_lifecycle_path_versions_and_events(store: SessionStore) -> None:
    tracker = await new_tracker(store)
    store = tracker.store
    s = await store.create(1, "u1", "telegram")
    path = ["active", "waiting_input", "active", "idle", "closed"]
    for i, state in enumerate(path, start=2):
        s = await tracker.transition(s.session_id, state, reason=f"step {i}")
        assert (s.state, s.version) == (state, i)
    events = await tracker.get_events(s.session_id)
    assert [e.type for e in events] == ["created"] + ["state_changed"] * 5
    changes = events[1:]
    assert [(e.from_state, e.state, e.version) for e in changes] == list(
        zip(["new", *path[:-1]], path, range(2, 7), strict=True)
    )
    assert changes[0].reason == "step 2"
    stored = await store.get(s.session_id)
    assert (stored.state, stored.version) == ("closed", 6)


async def test_illegal_move_names_current_and_allowed_and_writes_nothing(
    store: SessionStore,
) -> None:
    tracker = await new_tracker(store)
    store = tracker.store
    s = await store.create(1, "u1", "telegram")
    before = await snapshot(tracker, s.session_id)
    with pytest.raises(InvalidTransition) as info:
        await tracker.transition(s.session_id, "archived")
    assert info.value.current == "new" and info.value.target == "archived"
    assert info.value.allowed == sorted(DEFAULT_ALLOWED["new"])
    assert "allowed targets: active, closed, expired" in str(info.value)
    assert await snapshot(tracker, s.session_id) == before


async def test_bad_input_raises_and_writes_nothing(store: SessionStore) -> None:
    tracker = await new_tracker(store)
    store = tracker.store
    s = await store.create(1, "u1", "telegram")
    before = await snapshot(tracker, s.session_id)
    with pytest.raises(ValidationError, match="unknown state 'flying'"):
        await tracker.transition(s.session_id, "flying")
    with pytest.raises(ValidationError, match="to_state must match"):
        await tracker.transition(s.session_id, "Active; DROP")
    with pytest.raises(ValidationError, match="reason"):
        await tracker.transition(s.session_id, "active", reason="x" * 300)
    with pytest.raises(ValidationError, match="expected_version"):
        await tracker.transition(s.session_id, "active", expected_version="1")  # type: ignore[arg-type]
    with pytest.raises(VersionConflict) as conflict:
        await tracker.transition(s.session_id, "active", expected_version=7)
    assert (conflict.value.expected, conflict.value.actual) == (7, 1)
    with pytest.raises(ValidationError):
        await tracker.transition("not a session id", "active")
    assert await snapshot(tracker, s.session_id) == before
    with pytest.raises(SessionNotFound):
        await tracker.transition("telegram:9:nobody", "active")
    ghost = tracker.keys.events(store.identity(9, "nobody", "telegram"))
    assert await store.client.exists(ghost) == 0


async def test_expected_version_applies_when_it_matches(store: SessionStore) -> None:
    tracker = await new_tracker(store)
    store = tracker.store
    s = await store.create("c", "u", "web")
    s = await tracker.transition(s.session_id, "active", expected_version=1)
    assert s.version == 2
    with pytest.raises(VersionConflict):
        await tracker.transition(s.session_id, "idle", expected_version=1)
    assert (await store.get(s.session_id)).state == "active"


async def test_retried_transition_applies_once(store: SessionStore) -> None:
    tracker = await new_tracker(store)
    store = tracker.store
    s = await store.create("c", "u", "web")
    _, keys, _ = tracker.events.locate(s.session_id)
    table = tracker.table
    args = store.op_args(["active", "", "", table.script_arg("web", "active", 1000, 60000)])
    script = store.scripts.transition
    first = await script(store.client, [keys[0], keys[2], keys[3], keys[5], keys[6]], args)
    again = await script(store.client, [keys[0], keys[2], keys[3], keys[5], keys[6]], args)
    assert (first[0], again[0]) == (1, 2)
    stored = await store.get(s.session_id)
    assert (stored.state, stored.version) == ("active", 2)
    assert await store.client.xlen(keys[2]) == 2  # created + one state change
    assert (await tracker.get_statistics()).transitions == {"new>active": 1}


async def test_platform_override(store: SessionStore) -> None:
    table = TransitionTable(platforms={"discord": {"new": ["closed"]}})
    tracker = await new_tracker(store, table=table)
    store = tracker.store
    d = await store.create(1, "u", "discord")
    t = await store.create(1, "u", "telegram")
    with pytest.raises(InvalidTransition) as info:
        await tracker.transition(d.session_id, "active")
    assert info.value.allowed == ["closed"]
    assert (await tracker.transition(t.session_id, "active")).state == "active"
    assert (await tracker.transition(d.session_id, "closed")).state == "closed"


async def test_table_is_shared_and_versioned(store: SessionStore) -> None:
    first = await new_tracker(store)
    store = first.store
    assert first.table.version == 1
    strict_rules = TrackerConfig(table=TransitionTable(allowed={"new": ["closed"]}))
    second = StateTracker(first.store, strict_rules)
    # The fleet's stored table wins over a process's configured default.
    assert (await second.start()).version == 1 and second.table.same_rules(first.table)
    strict = await second.publish_table(TransitionTable(allowed={"new": ["closed"]}))
    assert strict.version == 2
    assert (await first.load_table()) == strict
    s = await store.create(1, "u", "web")
    with pytest.raises(InvalidTransition):
        await first.transition(s.session_id, "active")
    events = await first.get_events(s.session_id)
    closed = await first.transition(s.session_id, "closed")
    assert closed.state == "closed" and len(events) == 1
    again = await first.publish_table(strict)
    assert again.version == 2  # same rules: no new version


async def test_guards_and_hooks(store: SessionStore) -> None:
    tracker = await new_tracker(store)
    store = tracker.store
    seen: list[tuple[str, str, str, int]] = []

    def allow_if_paid(session: Session, source: str, target: str) -> bool:
        return bool(session.data.get("paid"))

    async def on_enter(session: Session, source: str, target: str) -> None:
        seen.append(("enter", source, target, session.version))

    def on_exit(session: Session, source: str, target: str) -> None:
        seen.append(("exit", source, target, session.version))

    def broken(session: Session, source: str, target: str) -> None:
        raise RuntimeError("hook bug")

    tracker.hooks.add_guard(allow_if_paid, to_state="active")
    tracker.hooks.on_enter("active", on_enter)
    tracker.hooks.on_exit("new", on_exit)
    tracker.hooks.on_enter("active", broken)
    s = await store.create(1, "u", "web")
    before = await snapshot(tracker, s.session_id)
    with pytest.raises(GuardRejected) as info:
        await tracker.transition(s.session_id, "active")
    assert isinstance(info.value, InvalidTransition) and "guard refused" in str(info.value)
    assert await snapshot(tracker, s.session_id) == before and seen == []
    await store.update(s.session_id, data={"paid": True})
    s = await tracker.transition(s.session_id, "active")
    assert s.state == "active" and s.version == 3
    assert seen == [("exit", "new", "active", 3), ("enter", "new", "active", 3)]
    assert tracker.get_performance_metrics()["hook"]["errors"] == 1
    with pytest.raises(InvalidTransition):
        await tracker.transition(s.session_id, "new")


async def test_system_options_reach_the_tracker(memory_url: str) -> None:
    from sessioncache import initialize_sessions, shutdown_sessions

    with pytest.raises(ValidationError, match="TrackerConfig"):
        await initialize_sessions("MEMORY", {"url": memory_url}, tracker={"event_max_len": 5})
    with pytest.raises(ValidationError, match="event_max_len"):
        TrackerConfig(event_max_len=0)
    table = TransitionTable(allowed={"new": ["closed"]})
    system = await initialize_sessions(
        "MEMORY", {"url": memory_url}, tracker=TrackerConfig(table=table, event_max_len=50)
    )
    try:
        s = await system.create_session("c", "u")
        with pytest.raises(InvalidTransition):
            await system.transition(s.session_id, "active")
        assert (await system.transition(s.session_id, "closed")).state == "closed"
        assert system.tracker.table.version == 1 and system.tracker.config.event_max_len == 50
    finally:
        await shutdown_sessions()


def test_table_validation() -> None:
    with pytest.raises(ValidationError):
        TransitionTable(allowed={"new": "active"})
    with pytest.raises(ValidationError):
        TransitionTable(allowed={"New": ["active"]})
    with pytest.raises(ValidationError):
        TransitionTable(platforms={"Bad Platform": {}})
    with pytest.raises(ValidationError, match="malformed"):
        TransitionTable.from_json("{}")
    table = TransitionTable(platforms={"discord": {"new": ["closed"]}}, version=3)
    assert TransitionTable.from_json(table.to_json()) == table
    assert table.sources("discord", "active") == {"idle", "waiting_input", "suspended", "archived"}
    assert table.sources("web", "active") == {"new", *table.sources("discord", "active")}
    assert table.script_arg("discord", "closed", 10, 20) == (
        b"discord 3 10 20 ,archived,closed,expired, "
        b",active,archived,expired,idle,new,suspended,waiting_input,"
    )


async def test_guard_retries_when_another_writer_gets_in_between(store: SessionStore) -> None:
    tracker = await new_tracker(store)
    store = tracker.store
    s = await store.create(1, "u", "web")
    calls: list[int] = []

    async def racing_guard(session: Session, source: str, target: str) -> bool:
        calls.append(session.version)
        if len(calls) == 1:
            # Another process writes after this guard read the session.
            await store.update(session.session_id, data={"other": "writer"})
        return True

    tracker.hooks.add_guard(racing_guard, to_state="active", from_state="new")
    done = await tracker.transition(s.session_id, "active")
    assert calls == [1, 2] and (done.version, done.state) == (3, "active")
    assert done.data == {"other": "writer"}
    with pytest.raises(ValidationError):
        await tracker.transition(s.session_id, "idle", expected_version="3")  # type: ignore[arg-type]

    async def always_racing(session: Session, source: str, target: str) -> bool:
        await store.update(session.session_id, data={"n": session.version})
        return True

    # A writer after every guard read: after 3 attempts the conflict reaches the caller.
    tracker.hooks.add_guard(always_racing, to_state="idle")
    with pytest.raises(VersionConflict):
        await tracker.transition(s.session_id, "idle")
    assert (await store.get(s.session_id)).state == "active"
