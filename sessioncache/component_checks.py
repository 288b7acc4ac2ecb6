"""Health checks of the feature components: fleet jobs, the expiry scheduler, the near cache."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from .fleet import FleetJob
from .tracking import MemoryInvalidator, TrackingInvalidator

if TYPE_CHECKING:
    from .coherent import CoherentCache
    from .system import SessionSystem

log = logging.getLogger(__name__)


def fleet_jobs(system: SessionSystem) -> list[FleetJob]:
    """The fleet jobs this system schedules: backup and snapshot (when their interval is set)
    and expiry (when there are rules)."""
    jobs: list[FleetJob] = []
    scheduler = system.backup_scheduler
    if scheduler is not None:
        if scheduler.backup_interval:
            jobs.append(scheduler.backup_job)
        if scheduler.snapshot_interval:
            jobs.append(scheduler.snapshot_job)
    if system.expiry_scheduler is not None:
        jobs.append(system.expiry.job)
    return jobs


async def job_health(job: FleetJob) -> dict[str, Any]:
    """A fleet job as Redis records it: lease holder, whether a run holds the lease now, the
    last run's end (and its age) and status. A job whose last run failed is not ok (a failing
    job is not retried by every process, so only its next interval can mend it)."""
    status = await job.status()
    result: dict[str, Any] = {
        "ok": not (status.last_status or "ok").startswith("error"),
        "holder": status.holder,
        "running": status.running,
        "runs": status.runs,
        "takeovers": status.takeovers,
        "last_status": status.last_status,
        "last_run_at_ms": status.last_finished_ms,
        "interval_s": job.interval,
    }
    if status.last_finished_ms is not None:
        result["last_run_age_s"] = round(time.time() - status.last_finished_ms / 1000, 1)
    if not result["ok"]:
        result["error"] = f"the last {job.name} run ended with {status.last_status}"
    return result


def register_feature_checks(system: SessionSystem) -> None:
    """Fleet jobs and the expiry scheduler (registered when the system is built)."""
    for job in fleet_jobs(system):

        async def check(job: FleetJob = job) -> dict[str, Any]:
            return await job_health(job)

        system.health.register(f"job:{job.name}", check, critical=False)

    if system.expiry_scheduler is None:
        return

    async def expiry_scheduler() -> dict[str, Any]:
        current = system.expiry_scheduler
        running = current is not None and current.running
        result: dict[str, Any] = {"ok": running, "interval_s": system.expiry.job.interval}
        if not running:
            result["error"] = "the expiry scheduler is not running"
        return result

    async def restart_expiry_scheduler() -> None:
        old = system.expiry_scheduler
        if old is not None and old.running:
            old.shutdown(wait=False)
        fresh = AsyncIOScheduler(timezone="UTC")
        system.expiry.schedule(fresh)
        fresh.start()
        system.expiry_scheduler = fresh

    # Not critical: sessions are still served, and a touched session's deadline is still
    # checked on access; only the sweep of sessions nobody reads waits for the restart.
    system.health.register(
        "expiry_scheduler", expiry_scheduler, restart_expiry_scheduler, critical=False
    )


def register_near_cache_check(system: SessionSystem, cache: CoherentCache) -> None:
    """The near cache's invalidation source: the tracking connection to each primary (or,
    on memory://, the keyspace-notification listener). A connection that dropped since the
    last check counts as a failure even if it already reconnected, so the drop is reported
    (and the source reopened) rather than hidden by the reconnect."""
    seen = {"disconnects": cache.cache.stats.extra.get("disconnects", 0)}

    async def near_cache() -> dict[str, Any]:
        stats = cache.cache.summary()
        disconnects = int(stats.get("disconnects", 0))
        dropped = disconnects - seen["disconnects"]
        seen["disconnects"] = disconnects
        source = cache.source
        result: dict[str, Any] = {
            "hits": stats["hits"],
            "misses": stats["misses"],
            "entries": stats["entries"],
            "live": stats["live"],
        }
        if isinstance(source, TrackingInvalidator):
            nodes = list(source.nodes.values())
            down = [str(n.address) for n in nodes if not n.connected.is_set()]
            result.update(
                tracking_connections=len(nodes) - len(down), client_ids=source.client_ids()
            )
            problem = None
            if not nodes:
                problem = "no tracking connection is open"
            elif down:
                problem = f"tracking connection to {', '.join(down)} is down"
            elif dropped > 0:
                problem = f"a tracking connection dropped {dropped} time(s) since the last check"
        else:
            listening = isinstance(source, MemoryInvalidator) and source._pubsub is not None
            result["listener_connections"] = int(listening)
            problem = None if listening else "the invalidation listener is closed"
        result["ok"] = problem is None
        if problem is not None:
            result["error"] = problem
        return result

    async def restart() -> None:
        # Reopening empties the cache (every connection opened flushes it): nothing cached
        # before the drop can be served after it.
        await cache.source.stop()
        await cache.source.start()
        seen["disconnects"] = cache.cache.stats.extra.get("disconnects", 0)

    system.health.register("near_cache", near_cache, restart, critical=False)
