"""Health checks of the feature components: fleet jobs, the expiry scheduler, the near cache."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from redis.exceptions import RedisError

from .errors import BackendUnavailable
from .fleet import FleetJob, FleetJobStatus, read_job_status
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
    return status_health(await job.status(), job.interval)


def status_health(status: FleetJobStatus, interval: float | None = None) -> dict[str, Any]:
    """The health entry of a job's recorded status (``interval``: as scheduled here, else as
    the last claim recorded it)."""
    if interval is None and status.interval_ms is not None:
        interval = status.interval_ms / 1000
    result: dict[str, Any] = {
        "ok": not (status.last_status or "ok").startswith("error"),
        "holder": status.holder,
        "running": status.running,
        "runs": status.runs,
        "takeovers": status.takeovers,
        "last_status": status.last_status,
        "last_run_at_ms": status.last_finished_ms,
        "interval_s": interval,
    }
    if status.last_finished_ms is not None:
        result["last_run_age_s"] = round(time.time() - status.last_finished_ms / 1000, 1)
    if not result["ok"]:
        result["error"] = f"the last {status.job} run ended with {status.last_status}"
    return result


FLEET_JOB_NAMES = ("backup", "snapshot", "expiry", "sync")
"""The fleet jobs a SessionSystem may schedule (persistence/scheduler.py, expiry/engine.py,
system.py's batch sync)."""


async def register_recorded_jobs(system: SessionSystem) -> list[str]:
    """A ``job:NAME`` check for each fleet job Redis has a record of that this system does not
    schedule itself: the jobs other processes of the fleet run (``sessioncache health`` has no
    scheduler of its own). Returns the names added."""
    keys, client = system.store.keys, system.store.client
    added = []
    for name in FLEET_JOB_NAMES:
        component = f"job:{name}"
        if component in system.health.components:
            continue
        state_key, lease_key = keys.fleet_job(name), keys.lease(name)
        try:
            recorded = await client.exists(state_key)
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable reading fleet job {name}: {exc}") from exc
        if not recorded:
            continue

        async def check(state_key: str = state_key, lease_key: str = lease_key,
                        name: str = name) -> dict[str, Any]:  # fmt: skip
            return status_health(await read_job_status(client, state_key, lease_key, name))

        system.health.register(component, check, critical=False)
        added.append(name)
    return added


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
