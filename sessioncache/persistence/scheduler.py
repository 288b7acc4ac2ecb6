"""Scheduled backups and snapshots: APScheduler in every process, a Redis lease picks one."""

from __future__ import annotations

import logging
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from ..errors import SessionCacheError, ValidationError
from ..lease import Lease
from .manager import Persistence

log = logging.getLogger(__name__)


class BackupScheduler:
    """Runs backups (full, then incrementals) and snapshots on intervals, once per fleet.

    Every process schedules the jobs; each run first takes a fleet lease (SET NX PX), so only
    one process works at a time and the others skip that tick.
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

    def start(self) -> BackupScheduler:
        if self.backup_interval:
            self.scheduler.add_job(
                self.run_backup,
                "interval",
                seconds=self.backup_interval,
                id="sessioncache-backup",
                max_instances=1,
                coalesce=True,
            )
        if self.snapshot_interval:
            self.scheduler.add_job(
                self.run_snapshot,
                "interval",
                seconds=self.snapshot_interval,
                id="sessioncache-snapshot",
                max_instances=1,
                coalesce=True,
            )
        self.scheduler.start()
        return self

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    def _lease(self, name: str) -> Lease:
        p = self.persistence
        return Lease(p.store.client, p.store.keys.lease(name), p.lease_ttl)

    async def run_backup(self) -> str | None:
        """One scheduled backup if this process wins the lease: incremental when the chain
        allows it and fewer than full_every - 1 incrementals follow the last full; else full."""
        p = self.persistence
        async with self._lease("backup").hold() as held:
            if not held:
                return None
            try:
                backup_id = await self._backup(p)
            except SessionCacheError as exc:
                log.error("scheduled backup failed: %s", exc)
                return None
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
        async with self._lease("snapshot").hold() as held:
            if not held:
                return None
            try:
                path = await self.persistence.snapshot()
            except SessionCacheError as exc:
                log.error("scheduled snapshot failed: %s", exc)
                return None
        self.runs.append(str(path))
        return path
