"""SessionSystem lifecycle: start/shutdown/async with, components by name, health and restarts."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from sessioncache import Platform, SessionCacheError
from sessioncache.persistence import Persistence
from sessioncache.system import SessionSystem
from sessioncache.tracker import StateTracker

from .support.namespaces import drop_namespace, unique_namespace


async def test_async_with_runs_the_lifecycle(backend_url: str, tmp_path: Path) -> None:
    ns = unique_namespace()
    system = await SessionSystem.open(
        storage_config={"url": backend_url}, namespace=ns, backup_dir=tmp_path
    )
    async with system:
        assert await system.start() is system  # idempotent
        assert isinstance(system.tracker, StateTracker)
        assert isinstance(system.persistence, Persistence)
        for name in ("expiry", "sync", "context"):
            assert hasattr(system, name)
        await system.create_session("c", "u", Platform.SLACK)
        report = await system.health_check()
        assert report["status"] == "ok" and report["failed"] == []
        assert {"redis", "scripts", "backups"} <= set(report["components"])
        await drop_namespace(system.store.client, ns)
    with pytest.raises(SessionCacheError, match="shut down"):
        await system.start()
    await system.shutdown()  # twice is fine


async def test_a_stopped_scheduler_is_restarted_and_reported(
    memory_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    system = await SessionSystem.open(
        storage_config={"url": memory_url},
        backup_dir=tmp_path,
        backup_interval=3600.0,
        health_interval=None,
    )
    try:
        assert system.backup_scheduler is not None
        system.backup_scheduler.shutdown()
        degraded = await system.health_check(restart=False)
        assert (degraded["status"], degraded["healthy"], degraded["failed"]) == (
            "degraded",
            True,
            ["backup_scheduler"],
        )
        with caplog.at_level(logging.WARNING, logger="sessioncache.health"):
            report = await system.health_check()
        assert report["status"] == "ok"
        component = report["components"]["backup_scheduler"]
        assert (component["ok"], component["restarted"], component["restarts"]) == (True, True, 1)
        assert system.backup_scheduler.scheduler.running
        assert [r["component"] for r in system.health.restarted] == ["backup_scheduler"]
        assert any("backup_scheduler failed" in r.getMessage() for r in caplog.records)
    finally:
        await system.shutdown()
    assert system.backup_scheduler is not None and not system.backup_scheduler.scheduler.running


async def test_the_background_monitor_restarts_without_being_asked(
    memory_url: str, tmp_path: Path
) -> None:
    system = await SessionSystem.open(
        storage_config={"url": memory_url},
        backup_dir=tmp_path,
        backup_interval=3600.0,
        health_interval=0.05,
    )
    try:
        assert system.backup_scheduler is not None
        system.backup_scheduler.shutdown()
        while not system.health.restarted:
            await asyncio.wait_for(system.health.next_round(), timeout=30)
        assert system.health.restarted[0]["component"] == "backup_scheduler"
        assert system.backup_scheduler.scheduler.running
    finally:
        await system.shutdown()
