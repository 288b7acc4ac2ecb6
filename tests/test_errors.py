"""The error hierarchy: every class in errors.py and exported; each failure gets its own class."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import sessioncache
from sessioncache import (
    BackendUnavailable,
    LeaseBusy,
    ScriptError,
    SessionCacheError,
    SessionStore,
    TableConflict,
    TransitionTable,
    VersionConflict,
    errors,
)
from sessioncache.lease import Lease
from sessioncache.persistence import Persistence

from .support.tracker_helpers import new_tracker


def test_every_exception_class_lives_in_errors_and_is_exported() -> None:
    package = Path(sessioncache.__file__).parent
    defined_elsewhere = []
    for path in package.rglob("*.py"):
        if path.name == "errors.py":
            continue
        text = path.read_text(encoding="utf-8")
        for line in text.splitlines():
            # (A private class never escapes its module: tracking.py's RESP error value.)
            named = "Error" in line or "Exception" in line
            if line.startswith("class ") and not line.startswith("class _") and named:
                defined_elsewhere.append(f"{path.name}: {line}")
    assert defined_elsewhere == []
    classes = [
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, Exception) and obj.__module__ == errors.__name__
    ]
    assert len(classes) >= 12
    for cls in classes:
        assert issubclass(cls, SessionCacheError)
        assert getattr(sessioncache, cls.__name__) is cls
        assert cls.__name__ in sessioncache.__all__


async def test_a_lua_error_is_a_script_error_not_an_outage(store: SessionStore) -> None:
    s = await store.create(1, "u1", "web")
    # Something outside sessioncache overwrote the session's hash with a string: the script's
    # HGET fails inside Lua. That is not an outage, and retrying cannot help.
    await store.client.set(s.session_key, "not a hash")
    with pytest.raises(ScriptError) as info:
        await store.update(s.session_id, data={"a": 1})
    assert not isinstance(info.value, BackendUnavailable)
    assert info.value.script == "update" and "WRONGTYPE" in str(info.value)
    assert await store.client.get(s.session_key) == b"not a hash"


async def test_lease_contention_is_lease_busy_not_an_outage(
    store: SessionStore, tmp_path: Path
) -> None:
    await store.create(1, "u1", "web")
    other = Lease(store.client, store.keys.lease("backup"), ttl=30)
    assert await other.acquire()
    try:
        p = Persistence(store, backup_dir=tmp_path, lease_wait=0.05)
        with pytest.raises(LeaseBusy) as info:
            await p.create_backup()
        assert not isinstance(info.value, BackendUnavailable)
        assert info.value.key == store.keys.lease("backup")
        assert p.list_backups() == []
    finally:
        await other.release()


async def test_losing_the_table_cas_is_a_table_conflict(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = await new_tracker(store)
    assert tracker.table.version == 1

    async def stale_read() -> None:
        # As if another process published between each of our reads and our write.
        return None

    monkeypatch.setattr(tracker.transitions, "load_table", stale_read)
    with pytest.raises(TableConflict) as info:
        await tracker.publish_table(TransitionTable(allowed={"new": ["closed"]}))
    assert not isinstance(info.value, VersionConflict)
    assert (info.value.expected, info.value.actual) == (0, 1)
    assert "transition table" in str(info.value) and store.keys.namespace not in str(info.value)
