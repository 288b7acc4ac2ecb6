"""Worker processes for the fleet-job tests: APScheduler in each, one run per interval."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any


def fleet_member(
    url: str, namespace: str, interval: float, ticks: int, victim: bool, barrier: Any
) -> None:
    """Run a FleetJob on an AsyncIOScheduler for `ticks` of its own ticks after the barrier.

    Each run appends "<interval>:<missed>:<pid>" to the list ``<namespace>:log``. The victim
    instead claims the first interval it can, notes it in ``<namespace>:killed`` and SIGKILLs
    itself inside the run, before the run is recorded as finished.
    """

    async def main() -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        from sessioncache.fleet import FleetJob, FleetRun
        from sessioncache.store import SessionStore

        store = await SessionStore.connect(url, namespace=namespace, socket_timeout=10.0)
        log_key = f"{namespace}:log"

        async def work(run: FleetRun) -> None:
            if victim:
                await store.client.set(f"{namespace}:killed", run.interval)
                os.kill(os.getpid(), signal.SIGKILL)
            missed = "" if run.missed is None else run.missed
            await store.client.rpush(log_key, f"{run.interval}:{missed}:{os.getpid()}")

        job = FleetJob(store.client, store.keys, "probe", interval, work, lease_ttl=0.3)
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
        if victim:
            while True:  # claim at once, ahead of the schedulers' first ticks
                await job.run_once()
                await asyncio.sleep(0.01)
        scheduler = AsyncIOScheduler(timezone="UTC")
        job.schedule(scheduler)
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        scheduler.start()
        # Stop half an interval after the last of our `ticks` ticks (APScheduler's first tick
        # comes one interval after start).
        loop.call_later(interval * (ticks + 0.5), done.set)
        await done.wait()
        scheduler.pause()
        await job.drain()
        scheduler.shutdown(wait=False)
        await store.close()

    asyncio.run(main())


def backup_member(
    url: str, namespace: str, directory: str, key: str, interval: float, ticks: int, barrier: Any
) -> None:
    """Run BackupScheduler (backups and snapshots every `interval`) for `ticks` ticks."""

    async def main() -> None:
        from sessioncache.persistence import Persistence
        from sessioncache.persistence.scheduler import BackupScheduler
        from sessioncache.store import SessionStore

        store = await SessionStore.connect(url, namespace=namespace, socket_timeout=10.0)
        scheduler = BackupScheduler(
            Persistence(store, backup_dir=directory, key=key, lease_ttl=5.0),
            backup_interval=interval,
            snapshot_interval=interval,
            full_every=4,
        )
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
        scheduler.start()
        done = asyncio.Event()
        asyncio.get_running_loop().call_later(interval * (ticks + 0.5), done.set)
        await done.wait()
        await scheduler.stop()
        await store.close()

    asyncio.run(main())
