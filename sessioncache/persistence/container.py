"""The backup container: framed parts, a signed manifest and a footer, written atomically.

Layout of a ``.scb`` file::

    MAGIC                                   b"SCBACKUP 1\\n"
    part*     b"P" + u32 length + payload   records encoded by the format's codec
    manifest  b"M" + u32 length + JSON      format, schema, counts, every part's offset and
                                            SHA-256, the SHA-256 of all bytes before it, and an
                                            HMAC-SHA256 signature when a key is configured
    footer    u64 manifest offset + SHA-256 of the manifest JSON + b"SCEND\\n"

Every byte is covered: the footer's hash covers the manifest, the manifest covers each part and
the whole prefix, and the signature covers the manifest against forgery. The manifest names the
backup (its id, parent and place in the chain) and a file is read only under its own name
(``<backup id>.<format>.scb``), so a signed file copied over another backup's is refused.

A file is written to a hidden temporary name (``.<name>.<process tag>.<random>.tmp``) and
renamed when complete; the next backup removes leftovers of writers that died (kill -9).
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
from ..owner import is_dead, process_tag
from .formats import FORMATS, Codec, Record, kind_counts
from .integrity import check_signature, key_id, sign
from .records import check_part

MAGIC = b"SCBACKUP 1\n"
END = b"SCEND\n"
FOOTER = struct.Struct(">Q32s")
FOOTER_SIZE = FOOTER.size + len(END)
FRAME = struct.Struct(">cI")
CONTAINER = "sessioncache-backup/1"
KINDS = ("full", "incremental", "snapshot", "session")
MAX_MANIFEST_BYTES = 64 << 20
SUFFIX = ".scb"
_TEMP = re.compile(r"\.(.+)\.([0-9a-fx]{1,16}-\d{1,10})\.[0-9a-f]{8}\.tmp")
STALE_TEMP_SECONDS = 86400.0
"""A leftover temporary file from a writer we cannot check (another host) is removed after this."""


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class BackupWriter:
    """Streams parts into a temp file next to the target; finish() fsyncs and renames it."""

    check_records = staticmethod(check_part)
    """The same checks every reader applies (records.check_part): what a restore would refuse
    is never written."""

    def __init__(self, path: Path, manifest: dict[str, Any], codec: Codec, key: bytes | None):
        self.path = path
        self.codec = codec
        self.key = key
        self.manifest = dict(manifest)
        self.parts: list[dict[str, Any]] = []
        self.counts = {"sessions": 0, "tombstones": 0, "events": 0}
        self._tmp = temp_path(path)
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
        """Append one part; every record must be one a restore accepts (IntegrityError or
        ValidationError otherwise, and the file is never completed)."""
        if not records:
            return
        try:
            self.check_records(records)
        except (IntegrityError, ValidationError) as exc:
            raise IntegrityError(f"refusing to write what a restore would refuse: {exc}") from exc
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
        """Write manifest and footer, fsync, and rename the file into place (the commit)."""
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


def temp_path(path: Path) -> Path:
    """The hidden temporary name ``path`` is written under before its atomic rename."""
    return path.with_name(f".{path.name}.{process_tag()}.{os.urandom(4).hex()}.tmp")


def sweep_leftovers(directory: Path, now: float | None = None) -> list[Path]:
    """Remove temporary files left by writers that died: ours (same host and PID namespace)
    whose process is gone, and any older than STALE_TEMP_SECONDS. Returns what was removed."""
    if not directory.is_dir():
        return []
    import time

    now = time.time() if now is None else now
    removed = []
    for path in directory.glob(f".*{SUFFIX}.*.tmp"):
        match = _TEMP.fullmatch(path.name)
        if match is None:
            continue
        try:
            stale = now - path.stat().st_mtime > STALE_TEMP_SECONDS
        except FileNotFoundError:
            continue
        if stale or is_dead(match[2]):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def check_identity(path: Path, manifest: dict[str, Any]) -> None:
    """Refuse a backup read under another backup's name (a swapped or replayed file).

    The signature covers the manifest's id, so a file is what its name says only if the two
    agree. Single-session exports may be named anything.
    """
    if manifest["kind"] == "session":
        return
    expected = f"{manifest['backup_id']}.{manifest['format']}{SUFFIX}"
    if path.name != expected:
        raise _bad(
            f"{path.name} holds backup {manifest['backup_id']} (expected file name {expected}):"
            " swapped, replayed or renamed; refused"
        )


def write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = temp_path(path)
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
    if m.get("chain") is not None and not isinstance(m["chain"], str):
        raise _bad("manifest field 'chain' is not a str")
    depth = m.get("depth")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 0):
        raise _bad("manifest field 'depth' is not a non-negative int")
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

