"""Lost replies, SCRIPT FLUSH and server restarts: the next calls succeed and apply once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sessioncache import SessionStore
from sessioncache.embedded import EmbeddedRedis

from .support.namespaces import unique_namespace
from .support.proxy import DroppingProxy


@pytest.fixture
async def own_server() -> AsyncIterator[EmbeddedRedis]:
    server = EmbeddedRedis().start()
    yield server
    server.cleanup()


async def test_mutations_retried_after_a_lost_reply_apply_once(own_server: EmbeddedRedis) -> None:
    proxy = await DroppingProxy(own_server.port).start()
    store = await SessionStore.connect(
        f"redis://127.0.0.1:{proxy.port}", namespace=unique_namespace(), retries=3
    )
    try:
        s = await store.create("c", "u", "telegram")
        for _ in range(5):
            proxy.armed = 1
            await store.touch(s.session_id, messages=1)
            proxy.armed = 1
            await store.update(s.session_id, data={"n": 1})
            proxy.armed = 1
            await store.set_field(s.session_id, "x", "y")
        proxy.armed = 1
        again = await store.create("c2", "u", "telegram")  # retried create is not SessionExists
        got = await store.get(s.session_id)
        assert proxy.dropped == 16
        assert got.message_count == 5  # not 10
        assert got.version == 1 + 10  # five updates and five set_field calls, each once
        assert again.version == 1
    finally:
        await store.close()
        await proxy.stop()


async def test_calls_succeed_after_a_server_restart(own_server: EmbeddedRedis) -> None:
    store = await SessionStore.connect(own_server.url, namespace=unique_namespace(), retries=5)
    try:
        await store.create("c", "u", "telegram")
        own_server.restart()  # unsaved data and the script cache are gone
        assert await store.scripts.missing(store.client) == list(store.scripts.scripts)
        s = await store.create("c", "u", "telegram")
        s = await store.update(s.session_id, data={"after": "restart"})
        assert s.version == 2 and (await store.get(s.session_id)).data == {"after": "restart"}
    finally:
        await store.close()


async def test_script_load_is_idempotent_and_check_reports_missing(
    own_server: EmbeddedRedis,
) -> None:
    store = await SessionStore.connect(own_server.url, namespace=unique_namespace())
    try:
        assert await store.scripts.missing(store.client) == []
        await store.client.script_flush()
        assert sorted(await store.scripts.missing(store.client)) == sorted(store.scripts.scripts)
        loaded = await store.scripts.load(store.client)
        assert loaded == {name: s.sha for name, s in store.scripts.scripts.items()}
        assert await store.scripts.missing(store.client) == []
    finally:
        await store.close()


async def test_scripts_reach_every_cluster_primary(cluster_url: str) -> None:
    import redis.asyncio as aioredis

    store = await SessionStore.connect(cluster_url, namespace=unique_namespace())
    try:
        await store.client.script_flush()
        ports = [node.port for node in store.client.get_primaries()]
        assert len(ports) == 3
        await store.scripts.load(store.client)
        shas = [s.sha for s in store.scripts.scripts.values()]
        for port in ports:
            node = aioredis.Redis(port=port, socket_timeout=2.0)
            try:
                assert await node.script_exists(*shas) == [True] * len(shas)
            finally:
                await node.aclose()
        # after a flush of every primary, the first call on any slot reloads and succeeds
        await store.client.script_flush()
        for user in ("a", "b", "c", "d", "e", "f"):
            assert (await store.create("c", user, "telegram")).version == 1
    finally:
        for user in ("a", "b", "c", "d", "e", "f"):
            await store.delete(f"telegram:c:{user}")
        await store.close()
