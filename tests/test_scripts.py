"""The Lua helpers (lua/lib) and the registry: each rule once, run directly on every backend."""

from __future__ import annotations

import random

import pytest

from sessioncache import SessionStore
from sessioncache.errors import ScriptError
from sessioncache.scripts import ScriptRegistry, compose, load_scripts, prelude, registry
from sessioncache.statistics import histogram_bucket


def test_every_script_is_a_typed_attribute_and_carries_the_helpers() -> None:
    reg = registry()
    assert "local function now_ms()" in prelude()
    for name, script in reg.scripts.items():
        assert getattr(reg, name) is script
        helpers = script.source.splitlines(keepends=True)[: script.offset]
        assert script.source.splitlines()[script.offset].startswith(f"-- {name}.lua: ")
        assert "".join(helpers) == prelude(script.source[len("".join(helpers)) :])
    # Only the lib files a script uses (and what they use) are sent in front of it.
    assert "local function op_applied" in reg.update.source
    assert "local function release_owned" not in reg.update.source
    assert "local function op_applied" not in reg.lock_release.source
    assert not hasattr(reg, "__getitem__")


def test_a_script_file_without_an_attribute_is_refused() -> None:
    scripts = load_scripts()
    scripts["stray"] = scripts["touch"]
    with pytest.raises(RuntimeError, match="stray"):
        ScriptRegistry(scripts)


async def test_lua_errors_name_the_script_line_not_the_combined_source(
    store: SessionStore,
) -> None:
    probe = compose("probe", "local x = 1\nreturn redis.call('NOSUCHCOMMAND')\n")
    with pytest.raises(ScriptError) as err:
        await probe.run(store.client, [], [])
    assert "script probe failed" in str(err.value)
    if "user_script" in str(err.value.__cause__):  # fakeredis reports no line numbers
        assert "probe.lua:2" in str(err.value)


async def test_lua_and_python_put_values_in_the_same_histogram_bucket(
    store: SessionStore,
) -> None:
    rng = random.Random(7)
    values = list(range(0, 300))
    values += [2**k - 1 for k in range(1, 40)] + [2**k for k in range(1, 40)]
    values += [rng.randrange(0, 10**12) for _ in range(500)]
    probe = compose(
        "probe",
        "local out = {}\n"
        "for i = 1, #ARGV do out[i] = log_bucket(tonumber(ARGV[i])) end\n"
        "return out\n",
    )
    lua = await probe.run(store.client, [], [str(v) for v in values])
    assert [int(b) for b in lua] == [histogram_bucket(v) for v in values]


async def test_an_index_without_expiry_keeps_none_whichever_script_writes(
    store: SessionStore,
) -> None:
    """The case where the three copies of the index rule differed: create.lua gave such an
    index the new session's expiry, so a session that never expires (restored without an
    expiry) vanished from list_user_sessions when the index expired."""
    forever = await store.create("forever", "u1", "web")
    index = store.keys.user_index(store.identity(1, "u1", "web").user_tag)
    await store.client.persist(forever.session_key)
    await store.client.persist(index)  # what restore_session.lua does for such a session
    other = await store.create("other", "u1", "web", ttl=60)
    assert await store.client.pttl(index) == -1
    await store.update(other.session_id, data={"k": 1})
    await store.touch(other.session_id, messages=1)
    assert await store.client.pttl(index) == -1
    listed = {s.session_id for s in await store.list_user_sessions("u1")}
    assert listed == {forever.session_id, other.session_id}


async def test_an_index_expiry_only_moves_later(store: SessionStore) -> None:
    long = await store.create("long", "u2", "web", ttl=3600)
    index = store.keys.user_index(store.identity(1, "u2", "web").user_tag)
    after_long = await store.client.pexpiretime(index)
    assert after_long >= await store.client.pexpiretime(long.session_key)
    short = await store.create("short", "u2", "web", ttl=60)
    await store.touch(short.session_id)
    await store.update(short.session_id, data={"k": 1})
    assert await store.client.pexpiretime(index) == after_long
    await store.touch(long.session_id)
    assert await store.client.pexpiretime(index) >= await store.client.pexpiretime(
        long.session_key
    )
