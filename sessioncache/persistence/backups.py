"""Writing backups (full, incremental) and snapshots: read sessions from Redis into a file."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from ..errors import (
    BackendUnavailable,
    ChangeIndexUnarmed,
    IntegrityError,
    LeaseBusy,
    ValidationError,
)
from ..lease import Lease
from .catalogue import Catalogue, chain_place
from .changes import pipelined
from .container import SUFFIX, BackupWriter, sweep_leftovers, utc_now
from .formats import Codec, Record
from .records import MAX_EVENT_ENTRIES, MAX_EVENT_ENTRY_VALUES, MAX_EVENT_VALUES
from .restore import Progress
from .settings import Settings, new_id

log = logging.getLogger(__name__)


def session_record(sid: str, fields: dict[bytes, bytes]) -> Record:
    """["s", sid, expire, fields] of a session hash as read by HGETALL."""
    return ["s", sid, int(fields.get(b"e", b"0")), fields]


def events_record(sid: str, newest_first: list[Any], expire: int) -> Record:
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


class BackupCreator:
    """Full and incremental backups under the fleet's backup lease, and snapshots."""

    def __init__(self, settings: Settings, catalogue: Catalogue) -> None:
        self.settings = settings
        self.catalogue = catalogue

    async def read_sessions(
        self, chunk: list[bytes], events: bool, *, tombstones: bool
    ) -> list[Record]:
        """The records of these session keys, one pipeline: HGETALL each (atomic per session)
        and, with ``events``, right after it XREVRANGE (newest MAX_EVENT_ENTRIES) and
        PEXPIRETIME of the session's stream. A missing hash is a tombstone (``tombstones``) or
        skipped; a stream is recorded, right after its session, only where it exists."""
        client, keys = self.settings.store.client, self.settings.store.keys
        records: list[Record] = []
        if not events:
            hashes = await pipelined(client, [("hgetall", (k,)) for k in chunk])
            for key, fields in zip(chunk, hashes, strict=True):
                sid = keys.session_id_of_key(key.decode())
                if fields:
                    records.append(session_record(sid, fields))
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
            records.append(session_record(sid, fields))
            if expire != -2:  # -2: no stream (PEXPIRETIME -1: a stream without expiry)
                records.append(events_record(sid, entries or [], int(expire)))
        return records

    async def scan_sessions(self, events: bool = False) -> AsyncIterator[list[Record]]:
        """Every session, read atomically one HGETALL each, a pipelined batch at a time (with
        ``events``, each followed by its event stream: see read_sessions)."""
        client = self.settings.store.client
        keys = self.settings.store.keys
        size = self.settings.batch_size
        batch: list[bytes] = []
        try:
            async for key in client.scan_iter(match=keys.session_pattern(), count=size):
                batch.append(key)
                if len(batch) >= size:
                    yield await self.read_sessions(batch, events, tombstones=False)
                    batch = []
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable while scanning sessions: {exc}") from exc
        if batch:
            yield await self.read_sessions(batch, events, tombstones=False)

    async def lease(self) -> Lease:
        """The fleet's backup lease, waiting up to lease_wait for it."""
        s = self.settings
        lease = Lease(s.store.client, s.store.keys.lease("backup"), s.lease_ttl)
        deadline = time.monotonic() + s.lease_wait
        while not await lease.acquire():
            if time.monotonic() >= deadline:
                raise LeaseBusy(lease.key, s.lease_wait)
            await asyncio.sleep(0.05)
        return lease

    async def create_backup(
        self,
        description: str = "",
        format: str | None = None,
        incremental: bool = False,
        *,
        progress: bool = False,
        events: bool | None = None,
    ) -> str:
        """Write a full backup, or an incremental one chained onto the newest backup; its id."""
        codec = self.settings.codec(format)
        with_events = self.settings.events_flag(events)
        lease = await self.lease()
        renewer = asyncio.create_task(lease.keep())
        try:
            return await self.create_under_lease(
                description, codec.name, incremental, progress, events=with_events, lease=lease
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
        lease: Lease | None = None,
    ) -> str:
        """create_backup() for a caller that already holds the backup lease (the scheduler).

        ``lease``: the lease held; renewed once more right before the commit, so a holder that
        lost it (stalled past its TTL while another process took over) never moves the head.
        """
        directory = self.settings.directory()
        codec = self.settings.codec(format)
        with_events = self.settings.events_flag(events)
        for leftover in await asyncio.to_thread(sweep_leftovers, directory):
            log.warning("removed %s, left by a backup writer that died", leftover.name)
        if incremental:
            backup_id, cuts = await self._incremental(
                directory, codec, description, progress, with_events
            )
        else:
            backup_id, cuts = await self._full(directory, codec, description, progress, with_events)
        if lease is not None and not await lease.renew():
            # Another process may have taken the lease over (we stalled past its TTL): the
            # file must not become part of the chain it is extending.
            await asyncio.to_thread(self.catalogue.find(backup_id).unlink)
            raise BackendUnavailable(
                f"lost the backup lease before committing {backup_id}; the file was removed"
            )
        await self.commit(backup_id, cuts)
        if not incremental:
            await asyncio.to_thread(self.catalogue.prune)
        return backup_id

    async def _full(
        self, directory: Path, codec: Codec, description: str, progress: bool, events: bool
    ) -> tuple[str, list[tuple[int, float]]]:
        """Write a full backup's file; (its id, the change-index cuts its commit trims)."""
        s = self.settings
        backup_id = new_id("full")
        manifest = s.base_manifest(backup_id, "full", description, events)
        # Arm before the scan: every change from then on lands in the index with a sequence
        # above the cut read here, so the next incremental sees it even if this scan misses it.
        cuts = await s.changes.arm_and_cut()
        bar = Progress(f"backup {backup_id}") if progress else None
        with BackupWriter(
            directory / f"{backup_id}.{codec.name}{SUFFIX}", manifest, codec, s.key
        ) as w:
            async for records in self.scan_sessions(events):
                w.add_part(records)
                if bar:
                    bar.update(len(records))
            w.finish(chain=backup_id, depth=0)
        if bar:
            bar.close()
        return backup_id, cuts

    async def _incremental(
        self, directory: Path, codec: Codec, description: str, progress: bool, events: bool
    ) -> tuple[str, list[tuple[int, float]]]:
        """Write an incremental's file (the changes since the chain's tip); (id, cuts)."""
        s = self.settings
        parent = await self.catalogue.chain_tip()
        backup_id = new_id("incr")
        manifest = s.base_manifest(backup_id, "incremental", description, events)
        manifest["parent"] = parent.backup_id
        bar = Progress(f"incremental {backup_id}") if progress else None
        cuts: list[tuple[int, float]] = []
        with BackupWriter(
            directory / f"{backup_id}.{codec.name}{SUFFIX}", manifest, codec, s.key
        ) as w:
            pending: list[bytes] = []

            async def flush(chunk: list[bytes]) -> None:
                records = await self.read_sessions(chunk, events, tombstones=True)
                w.add_part(records)
                if bar:
                    bar.update(len(records))

            try:
                async for batch in s.changes.read_batches():
                    for bucket in batch:
                        cuts.append((bucket.slot, bucket.cut))
                        pending += bucket.members
                    while len(pending) >= s.batch_size:
                        await flush(pending[: s.batch_size])
                        pending = pending[s.batch_size :]
            except ChangeIndexUnarmed as exc:
                raise IntegrityError(
                    f"change bucket {exc.slot} lost its counter (evicted or deleted): "
                    "changes may be missing, so the chain cannot continue; take a full backup"
                ) from exc
            if pending:
                await flush(pending)
            root, depth = chain_place(parent)
            w.finish(chain=root, **({} if depth is None else {"depth": depth}))
        if bar:
            bar.close()
        return backup_id, cuts

    async def commit(self, backup_id: str, cuts: list[tuple[int, float]]) -> None:
        """Make a durable backup the chain's head, then drop the changes it captured.

        In this order an interruption (a scheduler shutting down cancels its job) is always
        safe: before the head moves, the file is an uncommitted descendant of the head and the
        index still holds everything since the head (see Catalogue.chain_tip); after, only the
        trim is missing, and the next incremental reads a superset of what changed.
        """
        store = self.settings.store
        await pipelined(store.client, [("set", (store.keys.backup_head(), backup_id))])
        await self.settings.changes.trim(store.scripts.change_trim, cuts)

    async def snapshot(
        self, format: str | None = None, *, progress: bool = False, events: bool | None = None
    ) -> Path:
        """A point-in-time export of every session to a file named by time (RDB-style)."""
        s = self.settings
        if s.snapshot_dir is None:
            raise ValidationError("no snapshot directory: pass backup_dir or snapshot_dir")
        codec = s.codec(format)
        with_events = s.events_flag(events)
        backup_id = "snapshot-" + utc_now().strftime("%Y%m%dT%H%M%S%fZ")
        manifest = s.base_manifest(backup_id, "snapshot", "scheduled snapshot", with_events)
        path = s.snapshot_dir / f"{backup_id}.{codec.name}{SUFFIX}"
        await asyncio.to_thread(sweep_leftovers, s.snapshot_dir)
        bar = Progress(f"snapshot {backup_id}") if progress else None
        with BackupWriter(path, manifest, codec, s.key) as w:
            async for records in self.scan_sessions(with_events):
                w.add_part(records)
                if bar:
                    bar.update(len(records))
            w.finish(chain=backup_id)
        if bar:
            bar.close()
        self.catalogue.prune_snapshots()
        return path
