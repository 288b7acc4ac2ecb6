"""SessionStore behaviour, run on a real Redis, memory:// and a real local Cluster."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from sessioncache import (
    Limits,
    Platform,
    SessionExists,
    SessionNotFound,
    SessionStore,
    ValidationError,
    VersionConflict,
)
from sessioncache.store import DEFAULT_TTL

from .support.namespaces import drop_namespace, unique_namespace


async def snapshot(store: SessionStore) -> dict[bytes, Any]:
    """Every key of the store's namespace with its contents, to prove nothing changed."""
    out: dict[bytes, Any] = {}
    async for key in store.client.scan_iter(match=f"{store.keys.namespace}:*", count=1000):
        if await store.client.type(key) == b"zset":  # an op log (lua/lib/ops.lua)
            out[key] = await store.client.zrange(key, 0, -1, withscores=True)
        else:
            out[key] = await store.client.hgetall(key)
    return out


async def test_get_or_create_races_end_with_one_session(store: SessionStore) -> None:
    results = await asyncio.gather(
        *(store.get_or_create("c1", "u1", "discord", data={"n": i}) for i in range(20))
    )
    assert {s.session_id for s in results} == {"discord:c1:u1"}
    assert {s.version for s in results} == {1}
    assert len({s.data["n"] for s in results}) == 1  # every caller saw the winner's data
    assert await store.count() == 1


async def test_update_merges_deletes_and_keeps_other_fields(store: SessionStore) -> None:
    s = await store.create("c", "u", "slack", data={"a": 1, "b": 2}, metadata={"m": 1})
    s = await store.update(s.session_id, data={"b": 3, "c": [1, 2]}, metadata={"n": 2})
    assert s.data == {"a": 1, "b": 3, "c": [1, 2]} and s.metadata == {"m": 1, "n": 2}
    s = await store.update(s.session_id, delete=["a"], delete_metadata=["m"], priority=5)
    assert s.data == {"b": 3, "c": [1, 2]} and s.metadata == {"n": 2} and s.priority == 5
    assert s.version == 3 and s.updated_at >= s.created_at


async def test_field_level_operations(store: SessionStore) -> None:
    s = await store.create("c", "u", Platform.WHATSAPP)
    assert await store.set_field(s.session_id, "v", {"x": 1}) == 2  # "v" is also a core field
    assert await store.set_fields(s.session_id, {"~t": b"\x00\xff", "@m": None}) == 3
    assert await store.get_field(s.session_id, "v") == {"x": 1}
    assert await store.get_fields(s.session_id, ["~t", "@m", "absent"]) == {
        "~t": b"\x00\xff",
        "@m": None,
    }
    assert await store.get_field(s.session_id, "absent", "dflt") == "dflt"
    with pytest.raises(KeyError):
        await store.get_field(s.session_id, "absent")
    assert await store.delete_field(s.session_id, "v") == 4
    got = await store.get(s.session_id)
    assert got.data == {"~t": b"\x00\xff", "@m": None} and got.version == 4 and got.metadata == {}


async def test_touch_counts_messages_and_refreshes_ttl(store: SessionStore) -> None:
    s = await store.create(1, 2, "telegram")
    before = await store.client.pttl(s.session_key)
    assert 0 < before <= DEFAULT_TTL * 1000
    expires = await store.touch(s.session_id, messages=3)
    await store.touch(s.session_id)
    got = await store.get(s.session_id)
    assert got.message_count == 3 and got.version == 1  # activity is not a content change
    assert got.last_activity >= s.last_activity and expires >= s.expires_at
    assert abs((got.expires_at - got.last_activity).total_seconds() - DEFAULT_TTL) < 0.01
    assert await store.client.pttl(store.keys.user_index(store.identity(1, 2, "x").user_tag)) > 0


async def test_custom_ttl_survives_updates_and_touch_can_change_it(store: SessionStore) -> None:
    s = await store.create("c", "u", "telegram", ttl=30)
    await store.update(s.session_id, data={"x": 1})
    assert 0 < await store.client.pttl(s.session_key) <= 30_000
    await store.touch(s.session_id, ttl=60)
    await store.update(s.session_id, data={"x": 2})
    assert 30_000 < await store.client.pttl(s.session_key) <= 60_000


async def test_sessions_expire_by_ttl_and_leave_the_user_index(store: SessionStore) -> None:
    keep = await store.create("keep", "u", "telegram")
    gone = await store.create("gone", "u", "telegram", ttl=30)
    assert 0 < await store.client.pttl(gone.session_key) <= 30_000
    # Expire it now (a key past its TTL): no script runs, as with a real expiry.
    await store.client.pexpire(gone.session_key, 0)
    with pytest.raises(SessionNotFound):
        await store.get(gone.session_id)
    assert [s.session_id for s in await store.list_user_sessions("u")] == [keep.session_id]
    index = store.keys.user_index(keep.session_id.split(":")[2])
    assert await store.client.hkeys(index) == [b"telegram:keep"]


async def test_list_user_sessions_across_platforms(store: SessionStore) -> None:
    await store.create("1", "alice", "telegram")
    await store.create("2", "alice", "discord", thread_id="t")
    await store.create("3", "bob", "slack")
    listed = await store.list_user_sessions("alice")
    assert sorted(s.session_id for s in listed) == ["discord:2:alice:t", "telegram:1:alice"]
    assert await store.list_user_sessions("nobody") == []
    assert await store.count() == 3
    assert await store.delete("discord:2:alice:t") is True
    assert await store.delete("discord:2:alice:t") is False
    assert [s.platform for s in await store.list_user_sessions("alice")] == [Platform.TELEGRAM]


async def test_missing_sessions_raise_not_found(store: SessionStore) -> None:
    sid = "telegram:none:none"
    for call in (
        store.get(sid),
        store.update(sid, data={"a": 1}),
        store.set_field(sid, "a", 1),
        store.get_fields(sid, ["a"]),
        store.delete_field(sid, "a"),
        store.touch(sid),
    ):
        with pytest.raises(SessionNotFound, match="does not exist"):
            await call
    assert await snapshot(store) == {}


async def test_bad_input_raises_and_leaves_redis_unchanged(store: SessionStore) -> None:
    s = await store.create("c", "u", "telegram", data={"a": 1})
    before = await snapshot(store)
    bad_calls = [
        store.create("c2", "u", "telegram", data={"x": {1, 2}}),
        store.create("c2", "u", "telegram", data={"": 1}),
        store.create("c2", "u", "telegram", ttl=-1),
        store.create("c2", "u", "telegram", state=""),
        store.create("c2", "u", "telegram", priority=10**6),
        store.create({"c": 1}, "u", "telegram"),
        store.update(s.session_id, data={"a": dt.datetime(2026, 1, 1)}),
        store.update(s.session_id, data={"a": "x" * (store.limits.max_value_bytes + 1)}),
        store.update(s.session_id, data=[("a", 1)]),  # type: ignore[arg-type]
        store.update(s.session_id, delete="a"),
        store.update(s.session_id, expected_version="1"),  # type: ignore[arg-type]
        store.update("telegram:c:u{evil}", data={"a": 2}),
        store.touch(s.session_id, messages=-1),
        store.touch(s.session_id, ttl=0),
        store.list_user_sessions(3.5),
        store.set_field(s.session_id, "", 1),
    ]
    for call in bad_calls:
        with pytest.raises(ValidationError):
            await call
    with pytest.raises(SessionExists):
        await store.create("c", "u", "telegram", data={"a": 2})
    with pytest.raises(VersionConflict):
        await store.update(s.session_id, data={"a": 2}, expected_version=7)
    assert await snapshot(store) == before


async def test_field_limit_is_enforced_atomically(backend_url: str) -> None:
    store = await SessionStore.connect(
        backend_url, namespace=unique_namespace(), limits=Limits(max_fields=5)
    )
    try:
        s = await store.create("c", "u", "web", data={f"f{i}": i for i in range(4)})
        with pytest.raises(ValidationError):
            await store.create("c2", "u", "web", data={f"f{i}": i for i in range(6)})
        before = await snapshot(store)
        with pytest.raises(ValidationError, match="limit is 5"):
            await store.update(s.session_id, data={"new1": 1, "new2": 2})
        assert await snapshot(store) == before
        # replacing existing fields and deleting while adding stays within the limit
        s = await store.update(s.session_id, data={"f0": 9, "new1": 1}, delete=["f1"])
        assert len(s.data) == 4 and s.data["f0"] == 9
    finally:
        await drop_namespace(store.client, store.keys.namespace)
        await store.close()


async def test_a_custom_namespace_leaves_nothing_under_another(store: SessionStore) -> None:
    s = await store.create("c", "u", "telegram")
    await store.update(s.session_id, data={"x": 1})
    ns = store.keys.namespace
    keys = [k async for k in store.client.scan_iter(match="*", count=1000)]
    mine = [k for k in keys if k.startswith(f"{ns}:".encode())]
    assert len(mine) == 3  # the session, its user index and its op log
    assert not [k async for k in store.client.scan_iter(match="sc:*", count=1000)]


async def test_a_retried_script_applies_once(store: SessionStore) -> None:
    """The same op id sent twice (a client retry after a lost reply) is applied once."""
    s = await store.create("c", "u", "telegram")
    keys = store._session_keys(store.identity("c", "u", "telegram"))
    touch_args = store.op_args([store.default_ttl_ms, "1", ""])
    first = await store.scripts.touch(store.client, keys, touch_args)
    again = await store.scripts.touch(store.client, keys, touch_args)
    assert (first[0], again[0]) == (1, 2) and first[2] == again[2] == 1
    upd = store.op_args(["1", "version", store.default_ttl_ms, "", "100", "1", "kk", "v"])
    first = await store.scripts.update(store.client, keys, upd)
    again = await store.scripts.update(store.client, keys, upd)
    assert (first, again) == ([1, 2], [2, 2])  # not a false VersionConflict either
    got = await store.get(s.session_id)
    assert (got.version, got.message_count, got.data) == (2, 1, {"kk": "v"})


async def test_scripts_reload_after_script_flush(store: SessionStore) -> None:
    s = await store.create("c", "u", "telegram")
    await store.client.script_flush()
    assert await store.scripts.missing(store.client)
    await store.update(s.session_id, data={"after": "flush"})
    await store.touch(s.session_id)
    assert (await store.get(s.session_id)).data == {"after": "flush"}


async def test_data_decodes_on_first_access_and_a_corrupt_value_says_so(
    store: SessionStore,
) -> None:
    from sessioncache import IntegrityError

    s = await store.create(
        "lazy", "u", "web", data={"n": 1, "t": "x", "@a": [1]}, metadata={"lang": "en"}
    )
    assert (s.data, s.metadata) == ({"n": 1, "t": "x", "@a": [1]}, {"lang": "en"})
    again = await store.get(s.session_id)
    assert again == s and again.to_dict()["data"] == {"n": 1, "t": "x", "@a": [1]}
    again.data["local"] = True  # a decoded Session is a plain, mutable object
    assert again.data["local"] is True and "local" not in (await store.get(s.session_id)).data
    # A value that is not msgpack behind the 0xC1 tag: the core fields still read, the data
    # access raises IntegrityError, and keeps raising (no half-decoded state).
    await store.client.hset(s.session_key, "n", b"\xc1\xc1\xc1")
    broken = await store.get(s.session_id)
    assert broken.version == s.version and broken.state == "new"
    for _ in range(2):
        with pytest.raises(IntegrityError):
            _ = broken.data
        with pytest.raises(IntegrityError):
            _ = broken.metadata
