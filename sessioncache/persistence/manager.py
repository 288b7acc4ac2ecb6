"""Persistence: the component behind SessionSystem's backup, restore, export and snapshot API."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from ..errors import BackendUnavailable, IntegrityError, SessionNotFound, ValidationError
from ..keys import parse_session_id
from ..lease import Lease
from ..store import SessionStore
from .backup import (
    MAX_EVENT_ENTRIES,
    MAX_EVENT_ENTRY_VALUES,
    MAX_EVENT_VALUES,
    BackupReader,
    BackupWriter,
    utc_now,
)
from .changes import ChangeIndex, Unarmed, pipelined
from .formats import Codec, Record, check_format, kind_counts
from .integrity import check_key
from .migrations import SCHEMA_VERSION, Migrations
from .restore import Decide, Progress, Restorer, RestoreReport, check_strategy

SUFFIX = ".scb"
log = logging.getLogger(__name__)


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


def _new_id(kind: str) -> str:
    stamp = utc_now().strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{kind}-{os.urandom(3).hex()}"


def _session_record(sid: str, fields: dict[bytes, bytes]) -> Record:
    return ["s", sid, int(fields.get(b"e", b"0")), fields]


def _events_record(sid: str, newest_first: list[Any], expire: int) -> Record:
    """["e", sid, expire, entries] from XREVRANGE's (id, {field: value}) pairs, oldest first.

    At most MAX_EVENT_ENTRIES entries were read; the oldest are also left out beyond
    MAX_EVENT_VALUES values in all, so every record written is one a restore accepts.
    """
    entries: list[list[Any]] = []
    total = 0
    for entry_id, fields in newest_first:
        values = [part for pair in fields.items() for part in pair]
        if len(values) > MAX_EVENT_ENTRY_VALUES:
            # Beyond what track_event.lua itself can XADD: not written by sessioncache.
            log.warning("stream of %s: entry %r has %d values; not backed up", sid, entry_id,
                        len(values))
            continue
        total += len(values)
        if total > MAX_EVENT_VALUES:
            break
        entries.append([entry_id, values])
    entries.reverse()
    return ["e", sid, max(expire, 0), entries]


class Persistence:
    """Backups (full and incremental chains), restores, single-session export, snapshots."""

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
        lease_ttl: float = 60.0,
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

    # -- helpers --------------------------------------------------------------------------

    def _dir(self) -> Path:
        if self.backup_dir is None:
            raise ValidationError(
                "no backup_dir configured: pass backup_dir to initialize_sessions()"
            )
        return self.backup_dir

    def _codec(self, format: str | None) -> Codec:
        codec = Codec(check_format(format or self.format), self.compresslevel)
        if codec.is_pickle and self.key is None:
            raise ValidationError(
                "pickle formats are written only with a backup_key: an unsigned pickle could "
                "never be loaded safely"
            )
        return codec

    def _events_flag(self, events: bool | None) -> bool:
        if events is None:
            return self.events
        if not isinstance(events, bool):
            raise ValidationError(f"events must be a bool or None, got {events!r}")
        return events

    def _base_manifest(
        self, backup_id: str, kind: str, description: str, events: bool = False
    ) -> dict[str, Any]:
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

    async def _read_sessions(
        self, chunk: list[bytes], events: bool, *, tombstones: bool
    ) -> list[Record]:
        """The records of these session keys, one pipeline: HGETALL each (atomic per session)
        and, with ``events``, right after it XREVRANGE (newest MAX_EVENT_ENTRIES) and
        PEXPIRETIME of the session's stream. A missing hash is a tombstone (``tombstones``) or
        skipped; a stream is recorded, right after its session, only where it exists."""
        client, keys = self.store.client, self.store.keys
        records: list[Record] = []
        if not events:
            hashes = await pipelined(client, [("hgetall", (k,)) for k in chunk])
            for key, fields in zip(chunk, hashes, strict=True):
                sid = keys.session_id_of_key(key.decode())
                if fields:
                    records.append(_session_record(sid, fields))
                elif tombstones:  # deleted or expired since the change was recorded
                    records.append(["d", sid])
            return records
        calls: list[tuple[str, tuple[Any, ...]]] = []
        for k in chunk:
            stream = keys.events_of_session_key(k.decode())
            calls += [
                ("hgetall", (k,)),
                ("xrevrange", (stream, "+", "-", MAX_EVENT_ENTRIES)),
                ("pexpiretime", (stream,)),
            ]
        flat = await pipelined(client, calls)
        replies = zip(flat[0::3], flat[1::3], flat[2::3], strict=True)
        for key, (fields, entries, expire) in zip(chunk, replies, strict=True):
            sid = keys.session_id_of_key(key.decode())
            if not fields:  # expired or deleted (since SCAN, or since the change was recorded)
                if tombstones:
                    records.append(["d", sid])
                continue
            records.append(_session_record(sid, fields))
            if expire != -2:  # -2: no stream (PEXPIRETIME -1: a stream without expiry)
                records.append(_events_record(sid, entries or [], int(expire)))
        return records

    async def _scan_sessions(self, events: bool = False) -> AsyncIterator[list[Record]]:
        """Every session, read atomically one HGETALL each, a pipelined batch at a time (with
        ``events``, each followed by its event stream: see _read_sessions)."""
        client = self.store.client
        keys = self.store.keys
        batch: list[bytes] = []
        try:
            async for key in client.scan_iter(match=keys.session_pattern(), count=self.batch_size):
                batch.append(key)
                if len(batch) >= self.batch_size:
                    yield await self._read_sessions(batch, events, tombstones=False)
                    batch = []
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable while scanning sessions: {exc}") from exc
        if batch:
            yield await self._read_sessions(batch, events, tombstones=False)

    async def _lease(self) -> Lease:
        lease = Lease(self.store.client, self.store.keys.lease("backup"), self.lease_ttl)
        deadline = time.monotonic() + self.lease_wait
        while not await lease.acquire():
            if time.monotonic() >= deadline:
                raise BackendUnavailable(
                    "another process holds the backup lease (a backup is running); retry later"
                )
            await asyncio.sleep(0.05)
        return lease

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
        codec = self._codec(format)
        with_events = self._events_flag(events)
        lease = await self._lease()
        renewer = asyncio.create_task(lease._keep())
        try:
            return await self.create_under_lease(
                description, codec.name, incremental, progress, events=with_events
            )
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            with contextlib.suppress(BackendUnavailable):
                await lease.release()

    async def create_under_lease(
        self,
        description: str,
        format: str | None,
        incremental: bool,
        progress: bool = False,
        *,
        events: bool | None = None,
    ) -> str:
        """create_backup() for a caller that already holds the backup lease (the scheduler)."""
        directory = self._dir()
        codec = self._codec(format)
        with_events = self._events_flag(events)
        if incremental:
            return await self._incremental(directory, codec, description, progress, with_events)
        return await self._full(directory, codec, description, progress, with_events)

    async def _full(
        self, directory: Path, codec: Codec, description: str, progress: bool, events: bool
    ) -> str:
        backup_id = _new_id("full")
        manifest = self._base_manifest(backup_id, "full", description, events)
        # Arm first: every change from now on lands in the index with a sequence above what
        # the cut below reads, so the next incremental sees it even if this scan misses it.
        await self.changes.arm()
        cuts = [(r.slot, r.cut) async for batch in self.changes.read_batches() for r in batch]
        bar = Progress(f"backup {backup_id}") if progress else None
        with BackupWriter(
            directory / f"{backup_id}.{codec.name}{SUFFIX}", manifest, codec, self.key
        ) as w:
            async for records in self._scan_sessions(events):
                w.add_part(records)
                if bar:
                    bar.update(len(records))
            w.finish(chain=backup_id)
        if bar:
            bar.close()
        await self._commit(backup_id, cuts)
        await asyncio.to_thread(self.prune)
        return backup_id

    async def _incremental(
        self, directory: Path, codec: Codec, description: str, progress: bool, events: bool
    ) -> str:
        parent = await self._chain_tip()
        backup_id = _new_id("incr")
        manifest = self._base_manifest(backup_id, "incremental", description, events)
        manifest["parent"] = parent.backup_id
        bar = Progress(f"incremental {backup_id}") if progress else None
        cuts: list[tuple[int, float]] = []
        with BackupWriter(
            directory / f"{backup_id}.{codec.name}{SUFFIX}", manifest, codec, self.key
        ) as w:
            pending: list[bytes] = []

            async def flush(chunk: list[bytes]) -> None:
                records = await self._read_sessions(chunk, events, tombstones=True)
                w.add_part(records)
                if bar:
                    bar.update(len(records))

            try:
                async for batch in self.changes.read_batches():
                    for bucket in batch:
                        cuts.append((bucket.slot, bucket.cut))
                        pending += bucket.members
                    while len(pending) >= self.batch_size:
                        await flush(pending[: self.batch_size])
                        pending = pending[self.batch_size :]
            except Unarmed as exc:
                raise IntegrityError(
                    f"change bucket {exc.slot} lost its counter (evicted or deleted): "
                    "changes may be missing, so the chain cannot continue; take a full backup"
                ) from exc
            if pending:
                await flush(pending)
            w.finish(chain=parent_chain(parent))
        if bar:
            bar.close()
        await self._commit(backup_id, cuts)
        return backup_id

    async def _commit(self, backup_id: str, cuts: list[tuple[int, float]]) -> None:
        """Make a durable backup the chain's head, then drop the changes it captured.

        In this order an interruption (a scheduler shutting down cancels its job) is always
        safe: before the head moves, the file is an uncommitted descendant of the head and the
        index still holds everything since the head (see _chain_tip); after, only the trim is
        missing, and the next incremental reads a superset of what changed.
        """
        await pipelined(self.store.client, [("set", (self.store.keys.backup_head(), backup_id))])
        await self.changes.trim(self.store.scripts.change_trim, cuts)

    async def _chain_tip(self) -> BackupInfo:
        """The newest backup of this directory, if it is the one that last consumed the index."""
        try:
            head = await self.store.client.get(self.store.keys.backup_head())
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable: {exc}") from exc
        chained = [
            b for b in self.list_backups() if b.kind in ("full", "incremental") and not b.error
        ]
        if not chained:
            raise ValidationError("no full backup to chain an incremental onto; take a full backup")
        tip = chained[-1]
        # The head may trail the tip by backups whose commit was interrupted (see _commit):
        # they descend from the head and trimmed nothing, so the chain goes on from the tip.
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

    def list_backups(self, *, snapshots: bool = False) -> list[BackupInfo]:
        """Backups of backup_dir (or the snapshot directory), oldest first."""
        directory = self.snapshot_dir if snapshots else self._dir()
        if directory is None or not directory.is_dir():
            return []
        out = [self._info(path) for path in directory.glob(f"*{SUFFIX}")]
        return sorted(out, key=lambda b: b.backup_id)

    @staticmethod
    def _info(path: Path) -> BackupInfo:
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

    def find(self, backup: str | os.PathLike[str]) -> Path:
        """The file of a backup id (in backup_dir or the snapshot directory) or a path."""
        if isinstance(backup, os.PathLike) or os.sep in str(backup):
            path = Path(backup)
            if not path.is_file():
                raise ValidationError(f"no backup file {path}")
            return path
        if not isinstance(backup, str) or not backup or "/" in backup or backup.startswith("."):
            raise ValidationError(f"invalid backup id {backup!r}")
        for directory in (self.backup_dir, self.snapshot_dir):
            if directory is not None and directory.is_dir():
                found = sorted(directory.glob(f"{backup}.*{SUFFIX}"))
                if found:
                    return found[0]
        raise ValidationError(f"no backup with id {backup!r}")

    def _chain(self, path: Path) -> list[Path]:
        """The files to restore, full first: follow parent links from the given backup."""
        links = [path]
        seen = {path.name}
        with BackupReader(path) as reader:
            parent = reader.manifest.get("parent")
        while parent:
            link = self.find(parent)
            if link.name in seen or len(links) > 10_000:
                raise IntegrityError("backup chain loops")
            seen.add(link.name)
            links.append(link)
            with BackupReader(link) as reader:
                if reader.manifest["backup_id"] != parent:
                    raise IntegrityError(f"{link.name} does not hold backup {parent}")
                parent = reader.manifest.get("parent")
        links.reverse()
        return links

    def _verify_file(
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
            signed = reader.check_signature(self.key, allow_pickle=allow_pickle)
            report.signature_checked = signed
            upgrade = self._upgrader(m["schema"])
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

    def _verify_chain(
        self, backup: str | os.PathLike[str], allow_pickle: bool, *, deep: bool = True
    ) -> tuple[list[tuple[Path, bool]], VerifyReport]:
        """Every link of the chain, full first, each with whether its records were validated."""
        path = self.find(backup)
        report = VerifyReport(backup_id=str(backup), ok=False)
        links = [
            (link, self._verify_file(link, allow_pickle, report, deep=deep))
            for link in self._chain(path)
        ]
        report.ok = True
        return links, report

    async def verify_backup(
        self, backup_id: str | os.PathLike[str], *, allow_pickle: bool = False
    ) -> VerifyReport:
        """Check structure, checksums and signature of a backup and its chain, restoring nothing."""
        self.find(backup_id)  # an unknown id raises ValidationError rather than reporting
        try:
            _, report = await asyncio.to_thread(self._verify_chain, backup_id, allow_pickle)
        except (IntegrityError, ValidationError) as exc:
            return VerifyReport(backup_id=str(backup_id), ok=False, error=str(exc))
        return report

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
        strategy = check_strategy(strategy)
        if strategy == "interactive" and decide is None:
            raise ValidationError(
                "strategy 'interactive' needs a decide(stored, incoming) callback"
            )
        began = time.monotonic()
        # Nothing is written until every link passed every check.
        links, verified = await asyncio.to_thread(
            partial(self._verify_chain, backup_id, allow_pickle, deep=False)
        )
        report = RestoreReport(str(backup_id), strategy, chain=list(verified.chain))
        restorer = Restorer(self.store)
        if strategy == "replace":
            report.wiped = await restorer.wipe()
            # The wipe deleted sessions without telling the change index: the chain is broken.
            await pipelined(self.store.client, [("delete", (self.store.keys.backup_head(),))])
        mode = "replace" if strategy == "replace" else strategy
        bar = (
            Progress(
                f"restore {backup_id}", verified.sessions + verified.tombstones + verified.events
            )
            if progress
            else None
        )
        superseded: set[str] = set()
        # Two batches in flight: Redis runs one batch's scripts while we encode the next.
        # Interactive stays sequential so questions never interleave.
        in_flight: set[asyncio.Task[None]] = set()
        limit = 1 if strategy == "interactive" else 2
        try:
            for depth, (link, checked) in enumerate(reversed(links)):
                newest_first = depth < len(links) - 1
                for records in self._read_records(link, allow_pickle, checked=checked):
                    read = len(records)
                    if superseded:
                        records = [r for r in records if r[1] not in superseded]
                    if newest_first:
                        # Newest link first: a session's latest record wins; older links skip.
                        # The filter above ran before this update, so a session's "s" and
                        # "e" records of one link (one part) stay together: its stream comes
                        # from the same link as its hash, or not at all.
                        superseded.update(r[1] for r in records)
                    if len(in_flight) >= limit:
                        done, in_flight = await asyncio.wait(
                            in_flight, return_when=asyncio.FIRST_COMPLETED
                        )
                        for task in done:
                            task.result()
                    in_flight.add(
                        asyncio.create_task(restorer.apply(records, mode, report, decide))
                    )
                    if bar:
                        bar.update(read)
            for task in in_flight:
                await task
        finally:
            for task in in_flight:
                task.cancel()
        if bar:
            bar.close()
        report.seconds = time.monotonic() - began
        return report

    def _upgrader(self, schema: int) -> Callable[[Record], Record] | None:
        """The schema migration for records of this schema (None if already current)."""
        self.migrations.check(schema)
        if schema == self.migrations.current:
            return None
        return lambda record: self.migrations.upgrade(record, schema)

    def _read_records(
        self, path: Path, allow_pickle: bool, *, checked: bool = False
    ) -> Iterator[list[Record]]:
        """A backup's records part by part; signature and checksums are checked again.

        ``checked``: this file's records were all validated by a verify pass; each part's
        SHA-256 is still compared, so they decode to the very records that passed.
        """
        with BackupReader(path) as reader:
            reader.check_signature(self.key, allow_pickle=allow_pickle)
            upgrade = self._upgrader(reader.manifest["schema"])
            validate = not checked or upgrade is not None
            yield from reader.records(
                pickle_allowed=allow_pickle, upgrade=upgrade, validate=validate
            )

    # -- single session -------------------------------------------------------------------

    async def export_session(
        self,
        session_id: str,
        path: str | os.PathLike[str] | None = None,
        *,
        format: str = "json",
    ) -> bytes | Path:
        """One session in a signed, checksummed file (or its bytes when no path is given)."""
        ident = parse_session_id(session_id)
        key = self.store.keys.session(ident)
        try:
            fields = await self.store.client.hgetall(key)
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable during export: {exc}") from exc
        if not fields:
            raise SessionNotFound(session_id)
        codec = self._codec(format)
        backup_id = _new_id("session")
        manifest = self._base_manifest(backup_id, "session", f"session {session_id}")
        target = Path(path) if path is not None else None
        with tempfile.TemporaryDirectory(prefix="sessioncache-export-") as tmp:
            out = target or Path(tmp) / f"{backup_id}{SUFFIX}"
            with BackupWriter(out, manifest, codec, self.key) as w:
                w.add_part([_session_record(ident.session_id, fields)])
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
            reader.check_signature(self.key, allow_pickle=allow_pickle)
            m = reader.manifest
            if m["kind"] != "session":
                raise ValidationError(f"not a single-session export (kind {m['kind']!r})")
            upgrade = self._upgrader(m["schema"])
            records = [
                r
                for batch in reader.records(pickle_allowed=allow_pickle, upgrade=upgrade)
                for r in batch
            ]
        if len(records) != 1 or records[0][0] != "s":
            raise IntegrityError("a session export must hold exactly one session")
        report = RestoreReport(m["backup_id"], strategy)
        await Restorer(self.store).apply(records, strategy, report, decide)
        if report.expired:
            raise ValidationError(f"session {records[0][1]!r} in this export has already expired")
        return str(records[0][1])

    # -- format and schema migration ------------------------------------------------------

    def migrate_backup(
        self, backup_id: str | os.PathLike[str], to_format: str, *, allow_pickle: bool = False
    ) -> BackupInfo:
        """Rewrite a backup in another format (and today's schema), keeping its id and chain."""
        codec = self._codec(to_format)
        path = self.find(backup_id)
        report = VerifyReport(str(backup_id), ok=False)
        self._verify_file(path, allow_pickle, report)
        with BackupReader(path) as reader:
            old = dict(reader.manifest)
        keep = {
            k: old[k]
            for k in ("backup_id", "kind", "namespace", "created_at", "description", "parent")
        }
        if "events" in old:
            keep["events"] = old["events"]
        manifest = {
            **keep,
            "schema": SCHEMA_VERSION,
            "migrated_from": f"{old['format']}/schema {old['schema']}",
        }
        target = path.with_name(f"{old['backup_id']}.{codec.name}{SUFFIX}")
        with BackupWriter(target, manifest, codec, self.key) as w:
            for records in self._read_records(path, allow_pickle):
                w.add_part(records)
            w.finish(chain=old.get("chain", old["backup_id"]))
        if target != path:
            path.unlink()
        return self._info(target)

    # -- snapshots and retention ----------------------------------------------------------

    async def snapshot(
        self, format: str | None = None, *, progress: bool = False, events: bool | None = None
    ) -> Path:
        """A point-in-time export of every session to a file named by time (RDB-style)."""
        if self.snapshot_dir is None:
            raise ValidationError("no snapshot directory: pass backup_dir or snapshot_dir")
        codec = self._codec(format)
        with_events = self._events_flag(events)
        backup_id = "snapshot-" + utc_now().strftime("%Y%m%dT%H%M%S%fZ")
        manifest = self._base_manifest(backup_id, "snapshot", "scheduled snapshot", with_events)
        path = self.snapshot_dir / f"{backup_id}.{codec.name}{SUFFIX}"
        bar = Progress(f"snapshot {backup_id}") if progress else None
        with BackupWriter(path, manifest, codec, self.key) as w:
            async for records in self._scan_sessions(with_events):
                w.add_part(records)
                if bar:
                    bar.update(len(records))
            w.finish(chain=backup_id)
        if bar:
            bar.close()
        if self.snapshot_keep_last:
            old = self.list_backups(snapshots=True)[: -self.snapshot_keep_last]
            for info in old:
                self._retire(info.path)
        return path

    def _retire(self, path: Path) -> None:
        if self.archive_dir is not None:
            self.archive_dir.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), str(self.archive_dir / path.name))
        else:
            path.unlink(missing_ok=True)

    def prune(self, keep_last: int | None = None, max_age: float | None = None) -> list[str]:
        """Retire whole chains beyond the newest ``keep_last`` or older than ``max_age`` seconds.

        The newest chain is always kept. Retired files move to archive_dir, or are deleted.
        """
        keep_last = keep_last if keep_last is not None else self.keep_last
        max_age = max_age if max_age is not None else self.max_age
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
                    self._retire(b.path)
                    retired.append(b.backup_id)
        return retired


def parent_chain(parent: BackupInfo) -> str:
    """The id of the full backup a chain starts from."""
    with BackupReader(parent.path) as reader:
        return str(reader.manifest.get("chain") or parent.backup_id)
