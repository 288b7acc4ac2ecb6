"""The catalogue of backup files: listing, finding by id, chains of links, retention."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from redis.exceptions import RedisError

from ..errors import BackendUnavailable, IntegrityError, ValidationError
from .container import SUFFIX, BackupReader
from .settings import Settings


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """One backup file as listed from its manifest."""

    backup_id: str
    kind: str
    format: str
    created_at: str
    description: str
    parent: str | None
    sessions: int
    tombstones: int
    path: Path
    size: int
    error: str | None = None
    events: int = 0
    """Event stream records (0 for backups taken without events, or before they existed)."""


def info(path: Path) -> BackupInfo:
    """A file's BackupInfo from its manifest (``error`` set when it cannot be read)."""
    name = path.name.split(".", 1)[0]
    try:
        with BackupReader(path) as reader:
            m = reader.manifest
        return BackupInfo(
            m["backup_id"],
            m["kind"],
            m["format"],
            m["created_at"],
            m["description"],
            m.get("parent"),
            int(m["counts"].get("sessions", 0)),
            int(m["counts"].get("tombstones", 0)),
            path,
            path.stat().st_size,
            events=int(m["counts"].get("events", 0)),
        )
    except (IntegrityError, ValidationError, OSError) as exc:
        return BackupInfo(name, "?", "?", "", "", None, 0, 0, path, 0, error=str(exc))


def chain_place(parent: BackupInfo) -> tuple[str, int | None]:
    """(id of the full backup the chain starts from, depth of the next link after ``parent``);
    the depth is None below a parent written before depths were recorded."""
    with BackupReader(parent.path) as reader:
        m = reader.manifest
    depth = m.get("depth")
    return str(m.get("chain") or parent.backup_id), None if depth is None else depth + 1


class Catalogue:
    """Finds backups and their chains in backup_dir (and the snapshot directory)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def list_backups(self, *, snapshots: bool = False) -> list[BackupInfo]:
        """Backups of backup_dir (or the snapshot directory), oldest first."""
        s = self.settings
        directory = s.snapshot_dir if snapshots else s.directory()
        if directory is None or not directory.is_dir():
            return []
        out = [info(path) for path in directory.glob(f"*{SUFFIX}")]
        return sorted(out, key=lambda b: b.backup_id)

    def find(self, backup: str | os.PathLike[str]) -> Path:
        """The file of a backup id (in backup_dir or the snapshot directory) or a path."""
        if isinstance(backup, os.PathLike) or os.sep in str(backup):
            path = Path(backup)
            if not path.is_file():
                raise ValidationError(f"no backup file {path}")
            return path
        if not isinstance(backup, str) or not backup or "/" in backup or backup.startswith("."):
            raise ValidationError(f"invalid backup id {backup!r}")
        for directory in (self.settings.backup_dir, self.settings.snapshot_dir):
            if directory is not None and directory.is_dir():
                found = sorted(directory.glob(f"{backup}.*{SUFFIX}"))
                if found:
                    return found[0]
        raise ValidationError(f"no backup with id {backup!r}")

    def chain(self, path: Path) -> list[Path]:
        """The files to restore, full first: follow parent links from the given backup.

        Each link must sit where its signed manifest says: the chain it names starts at the
        first link, and its depth (where recorded) is its position.
        """
        links = [path]
        seen = {path.name}
        with BackupReader(path) as reader:
            manifests = [reader.manifest]
        parent = manifests[0].get("parent")
        while parent:
            link = self.find(parent)
            if link.name in seen or len(links) > 10_000:
                raise IntegrityError("backup chain loops")
            seen.add(link.name)
            links.append(link)
            with BackupReader(link) as reader:
                if reader.manifest["backup_id"] != parent:
                    raise IntegrityError(
                        f"{link.name} holds backup {reader.manifest['backup_id']}, not "
                        f"{parent}: swapped, replayed or renamed; refused"
                    )
                manifests.append(reader.manifest)
                parent = reader.manifest.get("parent")
        links.reverse()
        manifests.reverse()
        root = manifests[0]["backup_id"]
        for depth, m in enumerate(manifests):
            if m.get("chain", root) != root or m.get("depth", depth) != depth:
                raise IntegrityError(
                    f"backup {m['backup_id']} is not link {depth} of chain {root}: "
                    "a link was replaced by another chain's file"
                )
        return links

    async def chain_tip(self) -> BackupInfo:
        """The newest backup of this directory, if it is the one that last consumed the index."""
        store = self.settings.store
        try:
            head = await store.client.get(store.keys.backup_head())
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable: {exc}") from exc
        chained = [
            b for b in self.list_backups() if b.kind in ("full", "incremental") and not b.error
        ]
        if not chained:
            raise ValidationError("no full backup to chain an incremental onto; take a full backup")
        tip = chained[-1]
        # The head may trail the tip by backups whose commit was interrupted (see
        # BackupCreator.commit): they descend from the head and trimmed nothing, so the chain
        # goes on from the tip.
        by_id = {b.backup_id: b for b in chained}
        node: BackupInfo | None = tip
        while head is not None and node is not None:
            if node.backup_id == head.decode():
                return tip
            node = by_id.get(node.parent) if node.parent else None
        raise ValidationError(
            f"the change index was last consumed by {head.decode() if head else 'nothing'}, "
            f"not by {tip.backup_id} (the newest backup here): a restore with replace, another "
            "backup directory or a reset broke the chain; take a full backup"
        )

    def retire(self, path: Path) -> None:
        """Move a file to archive_dir, or delete it when there is none."""
        archive = self.settings.archive_dir
        if archive is not None:
            archive.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), str(archive / path.name))
        else:
            path.unlink(missing_ok=True)

    def prune(self, keep_last: int | None = None, max_age: float | None = None) -> list[str]:
        """Retire whole chains beyond the newest ``keep_last`` or older than ``max_age`` seconds.

        The newest chain is always kept. Retired files move to archive_dir, or are deleted.
        """
        keep_last = keep_last if keep_last is not None else self.settings.keep_last
        max_age = max_age if max_age is not None else self.settings.max_age
        if keep_last is None and max_age is None:
            return []
        backups = [b for b in self.list_backups() if not b.error]
        chains: dict[str, list[BackupInfo]] = {}
        by_id = {b.backup_id: b for b in backups}
        for b in backups:
            root = b
            while root.parent and root.parent in by_id:
                root = by_id[root.parent]
            chains.setdefault(root.backup_id, []).append(b)
        ordered = sorted(chains, reverse=True)
        now = dt.datetime.now(dt.UTC)
        retired = []
        for rank, root_id in enumerate(ordered):
            if rank == 0:
                continue
            newest = max(dt.datetime.fromisoformat(b.created_at) for b in chains[root_id])
            too_many = keep_last is not None and rank >= keep_last
            too_old = max_age is not None and (now - newest).total_seconds() > max_age
            if too_many or too_old:
                for b in chains[root_id]:
                    self.retire(b.path)
                    retired.append(b.backup_id)
        return retired

    def prune_snapshots(self) -> None:
        """Retire snapshots beyond the newest snapshot_keep_last."""
        keep = self.settings.snapshot_keep_last
        if keep:
            for old in self.list_backups(snapshots=True)[:-keep]:
                self.retire(old.path)
