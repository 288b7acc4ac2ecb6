"""Single-session export/import, and migrating a backup to another format and schema."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from redis.exceptions import RedisError

from ..errors import BackendUnavailable, IntegrityError, SessionNotFound, ValidationError
from ..identity import parse_session_id
from .backups import session_record
from .catalogue import BackupInfo, Catalogue, info
from .container import SUFFIX, BackupReader, BackupWriter
from .migrations import SCHEMA_VERSION
from .restore import Decide, Restorer, RestoreReport, check_strategy
from .settings import Settings, new_id
from .verify import Verifier, VerifyReport


class Transfer:
    """Moves data in and out of the backup format outside of chains."""

    def __init__(self, settings: Settings, catalogue: Catalogue, verifier: Verifier) -> None:
        self.settings = settings
        self.catalogue = catalogue
        self.verifier = verifier

    async def export_session(
        self,
        session_id: str,
        path: str | os.PathLike[str] | None = None,
        *,
        format: str = "json",
    ) -> bytes | Path:
        """One session in a signed, checksummed file (or its bytes when no path is given)."""
        s = self.settings
        ident = parse_session_id(session_id)
        key = s.store.keys.session(ident)
        try:
            fields = await s.store.client.hgetall(key)
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable during export: {exc}") from exc
        if not fields:
            raise SessionNotFound(session_id)
        codec = s.codec(format)
        backup_id = new_id("session")
        manifest = s.base_manifest(backup_id, "session", f"session {session_id}")
        target = Path(path) if path is not None else None
        with tempfile.TemporaryDirectory(prefix="sessioncache-export-") as tmp:
            out = target or Path(tmp) / f"{backup_id}{SUFFIX}"
            with BackupWriter(out, manifest, codec, s.key) as w:
                w.add_part([session_record(ident.session_id, fields)])
                w.finish(chain=backup_id)
            if target is None:
                return out.read_bytes()
        return target

    async def import_session(
        self,
        source: str | os.PathLike[str] | bytes,
        strategy: str = "replace",
        *,
        decide: Decide | None = None,
        allow_pickle: bool = False,
    ) -> str:
        """Load a session exported by export_session(); its id. Checked fully before writing."""
        strategy = check_strategy(strategy)
        if isinstance(source, bytes):
            reader = BackupReader.from_bytes(source)
        else:
            reader = BackupReader(Path(source))
        with reader:
            reader.check_signature(self.settings.key, allow_pickle=allow_pickle)
            m = reader.manifest
            if m["kind"] != "session":
                raise ValidationError(f"not a single-session export (kind {m['kind']!r})")
            upgrade = self.verifier.upgrader(m["schema"])
            records = [
                r
                for batch in reader.records(pickle_allowed=allow_pickle, upgrade=upgrade)
                for r in batch
            ]
        if len(records) != 1 or records[0][0] != "s":
            raise IntegrityError("a session export must hold exactly one session")
        report = RestoreReport(m["backup_id"], strategy)
        await Restorer(self.settings.store).apply(records, strategy, report, decide)
        if report.expired:
            raise ValidationError(f"session {records[0][1]!r} in this export has already expired")
        return str(records[0][1])

    def migrate_backup(
        self, backup_id: str | os.PathLike[str], to_format: str, *, allow_pickle: bool = False
    ) -> BackupInfo:
        """Rewrite a backup in another format (and today's schema), keeping its id and chain."""
        s = self.settings
        codec = s.codec(to_format)
        path = self.catalogue.find(backup_id)
        report = VerifyReport(str(backup_id), ok=False)
        self.verifier.verify_file(path, allow_pickle, report)
        with BackupReader(path) as reader:
            old = dict(reader.manifest)
        keep = {
            k: old[k]
            for k in ("backup_id", "kind", "namespace", "created_at", "description", "parent")
        }
        for optional in ("events", "depth"):
            if optional in old:
                keep[optional] = old[optional]
        manifest = {
            **keep,
            "schema": SCHEMA_VERSION,
            "migrated_from": f"{old['format']}/schema {old['schema']}",
        }
        target = path.with_name(f"{old['backup_id']}.{codec.name}{SUFFIX}")
        with BackupWriter(target, manifest, codec, s.key) as w:
            for records in self.verifier.read_records(path, allow_pickle):
                w.add_part(records)
            w.finish(chain=old.get("chain", old["backup_id"]))
        if target != path:
            path.unlink()
        return info(target)
