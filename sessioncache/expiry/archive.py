"""The session archive: archived sessions in Redis (kept for a retention) and in archive_dir.

expiry_act.lua moves a session and its event stream into the archive keys in one step; this
module lists them, copies each to a file when ``archive_dir`` is set, and restores them whole
(archive_restore.lua), from Redis or, once the retention has passed, from the file.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
from redis.exceptions import RedisError

from ..errors import BackendUnavailable, IntegrityError, SessionExists, ValidationError
from ..identity import Identity, parse_session_id, user_tag
from ..models import Session, session_from_hash
from ..store import SessionStore

_FILE_SAFE = re.compile(r"[^A-Za-z0-9_.\-@%]")
FILE_SUFFIX = ".session.msgpack"


@dataclass(frozen=True, slots=True)
class ArchivedSession:
    """One archived session, as list_archived() reports it."""

    archive_id: str
    """``<session id>#<created ms>``: a session id can be archived more than once."""
    session_id: str
    archived_at: dt.datetime
    in_redis: bool
    file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "archive_id": self.archive_id,
            "session_id": self.session_id,
            "archived_at": self.archived_at.isoformat(),
            "in_redis": self.in_redis,
            "file": self.file,
        }


def split_archive_id(archive_id: str) -> tuple[Identity, int]:
    """``<session id>#<created ms>`` -> (identity, created ms); ValidationError if malformed."""
    if not isinstance(archive_id, str) or archive_id.count("#") != 1:
        raise ValidationError(
            f"archive id must look like '<session id>#<ms>'; got {archive_id!r:.80}"
        )
    sid, _, created = archive_id.partition("#")
    if not created.isdigit() or len(created) > 16:
        raise ValidationError(f"archive id must end in '#<created ms>'; got {archive_id!r:.80}")
    return parse_session_id(sid), int(created)


def _ms(value: bytes | str) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(value) / 1000, tz=dt.UTC)


class Archive:
    """Archived sessions of one store: listing, files, restore."""

    def __init__(
        self,
        store: SessionStore,
        *,
        stats_key: Any,
        change_bucket: Any,
        archive_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.store = store
        self.keys = store.keys
        self._stats_key = stats_key
        self._change_bucket = change_bucket
        self.dir = None if archive_dir is None else Path(archive_dir) / "sessions"

    def keys_of(self, ident: Identity, created_ms: int) -> tuple[str, str, str, str]:
        """(archive hash, archive stream, user archive index, member)."""
        return (
            self.keys.archive(ident, created_ms),
            self.keys.archive_events(ident, created_ms),
            self.keys.archive_index(ident.user_tag),
            f"{ident.suffix}#{created_ms}",
        )

    def _file(self, archive_id: str) -> Path:
        assert self.dir is not None
        return self.dir / (_FILE_SAFE.sub("_", archive_id.replace(":", "~")) + FILE_SUFFIX)

    async def write_file(self, archive_id: str) -> Path | None:
        """Copy an archived session (hash and events) to archive_dir, if configured: a temp
        file renamed to the name the archive id gives, so writing it twice is harmless."""
        if self.dir is None:
            return None
        ident, created = split_archive_id(archive_id)
        hkey, skey, _, _ = self.keys_of(ident, created)
        try:
            fields = await self.store.client.hgetall(hkey)
            events = await self.store.client.xrange(skey) if fields else []
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable reading archive: {exc}") from exc
        if not fields:
            return None
        blob = msgpack.packb(
            {
                "archive_id": archive_id,
                "fields": fields,
                "events": [[eid, dict(entry)] for eid, entry in events],
            },
            use_bin_type=True,
        )
        path = self._file(archive_id)
        # In a thread: the event loop keeps running meanwhile, and with it the task keeping
        # this effect's claim in the outbox (effects.py) however slow the disk.
        await asyncio.to_thread(_write_atomically, path, blob)
        try:
            still = await self.store.client.exists(hkey)
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable reading archive: {exc}") from exc
        if not still:
            # restore_archived took it back meanwhile (and removed the file before ours
            # landed): no file for a session that is live again.
            path.unlink(missing_ok=True)
            return None
        return path

    async def list_archived(self, user_id: object = None) -> list[ArchivedSession]:
        """Archived sessions still in Redis (one user's, or everyone's by SCAN), plus files."""
        client = self.store.client
        out: dict[str, ArchivedSession] = {}
        try:
            if user_id is not None:
                indexes = [self.keys.archive_index(user_tag(user_id))]
            else:
                indexes = [
                    k.decode() if isinstance(k, bytes) else k
                    async for k in client.scan_iter(
                        match=self.keys.archive_index_pattern(), count=500
                    )
                ]
            for index in indexes:
                tag = self.keys.user_tag_of_archive_index(index)
                for member, at in (await client.hgetall(index)).items():
                    suffix, _, created = member.decode().rpartition("#")
                    platform, _, rest = suffix.partition(":")
                    chat, _, thread = rest.partition(":")
                    sid = ":".join([platform, chat, tag] + ([thread] if thread else []))
                    aid = f"{sid}#{created}"
                    out[aid] = ArchivedSession(aid, sid, _ms(at), True)
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable listing archives: {exc}") from exc
        for aid, path in self._files(user_id):
            if aid in out:
                old = out[aid]
                out[aid] = ArchivedSession(aid, old.session_id, old.archived_at, True, str(path))
            else:
                at = dt.datetime.fromtimestamp(path.stat().st_mtime, tz=dt.UTC)
                out[aid] = ArchivedSession(aid, aid.partition("#")[0], at, False, str(path))
        return sorted(out.values(), key=lambda a: (a.archived_at, a.archive_id))

    def _files(self, user_id: object) -> list[tuple[str, Path]]:
        if self.dir is None or not self.dir.is_dir():
            return []
        tag = None if user_id is None else user_tag(user_id)
        found = []
        for path in self.dir.glob("*" + FILE_SUFFIX):
            try:
                doc = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)
                aid = str(doc["archive_id"])
                ident, _ = split_archive_id(aid)
            except (OSError, ValueError, KeyError, TypeError, ValidationError):
                continue  # not ours, or damaged: never listed as restorable
            if tag is None or ident.user_tag == tag:
                found.append((aid, path))
        return found

    async def newest_in_redis(self, ident: Identity) -> str | None:
        """The archive id of the identity's newest archive still in Redis, or None."""
        try:
            members = await self.store.client.hkeys(self.keys.archive_index(ident.user_tag))
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable listing archives: {exc}") from exc
        created = [
            int(c)
            for m in members
            for suffix, _, c in [m.decode().rpartition("#")]
            if suffix == ident.suffix
        ]
        return f"{ident.session_id}#{max(created)}" if created else None

    async def latest(self, session_id: str) -> str | None:
        """The archive id of the session id's newest archive, or None."""
        ident = parse_session_id(session_id)
        candidates = [
            a for a in await self.list_archived(ident.user_id) if a.session_id == ident.session_id
        ]
        return candidates[-1].archive_id if candidates else None

    async def _reload_file(self, archive_id: str) -> None:
        """Put an archive whose Redis copy has expired back into the archive keys."""
        if self.dir is None:
            return
        path = self._file(archive_id)
        if not path.exists():
            return
        try:
            doc = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)
            fields = {bytes(k): bytes(v) for k, v in doc["fields"].items()}
            events = [
                (bytes(e[0]), {bytes(k): bytes(v) for k, v in e[1].items()}) for e in doc["events"]
            ]
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise IntegrityError(f"archive file {path.name} is damaged: {exc}") from exc
        if doc.get("archive_id") != archive_id or b"v" not in fields:
            raise IntegrityError(f"archive file {path.name} does not hold {archive_id!r}")
        ident, created = split_archive_id(archive_id)
        hkey, skey, _, _ = self.keys_of(ident, created)
        pipe = self.store.client.pipeline(transaction=False)
        pipe.delete(hkey, skey)
        pipe.hset(hkey, mapping=fields)
        for eid, entry in events:
            pipe.xadd(skey, entry, id=eid)
        pipe.pexpire(hkey, 3_600_000)
        pipe.pexpire(skey, 3_600_000)
        try:
            await pipe.execute()
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable restoring archive: {exc}") from exc

    async def restore(self, archive_id: str, *, replace: bool = False) -> Session:
        """Bring an archived session back live (from Redis, or from its file)."""
        ident, created = split_archive_id(archive_id)
        hkey, skey, index, member = self.keys_of(ident, created)
        if not await self.store.client.exists(hkey):
            await self._reload_file(archive_id)
        key = self.keys.session(ident)
        keys = [
            hkey,
            skey,
            key,
            self.keys.events_of_session_key(key),
            self.keys.user_index(ident.user_tag),
            index,
            self._stats_key(ident),
            self._change_bucket(ident),
            self.keys.expiry_index_of_tag(ident.user_tag),
        ]
        args = [
            ident.suffix,
            member,
            str(round(self.store.default_ttl * 1000)),
            "replace" if replace else "",
        ]
        reply = await self.store.scripts.archive_restore.run(self.store.client, keys, args)
        if reply[0] == -1:
            raise ValidationError(f"no archived session {archive_id!r} (retention passed?)")
        if reply[0] == -2:
            raise SessionExists(ident.session_id)
        if self.dir is not None:
            self._file(archive_id).unlink(missing_ok=True)
        return session_from_hash(ident, key, reply[1])


def _write_atomically(path: Path, blob: bytes) -> None:
    """Write ``blob`` to a temp file beside ``path``, then rename it there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, path)
