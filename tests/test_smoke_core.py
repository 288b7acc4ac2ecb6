"""Core operations behave the same on every backend."""

from __future__ import annotations

import pytest

from sessioncache import SessionExists, SessionNotFound, VersionConflict
from sessioncache.store import SessionStore


async def test_create_get_update_delete(store: SessionStore) -> None:
    s = await store.create(42, "u1", "telegram", data={"a": 1}, metadata={"lang": "en"})
    assert (s.version, s.data, s.metadata, s.state) == (1, {"a": 1}, {"lang": "en"}, "new")
    with pytest.raises(SessionExists):
        await store.create(42, "u1", "telegram")
    got = await store.get(s.session_id)
    assert got.data == {"a": 1} and got.chat_id == "42"
    upd = await store.update(s.session_id, data={"b": "x"}, expected_version=1)
    assert upd.version == 2 and upd.data == {"a": 1, "b": "x"}
    with pytest.raises(VersionConflict) as info:
        await store.update(s.session_id, data={"c": 1}, expected_version=1)
    assert (info.value.expected, info.value.actual) == (1, 2)
    assert await store.delete(s.session_id) is True
    with pytest.raises(SessionNotFound):
        await store.get(s.session_id)
    assert await store.count() == 0
