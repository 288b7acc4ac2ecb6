"""The backup container: framed parts, a signed manifest and a footer, written atomically.

Layout of a ``.scb`` file::

    MAGIC                                   b"SCBACKUP 1\\n"
    part*     b"P" + u32 length + payload   records encoded by the format's codec
    manifest  b"M" + u32 length + JSON      format, schema, counts, every part's offset and
                                            SHA-256, the SHA-256 of all bytes before it, and an
                                            HMAC-SHA256 signature when a key is configured
    footer    u64 manifest offset + SHA-256 of the manifest JSON + b"SCEND\\n"

Every byte is covered: the footer's hash covers the manifest, the manifest covers each part and
the whole prefix, and the signature covers the manifest against forgery.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import IntegrityError, ValidationError
from ..identity import parse_session_id
from .formats import FORMATS, Codec, Record, kind_counts
from .integrity import check_signature, key_id, sign

MAGIC = b"SCBACKUP 1\n"
END = b"SCEND\n"
FOOTER = struct.Struct(">Q32s")
FOOTER_SIZE = FOOTER.size + len(END)
FRAME = struct.Struct(">cI")
CONTAINER = "sessioncache-backup/1"
KINDS = ("full", "incremental", "snapshot", "session")
MAX_MANIFEST_BYTES = 64 << 20
MAX_RECORD_FIELDS = 3000
"""More than any session can hold (Limits caps data + metadata at 1024 by default), and few
enough for restore_session.lua to unpack in one HSET."""
MAX_EVENT_ENTRIES = 10_000
"""Most entries of one event stream a backup holds (the newest; the tracker's default cap is
10,000, approximately) and a restore accepts: restore_events.lua writes them in one call."""
MAX_EVENT_ENTRY_VALUES = 7900
"""Most fields + values of one stream entry: restore_events.lua XADDs an entry with one
unpack(), which Lua caps at ~8000 values (track_event.lua's own XADD has the same bound)."""
MAX_EVENT_VALUES = 1_000_000
"""Most fields + values of one stream record in all (10,000 entries of the default 32 user
fields take 680,000): bounds the arguments and the time of one restore_events.lua call."""
_CORE = (b"v", b"s", b"c", b"u", b"a", b"e", b"m")
_ENTRY_ID = re.compile(rb"(\d{1,20})-(\d{1,20})")
_MAX_ID_PART = 2**64 - 1


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class BackupWriter:
    """Streams parts into a temp file next to the target; finish() fsyncs and renames it."""

    def __init__(self, path: Path, manifest: dict[str, Any], codec: Codec, key: bytes | None):
        self.path = path
        self.codec = codec
        self.key = key
        self.manifest = dict(manifest)
        self.parts: list[dict[str, Any]] = []
        self.counts = {"sessions": 0, "tombstones": 0, "events": 0}
        self._tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: BinaryIO = open(self._tmp, "wb")  # noqa: SIM115 - closed in finish/abort
        self._hash = hashlib.sha256()
        self._offset = 0
        self._write(MAGIC)

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._hash.update(data)
        self._offset += len(data)

    def add_part(self, records: list[Record]) -> None:
        if not records:
            return
        payload = self.codec.encode(records)
        offset = self._offset
        self._write(FRAME.pack(b"P", len(payload)))
        self._write(payload)
        sessions, tombstones, events = kind_counts(records)
        self.counts["sessions"] += sessions
        self.counts["tombstones"] += tombstones
        self.counts["events"] += events
        self.parts.append(
            {
                "offset": offset,
                "length": len(payload),
                "records": len(records),
                "sha256": hashlib.sha256(payload).hexdigest(),
            }
        )

    def finish(self, **extra: Any) -> dict[str, Any]:
        manifest = {
            **self.manifest,
            **extra,
            "container": CONTAINER,
            "format": self.codec.name,
            "counts": dict(self.counts),
            "parts": self.parts,
            "sha256": self._hash.hexdigest(),
            "finished_at": utc_now().isoformat(),
            "key_id": key_id(self.key) if self.key else None,
        }
        if self.key:
            manifest["signature"] = sign(manifest, self.key)
        body = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        manifest_offset = self._offset
        self._file.write(FRAME.pack(b"M", len(body)) + body)
        self._file.write(FOOTER.pack(manifest_offset, hashlib.sha256(body).digest()) + END)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        # The rename is the commit point: a crash before it leaves only a hidden temp file.
        os.replace(self._tmp, self.path)
        _fsync_dir(self.path.parent)
        return manifest

    def abort(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> BackupWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if not self._file.closed:
            self.abort()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _bad(message: str) -> IntegrityError:
    return IntegrityError(message)


def _check_manifest(m: Any) -> dict[str, Any]:
    if not isinstance(m, dict) or m.get("container") != CONTAINER:
        raise _bad("not a sessioncache backup manifest")
    expect = {
        "backup_id": str,
        "kind": str,
        "format": str,
        "schema": int,
        "namespace": str,
        "created_at": str,
        "description": str,
        "counts": dict,
        "parts": list,
        "sha256": str,
    }
    for name, kind in expect.items():
        if not isinstance(m.get(name), kind) or isinstance(m.get(name), bool):
            raise _bad(f"manifest field {name!r} is missing or not a {kind.__name__}")
    if m["format"] not in FORMATS or m["kind"] not in KINDS:
        raise _bad(f"manifest names an unknown format or kind: {m['format']!r} {m['kind']!r}")
    if m.get("parent") is not None and not isinstance(m["parent"], str):
        raise _bad("manifest field 'parent' is not a str")
    if "events" in m and not isinstance(m["events"], bool):
        raise _bad("manifest field 'events' is not a bool")
    for part in m["parts"]:
        if (
            not isinstance(part, dict)
            or not all(
                isinstance(part.get(k), int) and not isinstance(part.get(k), bool)
                for k in ("offset", "length", "records")
            )
            or not isinstance(part.get("sha256"), str)
        ):
            raise _bad("manifest lists a malformed part")
    return m


class BackupReader:
    """Reads a backup file: manifest first, then parts checked against it one by one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed in close()
        except FileNotFoundError as exc:
            raise ValidationError(f"no backup file {path}") from exc
        try:
            self.manifest = self._read_manifest()
        except BaseException:
            self._file.close()
            raise

    @classmethod
    def from_bytes(cls, data: bytes) -> BackupReader:
        import io

        reader = cls.__new__(cls)
        reader.path = Path("<bytes>")
        reader._file = io.BytesIO(data)
        reader.manifest = reader._read_manifest()
        return reader

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> BackupReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_manifest(self) -> dict[str, Any]:
        f = self._file
        size = f.seek(0, os.SEEK_END)
        if size < len(MAGIC) + FRAME.size + FOOTER_SIZE:
            raise _bad(f"{self.path.name}: too short to be a backup (truncated?)")
        f.seek(0)
        if f.read(len(MAGIC)) != MAGIC:
            raise _bad(f"{self.path.name}: not a sessioncache backup (bad magic)")
        f.seek(size - FOOTER_SIZE)
        tail = f.read(FOOTER_SIZE)
        if tail[-len(END) :] != END:
            raise _bad(f"{self.path.name}: footer missing (truncated or damaged)")
        offset, digest = FOOTER.unpack(tail[: FOOTER.size])
        length = size - FOOTER_SIZE - offset - FRAME.size
        if not len(MAGIC) <= offset < size or not 0 < length <= MAX_MANIFEST_BYTES:
            raise _bad(f"{self.path.name}: manifest offset out of range")
        f.seek(offset)
        tag, declared = FRAME.unpack(f.read(FRAME.size))
        if tag != b"M" or declared != length:
            raise _bad(f"{self.path.name}: manifest frame damaged")
        body = f.read(length)
        if hashlib.sha256(body).digest() != digest:
            raise _bad(f"{self.path.name}: manifest checksum mismatch")
        try:
            manifest = json.loads(body)
        except ValueError as exc:
            raise _bad(f"{self.path.name}: manifest is not JSON") from exc
        self.manifest_offset = offset
        return _check_manifest(manifest)

    @property
    def codec(self) -> Codec:
        return Codec(self.manifest["format"])

    def check_signature(self, key: bytes | None, *, allow_pickle: bool = False) -> bool:
        """Check the signature; pickle backups also need allow_pickle and a verified key."""
        pickled = self.codec.is_pickle
        if pickled and not allow_pickle:
            raise IntegrityError(
                "this is a pickle backup: pass allow_pickle=True (it is loaded only with a "
                "valid signature from the configured backup_key)"
            )
        return check_signature(self.manifest, key, required=pickled)

    def raw_parts(self) -> Iterator[tuple[dict[str, Any], bytes]]:
        """Each part's manifest entry and payload, after checking layout and checksums."""
        f = self._file
        whole = hashlib.sha256()
        f.seek(0)
        whole.update(f.read(len(MAGIC)))
        position = len(MAGIC)
        for index, part in enumerate(self.manifest["parts"]):
            if part["offset"] != position:
                raise _bad(f"part {index} is not where the manifest says (reordered or cut)")
            header = f.read(FRAME.size)
            if len(header) != FRAME.size:
                raise _bad(f"part {index} is truncated")
            tag, length = FRAME.unpack(header)
            if tag != b"P" or length != part["length"]:
                raise _bad(f"part {index} frame does not match the manifest")
            payload = f.read(length)
            if len(payload) != length:
                raise _bad(f"part {index} is truncated")
            if hashlib.sha256(payload).hexdigest() != part["sha256"]:
                raise _bad(f"part {index} checksum mismatch (damaged or swapped)")
            whole.update(header)
            whole.update(payload)
            position += FRAME.size + length
            yield part, payload
        if position != self.manifest_offset:
            raise _bad("bytes between the last part and the manifest (parts missing?)")
        if whole.hexdigest() != self.manifest["sha256"]:
            raise _bad("whole-file checksum mismatch")

    def records(
        self,
        *,
        pickle_allowed: bool = False,
        upgrade: Callable[[Record], Record] | None = None,
        validate: bool = True,
    ) -> Iterator[list[Record]]:
        """Decoded, validated records part by part; every check runs before a part is yielded.

        ``upgrade`` (schema migrations) runs on each record before it is validated.
        """
        codec = self.codec
        for part, payload in self.raw_parts():
            decoded = codec.decode(payload, pickle_allowed=pickle_allowed)
            if len(decoded) != part["records"]:
                raise _bad("a part holds a different number of records than the manifest says")
            if upgrade is not None:
                try:
                    decoded = [upgrade(r) for r in decoded]
                except (IntegrityError, ValidationError):
                    raise
                except Exception as exc:
                    raise _bad(f"a schema migration failed on a record: {exc!r}") from exc
            yield check_part(decoded) if validate else decoded


_BYTES = {bytes}


def check_part(records: list[Any]) -> list[Record]:
    """Every record of a part checked; each event record must follow its session's record."""
    checked = [check_record(r) for r in records]
    for index, record in enumerate(checked):
        if record[0] == "e":
            before = checked[index - 1] if index else None
            if before is None or before[0] != "s" or before[1] != record[1]:
                raise _bad(
                    f"event stream of {record[1]!r} does not follow that session's record"
                )
    return checked


def _check_sid_expire(sid: Any, expire: Any) -> None:
    if not isinstance(sid, str):
        raise _bad("record session id is not a str")
    try:
        parse_session_id(sid, cache=False)
    except ValidationError as exc:
        raise _bad(f"record carries an invalid session id: {exc}") from exc
    if isinstance(expire, bool) or not isinstance(expire, int) or expire < 0:
        raise _bad("record expiry is not a non-negative int")


def check_events(record: list[Any]) -> Record:
    """An event stream record: ["e", sid, expire, [[entry_id, [field, value, ...]], ...]].

    Ids canonical ``<ms>-<seq>``, strictly increasing and above 0-0 (restore_events.lua XADDs
    them in order and must never fail half-way); values bytes, in pairs; counts bounded.
    """
    if len(record) != 4:
        raise _bad("event record does not have 4 items")
    _, sid, expire, entries = record
    _check_sid_expire(sid, expire)
    if type(entries) is not list:
        raise _bad("event record entries are not a list")
    if len(entries) > MAX_EVENT_ENTRIES:
        raise _bad(f"stream of {sid!r} has {len(entries)} entries; at most {MAX_EVENT_ENTRIES}")
    last = (0, 0)
    total = 0
    for entry in entries:
        if type(entry) is not list or len(entry) != 2:
            raise _bad(f"stream of {sid!r} has an entry that is not [id, values]")
        entry_id, values = entry
        match = _ENTRY_ID.fullmatch(entry_id) if type(entry_id) is bytes else None
        if match is None:
            raise _bad(f"stream of {sid!r} has a malformed entry id {str(entry_id)[:40]}")
        current = (int(match[1]), int(match[2]))
        if (
            b"%d-%d" % current != entry_id
            or current[0] > _MAX_ID_PART
            or current[1] > _MAX_ID_PART
        ):
            raise _bad(f"stream of {sid!r} has a non-canonical entry id {entry_id[:40]!r}")
        if current <= last:
            problem = "an entry id 0-0" if current == (0, 0) else "entry ids out of order at"
            raise _bad(f"stream of {sid!r} has {problem} {entry_id[:40]!r}")
        last = current
        if (
            type(values) is not list
            or not values
            or len(values) % 2
            or len(values) > MAX_EVENT_ENTRY_VALUES
            or set(map(type, values)) != _BYTES
        ):
            raise _bad(
                f"stream of {sid!r}: entry {entry_id[:40]!r} is not 1 to "
                f"{MAX_EVENT_ENTRY_VALUES // 2} field/value pairs of bytes"
            )
        total += len(values)
    if total > MAX_EVENT_VALUES:
        raise _bad(f"stream of {sid!r} holds {total} values; at most {MAX_EVENT_VALUES}")
    return record


def check_record(record: Any) -> Record:
    """Refuse anything that is not a well-formed session, tombstone or event stream record."""
    if not isinstance(record, list) or not record:
        raise _bad("record is not a list")
    kind = record[0]
    if kind == "d" and len(record) == 2 and isinstance(record[1], str):
        try:
            parse_session_id(record[1], cache=False)
        except ValidationError as exc:
            raise _bad(f"tombstone carries an invalid session id: {exc}") from exc
        return record
    if kind == "e":
        return check_events(record)
    if kind != "s" or len(record) != 4:
        raise _bad(f"unknown record kind {str(kind)[:20]!r}")
    _, sid, expire, fields = record
    _check_sid_expire(sid, expire)
    # Type sets built at C speed: this runs for every field of every restored session.
    if (
        type(fields) is not dict
        or set(map(type, fields)) != _BYTES
        or set(map(type, fields.values())) != _BYTES
        or b"" in fields
    ):
        raise _bad("record fields are not a map of bytes to bytes")
    if len(fields) > MAX_RECORD_FIELDS:
        raise _bad(f"session {sid!r} has {len(fields)} fields; at most {MAX_RECORD_FIELDS}")
    for name in _CORE:
        if name not in fields:
            raise _bad(f"session {sid!r} lacks core field {name.decode()!r}")
    if not fields[b"v"].isdigit():
        raise _bad(f"session {sid!r} has a non-numeric version")
    return record
