"""The lean client (leanclient.py) and its stock fallback behave as redis-py does.

Each test runs on the lean client and on stock redis-py (the fallback on an untested redis-py),
and .ci/run runs this file on the lowest and the newest redis-py the pin allows, so the pool
internals the lean path relies on are exercised (checkout/return, retry with disconnect,
release events, no leaked connection) on each version it is admitted on.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.event import (
    AsyncAfterConnectionReleasedEvent,
    AsyncEventListenerInterface,
    EventDispatcher,
)
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sessioncache import SessionStore
from sessioncache.backends import RedisSettings, connect
from sessioncache.leanclient import (
    LEAN_REDIS_VERSIONS,
    FastConnection,
    LeanConnectionPool,
    LeanRedis,
    lean_supported,
)
from sessioncache.pool import BoundedConnectionPool

from .support.namespaces import unique_namespace
from .support.proxy import DroppingProxy

KINDS = [pytest.param(True, id="lean"), pytest.param(False, id="stock")]


class ReleaseCounter(AsyncEventListenerInterface):
    """Counts the AfterConnectionReleased events the pool dispatches."""

    def __init__(self) -> None:
        self.released = 0

    async def listen(self, event: object) -> None:
        self.released += 1


def _settings(url: str, name: str, **options: Any) -> RedisSettings:
    return RedisSettings.from_options(url, client_name=name, **options)


async def _connections(admin: Any, name: str) -> int:
    """How many connections the server holds for the client name (CLIENT LIST)."""
    return sum(1 for c in await admin.client_list() if c["name"] == name)


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[Any]:
    client = aioredis.Redis.from_url(redis_url, socket_timeout=5.0)
    yield client
    await client.aclose()


def _in_use(client: Any) -> int:
    return int(client.connection_pool.slots.in_use)


def test_the_gate_admits_only_the_versions_ci_runs() -> None:
    assert LEAN_REDIS_VERSIONS == ("8.0.0", "8.1.0")
    assert lean_supported("8.0.0") and lean_supported("8.1.0")
    for other in ("8.0.1", "8.0.2", "8.1.1", "8.2.0", "9.0.0", "7.4.0"):
        assert not lean_supported(other)


async def test_any_other_redis_py_gets_the_stock_client(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis, "__version__", "8.0.1")
    client = connect(RedisSettings(redis_url))
    assert type(client) is aioredis.Redis
    assert type(client.connection_pool) is BoundedConnectionPool
    assert client.connection_pool.connection_class is Connection
    assert client.auto_close_connection_pool
    store = SessionStore(client, namespace=unique_namespace())
    try:
        s = await store.create("c", "u", "telegram", data={"a": 1})
        s = await store.update(s.session_id, data={"a": 2}, expected_version=1)
        assert (s.version, (await store.get(s.session_id)).data) == (2, {"a": 2})
        await store.delete(s.session_id)
    finally:
        await client.aclose()


async def test_a_tested_redis_py_gets_the_lean_client(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis, "__version__", LEAN_REDIS_VERSIONS[0])
    client = connect(RedisSettings(redis_url))
    try:
        assert type(client) is LeanRedis and client.auto_close_connection_pool
        assert type(client.connection_pool) is LeanConnectionPool
        assert client.connection_pool.connection_class is FastConnection
    finally:
        await client.aclose()


@pytest.mark.parametrize("lean", KINDS)
async def test_checkout_and_return_under_concurrency(
    redis_url: str, admin: Any, lean: bool
) -> None:
    name = f"lean-{uuid.uuid4().hex[:8]}"
    events = EventDispatcher()
    counter = ReleaseCounter()
    events.register_listeners({AsyncAfterConnectionReleasedEvent: [counter]})
    client = connect(
        _settings(redis_url, name, max_connections=3, extra={"event_dispatcher": events}),
        lean=lean,
    )
    key = f"lean:{name}"
    try:
        await client.set(key, "v")
        values = await asyncio.gather(*(client.get(key) for _ in range(200)))
        assert values == [b"v"] * 200
        assert _in_use(client) == 0
        # Every command checked a connection out and gave it back: one release event each.
        assert counter.released == 201
        # The pool never opened more than max_connections, and keeps what it opened.
        assert 1 <= await _connections(admin, name) <= 3
        # Response callbacks still apply (HGETALL -> dict, EXISTS -> int, SET -> bool).
        await client.hset(f"{key}:h", mapping={"a": "1"})
        assert await client.hgetall(f"{key}:h") == {b"a": b"1"}
        assert await client.exists(f"{key}:h", key) == 2
        assert await client.set(f"{key}:2", "x", nx=True) is True
    finally:
        await client.delete(key, f"{key}:h", f"{key}:2")
        await client.aclose()
    assert await _connections(admin, name) == 0


@pytest.mark.parametrize("lean", KINDS)
async def test_errors_and_timeouts_give_the_connection_back(
    redis_url: str, admin: Any, lean: bool
) -> None:
    name = f"lean-{uuid.uuid4().hex[:8]}"
    client = connect(
        _settings(redis_url, name, max_connections=2, socket_timeout=0.3, retries=1), lean=lean
    )
    key = f"lean:{name}"
    try:
        await client.set(key, "v")
        for _ in range(10):
            with pytest.raises(ResponseError):
                await client.incr(key)  # not an integer
        assert _in_use(client) == 0
        # A reply that never comes times out (each attempt disconnecting), then raises; more
        # often than the pool has connections, so a leaked one would exhaust it.
        for _ in range(3):
            with pytest.raises(RedisTimeoutError):
                await client.blpop([f"{key}:nothing"], timeout=0)
        assert _in_use(client) == 0
        assert await asyncio.gather(client.get(key), client.get(key)) == [b"v", b"v"]
        assert await _connections(admin, name) <= 2
    finally:
        await client.delete(key)
        await client.aclose()


@pytest.mark.parametrize("lean", KINDS)
async def test_a_lost_reply_disconnects_and_retries_on_a_new_connection(
    redis_url: str, admin: Any, lean: bool
) -> None:
    port = int(redis_url.rsplit(":", 1)[1])
    proxy = await DroppingProxy(port, trigger=b"INCR").start()
    name = f"lean-{uuid.uuid4().hex[:8]}"
    client = connect(_settings(f"redis://127.0.0.1:{proxy.port}", name, retries=2), lean=lean)
    key = f"lean:{name}"
    try:
        assert await client.incr(key) == 1
        proxy.armed = 1
        # The first attempt is applied, its reply lost and the socket cut; the retry runs on
        # a fresh connection, so INCR shows both (this is why our scripts carry op ids).
        assert await client.incr(key) == 3
        assert proxy.dropped == 1
        assert _in_use(client) == 0
        assert await _connections(admin, name) == 1
    finally:
        await admin.delete(key)
        await client.aclose()
        await proxy.stop()


@pytest.mark.parametrize("lean", KINDS)
async def test_a_connection_killed_while_idle_is_replaced(
    redis_url: str, admin: Any, lean: bool
) -> None:
    name = f"lean-{uuid.uuid4().hex[:8]}"
    client = connect(_settings(redis_url, name, max_connections=1), lean=lean)
    try:
        assert await client.ping()
        ids = [c["id"] for c in await admin.client_list() if c["name"] == name]
        assert len(ids) == 1
        await admin.execute_command("CLIENT", "KILL", "ID", ids[0])
        for _ in range(5):
            assert await client.ping()
        after = [c["id"] for c in await admin.client_list() if c["name"] == name]
        assert len(after) == 1 and after != ids
        assert _in_use(client) == 0
    finally:
        await client.aclose()
