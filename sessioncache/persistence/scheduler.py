"""Scheduled backups and snapshots: APScheduler in every process, once per interval (fleet.py)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from ..errors import SessionCacheError, ValidationError
from ..fleet import FleetJob, FleetRun
from .manager import Persistence

log = logging.getLogger(__name__)


class BackupScheduler:
    """Runs backups (full, then incrementals) and snapshots on intervals, once per fleet.

    Every process schedules the jobs as fleet jobs (sessioncache/fleet.py): each interval
    one process claims the run, under the ``backup`` (or ``snapshot``) lease, so a scheduled
    backup never overlaps another or a manual ``create_backup()``.
    """

    def __init__(
        self,
        persistence: Persistence,
        *,
        backup_interval: float | None = None,
        full_every: int = 24,
        snapshot_interval: float | None = None,
    ) -> None:
        for name, value in (
            ("backup_interval", backup_interval),
            ("snapshot_interval", snapshot_interval),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0.1
            ):
                raise ValidationError(f"{name} must be at least 0.1 seconds, got {value!r}")
        if isinstance(full_every, bool) or not isinstance(full_every, int) or full_every < 1:
            raise ValidationError(f"backup_full_every must be an int >= 1, got {full_every!r}")
        self.persistence = persistence
        self.backup_interval = backup_interval
        self.full_every = full_every
        self.snapshot_interval = snapshot_interval
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self.runs: list[str] = []
        """Backup ids and snapshot paths this process produced (for monitoring and tests)."""
        store = persistence.store
        self.backup_job = FleetJob(
            store.client,
            store.keys,
            "backup",
            backup_interval or 3600.0,
            self._backup_run,
            lease_ttl=persistence.lease_ttl,
        )
        self.snapshot_job = FleetJob(
            store.client,
            store.keys,
            "snapshot",
            snapshot_interval or 3600.0,
            self._snapshot_run,
            lease_ttl=persistence.lease_ttl,
        )

    def start(self) -> BackupScheduler:
        """Schedule the configured jobs in this process and start its scheduler."""
        if self.backup_interval:
            self.backup_job.schedule(self.scheduler)
        if self.snapshot_interval:
            self.snapshot_job.schedule(self.scheduler)
        self.scheduler.start()
        return self

    def shutdown(self) -> None:
        """Stop this process's scheduler; a run it cancels is taken over by another process."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    async def stop(self) -> None:
        """Stop this process's scheduler once its run in progress, if any, has finished."""
        if self.scheduler.running:
            self.scheduler.pause()
            await self.backup_job.drain()
            await self.snapshot_job.drain()
            self.scheduler.shutdown(wait=False)
        # AsyncIOScheduler.shutdown() runs through call_soon: give it that loop turn.
        await asyncio.sleep(0)

    async def run_backup(self) -> str | None:
        """One scheduled backup if this process claims the current interval: incremental when
        the chain allows it and fewer than full_every - 1 incrementals follow the last full."""
        result = await self.backup_job.run_once()
        return result if isinstance(result, str) else None

    async def _backup_run(self, run: FleetRun) -> str:
        backup_id = await self._backup(self.persistence)
        self.runs.append(backup_id)
        return backup_id

    async def _backup(self, p: Persistence) -> str:
        backups = [b for b in p.list_backups() if b.kind in ("full", "incremental") and not b.error]
        since_full = 0
        for b in reversed(backups):
            if b.kind == "full":
                break
            since_full += 1
        incremental = bool(backups) and since_full < self.full_every - 1
        if incremental:
            try:
                await p.chain_tip()
            except (ValidationError, SessionCacheError) as exc:
                log.warning("incremental backup not possible (%s); taking a full one", exc)
                incremental = False
        return await p.create_under_lease("scheduled", None, incremental)

    async def run_snapshot(self) -> Path | None:
        """One scheduled snapshot if this process claims the current interval."""
        result = await self.snapshot_job.run_once()
        return result if isinstance(result, Path) else None

    async def _snapshot_run(self, run: FleetRun) -> Path:
        path = await self.persistence.snapshot()
        self.runs.append(str(path))
        return path
