"""Damaged, forged or unsigned backups are refused before anything is written."""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sessioncache import IntegrityError
from sessioncache.persistence import Persistence
from sessioncache.persistence.container import FOOTER, FRAME, MAGIC, BackupReader, BackupWriter
from sessioncache.persistence.formats import Codec
from sessioncache.persistence.integrity import sign
from sessioncache.store import SessionStore

from .support.persistence_helpers import all_keys, forge_records

KEY = "integrity-key-0123456789abcdef"


@pytest.fixture
async def persistence(store: SessionStore, tmp_path: Path) -> AsyncIterator[Persistence]:
    p = Persistence(store, backup_dir=tmp_path / "backups", key=KEY, batch_size=10)
    yield p
    await p.changes.disarm()


async def _seed(p: Persistence, n: int = 35) -> tuple[str, Path, bytes]:
    for i in range(n):
        await p.store.create(i, f"u{i % 4}", "telegram", data={"i": i, "t": "x" * (i % 9)})
    backup_id = await p.create_backup("pristine")
    path = p.find(backup_id)
    return backup_id, path, path.read_bytes()


async def _refused(p: Persistence, backup_id: str, before: dict[bytes, Any]) -> str:
    """verify reports the damage, restore (replace: the most destructive) raises, Redis intact."""
    report = await p.verify_backup(backup_id)
    assert not report.ok and report.error
    with pytest.raises(IntegrityError) as info:
        await p.restore_backup(backup_id, "replace")
    assert await all_keys(p.store) == before
    return str(info.value)


# ~70 damaged files each checked with a restore per strategy: the file checks are the same on
# every backend, so these run on redis and memory://; the cluster refuses damaged, swapped,
# forged and replayed files in the other tests of this module and of test_backup_hardening.py.
@pytest.mark.parametrize("backend_url", ["redis", "memory"], indirect=True)
async def test_bit_flips_anywhere_are_detected(persistence: Persistence) -> None:
    backup_id, path, pristine = await _seed(persistence)
    await persistence.store.update("telegram:0:u0", data={"live": True})
    before = await all_keys(persistence.store)
    size = len(pristine)
    offsets = sorted(
        {0, 5, len(MAGIC), len(MAGIC) + 2, size - 1, size - 7, size - 30, size - 45}
        | set(range(0, size, max(1, size // 60)))
    )
    for offset in offsets:
        for bit in (0, 7):
            damaged = bytearray(pristine)
            damaged[offset] ^= 1 << bit
            path.write_bytes(bytes(damaged))
            await _refused(persistence, backup_id, before)
    path.write_bytes(pristine)
    assert (await persistence.verify_backup(backup_id)).ok


# ~70 damaged files each checked with a restore per strategy: the file checks are the same on
# every backend, so these run on redis and memory://; the cluster refuses damaged, swapped,
# forged and replayed files in the other tests of this module and of test_backup_hardening.py.
@pytest.mark.parametrize("backend_url", ["redis", "memory"], indirect=True)
async def test_truncation_is_detected(persistence: Persistence) -> None:
    backup_id, path, pristine = await _seed(persistence)
    before = await all_keys(persistence.store)
    for length in (
        0,
        1,
        len(MAGIC),
        100,
        len(pristine) // 2,
        len(pristine) - FOOTER.size - 6,
        len(pristine) - 1,
    ):
        path.write_bytes(pristine[:length])
        await _refused(persistence, backup_id, before)
    # Appended garbage moves the footer: refused too.
    path.write_bytes(pristine + b"\0")
    await _refused(persistence, backup_id, before)


def _split(data: bytes) -> tuple[list[bytes], bytes]:
    """The raw frames of the parts, and everything from the manifest on."""
    frames, pos = [], len(MAGIC)
    while data[pos : pos + 1] == b"P":
        _, length = FRAME.unpack(data[pos : pos + FRAME.size])
        frames.append(data[pos : pos + FRAME.size + length])
        pos += FRAME.size + length
    return frames, data[pos:]


async def test_reordered_or_swapped_parts_are_detected(persistence: Persistence) -> None:
    backup_id, path, pristine = await _seed(persistence)
    before = await all_keys(persistence.store)
    frames, tail = _split(pristine)
    assert len(frames) == 4
    # Two parts exchanged.
    path.write_bytes(MAGIC + frames[1] + frames[0] + b"".join(frames[2:]) + tail)
    await _refused(persistence, backup_id, before)
    # A part replaced by a part of another (valid, signed) backup of the same namespace.
    # Every session changes, so every part of the other backup differs from ours.
    for i in range(35):
        await persistence.store.update(f"telegram:{i}:u{i % 4}", data={"t": "y" * (i % 9)})
    other_id = await persistence.create_backup("other")
    before = await all_keys(persistence.store)
    other_frames, _ = _split(persistence.find(other_id).read_bytes())
    assert other_frames[1] != frames[1]
    path.write_bytes(MAGIC + frames[0] + other_frames[1] + b"".join(frames[2:]) + tail)
    await _refused(persistence, backup_id, before)
    # A part dropped.
    path.write_bytes(MAGIC + b"".join(frames[:3]) + tail)
    await _refused(persistence, backup_id, before)


def _parse(data: bytes) -> tuple[bytes, dict[str, Any]]:
    """The bytes before the manifest, and the manifest."""
    size = len(data)
    offset, _ = FOOTER.unpack(data[size - FOOTER.size - 6 : size - 6])
    return data[:offset], json.loads(data[offset + FRAME.size : size - FOOTER.size - 6])


def _emit(prefix: bytes, manifest: dict[str, Any], key: bytes | None) -> bytes:
    """A backup with this manifest and a consistent footer, as a forger would write it."""
    if key is not None:
        manifest["signature"] = sign(manifest, key)
    new = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    footer = FOOTER.pack(len(prefix), hashlib.sha256(new).digest()) + b"SCEND\n"
    return prefix + FRAME.pack(b"M", len(new)) + new + footer


def _rewrite_manifest(data: bytes, edit: Any, key: bytes | None = None) -> bytes:
    prefix, manifest = _parse(data)
    edit(manifest)
    return _emit(prefix, manifest, key)


async def test_forged_or_edited_manifest_is_detected(persistence: Persistence) -> None:
    backup_id, path, pristine = await _seed(persistence)
    before = await all_keys(persistence.store)

    def edit_description(m: dict[str, Any]) -> None:
        m["description"] = "innocent"

    def drop_signature(m: dict[str, Any]) -> None:
        m.pop("signature")

    path.write_bytes(_rewrite_manifest(pristine, edit_description))
    assert "signature" in await _refused(persistence, backup_id, before)
    path.write_bytes(_rewrite_manifest(pristine, drop_signature))
    assert "unsigned" in await _refused(persistence, backup_id, before)

    # A forged part with every checksum recomputed: only the signature can tell.
    frames, _ = _split(pristine)
    evil = Codec("msgpack.gz").encode(
        [
            [
                "s",
                "telegram:0:u0",
                0,
                {
                    b"v": b"99",
                    b"s": b"active",
                    b"c": b"1",
                    b"u": b"1",
                    b"a": b"1",
                    b"e": b"0",
                    b"m": b"0",
                    b"evil": b"1",
                },
            ]
        ]
    )
    forged_frame = FRAME.pack(b"P", len(evil)) + evil
    body = MAGIC + forged_frame + b"".join(frames[1:])

    def forge(m: dict[str, Any]) -> None:
        pos = len(MAGIC)
        m["parts"][0].update(length=len(evil), records=1, sha256=hashlib.sha256(evil).hexdigest())
        for part in m["parts"]:
            part["offset"] = pos
            pos += FRAME.size + part["length"]
        m["counts"]["sessions"] -= 9
        m["sha256"] = hashlib.sha256(body).hexdigest()

    _, manifest = _parse(pristine)
    forge(manifest)
    path.write_bytes(_emit(body, dict(manifest), None))
    await _refused(persistence, backup_id, before)
    # Signed with another key, it is still refused: "a different key".
    path.write_bytes(_emit(body, dict(manifest), b"attacker-key-0123456789"))
    assert "signature" in await _refused(persistence, backup_id, before)
    # Without any key the forgery is internally consistent; that is why keys exist.
    unkeyed = Persistence(persistence.store, backup_dir=path.parent)
    manifest.pop("signature", None)
    manifest["key_id"] = None
    path.write_bytes(_emit(body, manifest, None))
    assert (await unkeyed.verify_backup(backup_id)).signature_checked is False


async def test_wrong_key_and_unsigned_backups_are_refused(
    persistence: Persistence, tmp_path: Path
) -> None:
    backup_id, path, _ = await _seed(persistence)
    before = await all_keys(persistence.store)
    wrong = Persistence(persistence.store, backup_dir=path.parent, key="another-key-0123456789")
    assert "different key" in await _refused(wrong, backup_id, before)
    unsigned_dir = tmp_path / "unsigned"
    unkeyed = Persistence(persistence.store, backup_dir=unsigned_dir)
    unsigned_id = await unkeyed.create_backup()
    assert (await unkeyed.verify_backup(unsigned_id)).ok  # checksums hold, nothing to check
    keyed = Persistence(persistence.store, backup_dir=unsigned_dir, key=KEY)
    before = await all_keys(persistence.store)
    assert "unsigned" in await _refused(keyed, unsigned_id, before)


# ~70 damaged files each checked with a restore per strategy: the file checks are the same on
# every backend, so these run on redis and memory://; the cluster refuses damaged, swapped,
# forged and replayed files in the other tests of this module and of test_backup_hardening.py.
@pytest.mark.parametrize("backend_url", ["redis", "memory"], indirect=True)
async def test_accidental_damage_is_detected_without_a_key(
    store: SessionStore, tmp_path: Path
) -> None:
    p = Persistence(store, backup_dir=tmp_path / "nokey", batch_size=10)
    backup_id, path, pristine = await _seed(p, 20)
    before = await all_keys(store)
    for offset in range(0, len(pristine), max(1, len(pristine) // 25)):
        damaged = bytearray(pristine)
        damaged[offset] ^= 0x04
        path.write_bytes(bytes(damaged))
        await _refused(p, backup_id, before)
    await p.changes.disarm()


class Boom:
    """Unpickling this writes a marker file: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.write_text, (self.marker, "executed"))


def _evil_backup(directory: Path, marker: Path, key: bytes | None) -> str:
    backup_id = "20240101T000000000000Z-full-evil00"
    manifest = {
        "backup_id": backup_id,
        "kind": "full",
        "schema": 1,
        "namespace": "x",
        "created_at": "2024-01-01T00:00:00+00:00",
        "description": "",
        "parent": None,
    }
    payload = pickle.dumps([Boom(marker)])
    codec = Codec("pickle")
    with BackupWriter(directory / f"{backup_id}.pickle.scb", manifest, codec, key) as w:
        # Bypass the codec: an attacker writes whatever bytes they like.
        w._write(FRAME.pack(b"P", len(payload)) + payload)
        w.parts.append(
            {
                "offset": len(MAGIC),
                "length": len(payload),
                "records": 1,
                "sha256": hashlib.sha256(payload).hexdigest(),
            }
        )
        w.counts["sessions"] = 1
        w.finish(chain=backup_id)
    return backup_id


async def test_malicious_pickle_is_never_unpickled(
    persistence: Persistence, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    directory = persistence.backup_dir
    assert directory is not None
    await persistence.store.create(1, "u1", "web")
    before = await all_keys(persistence.store)

    async def refused(p: Persistence, allow: bool) -> None:
        assert not (await p.verify_backup(bid, allow_pickle=allow)).ok
        with pytest.raises(IntegrityError):
            await p.restore_backup(bid, "replace", allow_pickle=allow)
        assert not marker.exists()
        assert await all_keys(p.store) == before

    # Unsigned, with allow_pickle: refused (a key is configured, the backup is unsigned).
    bid = _evil_backup(directory, marker, None)
    await refused(persistence, True)
    # No key configured at all: a pickle cannot be verified, so it is refused.
    await refused(Persistence(persistence.store, backup_dir=directory), True)
    # Wrongly signed.
    bid = _evil_backup(directory, marker, b"not-the-configured-key-000")
    await refused(persistence, True)
    # Correctly signed but the caller did not opt in.
    bid = _evil_backup(directory, marker, KEY.encode())
    await refused(persistence, False)
    # Signed and allowed: the loader still resolves no globals, so nothing runs.
    await refused(persistence, True)
    with BackupReader(persistence.find(bid)) as reader:
        assert reader.manifest["format"] == "pickle"
    assert struct.calcsize(">cI") == FRAME.size


async def test_signed_pickle_backup_round_trips(persistence: Persistence) -> None:
    for i in range(5):
        await persistence.store.create(i, "u", "web", data={"i": i})
    before = await all_keys(persistence.store)
    backup_id = await persistence.create_backup(format="pickle.gz")
    with pytest.raises(IntegrityError, match="allow_pickle"):
        await persistence.restore_backup(backup_id, "replace")
    await persistence.store.delete("web:0:u")
    report = await persistence.restore_backup(backup_id, "merge", allow_pickle=True)
    assert (report.written, report.kept) == (1, 4)
    after = await all_keys(persistence.store)
    sessions = f"{persistence.store.keys.namespace}:s:".encode()  # not the op logs (ns:o:s:...)
    assert {k: v for k, v in after.items() if k.startswith(sessions)} == {
        k: v for k, v in before.items() if k.startswith(sessions)
    }


async def test_invalid_records_are_refused_before_any_write(
    store: SessionStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Consistent checksums, no key: structure checks still refuse before the first write."""
    forge_records(monkeypatch)
    p = Persistence(store, backup_dir=tmp_path / "nokey")
    await store.create(0, "u0", "web")
    before = await all_keys(store)
    good = [
        "s",
        "web:1:u1",
        0,
        {b"v": b"1", b"s": b"new", b"c": b"1", b"u": b"1", b"a": b"1", b"e": b"0", b"m": b"0"},
    ]
    bad_records: list[Any] = [
        ["s", "web:1:{u1}", 0, good[3]],  # a brace would pick another slot: invalid id
        ["s", "web:2:u2", 0, {k: v for k, v in good[3].items() if k != b"v"}],  # no version
        ["s", "web:3:u3", -5, good[3]],  # negative expiry
        ["s", "web:4:u4", 0, {**good[3], b"v": b"x1"}],  # non-numeric version
        ["s", "web:5:u5", 0, {**good[3], **{b"f%d" % i: b"" for i in range(4001)}}],
        ["x", "web:6:u6"],  # unknown kind
        "not a record",
    ]
    for i, bad in enumerate(bad_records):
        backup_id = f"20240101T00000000000{i}Z-full-bad000"
        manifest = {
            "backup_id": backup_id,
            "kind": "full",
            "schema": 1,
            "namespace": "x",
            "created_at": "2024-01-01T00:00:00+00:00",
            "description": "",
            "parent": None,
        }
        directory = tmp_path / "nokey"
        with BackupWriter(
            directory / f"{backup_id}.msgpack.scb", manifest, Codec("msgpack"), None
        ) as w:
            w.add_part([good])
            w.add_part([good, bad])
            w.finish(chain=backup_id)
        assert not (await p.verify_backup(backup_id)).ok
        with pytest.raises(IntegrityError):
            await p.restore_backup(backup_id, "replace")
        assert await all_keys(store) == before


async def test_signed_backup_with_a_bad_record_never_writes_that_record(
    persistence: Persistence, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore checks a file signed with our key by signature and checksums, then validates
    each record as it decodes it. Only a signer (a writer bug, a leaked key) can produce a bad
    record there: verify_backup still finds it, and the restore refuses it before writing it."""
    forge_records(monkeypatch)
    core = {b"v": b"1", b"s": b"new", b"c": b"1", b"u": b"1", b"a": b"1", b"e": b"1", b"m": b"0"}
    good = ["s", "web:1:u1", 0, core]
    bad = ["s", "web:{x}:u1", 0, dict(core)]
    manifest = {
        "backup_id": "20240101T000000000000Z-full-badrec",
        "kind": "full",
        "schema": 1,
        "namespace": persistence.store.keys.namespace,
        "created_at": "2024-01-01T00:00:00+00:00",
        "description": "",
        "parent": None,
    }
    directory = persistence.backup_dir
    assert directory is not None
    path = directory / f"{manifest['backup_id']}.msgpack.scb"
    directory.mkdir(parents=True, exist_ok=True)
    with BackupWriter(path, manifest, Codec("msgpack"), KEY.encode()) as w:
        w.add_part([good])
        w.add_part([bad])
        w.finish(chain=manifest["backup_id"])
    report = await persistence.verify_backup(manifest["backup_id"])
    assert not report.ok and "session id" in (report.error or "")
    with pytest.raises(IntegrityError, match="session id"):
        await persistence.restore_backup(manifest["backup_id"], "merge")
    keys = set(await all_keys(persistence.store))
    assert not any(b"{x}" in k or b"%7Bx%7D" in k for k in keys)
