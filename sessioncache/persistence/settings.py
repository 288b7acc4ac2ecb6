"""What every persistence job shares: the store, directories, key, format and their checks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ValidationError
from ..store import SessionStore
from .changes import ChangeIndex
from .container import utc_now
from .formats import Codec, check_format
from .integrity import check_key
from .migrations import SCHEMA_VERSION, Migrations


def new_id(kind: str) -> str:
    """A fresh backup id: sortable by time, then kind, then 6 random hex digits."""
    stamp = utc_now().strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{kind}-{os.urandom(3).hex()}"


class Settings:
    """The configuration of one Persistence, checked once; the jobs read it."""

    def __init__(
        self,
        store: SessionStore,
        *,
        backup_dir: str | os.PathLike[str] | None = None,
        archive_dir: str | os.PathLike[str] | None = None,
        snapshot_dir: str | os.PathLike[str] | None = None,
        key: str | bytes | None = None,
        format: str = "msgpack.gz",
        events: bool = False,
        batch_size: int = 1000,
        compresslevel: int = 1,
        keep_last: int | None = None,
        max_age: float | None = None,
        snapshot_keep_last: int | None = None,
        lease_ttl: float = 15.0,
        lease_wait: float = 30.0,
    ) -> None:
        self.store = store
        self.backup_dir = Path(backup_dir) if backup_dir else None
        self.archive_dir = Path(archive_dir) if archive_dir else None
        if snapshot_dir:
            self.snapshot_dir: Path | None = Path(snapshot_dir)
        else:
            self.snapshot_dir = self.backup_dir / "snapshots" if self.backup_dir else None
        self.key = check_key(key)
        self.format = check_format(format)
        if not isinstance(events, bool):
            raise ValidationError(f"events must be a bool, got {events!r}")
        self.events = events
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, int)
            or not 1 <= batch_size <= 100_000
        ):
            raise ValidationError(f"batch_size must be an int in [1, 100000], got {batch_size!r}")
        if compresslevel not in range(0, 10):
            raise ValidationError(f"compresslevel must be 0-9, got {compresslevel!r}")
        for name, value in (("keep_last", keep_last), ("snapshot_keep_last", snapshot_keep_last)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValidationError(f"{name} must be an int >= 1 or None, got {value!r}")
        if max_age is not None and (not isinstance(max_age, (int, float)) or max_age <= 0):
            raise ValidationError(f"max_age must be a positive number of seconds, got {max_age!r}")
        self.batch_size = batch_size
        self.compresslevel = compresslevel
        self.keep_last = keep_last
        self.max_age = max_age
        self.snapshot_keep_last = snapshot_keep_last
        self.lease_ttl = lease_ttl
        self.lease_wait = lease_wait
        self.migrations = Migrations()
        self.changes = ChangeIndex(store.client, store.keys)

    def directory(self) -> Path:
        """backup_dir, or a ValidationError saying how to configure it."""
        if self.backup_dir is None:
            raise ValidationError(
                "no backup_dir configured: pass backup_dir to initialize_sessions()"
            )
        return self.backup_dir

    def codec(self, format: str | None) -> Codec:
        """The codec of ``format`` (default: the configured one); pickle only with a key."""
        codec = Codec(check_format(format or self.format), self.compresslevel)
        if codec.is_pickle and self.key is None:
            raise ValidationError(
                "pickle formats are written only with a backup_key: an unsigned pickle could "
                "never be loaded safely"
            )
        return codec

    def events_flag(self, events: bool | None) -> bool:
        """Whether to include event streams (None: the configured default)."""
        if events is None:
            return self.events
        if not isinstance(events, bool):
            raise ValidationError(f"events must be a bool or None, got {events!r}")
        return events

    def base_manifest(
        self, backup_id: str, kind: str, description: str, events: bool = False
    ) -> dict[str, Any]:
        """The manifest fields every kind of file starts from."""
        if not isinstance(description, str) or len(description) > 4096:
            raise ValidationError("description must be a str of at most 4096 characters")
        return {
            "backup_id": backup_id,
            "kind": kind,
            "schema": SCHEMA_VERSION,
            "namespace": self.store.keys.namespace,
            "created_at": utc_now().isoformat(),
            "description": description,
            "parent": None,
            "events": events,
        }
