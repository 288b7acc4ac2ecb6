"""Health of a SessionSystem's components, and the restart of a component found failed."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .system import SessionSystem

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[dict[str, Any]]]
Restart = Callable[[], Awaitable[None]]


@dataclass
class Component:
    """One checked part of the system: a check returning {"ok": bool, ...}, and how to restart it.

    ``critical`` components make the whole system unhealthy when they fail; the others only
    degrade it (the system still serves sessions without, say, its backup scheduler).
    """

    name: str
    check: Check
    restart: Restart | None = None
    critical: bool = True
    restarts: int = 0
    last_restart: float | None = None
    last_error: str | None = None


@dataclass
class HealthMonitor:
    """The registry of components; check() runs every check and restarts what failed."""

    components: dict[str, Component] = field(default_factory=dict)
    restarted: list[dict[str, Any]] = field(default_factory=list)
    """Restarts done by this process, newest last: {"component", "at", "error"}."""
    _task: asyncio.Task[None] | None = None
    _round: asyncio.Event | None = None

    def register(
        self, name: str, check: Check, restart: Restart | None = None, *, critical: bool = True
    ) -> None:
        """Add (or replace) a component; other modules register theirs the same way."""
        self.components[name] = Component(name, check, restart, critical)

    async def _run(self, component: Component) -> dict[str, Any]:
        try:
            result = await component.check()
        except Exception as exc:
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return result

    async def check(self, *, restart: bool = True) -> dict[str, Any]:
        """Every component's state, the overall status, and restarts done now if ``restart``."""
        report: dict[str, dict[str, Any]] = {}
        for component in list(self.components.values()):
            result = await self._run(component)
            if not result.get("ok") and restart and component.restart is not None:
                error = str(result.get("error") or "check failed")
                result = await self._restart(component, error, result)
            result["restarts"] = component.restarts
            report[component.name] = result
        failed = [n for n, r in report.items() if not r.get("ok")]
        critical = [n for n in failed if self.components[n].critical]
        status = "down" if critical else ("degraded" if failed else "ok")
        return {"healthy": not critical, "status": status, "failed": failed, "components": report}

    async def _restart(
        self, component: Component, error: str, failed: dict[str, Any]
    ) -> dict[str, Any]:
        assert component.restart is not None
        log.warning("health: %s failed (%s); restarting it", component.name, error)
        component.last_error = error
        try:
            await component.restart()
        except Exception as exc:
            log.error("health: restarting %s failed: %s", component.name, exc)
            return {"ok": False, "error": error, "restart_error": str(exc)}
        component.restarts += 1
        component.last_restart = time.time()
        self.restarted.append({"component": component.name, "at": time.time(), "error": error})
        result = await self._run(component)
        result["restarted"] = True
        result["failed_with"] = {"error": error, **failed}
        if result.get("ok"):
            log.warning("health: %s restarted and healthy again", component.name)
        return result

    def start(self, interval: float) -> None:
        """Check (and restart) every ``interval`` seconds in the background."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop(interval))

    async def _loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.check()
            except Exception:  # the monitor must outlive any one failed round
                log.exception("health: a check round failed")
            done, self._round = self._round, None
            if done is not None:
                done.set()

    async def next_round(self) -> None:
        """Wait until the background monitor has finished its next round of checks."""
        if self._round is None:
            self._round = asyncio.Event()
        await self._round.wait()

    async def stop(self) -> None:
        """Stop the background checks."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def register_core_checks(system: SessionSystem) -> None:
    """The checks of the core: Redis, its scripts, the EMBEDDED server, backups, schedulers."""
    store = system.store

    async def redis() -> dict[str, Any]:
        began = time.perf_counter()
        await store.client.ping()
        result: dict[str, Any] = {
            "ok": True,
            "ping_ms": round((time.perf_counter() - began) * 1000, 3),
        }
        with contextlib.suppress(Exception):  # INFO differs on fakeredis and per cluster node
            info = await store.client.info("memory")
            if "used_memory" in info:
                result["used_memory"] = int(info["used_memory"])
        return result

    async def scripts() -> dict[str, Any]:
        missing = await store.scripts.missing(store.client)
        result: dict[str, Any] = {"ok": not missing, "missing": missing}
        if missing:
            result["error"] = f"{len(missing)} script(s) not loaded"
        return result

    async def reload_scripts() -> None:
        # A restart, a failover to a replica that never loaded them, SCRIPT FLUSH.
        await store.scripts.load(store.client)

    storage = system.storage
    if storage is not None and storage.server is not None:
        server = storage.server

        async def embedded() -> dict[str, Any]:
            pid = await asyncio.to_thread(server.running_pid)
            result: dict[str, Any] = {"ok": pid is not None, "pid": pid, "url": server.url}
            if pid is None:
                result["error"] = f"the embedded server of {server.data_dir} is not running"
            return result

        async def restart_embedded() -> None:
            await asyncio.to_thread(server.ensure_running)
            await store.scripts.load(store.client)  # a restarted server has an empty cache

        # Checked first: when the server is gone, restarting it mends redis and scripts too.
        system.health.register("server", embedded, restart_embedded)
    system.health.register("redis", redis)
    system.health.register("scripts", scripts, reload_scripts)

    async def backups() -> dict[str, Any]:
        listed = [b for b in system.persistence.list_backups() if not b.error]
        result: dict[str, Any] = {"ok": True, "count": len(listed)}
        if listed:
            created = dt.datetime.fromisoformat(listed[-1].created_at)
            if created.tzinfo is None:
                created = created.replace(tzinfo=dt.UTC)
            result["last_backup_age_s"] = round(
                (dt.datetime.now(dt.UTC) - created).total_seconds(), 1
            )
        return result

    if system.config.backup_dir is not None:
        system.health.register("backups", backups, critical=False)

    if system.backup_scheduler is not None:

        async def scheduler() -> dict[str, Any]:
            current = system.backup_scheduler
            running = current is not None and current.scheduler.running
            result: dict[str, Any] = {"ok": running, "runs": len(current.runs) if current else 0}
            if not running:
                result["error"] = "the backup scheduler is not running"
            return result

        async def restart_scheduler() -> None:
            old = system.backup_scheduler
            if old is not None:
                old.shutdown()
            system.backup_scheduler = system._new_backup_scheduler()
            if system.backup_scheduler is not None:
                system.backup_scheduler.start()

        system.health.register("backup_scheduler", scheduler, restart_scheduler, critical=False)
