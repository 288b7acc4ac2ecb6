"""health_check() heals: healthy again at the first check after a restart or a script flush."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sessioncache.embedded import EmbeddedRedis
from sessioncache.scripts import all_scripts
from sessioncache.system import SessionSystem

from .support.namespaces import drop_namespace, unique_namespace


def _kind(url: str) -> str:
    if url.startswith("memory://"):
        return "MEMORY"
    return "CLUSTER" if "+cluster" in url else "REDIS"


@pytest.fixture
async def own_server() -> AsyncIterator[EmbeddedRedis]:
    server = EmbeddedRedis().start()
    yield server
    server.cleanup()


async def test_healthy_again_at_the_first_check_after_a_restart(own_server: EmbeddedRedis) -> None:
    system = await SessionSystem.start("REDIS", {"url": own_server.url}, namespace="health")
    try:
        assert (await system.health_check())["healthy"] is True
        await system.create_session("c", "u", "telegram")
        own_server.restart()  # the script cache is gone, every pooled connection is dead
        health = await system.health_check()
        assert health["healthy"] is True, health
        assert sorted(health["reloaded_scripts"]) == sorted(all_scripts())
        assert health["missing_scripts"] == []
        again = await system.health_check()
        assert again["healthy"] is True and again["reloaded_scripts"] == []
        assert (await system.create_session("c", "u", "telegram")).version == 1
    finally:
        await system.shutdown()


async def test_unhealthy_while_the_server_is_down_then_healthy(
    own_server: EmbeddedRedis,
) -> None:
    system = await SessionSystem.start(
        "REDIS", {"url": own_server.url, "retries": 1}, namespace="health"
    )
    try:
        own_server.stop()
        down = await system.health_check()
        assert down["healthy"] is False and down["error"]
        own_server.start()
        up = await system.health_check()
        assert up["healthy"] is True and up["missing_scripts"] == []
    finally:
        await system.shutdown()


async def test_healthy_again_at_the_first_check_after_script_flush(backend_url: str) -> None:
    system = await SessionSystem.start(
        _kind(backend_url), {"url": backend_url}, namespace=unique_namespace()
    )
    try:
        await system.create_session("c", "u", "telegram")
        await system.store.client.script_flush()
        assert await system.store.scripts.missing(system.store.client) != []
        health = await system.health_check()
        assert health["healthy"] is True, health
        assert sorted(health["reloaded_scripts"]) == sorted(all_scripts())
        assert await system.store.scripts.missing(system.store.client) == []
    finally:
        await drop_namespace(system.store.client, system.store.keys.namespace)
        await system.shutdown()
