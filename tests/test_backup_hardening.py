"""Swapped, interrupted and out-of-bounds backups: refused with Redis unchanged, chains exact."""

from __future__ import annotations

import asyncio
import hashlib
import json
import multiprocessing
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sessioncache import BackendUnavailable, IntegrityError, ValidationError
from sessioncache.codec import MAX_DATA_FIELDS, MAX_HASH_FIELDS, Limits
from sessioncache.lease import Lease
from sessioncache.persistence import Persistence
from sessioncache.persistence import restore as restore_module
from sessioncache.persistence.container import FOOTER, FRAME, BackupReader, BackupWriter
from sessioncache.persistence.formats import Codec
from sessioncache.persistence.integrity import check_signature, key_id, sign
from sessioncache.persistence.records import MAX_COUNTER
from sessioncache.store import SessionStore

from .support.namespaces import drop_namespace, unique_namespace
from .support.persistence_helpers import all_keys, digest, forge_records

KEY = "hardening-key-0123456789"
STRATEGIES = ("replace", "merge", "skip")


@pytest.fixture
async def persistence(store: SessionStore, tmp_path: Path) -> AsyncIterator[Persistence]:
    p = Persistence(store, backup_dir=tmp_path / "backups", key=KEY, batch_size=5)
    yield p
    await p.changes.disarm()


async def _refused(p: Persistence, backup_id: str, match: str) -> None:
    """verify_backup says not ok, and every strategy refuses with Redis unchanged."""
    before = await all_keys(p.store)
    report = await p.verify_backup(backup_id)
    assert not report.ok and match in (report.error or "")
    for strategy in STRATEGIES:
        with pytest.raises(IntegrityError, match=match):
            await p.restore_backup(backup_id, strategy)
    assert await all_keys(p.store) == before  # no strategy wrote anything


# -- a backup is bound to its name and its place in the chain --------------------------------


async def test_swapped_or_replayed_backup_file_is_refused(
    store: SessionStore, persistence: Persistence
) -> None:
    p = persistence
    await store.create(1, "u1", "web", data={"a": 1})
    first = await p.create_backup()
    await store.create(2, "u2", "web", data={"b": 2})
    await store.delete("web:1:u1")
    second = await p.create_backup()
    # The newer backup's file overwritten by the older one's (validly signed) bytes.
    original = p.find(second).read_bytes()
    p.find(second).write_bytes(p.find(first).read_bytes())
    await _refused(p, second, "swapped")
    p.find(second).write_bytes(original)


async def test_replayed_backup_file_is_refused(
    store: SessionStore, persistence: Persistence
) -> None:
    p = persistence
    await store.create(1, "u1", "web", data={"a": 1})
    first = await p.create_backup()
    # The backup replayed under a fresh id.
    replay = p.find(first).parent / p.find(first).name.replace(first, first[:-6] + "aaaaaa")
    replay.write_bytes(p.find(first).read_bytes())
    await _refused(p, first[:-6] + "aaaaaa", "swapped")


async def test_swapped_link_of_a_chain_is_refused(
    store: SessionStore, persistence: Persistence
) -> None:
    """An incremental's file swapped for another incremental's: the chain is refused too."""
    p = persistence
    await store.create(2, "u2", "web", data={"b": 2})
    await p.create_backup()
    await store.update("web:2:u2", data={"b": 3})
    inc1 = await p.create_backup(incremental=True)
    await store.update("web:2:u2", data={"b": 4})
    inc2 = await p.create_backup(incremental=True)
    p.find(inc1).write_bytes(p.find(inc2).read_bytes())
    await _refused(p, inc2, "swapped")


async def test_a_link_signed_for_another_chain_is_refused(
    store: SessionStore, persistence: Persistence
) -> None:
    """The manifest names the chain's full backup and the link's depth, under the signature:
    a correctly named, signed link that belongs elsewhere in the chain is refused."""
    p = persistence
    await store.create(1, "u1", "web")
    full = await p.create_backup()
    await store.update("web:1:u1", data={"x": 1})
    inc = await p.create_backup(incremental=True)
    with BackupReader(p.find(inc)) as reader:
        manifest = dict(reader.manifest)
    records = [r for batch in p.verifier.read_records(p.find(inc), False) for r in batch]
    for name, edit in (("depth", {"depth": 2}), ("chain", {"chain": inc})):
        forged_id = inc[:-6] + ("dddddd" if name == "depth" else "cccccc")
        base = {
            k: manifest[k]
            for k in ("kind", "schema", "namespace", "created_at", "description", "events")
        }
        forged = {**base, "backup_id": forged_id, "parent": full}
        path = p.find(full).parent / f"{forged_id}.{manifest['format']}.scb"
        with BackupWriter(path, forged, Codec(manifest["format"]), KEY.encode()) as w:
            w.add_part(records)
            w.finish(**{"chain": full, "depth": 1, **edit})
        await _refused(p, forged_id, "is not link")


# -- a replace restore interrupted after its wipe ---------------------------------------------


class KilledHere(Exception):
    """Stands for the process dying at this point."""


def _dies_mid_wipe(store: SessionStore, then: Any) -> Any:
    """A stand-in for restore.pipelined: deletes a wipe batch except the chain head (as if the
    SCAN had not reached it yet), then ``then()`` (raise, or hang until killed)."""
    real = restore_module.pipelined
    head = store.keys.backup_head().encode()

    async def dying(client: Any, calls: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        await real(client, [c for c in calls if c[1][0] != head])
        return await then()  # type: ignore[no-any-return]

    return dying


async def test_replace_restore_interrupted_mid_wipe_breaks_the_chain(
    store: SessionStore, persistence: Persistence, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = persistence
    ids = [(await store.create(i, f"u{i % 3}", "web")).session_id for i in range(12)]
    backup = await p.create_backup()
    for sid in ids[:4]:
        await store.update(sid, data={"later": True})

    async def killed() -> None:
        raise KilledHere

    monkeypatch.setattr(restore_module, "pipelined", _dies_mid_wipe(store, killed))
    with pytest.raises(KilledHere):
        await p.restore_backup(backup, "replace")
    monkeypatch.undo()
    assert (await digest(store))[0] == 0
    # The wiped sessions left no trace in the change index: an incremental now would be inexact.
    with pytest.raises(ValidationError, match="broke the chain"):
        await p.create_backup(incremental=True)
    full = await p.create_backup()
    assert p.list_backups()[-1].backup_id == full and p.list_backups()[-1].sessions == 0
    await p.restore_backup(backup, "replace")
    assert (await digest(store))[0] == 12


def _restore_then_hang(
    url: str, namespace: str, directory: str, backup_id: str, wiped: Any
) -> None:
    """Child process: a replace restore that stops in the middle of its wipe, until killed."""

    async def main() -> None:
        store = await SessionStore.connect(url, namespace=namespace, socket_timeout=10.0)
        p = Persistence(store, backup_dir=directory, key=KEY)

        async def hang() -> None:
            wiped.set()
            await asyncio.Event().wait()

        restore_module.pipelined = _dies_mid_wipe(store, hang)  # type: ignore[attr-defined]
        await p.restore_backup(backup_id, "replace")

    asyncio.run(main())


async def test_replace_restore_killed_mid_wipe_leaves_no_chain(
    redis_url: str, tmp_path: Path
) -> None:
    store = await SessionStore.connect(redis_url, namespace=unique_namespace(), socket_timeout=10)
    p = Persistence(store, backup_dir=tmp_path / "b", key=KEY)
    try:
        for i in range(30):
            await store.create(i, f"u{i % 4}", "web")
        backup = await p.create_backup()
        ctx = multiprocessing.get_context("spawn")
        wiped = ctx.Event()
        child = ctx.Process(
            target=_restore_then_hang,
            args=(redis_url, store.keys.namespace, str(tmp_path / "b"), backup, wiped),
        )
        child.start()
        assert await asyncio.to_thread(wiped.wait, 60)
        os.kill(child.pid or 0, signal.SIGKILL)
        await asyncio.to_thread(child.join, 30)
        assert child.exitcode == -signal.SIGKILL
        assert (await digest(store))[0] == 0
        with pytest.raises(ValidationError, match="broke the chain"):
            await p.create_backup(incremental=True)
    finally:
        await p.changes.disarm()
        await drop_namespace(store.client, store.keys.namespace)
        await store.close()


# -- a backup killed mid-write ----------------------------------------------------------------


def _backup_then_hang(url: str, namespace: str, directory: str, writing: Any) -> None:
    """Child process: a backup (60 s lease) that stops after its first part, until killed."""

    async def main() -> None:
        store = await SessionStore.connect(url, namespace=namespace, socket_timeout=10.0)
        p = Persistence(store, backup_dir=directory, key=KEY, batch_size=2, lease_ttl=60.0)
        add_part = BackupWriter.add_part

        def hang(self: BackupWriter, records: list[Any]) -> None:
            add_part(self, records)
            writing.set()
            time.sleep(600)

        BackupWriter.add_part = hang  # type: ignore[method-assign]
        await p.create_backup()

    asyncio.run(main())


async def test_backup_killed_mid_write_leaves_nothing_and_blocks_nothing(
    redis_url: str, tmp_path: Path
) -> None:
    store = await SessionStore.connect(redis_url, namespace=unique_namespace(), socket_timeout=10)
    directory = tmp_path / "b"
    try:
        for i in range(10):
            await store.create(i, f"u{i % 4}", "web")
        ctx = multiprocessing.get_context("spawn")
        writing = ctx.Event()
        child = ctx.Process(
            target=_backup_then_hang,
            args=(redis_url, store.keys.namespace, str(directory), writing),
        )
        child.start()
        assert await asyncio.to_thread(writing.wait, 60)
        os.kill(child.pid or 0, signal.SIGKILL)
        await asyncio.to_thread(child.join, 30)
        leftovers = list(directory.glob(".*.tmp"))
        assert len(leftovers) == 1
        lease_key = store.keys.lease("backup")
        assert await Lease(store.client, lease_key).holder() is not None
        assert await store.client.pttl(lease_key) > 30_000  # the dead writer's lease lives on
        # A lease_wait far below that TTL: the dead holder is recognised and replaced at once.
        p = Persistence(store, backup_dir=directory, key=KEY, lease_wait=5.0)
        backup = await p.create_backup()
        assert p.list_backups()[-1].backup_id == backup and p.list_backups()[-1].sessions == 10
        assert list(directory.glob(".*.tmp")) == []
        assert await Lease(store.client, lease_key).holder() is None
        await p.changes.disarm()
    finally:
        await drop_namespace(store.client, store.keys.namespace)
        await store.close()


async def test_backup_that_lost_its_lease_is_not_committed(
    store: SessionStore, persistence: Persistence, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer stalled past its lease TTL while another process took over: its file is
    removed and the chain head stays where the other process put it."""
    p = persistence
    await store.create(1, "u1", "web")
    first = await p.create_backup()
    scan = p.creator.scan_sessions

    async def taken_over(events: bool = False) -> AsyncIterator[list[Any]]:
        async for records in scan(events):
            yield records
        await store.client.set(store.keys.lease("backup"), b"another-process")

    monkeypatch.setattr(p.creator, "scan_sessions", taken_over)
    with pytest.raises(BackendUnavailable, match="lost the backup lease"):
        await p.create_backup()
    assert [b.backup_id for b in p.list_backups()] == [first]
    assert await store.client.get(store.keys.backup_head()) == first.encode()
    await store.client.delete(store.keys.lease("backup"))


# -- what a restore refuses is never written --------------------------------------------------


def test_limits_cannot_exceed_what_a_restore_takes() -> None:
    with pytest.raises(ValidationError, match="max_fields"):
        Limits(max_fields=4000)
    assert Limits(max_fields=MAX_DATA_FIELDS).max_fields == MAX_DATA_FIELDS


async def test_session_at_the_field_limit_round_trips_and_beyond_it_is_never_backed_up(
    store: SessionStore, backend_url: str, persistence: Persistence
) -> None:
    p = persistence
    wide = await SessionStore.connect(
        backend_url, namespace=store.keys.namespace, limits=Limits(max_fields=MAX_DATA_FIELDS)
    )
    try:
        data = {f"f{i}": i for i in range(MAX_DATA_FIELDS)}
        await wide.create("wide", "u1", "web", data=data, ttl=3600, priority=5)
    finally:
        await wide.close()
    backup = await p.create_backup()
    before = await digest(store)
    await store.delete("web:wide:u1")
    await p.restore_backup(backup, "merge")
    assert await digest(store) == before
    # Beyond the bound (written around the store's limits, as another writer could).
    key = store.keys.session(store.identity("wide", "u1", "web"))
    await store.client.hset(key, mapping={f"x{i}": "1" for i in range(MAX_HASH_FIELDS)})
    head = await store.client.get(store.keys.backup_head())
    with pytest.raises(IntegrityError, match="refusing to write"):
        await p.create_backup()
    assert [b.backup_id for b in p.list_backups()] == [backup]
    assert list(p.find(backup).parent.glob(".*.tmp")) == []
    assert await store.client.get(store.keys.backup_head()) == head


async def test_imported_integers_out_of_range_are_refused(
    store: SessionStore, persistence: Persistence, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = persistence
    await store.create(1, "u1", "web", data={"a": 1})
    blob = await p.export_session("web:1:u1")
    assert isinstance(blob, bytes)
    await store.delete("web:1:u1")
    before = await all_keys(store)
    reader = BackupReader.from_bytes(blob)
    [[record]] = list(reader.records())
    forge_records(monkeypatch)
    for name, value in (
        (b"v", b"99999999999999999999"),
        (b"v", b"%d" % (MAX_COUNTER + 1)),
        (b"m", b"%d" % (2**63)),
        (b"e", b"%d" % (2**53)),
        (b"p", b"5000"),
    ):
        fields = {**record[3], name: value}
        out = p.backup_dir / "forged.scb"  # type: ignore[operator]
        with BackupWriter(out, reader.manifest, Codec("json"), KEY.encode()) as w:
            w.add_part([[record[0], record[1], record[2], fields]])
            w.finish(chain=reader.manifest["backup_id"])
        with pytest.raises(ValidationError, match="must be an integer in"):
            await p.import_session(out.read_bytes())
        assert await all_keys(store) == before
    # The largest version accepted still updates exactly.
    fields = {**record[3], b"v": b"%d" % MAX_COUNTER}
    with BackupWriter(out, reader.manifest, Codec("json"), KEY.encode()) as w:
        w.add_part([[record[0], record[1], record[2], fields]])
        w.finish(chain=reader.manifest["backup_id"])
    await p.import_session(out.read_bytes())
    assert (await store.update("web:1:u1", data={"b": 2})).version == MAX_COUNTER + 1


# -- restores that lost their scripts, versions past 9 ----------------------------------------


async def _flush_scripts(store: SessionStore) -> None:
    await store.client.script_flush()  # on every primary of a cluster


async def test_restore_after_script_flush(store: SessionStore, persistence: Persistence) -> None:
    p = persistence
    for i in range(12):
        await store.create(i, f"u{i % 3}", "web", data={"i": i})
    backup = await p.create_backup()
    expected = await digest(store)
    for i in range(4):
        await store.delete(f"web:{i}:u{i % 3}")
    await _flush_scripts(store)
    report = await p.restore_backup(backup, "merge")
    assert (report.written, report.kept) == (4, 8) and await digest(store) == expected
    await store.create("extra", "u9", "web")
    await _flush_scripts(store)
    report = await p.restore_backup(backup, "replace")
    assert report.written == 12 and await digest(store) == expected


async def test_merge_compares_versions_as_numbers(
    store: SessionStore, persistence: Persistence
) -> None:
    """Backup v9 against live v10 keeps the live one; backup v10 against live v9 restores."""
    p = persistence
    await store.create("a", "u1", "web")
    await store.create("b", "u1", "web")
    for i in range(8):
        await store.update("web:a:u1", data={"n": i})
    for i in range(9):
        await store.update("web:b:u1", data={"n": i})
    backup = await p.create_backup()
    b_backed_up = await store.get("web:b:u1")
    assert ((await store.get("web:a:u1")).version, b_backed_up.version) == (9, 10)
    await store.update("web:a:u1", data={"n": "live"})
    await store.delete("web:b:u1")
    await store.create("b", "u1", "web")
    for i in range(8):
        await store.update("web:b:u1", data={"n": f"live{i}"})
    report = await p.restore_backup(backup, "merge")
    assert (report.written, report.kept) == (1, 1)
    a, b = await store.get("web:a:u1"), await store.get("web:b:u1")
    assert (a.version, a.data["n"]) == (10, "live")
    assert (b.version, b.data) == (10, b_backed_up.data)


# -- part checksums and the signature compare -------------------------------------------------


def _resigned(data: bytes, edit: Any) -> bytes:
    """The file with ``edit`` applied to its bytes before the manifest, whose whole-file
    SHA-256 is recomputed and re-signed: only the per-part checksums can tell."""
    size = len(data)
    offset, _ = FOOTER.unpack(data[size - FOOTER.size - 6 : size - 6])
    manifest = json.loads(data[offset + FRAME.size : size - FOOTER.size - 6])
    prefix = edit(data[:offset])
    manifest["sha256"] = hashlib.sha256(prefix).hexdigest()
    manifest.pop("signature")
    manifest["signature"] = sign(manifest, KEY.encode())
    body = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    footer = FOOTER.pack(len(prefix), hashlib.sha256(body).digest()) + b"SCEND\n"
    return prefix + FRAME.pack(b"M", len(body)) + body + footer


async def test_no_part_is_yielded_before_its_own_checksum_passed(
    store: SessionStore, tmp_path: Path
) -> None:
    p = Persistence(store, backup_dir=tmp_path / "b", key=KEY, batch_size=4, format="json")
    for i in range(12):
        await store.create(i, "u1", "web", data={"text": f"value-{i}"})
    backup = await p.create_backup()
    path = p.find(backup)
    with BackupReader(path) as reader:
        parts = reader.manifest["parts"]
    assert len(parts) == 3
    second = parts[1]
    start = second["offset"] + FRAME.size

    def damage(prefix: bytes) -> bytes:
        payload = prefix[start : start + second["length"]]
        assert b"value-" in payload
        end = start + second["length"]
        return prefix[:start] + payload.replace(b"value-", b"VALUE-", 1) + prefix[end:]

    path.write_bytes(_resigned(path.read_bytes(), damage))
    yielded = []
    with BackupReader(path) as reader, pytest.raises(IntegrityError, match="part 1 checksum"):
        for records in reader.records():
            yielded.append(records)
    assert len(yielded) == 1  # part 0; part 1 never reached the caller
    await _refused(p, backup, "part 1 checksum")


def test_a_manifest_edited_under_its_signature_is_refused() -> None:
    key = KEY.encode()
    manifest: dict[str, Any] = {"backup_id": "x", "parent": None, "key_id": key_id(key)}
    manifest["signature"] = sign(manifest, key)
    assert check_signature(manifest, key, required=False) is True
    flipped = manifest["signature"][:-1] + ("0" if manifest["signature"][-1] != "0" else "1")
    for tampered in (
        {**manifest, "backup_id": "y"},
        {**manifest, "parent": "x"},
        {**manifest, "signature": flipped},
    ):
        with pytest.raises(IntegrityError, match="does not match"):
            check_signature(tampered, key, required=False)
    with pytest.raises(IntegrityError):
        check_signature(manifest, b"another-key-0123456789", required=False)
