"""Persistence: the facade behind SessionSystem's backup, restore, export and snapshot API."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from ..lease import Lease
from .backups import BackupCreator
from .catalogue import BackupInfo, Catalogue
from .restore import Decide, RestoreReport
from .restoring import ChainRestorer
from .settings import Settings
from .transfer import Transfer
from .verify import Verifier, VerifyReport


class Persistence(Settings):
    """Backups (full and incremental chains), restores, single-session export, snapshots.

    The configuration (Settings, checked by its constructor) plus one object per job:
    catalogue (listing, chains, retention), verifier, creator (backups and snapshots),
    chain restorer and transfer (export, import, migration). Every method delegates.
    """

    @cached_property
    def catalogue(self) -> Catalogue:
        """Listing, finding and chaining backup files; retention."""
        return Catalogue(self)

    @cached_property
    def verifier(self) -> Verifier:
        """Checks of files and chains."""
        return Verifier(self, self.catalogue)

    @cached_property
    def creator(self) -> BackupCreator:
        """Writes backups and snapshots."""
        return BackupCreator(self, self.catalogue)

    @cached_property
    def chain_restorer(self) -> ChainRestorer:
        """Verifies, then loads, a chain."""
        return ChainRestorer(self, self.verifier)

    @cached_property
    def transfer(self) -> Transfer:
        """Single-session export/import and format migration."""
        return Transfer(self, self.catalogue, self.verifier)

    # -- backups --------------------------------------------------------------------------

    async def create_backup(
        self,
        description: str = "",
        format: str | None = None,
        incremental: bool = False,
        *,
        progress: bool = False,
        events: bool | None = None,
    ) -> str:
        """Write a full backup, or an incremental one chained onto the newest backup; its id.

        ``events``: also back up each session's event stream (None: the Persistence default).
        """
        return await self.creator.create_backup(
            description, format, incremental, progress=progress, events=events
        )

    async def create_under_lease(
        self,
        description: str,
        format: str | None,
        incremental: bool,
        progress: bool = False,
        *,
        events: bool | None = None,
        lease: Lease | None = None,
    ) -> str:
        """create_backup() for a caller that already holds the backup lease (the scheduler);
        ``lease``, if given, must still be held when the backup commits."""
        return await self.creator.create_under_lease(
            description, format, incremental, progress, events=events, lease=lease
        )

    async def chain_tip(self) -> BackupInfo:
        """The backup an incremental would chain onto; ValidationError if the chain is broken."""
        return await self.catalogue.chain_tip()

    def list_backups(self, *, snapshots: bool = False) -> list[BackupInfo]:
        """Backups of backup_dir (or the snapshot directory), oldest first."""
        return self.catalogue.list_backups(snapshots=snapshots)

    def find(self, backup: str | os.PathLike[str]) -> Path:
        """The file of a backup id (in backup_dir or the snapshot directory) or a path."""
        return self.catalogue.find(backup)

    async def verify_backup(
        self, backup_id: str | os.PathLike[str], *, allow_pickle: bool = False
    ) -> VerifyReport:
        """Check structure, checksums and signature of a backup and its chain, restoring nothing."""
        return await self.verifier.verify_backup(backup_id, allow_pickle=allow_pickle)

    async def restore_backup(
        self,
        backup_id: str | os.PathLike[str],
        strategy: str = "merge",
        *,
        decide: Decide | None = None,
        allow_pickle: bool = False,
        progress: bool = False,
    ) -> RestoreReport:
        """Verify the backup (and its chain) completely, then load it with the strategy."""
        return await self.chain_restorer.restore_backup(
            backup_id, strategy, decide=decide, allow_pickle=allow_pickle, progress=progress
        )

    # -- single session and migration -----------------------------------------------------

    async def export_session(
        self,
        session_id: str,
        path: str | os.PathLike[str] | None = None,
        *,
        format: str = "json",
    ) -> bytes | Path:
        """One session in a signed, checksummed file (or its bytes when no path is given)."""
        return await self.transfer.export_session(session_id, path, format=format)

    async def import_session(
        self,
        source: str | os.PathLike[str] | bytes,
        strategy: str = "replace",
        *,
        decide: Decide | None = None,
        allow_pickle: bool = False,
    ) -> str:
        """Load a session exported by export_session(); its id. Checked fully before writing."""
        return await self.transfer.import_session(
            source, strategy, decide=decide, allow_pickle=allow_pickle
        )

    def migrate_backup(
        self, backup_id: str | os.PathLike[str], to_format: str, *, allow_pickle: bool = False
    ) -> BackupInfo:
        """Rewrite a backup in another format (and today's schema), keeping its id and chain."""
        return self.transfer.migrate_backup(backup_id, to_format, allow_pickle=allow_pickle)

    # -- snapshots and retention ----------------------------------------------------------

    async def snapshot(
        self, format: str | None = None, *, progress: bool = False, events: bool | None = None
    ) -> Path:
        """A point-in-time export of every session to a file named by time (RDB-style)."""
        return await self.creator.snapshot(format, progress=progress, events=events)

    def prune(self, keep_last: int | None = None, max_age: float | None = None) -> list[str]:
        """Retire whole chains beyond the newest ``keep_last`` or older than ``max_age`` seconds.

        The newest chain is always kept. Retired files move to archive_dir, or are deleted.
        """
        return self.catalogue.prune(keep_last, max_age)
