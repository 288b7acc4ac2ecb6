"""health_check() per feature component: fleet jobs, schedulers, the near cache's connections;
a failed one is restarted and the restart reported in the health report and the logs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from sessioncache.embedded import EmbeddedRedis
from sessioncache.storage import storage_from_url
from sessioncache.system import SessionSystem
from sessioncache.tracking import TrackingInvalidator

from .support.namespaces import drop_namespace, unique_namespace

RULES = [{"policy": "idle", "after": 3600, "action": "archive"}]


@pytest.fixture
async def own_server() -> AsyncIterator[EmbeddedRedis]:
    server = EmbeddedRedis().start()  # private: CLIENT KILL touches nobody else's connections
    yield server
    server.cleanup()


@pytest.fixture
async def build(backend_url: str) -> AsyncIterator[Any]:
    """Open systems on the test's backend (no background checks); dropped and shut after."""
    made: list[SessionSystem] = []

    async def open_system(**options: Any) -> SessionSystem:
        system = await SessionSystem.open(
            *storage_from_url(backend_url),
            namespace=unique_namespace(),
            health_interval=None,
            **options,
        )
        made.append(system)
        return system

    yield open_system
    for system in made:
        await drop_namespace(system.store.client, system.store.keys.namespace)
        await system.shutdown()


async def test_fleet_jobs_report_holder_and_last_run(build: Any, tmp_path: Path) -> None:
    system = await build(
        backup_dir=tmp_path / "backups",
        backup_interval=3600,
        snapshot_interval=3600,
        snapshot_dir=tmp_path / "snapshots",
        expiry_rules=RULES,
        expiry_interval=3600,
    )
    await system.create_session("c", "u", "telegram")
    before = (await system.health_check())["components"]
    assert before["job:backup"]["runs"] == 0 and before["job:backup"]["holder"] is None
    assert "backups" in before and "last_backup_age_s" not in before["backups"]
    assert system.backup_scheduler is not None
    assert await system.backup_scheduler.run_backup() is not None
    assert await system.backup_scheduler.run_snapshot() is not None
    assert (await system.expiry.job.run_once()) is not None
    health = await system.health_check()
    components = health["components"]
    label = system.expiry.job.label
    for name in ("job:backup", "job:snapshot", "job:expiry"):
        job = components[name]
        assert job["ok"] is True, job
        assert (job["holder"], job["runs"], job["last_status"]) == (label, 1, "ok")
        assert job["running"] is False and job["last_run_age_s"] >= 0
    assert components["backups"]["count"] == 1
    assert components["backups"]["last_backup_age_s"] >= 0
    assert components["expiry_scheduler"]["ok"] is True
    assert health["healthy"] is True and health["status"] == "ok"


async def test_a_failed_job_run_degrades_health(build: Any) -> None:
    system = await build(expiry_rules=RULES, expiry_interval=3600)

    async def fail(run: Any) -> None:
        raise RuntimeError("boom")

    system.expiry.job.func = fail
    await system.expiry.job.run_once()
    health = await system.health_check()
    job = health["components"]["job:expiry"]
    assert job["ok"] is False and job["last_status"] == "error:RuntimeError"
    assert health["status"] == "degraded" and health["healthy"] is True
    assert health["failed"] == ["job:expiry"]


async def test_stopped_schedulers_are_restarted_and_reported(
    build: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    system = await build(
        backup_dir=tmp_path, backup_interval=3600, expiry_rules=RULES, expiry_interval=3600
    )
    assert system.backup_scheduler is not None and system.expiry_scheduler is not None
    old_expiry = system.expiry_scheduler
    system.backup_scheduler.shutdown()
    old_expiry.shutdown(wait=False)
    await asyncio.sleep(0)  # AsyncIOScheduler.shutdown() completes on the next loop turn
    assert not old_expiry.running
    down = await system.health_check(restart=False)
    assert set(down["failed"]) == {"backup_scheduler", "expiry_scheduler"}
    assert down["status"] == "degraded"
    with caplog.at_level(logging.WARNING, logger="sessioncache.health"):
        health = await system.health_check()
    for name in ("backup_scheduler", "expiry_scheduler"):
        result = health["components"][name]
        assert result["ok"] is True and result["restarted"] is True, result
        assert result["restarts"] == 1
        assert "not running" in result["failed_with"]["error"]
        assert f"health: {name} failed" in caplog.text
        assert f"health: {name} restarted and healthy again" in caplog.text
    assert health["status"] == "ok"
    assert system.expiry_scheduler is not old_expiry and system.expiry_scheduler.running
    assert system.expiry_scheduler.get_job("sessioncache-expiry") is not None
    assert [r["component"] for r in system.health.restarted] == [
        "backup_scheduler",
        "expiry_scheduler",
    ]
    again = await system.health_check()
    assert again["components"]["expiry_scheduler"].get("restarted") is None


async def test_a_killed_tracking_connection_is_reported_and_reopened(
    own_server: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    reader = await SessionSystem.open(
        "REDIS", {"url": own_server.url}, namespace="nc", near_cache=True, health_interval=None
    )
    writer = await SessionSystem.open(
        "REDIS", {"url": own_server.url}, namespace="nc", health_interval=None
    )
    try:
        assert reader.near_cache is not None
        source = reader.near_cache.source
        assert isinstance(source, TrackingInvalidator)
        healthy = (await reader.health_check())["components"]["near_cache"]
        assert healthy["ok"] is True and healthy["tracking_connections"] == 1
        old_ids = source.client_ids()
        assert healthy["client_ids"] == old_ids
        sid = (await writer.create_session(1, 2, "telegram", data={"v": 0})).session_id

        node = next(iter(source.nodes.values()))
        lost = asyncio.create_task(node.lost.wait())
        host, port = node.address  # type: ignore[misc]
        async with redis.asyncio.Redis(host=host, port=port, socket_timeout=5) as killer:
            assert await killer.client_kill_filter(_id=node.client_id) == 1
        await lost
        with caplog.at_level(logging.WARNING, logger="sessioncache.health"):
            health = await reader.health_check()
        result = health["components"]["near_cache"]
        assert result["restarted"] is True and result["restarts"] == 1, result
        assert result["ok"] is True and result["tracking_connections"] == 1
        assert "tracking connection" in result["failed_with"]["error"]
        assert "health: near_cache failed" in caplog.text
        assert "health: near_cache restarted and healthy again" in caplog.text
        assert source.client_ids() != old_ids
        async with redis.asyncio.Redis(host=host, port=port, socket_timeout=5) as admin:
            names = [c["id"] for c in await admin.client_list()]
        assert str(source.client_ids()[0]) in [str(i) for i in names]

        # Reads stay correct after the reopen: each equals a fresh read.
        for v in range(1, 6):
            await reader.update_session(sid, {"v": v})
            cached = await reader.get_session(sid)
            fresh = await reader.get_session(sid, fresh=True)
            assert cached is not None and fresh is not None
            assert cached.data == fresh.data == {"v": v}
        after = (await reader.health_check())["components"]["near_cache"]
        assert after["ok"] is True and after.get("restarted") is None
    finally:
        await writer.shutdown()
        await reader.shutdown()


async def test_memory_near_cache_reports_its_listener(memory_url: str) -> None:
    system = await SessionSystem.open(
        "MEMORY", {"url": memory_url}, near_cache=True, health_interval=None
    )
    try:
        assert system.near_cache is not None
        result = (await system.health_check())["components"]["near_cache"]
        assert result["ok"] is True and result["listener_connections"] == 1
        await system.near_cache.source.stop()  # the listener is gone
        healed = (await system.health_check())["components"]["near_cache"]
        assert healed["restarted"] is True and healed["ok"] is True
        assert healed["failed_with"]["error"] == "the invalidation listener is closed"
        assert healed["listener_connections"] == 1
    finally:
        await system.shutdown()
