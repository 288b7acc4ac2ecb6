"""Verification of backup files and chains: structure, checksums, signature, record counts."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import IntegrityError, ValidationError
from .catalogue import Catalogue
from .container import BackupReader, check_identity
from .formats import Record, kind_counts
from .settings import Settings


@dataclass(slots=True)
class VerifyReport:
    """The outcome of verify_backup(): ok, or the first problem found."""

    backup_id: str
    ok: bool
    error: str | None = None
    chain: list[str] = field(default_factory=list)
    format: str | None = None
    sessions: int = 0
    tombstones: int = 0
    parts: int = 0
    signature_checked: bool = False
    events: int = 0


class Verifier:
    """Checks files before anything is loaded, and reads checked records back."""

    def __init__(self, settings: Settings, catalogue: Catalogue) -> None:
        self.settings = settings
        self.catalogue = catalogue

    def upgrader(self, schema: int) -> Callable[[Record], Record] | None:
        """The schema migration for records of this schema (None if already current)."""
        migrations = self.settings.migrations
        migrations.check(schema)
        if schema == migrations.current:
            return None
        return lambda record: migrations.upgrade(record, schema)

    def verify_file(
        self, path: Path, allow_pickle: bool, report: VerifyReport, *, deep: bool = True
    ) -> bool:
        """Check one file; True if its records were also decoded and validated here.

        Not ``deep`` (a restore's pre-check): a file signed with our key in today's schema, in a
        format other than pickle, is checked by signature and checksums alone. Those already
        prove every byte is what our writer wrote, so decoding it twice (here, then to write
        it) would only double the cost; the restore still validates each record as it decodes
        it.
        """
        with BackupReader(path) as reader:
            m = reader.manifest
            signed = reader.check_signature(self.settings.key, allow_pickle=allow_pickle)
            check_identity(path, m)
            report.signature_checked = signed
            upgrade = self.upgrader(m["schema"])
            light = not deep and signed and upgrade is None and not reader.codec.is_pickle
            counts = m["counts"]
            if light:
                for _ in reader.raw_parts():
                    report.parts += 1
                sessions = int(counts.get("sessions", 0))
                tombstones = int(counts.get("tombstones", 0))
                events = int(counts.get("events", 0))
            else:
                sessions = tombstones = events = 0
                for records in reader.records(pickle_allowed=allow_pickle, upgrade=upgrade):
                    s, d, e = kind_counts(records)
                    sessions, tombstones, events = sessions + s, tombstones + d, events + e
                    report.parts += 1
                # Backups from before event streams have no "events" count: they hold none.
                if (sessions, tombstones, events) != (
                    counts.get("sessions"),
                    counts.get("tombstones"),
                    counts.get("events", 0),
                ):
                    raise IntegrityError("record counts differ from the manifest")
            report.chain.append(m["backup_id"])
            report.format = m["format"]
            report.sessions += sessions
            report.tombstones += tombstones
            report.events += events
            return not light

    def verify_chain(
        self, backup: str | os.PathLike[str], allow_pickle: bool, *, deep: bool = True
    ) -> tuple[list[tuple[Path, bool]], VerifyReport]:
        """Every link of the chain, full first, each with whether its records were validated."""
        path = self.catalogue.find(backup)
        report = VerifyReport(backup_id=str(backup), ok=False)
        links = [
            (link, self.verify_file(link, allow_pickle, report, deep=deep))
            for link in self.catalogue.chain(path)
        ]
        report.ok = True
        return links, report

    async def verify_backup(
        self, backup_id: str | os.PathLike[str], *, allow_pickle: bool = False
    ) -> VerifyReport:
        """Check structure, checksums and signature of a backup and its chain, restoring nothing."""
        self.catalogue.find(backup_id)  # an unknown id raises ValidationError rather than reporting
        try:
            _, report = await asyncio.to_thread(self.verify_chain, backup_id, allow_pickle)
        except (IntegrityError, ValidationError) as exc:
            return VerifyReport(backup_id=str(backup_id), ok=False, error=str(exc))
        return report

    def read_records(
        self, path: Path, allow_pickle: bool, *, checked: bool = False
    ) -> Iterator[list[Record]]:
        """A backup's records part by part; signature and checksums are checked again.

        ``checked``: this file's records were all validated by a verify pass; each part's
        SHA-256 is still compared, so they decode to the very records that passed.
        """
        with BackupReader(path) as reader:
            reader.check_signature(self.settings.key, allow_pickle=allow_pickle)
            check_identity(path, reader.manifest)
            upgrade = self.upgrader(reader.manifest["schema"])
            validate = not checked or upgrade is not None
            yield from reader.records(
                pickle_allowed=allow_pickle, upgrade=upgrade, validate=validate
            )
