"""aiogram FSM storage and event isolation on sessioncache: contract, keys, TTLs, locks, fleets."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiogram.exceptions import DataNotDictLikeError
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.fsm.storage.base import BaseStorage, StorageKey
from redis.asyncio.cluster import key_slot

from sessioncache.errors import LockNotAcquired, TurnBusy, ValidationError
from sessioncache.integrations.aiogram import (
    SessionCacheStorage,
    SessionLockIsolation,
    SessionTurnIsolation,
    fsm_identity,
)
from sessioncache.locks import RedisLock
from sessioncache.scripts import registry
from sessioncache.store import DEFAULT_RETRY_HORIZON_MS, op_args

from .support.fsm_workers import read_data, run_aiogram_alternating_fleet, run_update_fleet
from .support.lock_workers import run_locked_fleet
from .support.namespaces import drop_namespace, unique_namespace


class Form(StatesGroup):
    name = State()
    age = State()


@pytest.fixture
async def storage(backend_url: str) -> AsyncIterator[SessionCacheStorage]:
    s = SessionCacheStorage.from_url(backend_url, namespace=unique_namespace(), socket_timeout=5.0)
    await s.client.ping()  # like SessionStore.connect: discover a cluster before concurrent use
    yield s
    await drop_namespace(s.client, s.keys.namespace)
    await s.close()


@pytest.fixture
def key() -> StorageKey:
    return StorageKey(bot_id=42, chat_id=-42, user_id=42)


async def all_keys(s: SessionCacheStorage) -> list[bytes]:
    """The namespace's keys but the op logs, which expire one retry horizon after their last
    write (lua/lib/ops.lua): checked here, then left out."""
    logs = s.keys.op_log_pattern()[:-1].encode()
    found = sorted([k async for k in s.client.scan_iter(match=f"{s.keys.namespace}:*")])
    for name in found:
        if name.startswith(logs):
            assert 0 < await s.client.pttl(name) <= DEFAULT_RETRY_HORIZON_MS
    return [k for k in found if not k.startswith(logs)]


# -- the BaseStorage contract, as aiogram's own storage tests exercise it ---------------------


def test_implements_every_abstract_method() -> None:
    assert issubclass(SessionCacheStorage, BaseStorage)
    assert not getattr(SessionCacheStorage, "__abstractmethods__", set())


async def test_set_state(storage: SessionCacheStorage, key: StorageKey) -> None:
    assert await storage.get_state(key) is None
    await storage.set_state(key, "state")
    assert await storage.get_state(key) == "state"
    await storage.set_state(key, None)
    assert await storage.get_state(key) is None
    assert await all_keys(storage) == []


async def test_set_state_accepts_state_objects(
    storage: SessionCacheStorage, key: StorageKey
) -> None:
    await storage.set_state(key, Form.age)
    assert await storage.get_state(key) == "Form:age"
    await storage.set_state(key, State("plain"))
    assert await storage.get_state(key) == "@:plain"


async def test_set_data(storage: SessionCacheStorage, key: StorageKey) -> None:
    assert await storage.get_data(key) == {}
    await storage.set_data(key, {"foo": "bar"})
    assert await storage.get_data(key) == {"foo": "bar"}
    await storage.set_data(key, {"a": 1, "b": [1, 2]})
    assert await storage.get_data(key) == {"a": 1, "b": [1, 2]}  # replaced, not merged
    await storage.set_data(key, {})
    assert await storage.get_data(key) == {}
    assert await all_keys(storage) == []


async def test_data_not_dict_like(storage: SessionCacheStorage, key: StorageKey) -> None:
    await storage.set_data(key, {"keep": 1})
    with pytest.raises(DataNotDictLikeError):
        await storage.set_data(key, ())  # type: ignore[arg-type]
    with pytest.raises(DataNotDictLikeError):
        await storage.update_data(key, [("a", 1)])  # type: ignore[arg-type]
    assert await storage.get_data(key) == {"keep": 1}


async def test_get_value(storage: SessionCacheStorage, key: StorageKey) -> None:
    assert await storage.get_value(key, "hello") is None
    assert await storage.get_value(key, "hello", "world") == "world"
    await storage.set_data(key, {"hello": "world", "n": {"deep": [1]}})
    assert await storage.get_value(key, "hello") == "world"
    assert await storage.get_value(key, "hello", "test") == "world"
    value = await storage.get_value(key, "n")
    value["deep"].append(2)  # a copy: the stored value is untouched
    assert await storage.get_value(key, "n") == {"deep": [1]}
    assert await storage.get_value(key, "", "dflt") == "dflt"


async def test_update_data(storage: SessionCacheStorage, key: StorageKey) -> None:
    assert await storage.get_data(key) == {}
    assert await storage.update_data(key, {"foo": "bar"}) == {"foo": "bar"}
    assert await storage.update_data(key, {}) == {"foo": "bar"}
    assert await storage.get_data(key) == {"foo": "bar"}
    assert await storage.update_data(key, {"baz": "spam"}) == {"foo": "bar", "baz": "spam"}
    assert await storage.get_data(key) == {"foo": "bar", "baz": "spam"}
    assert await storage.update_data(key, {"baz": "test"}) == {"foo": "bar", "baz": "test"}
    assert await storage.get_data(key) == {"foo": "bar", "baz": "test"}


async def test_concurrent_update_data_calls_keep_every_key(
    storage: SessionCacheStorage, key: StorageKey
) -> None:
    """Fast: 50 concurrent update_data calls on one key, each adding its own field, on warm
    connections. A read-modify-write update_data (get_data, merge, set_data) loses most."""
    n = 50
    await asyncio.gather(*(storage.get_data(key) for _ in range(n)))  # warm the pool
    await storage.update_data(key, {"base": 0})
    merged = await asyncio.gather(*(storage.update_data(key, {f"k{i}": i}) for i in range(n)))
    assert all(m[f"k{i}"] == i and m["base"] == 0 for i, m in enumerate(merged))
    assert await storage.get_data(key) == {"base": 0, **{f"k{i}": i for i in range(n)}}


async def test_empty_update_on_missing_record_writes_nothing(
    storage: SessionCacheStorage, key: StorageKey
) -> None:
    assert await storage.update_data(key, {}) == {}
    assert await all_keys(storage) == []


async def test_get_data_returns_a_copy(storage: SessionCacheStorage, key: StorageKey) -> None:
    await storage.set_data(key, {"a": [1]})
    data = await storage.get_data(key)
    data["a"].append(2)
    data["b"] = 1
    assert await storage.get_data(key) == {"a": [1]}


async def test_values_round_trip(storage: SessionCacheStorage, key: StorageKey) -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    data = {
        "s": "text",
        "~tilde": 1,
        "@at": 2.5,
        "o": "one-char name next to the record's own field",
        "none": None,
        "bytes": b"\x00\xff",
        "when": when,
        "nested": {"list": [1, "two", {"three": 3}], "tuple": (1, 2)},
        "unicode": "привет 👋",
    }
    await storage.set_data(key, data)
    expect = dict(data, nested={"list": [1, "two", {"three": 3}], "tuple": [1, 2]})
    assert await storage.get_data(key) == expect
    assert await storage.update_data(key, {"o": 0}) == dict(expect, o=0)
    assert await storage.get_value(key, "o") == 0


async def test_fsm_context_clear(storage: SessionCacheStorage, key: StorageKey) -> None:
    ctx = FSMContext(storage, key)
    await ctx.set_state(Form.name)
    assert await ctx.update_data(name="Ann") == {"name": "Ann"}
    assert await ctx.update_data({"age": 3}, x=1) == {"name": "Ann", "age": 3, "x": 1}
    assert await ctx.get_value("age") == 3
    assert await ctx.get_state() == "Form:name"
    await ctx.clear()
    assert await ctx.get_state() is None
    assert await ctx.get_data() == {}
    assert await all_keys(storage) == []


async def test_clear_drops_state_and_data(storage: SessionCacheStorage, key: StorageKey) -> None:
    await storage.set_state(key, "s")
    await storage.update_data(key, {"a": 1})
    await storage.clear(key)
    assert await all_keys(storage) == []


# -- keys: every StorageKey field, no collisions, no injected hash tags ------------------------


DISTINCT_KEYS = [
    StorageKey(bot_id=1, chat_id=2, user_id=3),
    StorageKey(bot_id=9, chat_id=2, user_id=3),
    StorageKey(bot_id=1, chat_id=9, user_id=3),
    StorageKey(bot_id=1, chat_id=2, user_id=9),
    StorageKey(bot_id=1, chat_id=-2, user_id=3),
    StorageKey(bot_id=1, chat_id=2, user_id=3, thread_id=0),
    StorageKey(bot_id=1, chat_id=2, user_id=3, thread_id=5),
    StorageKey(bot_id=1, chat_id=2, user_id=3, business_connection_id=""),
    StorageKey(bot_id=1, chat_id=2, user_id=3, business_connection_id="bc"),
    StorageKey(bot_id=1, chat_id=2, user_id=3, business_connection_id="="),
    StorageKey(bot_id=1, chat_id=2, user_id=3, business_connection_id="%3D"),
    StorageKey(bot_id=1, chat_id=2, user_id=3, destiny="other"),
    StorageKey(bot_id=1, chat_id=2, user_id=3, destiny=""),
    StorageKey(bot_id=1, chat_id=2, user_id=3, thread_id=5, business_connection_id="bc"),
    StorageKey(bot_id=1, chat_id=2, user_id=3, business_connection_id="x:y", destiny="z"),
    StorageKey(bot_id=1, chat_id=2, user_id=3, business_connection_id="x", destiny="y:z"),
]


async def test_every_field_of_the_key_counts(storage: SessionCacheStorage) -> None:
    for i, k in enumerate(DISTINCT_KEYS):
        await storage.set_state(k, f"state{i}")
        await storage.update_data(k, {"i": i})
    for i, k in enumerate(DISTINCT_KEYS):
        assert await storage.get_state(k) == f"state{i}"
        assert await storage.get_data(k) == {"i": i}
    assert len(await all_keys(storage)) == 2 * len(DISTINCT_KEYS)


async def test_no_field_can_inject_a_hash_tag(storage: SessionCacheStorage) -> None:
    evil = StorageKey(
        bot_id=1, chat_id=2, user_id=3, business_connection_id="}{x}:*", destiny="{y} ?[]"
    )
    plain = StorageKey(bot_id=1, chat_id=2, user_id=3)
    await storage.set_state(evil, "s")
    await storage.update_data(evil, {"a": 1})
    names = [k.decode() for k in await all_keys(storage)]
    for name in names:
        assert name.count("{") == 1 and name.count("}") == 1
        assert "{1:2}" in name
        assert not set(name) & set("*?[] ")
        assert key_slot(name.encode()) == key_slot(b"{1:2}")
    assert await storage.get_data(plain) == {}
    assert await storage.get_data(evil) == {"a": 1}


@pytest.mark.parametrize(
    "bad",
    [
        StorageKey(bot_id="1", chat_id=2, user_id=3),  # type: ignore[arg-type]
        StorageKey(bot_id=1, chat_id=2.0, user_id=3),  # type: ignore[arg-type]
        StorageKey(bot_id=1, chat_id=2, user_id=True),
        StorageKey(bot_id=1, chat_id=2, user_id=3, thread_id="5"),  # type: ignore[arg-type]
        StorageKey(bot_id=1, chat_id=2, user_id=3, business_connection_id=5),  # type: ignore[arg-type]
        StorageKey(bot_id=1, chat_id=2, user_id=3, destiny=None),  # type: ignore[arg-type]
        StorageKey(bot_id=1, chat_id=2, user_id=3, business_connection_id="x" * 300),
    ],
)
async def test_malformed_keys_are_refused(storage: SessionCacheStorage, bad: StorageKey) -> None:
    with pytest.raises(ValidationError):
        await storage.update_data(bad, {"a": 1})
    with pytest.raises(ValidationError):
        await storage.set_state(bad, "s")
    assert await all_keys(storage) == []


# -- bad input leaves Redis unchanged ---------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {"ok": 1, "bad": object()},
        {"ok": 1, 5: "non-str key"},
        {"ok": 1, "": "empty name"},
        {"ok": 1, "nan": float("nan")},
        {"ok": 1, "naive": dt.datetime(2026, 1, 1)},
        {"ok": 1, "big": "x" * (600 * 1024)},
    ],
)
async def test_bad_data_changes_nothing(
    storage: SessionCacheStorage, key: StorageKey, data: dict[Any, Any]
) -> None:
    await storage.set_data(key, {"keep": "me"})
    with pytest.raises(ValidationError):
        await storage.update_data(key, data)
    with pytest.raises(ValidationError):
        await storage.set_data(key, data)
    assert await storage.get_data(key) == {"keep": "me"}


async def test_bad_states_are_refused(storage: SessionCacheStorage, key: StorageKey) -> None:
    await storage.set_state(key, "keep")
    for bad in (5, b"bytes", State(), "x" * 5000, "\ud800"):
        with pytest.raises(ValidationError):
            await storage.set_state(key, bad)  # type: ignore[arg-type]
    assert await storage.get_state(key) == "keep"


async def test_field_limit_is_enforced_in_the_script(backend_url: str, key: StorageKey) -> None:
    from sessioncache.codec import Limits

    s = SessionCacheStorage.from_url(
        backend_url, namespace=unique_namespace(), limits=Limits(max_fields=3)
    )
    try:
        await s.update_data(key, {"a": 1, "b": 2})
        with pytest.raises(ValidationError, match="4 keys"):
            await s.update_data(key, {"c": 3, "d": 4})
        assert await s.get_data(key) == {"a": 1, "b": 2}
        assert await s.update_data(key, {"a": 9, "c": 3}) == {"a": 9, "b": 2, "c": 3}
        with pytest.raises(ValidationError):
            await s.set_data(key, {"a": 1, "b": 2, "c": 3, "d": 4})
        assert await s.get_data(key) == {"a": 9, "b": 2, "c": 3}
    finally:
        await drop_namespace(s.client, s.keys.namespace)
        await s.close()


# -- TTLs -------------------------------------------------------------------------------------


async def test_state_and_data_ttls(backend_url: str, key: StorageKey) -> None:
    s = SessionCacheStorage.from_url(
        backend_url, namespace=unique_namespace(), state_ttl=100, data_ttl=dt.timedelta(minutes=5)
    )
    try:
        state_key = s.keys.fsm_state(fsm_identity(key))
        data_key = s.keys.fsm_data(fsm_identity(key))
        await s.set_state(key, "s")
        await s.update_data(key, {"a": 1})
        assert 99_000 < await s.client.pttl(state_key) <= 100_000
        assert 299_000 < await s.client.pttl(data_key) <= 300_000
        await s.client.pexpire(data_key, 10_000)
        await s.update_data(key, {"b": 2})  # every write renews the data TTL
        assert 299_000 < await s.client.pttl(data_key) <= 300_000
        await s.client.pexpire(data_key, 10_000)
        await s.set_data(key, {"c": 3})
        assert 299_000 < await s.client.pttl(data_key) <= 300_000
    finally:
        await drop_namespace(s.client, s.keys.namespace)
        await s.close()


async def test_without_ttl_nothing_expires(storage: SessionCacheStorage, key: StorageKey) -> None:
    await storage.set_state(key, "s")
    await storage.update_data(key, {"a": 1})
    for name in await all_keys(storage):
        assert await storage.client.pttl(name) == -1


async def test_bad_ttls_are_refused(memory_url: str) -> None:
    for bad in (0, -1, "10", True, dt.timedelta(0)):
        with pytest.raises(ValidationError):
            SessionCacheStorage.from_url(memory_url, state_ttl=bad)
        with pytest.raises(ValidationError):
            SessionCacheStorage.from_url(memory_url, data_ttl=bad)


# -- retries ----------------------------------------------------------------------------------


async def test_a_retried_merge_is_not_applied_twice(
    storage: SessionCacheStorage, key: StorageKey
) -> None:
    """A client retry (same op id) after another worker's write must not clobber that write."""
    merge = registry().record_merge
    data_key = storage.keys.fsm_data(fsm_identity(key))
    keys = [data_key, storage.keys.op_log(data_key)]
    args = op_args(str(DEFAULT_RETRY_HORIZON_MS), ["0", "1024", "size", "1", "ff", b"first"])
    assert await merge(storage.client, keys, args) == [1, 1]
    await storage.update_data(key, {"ff": "second"})
    for _ in range(10):  # however many other writes land in between
        await storage.update_data(key, {"other": "write"})
    assert await merge(storage.client, keys, args) == [2, 2]
    assert await storage.get_data(key) == {"ff": "second", "other": "write"}


# -- event isolation --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["turn", "lock"])
async def test_isolation_serialises_one_key(
    storage: SessionCacheStorage, key: StorageKey, kind: str
) -> None:
    isolation: SessionTurnIsolation | SessionLockIsolation
    if kind == "turn":
        isolation = storage.create_isolation(timeout=5)
        assert isinstance(isolation, SessionTurnIsolation)
    else:
        isolation = SessionLockIsolation(
            storage.client, namespace=storage.keys.namespace, timeout=5, owns_client=False
        )
    inside = 0
    peak = 0
    order: list[int] = []

    async def event(i: int) -> None:
        nonlocal inside, peak
        async with isolation.lock(key):
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.005)
            order.append(i)
            inside -= 1

    await asyncio.gather(*(event(i) for i in range(10)))
    assert peak == 1 and sorted(order) == list(range(10))
    other = StorageKey(bot_id=42, chat_id=-42, user_id=43)
    async with isolation.lock(key), isolation.lock(other):
        pass  # different keys do not block each other
    await isolation.close()
    assert await all_keys(storage) == []


async def test_isolation_blocking_timeout(storage: SessionCacheStorage, key: StorageKey) -> None:
    isolation = SessionLockIsolation(
        storage.client,
        namespace=storage.keys.namespace,
        timeout=5,
        blocking_timeout=0.05,
        owns_client=False,
    )
    async with isolation.lock(key):
        with pytest.raises(LockNotAcquired):
            async with isolation.lock(key):
                pass
    async with isolation.lock(key):
        pass


async def test_turn_isolation_is_the_turn_lock(
    storage: SessionCacheStorage, key: StorageKey
) -> None:
    """The isolation holds a turn (renewed lease, arrival order) on the key's own turn keys;
    a waiter past its timeout gets TurnBusy and leaves the line."""
    isolation = storage.create_isolation(timeout=0.05, lease=0.3)
    lease_key, queue_key, _ = isolation.turn_keys(key)
    data_key = storage.keys.fsm_data(fsm_identity(key))
    assert key_slot(lease_key.encode()) == key_slot(data_key.encode())
    async with isolation.lock(key):
        token = await storage.client.get(lease_key)
        assert token is not None
        await asyncio.sleep(0.5)  # past the 0.3 s lease: renewed, still ours
        assert await storage.client.get(lease_key) == token
        with pytest.raises(TurnBusy):
            async with isolation.lock(key):
                pytest.fail("two holders")
        assert await storage.client.zcard(queue_key) == 0
    assert await all_keys(storage) == []


async def test_lock_expiry_and_ownership(storage: SessionCacheStorage) -> None:
    name = storage.keys.lock("job")
    first = RedisLock(storage.client, name, timeout=0.05)
    await first.acquire()
    assert 0 < await storage.client.pttl(name) <= 50
    await storage.client.pexpire(name, 0)  # its TTL runs out
    second = RedisLock(storage.client, name, timeout=5)
    assert await second.try_acquire()
    assert not await first.extend()
    assert not await first.release()  # must not delete the new owner's lock
    assert await storage.client.get(name) == second.token
    assert await second.extend(10)
    assert 9_000 < await storage.client.pttl(name) <= 10_000
    assert await second.release()
    assert await storage.client.exists(name) == 0


def test_lock_settings_are_validated(memory_url: str) -> None:
    for kwargs in ({"timeout": 0}, {"timeout": "1"}, {"blocking_timeout": -1}):
        with pytest.raises(ValidationError):
            SessionLockIsolation.from_url(memory_url, **kwargs)
    for kwargs in ({"timeout": 0}, {"timeout": "1"}, {"lease": -1}, {"lease": None}):
        with pytest.raises(ValidationError):
            SessionTurnIsolation.from_url(memory_url, **kwargs)


# -- several OS processes on one chat ---------------------------------------------------------


@pytest.mark.slow
# 8 spawned processes, each importing aiogram, for each of two storages and five rounds.
@pytest.mark.timeout(300)
async def test_eight_processes_update_one_chat_lost_update_comparison(
    redis_url: str, record_property: Any
) -> None:
    """8 OS processes x 50 concurrent update_data calls, each adding its own key to one chat:
    sessioncache keeps all 400; aiogram's RedisStorage on the same server in the same run is
    reported beside it (how many it loses varies from run to run)."""
    workers, per_worker = 8, 50
    n = workers * per_worker
    runs = [("aiogram", unique_namespace()), ("sessioncache", unique_namespace())]
    await asyncio.to_thread(run_update_fleet, runs, redis_url, workers, per_worker, 5)
    figures = {kind: await read_data(kind, redis_url, ns) for kind, ns in runs}
    s = SessionCacheStorage.from_url(redis_url)
    for _, ns in runs:
        await drop_namespace(s.client, ns)
    await s.close()
    kept = {kind: len(data) for kind, data in figures.items()}
    record_property("lost_update_comparison", kept)
    print(
        f"\nlost-update comparison, {n} concurrent update_data calls from {workers} processes: "
        f"sessioncache kept {kept['sessioncache']}/{n}, "
        f"aiogram RedisStorage kept {kept['aiogram']}/{n}"
    )
    expect = {f"w{w}-{i}": i for w in range(workers) for i in range(per_worker)}
    assert figures["sessioncache"] == expect
    assert 1 <= kept["aiogram"] <= n


@pytest.mark.slow
async def test_the_lock_excludes_across_processes(redis_url: str) -> None:
    """4 processes x 50 unprotected GET/SET increments, each inside the lock: exactly 200."""
    namespace = unique_namespace()
    s = SessionCacheStorage.from_url(redis_url, namespace=namespace)
    lock_key = s.keys.lock("counter")
    counter_key = f"{namespace}:counter"
    await asyncio.to_thread(run_locked_fleet, redis_url, lock_key, counter_key, 4, 50)
    assert int(await s.client.get(counter_key)) == 200
    assert await s.client.exists(lock_key) == 0
    await drop_namespace(s.client, namespace)
    await s.close()


async def test_a_corrupt_stored_value_is_an_integrity_error(
    storage: SessionCacheStorage, key: StorageKey
) -> None:
    from sessioncache.errors import IntegrityError

    await storage.set_data(key, {"a": 1})
    await storage.client.hset(storage.keys.fsm_data(fsm_identity(key)), "bb", b"\xc1\xc1\xc1")
    with pytest.raises(IntegrityError):
        await storage.get_data(key)
    await storage.client.hset(storage.keys.fsm_data(fsm_identity(key)), "bb", b"\xff\xfe")
    with pytest.raises(IntegrityError):
        await storage.get_data(key)


@pytest.mark.slow
async def test_dispatcher_workers_see_each_others_writes_on_their_next_update(
    redis_url: str,
) -> None:
    """Three processes with a Dispatcher each take turns on one chat: each turn's handler reads
    the FSM data the previous turns (other processes) wrote; a stale read shows in the log."""
    namespace = unique_namespace()
    workers, rounds = 3, 12
    await asyncio.to_thread(run_aiogram_alternating_fleet, redis_url, namespace, workers, rounds)
    storage = SessionCacheStorage.from_url(redis_url, namespace=namespace)
    key = StorageKey(bot_id=42, chat_id=-100, user_id=7)
    assert await storage.get_data(key) == {"seen": [[r % workers, r] for r in range(rounds)]}
    await storage.clear(key)
    await storage.close()
