"""Backups round-trip exactly: every format, incremental chains, export/import, migration."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sessioncache import IntegrityError, SessionNotFound, ValidationError
from sessioncache.persistence import FORMATS, Persistence
from sessioncache.persistence.container import BackupReader, BackupWriter
from sessioncache.persistence.formats import Codec
from sessioncache.store import SessionStore

from .support.persistence_helpers import all_keys, digest, forge_records, state

KEY = "test-backup-key-0123456789"


@pytest.fixture
async def persistence(store: SessionStore, tmp_path: Path) -> AsyncIterator[Persistence]:
    p = Persistence(store, backup_dir=tmp_path / "backups", key=KEY, batch_size=7)
    yield p
    await p.changes.disarm()  # pipelined: faster than the per-key namespace teardown


async def populate(store: SessionStore, n: int, prefix: str = "c") -> list[str]:
    """Sessions with every kind of content: types, unicode, threads, metadata, priority, ttl."""
    ids = []
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    for i in range(n):
        s = await store.create(
            f"{prefix}{i}",
            f"user{i % 5}",
            "telegram" if i % 2 else "discord",
            thread_id=None if i % 3 else f"t/{i}",
            data={
                "n": i,
                "text": f"héllo {i} ✓",
                "list": [1, "a", None],
                "when": when,
                "x": b"\x00\xff",
                "~odd": {"k": [1.5]},
            },
            metadata={"lang": "en", "i": i},
            priority=i % 4,
            ttl=3600 + i,
        )
        ids.append(s.session_id)
    return ids


# The codec is the same on every backend: the format axis runs on redis and memory://, and the
# cluster covers the default format through every other test of this module.
@pytest.mark.parametrize("backend_url", ["redis", "memory"], indirect=True)
@pytest.mark.parametrize("fmt", FORMATS)
async def test_round_trip_every_format(
    store: SessionStore, persistence: Persistence, fmt: str
) -> None:
    ids = await populate(store, 12)
    before = await digest(store)
    originals = {sid: await store.get(sid) for sid in ids}
    backup_id = await persistence.create_backup(f"round trip {fmt}", format=fmt)
    info = persistence.list_backups()[-1]
    assert (info.backup_id, info.format, info.kind, info.sessions) == (backup_id, fmt, "full", 12)
    pickled = fmt.startswith("pickle")
    report = await persistence.verify_backup(backup_id, allow_pickle=pickled)
    assert report.ok and report.sessions == 12 and report.signature_checked, report
    await store.delete(ids[0])
    await store.update(ids[1], data={"n": -1})
    restored = await persistence.restore_backup(backup_id, "replace", allow_pickle=pickled)
    assert (restored.written, restored.kept, restored.expired) == (12, 0, 0)
    assert await digest(store) == before
    for sid in ids:
        assert await store.get(sid) == originals[sid]
    assert {s.session_id for s in await store.list_user_sessions("user0")} == {
        sid for sid in ids if sid.split(":")[2] == "user0"
    }


async def test_manifest_is_self_describing(store: SessionStore, persistence: Persistence) -> None:
    await populate(store, 10)
    backup_id = await persistence.create_backup("described")
    with BackupReader(persistence.find(backup_id)) as reader:
        m = reader.manifest
    assert m["format"] == "msgpack.gz" and m["schema"] == 1 and m["kind"] == "full"
    assert m["namespace"] == store.keys.namespace and m["description"] == "described"
    assert m["counts"] == {"sessions": 10, "tombstones": 0, "events": 0}
    assert m["events"] is False  # event streams only when asked
    assert len(m["parts"]) == 2  # batch_size 7
    assert all(len(p["sha256"]) == 64 for p in m["parts"]) and len(m["sha256"]) == 64
    assert len(m["signature"]) == 64 and m["key_id"]
    dt.datetime.fromisoformat(m["created_at"])


async def test_incremental_chain_restores_exact_final_state(
    store: SessionStore, persistence: Persistence
) -> None:
    await chain_scenario(store, persistence)


async def chain_scenario(store: SessionStore, persistence: Persistence) -> None:
    """Full + three incrementals with updates, deletes, touches and an expiry in between."""
    ids = await populate(store, 20)
    full = await persistence.create_backup("base")
    state_full = await digest(store)

    # 1: updates, a delete, a touch, new sessions, a session that will expire before the end.
    await store.update(ids[0], data={"n": 100}, delete=["list"])
    await store.delete(ids[1])
    await store.touch(ids[2], messages=3)
    new = await populate(store, 3, prefix="new")
    short = await store.create("short", "user9", "web", ttl=0.5)
    inc1 = await persistence.create_backup("one", incremental=True)
    state_inc1 = await state(store)

    # 2: delete a session created in step 1, re-create a deleted one, metadata change.
    await store.delete(new[0])
    await store.create("c1", "user1", "telegram", data={"reborn": True})
    await store.update(ids[3], metadata={"lang": "de"})
    # The scenario: `short` reaches its real TTL (no script runs; the expiry is in its record,
    # which a forced PEXPIRE would contradict).
    await asyncio.sleep(0.6)
    inc2 = await persistence.create_backup("two", incremental=True)

    # 3: more deletes in between, and an update of a session untouched so far.
    for sid in ids[10:14]:
        await store.delete(sid)
    await store.update(ids[15], data={"late": "yes"})
    inc3 = await persistence.create_backup("three", incremental=True)
    final = await digest(store)

    listed = persistence.list_backups()
    assert [b.backup_id for b in listed] == [full, inc1, inc2, inc3]
    assert [b.parent for b in listed] == [None, full, inc1, inc2]
    # update + touch + 3 new + short (a tombstone if it expired before the read) + 1 deleted
    assert listed[1].sessions + listed[1].tombstones == 7
    assert listed[3].tombstones == 4 and listed[3].sessions == 1
    report = await persistence.verify_backup(inc3)
    assert report.ok and report.chain == [full, inc1, inc2, inc3]

    # Wipe-and-load the whole chain: exactly the final state, `short` gone.
    await store.update(ids[5], data={"noise": 1})
    restored = await persistence.restore_backup(inc3, "replace")
    assert restored.chain == [full, inc1, inc2, inc3]
    assert await digest(store) == final
    assert await store.find_by_id(short.session_id) is None
    assert final[0] == 20 - 1 + 3 - 1 + 1 - 4

    # Any point of the chain restores its own state.
    await persistence.restore_backup(inc1, "replace")
    # `short` has expired by now, so inc1's state without it (if it was still there).
    state_inc1.pop(store.keys.session(store.identity("short", "user9", "web")).encode(), None)
    assert await state(store) == state_inc1
    await persistence.restore_backup(full, "replace")
    assert await digest(store) == state_full


async def test_incremental_holds_only_changes(
    store: SessionStore, persistence: Persistence
) -> None:
    ids = await populate(store, 15)
    await persistence.create_backup()
    empty = await persistence.create_backup(incremental=True)
    assert persistence.list_backups()[-1].sessions == 0
    await store.update(ids[4], data={"n": 4})
    await store.update(ids[4], data={"n": 5})
    one = await persistence.create_backup(incremental=True)
    info = persistence.list_backups()[-1]
    assert (info.backup_id, info.sessions, info.tombstones) == (one, 1, 0)
    assert empty != one


async def test_incremental_refused_without_a_valid_chain(
    store: SessionStore, persistence: Persistence, tmp_path: Path
) -> None:
    await populate(store, 3)
    with pytest.raises(ValidationError, match="no full backup"):
        await persistence.create_backup(incremental=True)
    full = await persistence.create_backup()
    # Another directory's full backup consumed the change index: this chain is broken.
    other = Persistence(store, backup_dir=tmp_path / "other", key=KEY)
    await other.create_backup()
    with pytest.raises(ValidationError, match="take a full backup"):
        await persistence.create_backup(incremental=True)
    # A replace restore wipes without telling the index: the chain is broken too.
    await persistence.create_backup()
    await persistence.restore_backup(full, "replace")
    with pytest.raises(ValidationError, match="take a full backup"):
        await persistence.create_backup(incremental=True)
    # A lost bucket (eviction, manual DEL) is detected, never silently skipped.
    await persistence.create_backup()
    await store.client.delete(store.keys.change_bucket(7))
    with pytest.raises(IntegrityError, match="bucket 7 "):
        await persistence.create_backup(incremental=True)


async def test_backup_interrupted_before_its_commit_keeps_the_chain_going(
    store: SessionStore, persistence: Persistence, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduler shutting down cancels its job: a backup whose file is durable but whose
    commit (head, trim) never ran must not break the chain or lose a change."""
    ids = await populate(store, 6)
    await persistence.create_backup()
    await store.update(ids[0], data={"n": 100})
    commit = persistence.creator.commit

    async def cancelled(*args: object) -> None:
        raise asyncio.CancelledError

    monkeypatch.setattr(persistence.creator, "commit", cancelled)
    with pytest.raises(asyncio.CancelledError):
        await persistence.create_backup(incremental=True)
    monkeypatch.setattr(persistence.creator, "commit", commit)
    interrupted = persistence.list_backups()[-1]
    assert interrupted.kind == "incremental" and interrupted.sessions == 1
    await store.update(ids[1], data={"n": 101})
    await store.delete(ids[2])
    final = await persistence.create_backup(incremental=True)
    info = persistence.list_backups()[-1]
    assert info.parent == interrupted.backup_id
    # The untrimmed index hands the interrupted backup's change on again: a superset.
    assert (info.sessions, info.tombstones) == (2, 1)
    expected = await digest(store)
    report = await persistence.restore_backup(final, "replace")
    assert report.chain[-2:] == [interrupted.backup_id, final]
    assert await digest(store) == expected


async def test_change_index_records_every_write_and_is_trimmed(
    store: SessionStore, persistence: Persistence
) -> None:
    sid = (await store.create(1, "u1", "web")).session_id
    ident = store.identity(1, "u1", "web")
    bucket = store.keys.change_bucket_of(ident)
    assert await store.client.exists(bucket) == 0  # unarmed: nothing recorded, nothing kept
    await persistence.create_backup()
    key = store.keys.session(ident).encode()
    assert await store.client.zrange(bucket, 0, -1) == [b"#"]
    for op in (
        store.update(sid, data={"a": 1}),
        store.touch(sid),
        store.set_field(sid, "b", 2),
        store.delete(sid),
    ):
        before = await store.client.zscore(bucket, b"#")
        await op
        assert await store.client.zscore(bucket, key) == before + 1
    await store.delete(sid)  # deleting nothing records nothing
    assert await store.client.zscore(bucket, b"#") == before + 1
    await persistence.create_backup(incremental=True)
    assert await store.client.zrange(bucket, 0, -1) == [b"#"]


async def test_retention_keep_last_and_max_age(store: SessionStore, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    p = Persistence(store, backup_dir=tmp_path / "b", archive_dir=archive, key=KEY, keep_last=2)
    await populate(store, 2)
    chains = []
    for _ in range(3):
        full = await p.create_backup()
        inc = await p.create_backup(incremental=True)
        chains.append((full, inc))
    kept = [b.backup_id for b in p.list_backups()]
    assert kept == [*chains[1], *chains[2]]
    assert sorted(f.name.split(".")[0] for f in archive.iterdir()) == sorted(chains[0])
    assert p.prune(max_age=1e-6) == list(chains[1])  # the newest chain always stays
    assert [b.backup_id for b in p.list_backups()] == list(chains[2])


async def test_export_import_single_session(
    store: SessionStore, persistence: Persistence, tmp_path: Path
) -> None:
    [sid] = await populate(store, 1)
    original = await store.get(sid)
    blob = await persistence.export_session(sid)
    assert isinstance(blob, bytes)
    path = await persistence.export_session(sid, tmp_path / "one.scb", format="msgpack.gz")
    before = await all_keys(store)
    await store.delete(sid)
    assert await persistence.import_session(blob) == sid
    assert await store.get(sid) == original
    await store.update(sid, data={"n": 42})
    assert await persistence.import_session(path, "skip") == sid
    assert (await store.get(sid)).data["n"] == 42
    assert await persistence.import_session(path, "merge") == sid  # stored is newer: kept
    assert (await store.get(sid)).data["n"] == 42
    await persistence.import_session(blob, "replace")
    assert await store.get(sid) == original
    with pytest.raises(SessionNotFound):
        await persistence.export_session("web:nobody:nobody")
    damaged = bytearray(blob)
    damaged[len(damaged) // 3] ^= 0x10
    snapshot = await all_keys(store)
    with pytest.raises(IntegrityError):
        await persistence.import_session(bytes(damaged))
    assert await all_keys(store) == snapshot
    assert set(before) <= set(snapshot)


async def test_format_migration_keeps_id_and_chain(
    store: SessionStore, persistence: Persistence
) -> None:
    await populate(store, 9)
    full = await persistence.create_backup(format="json")
    await store.update((await store.list_user_sessions("user1"))[0].session_id, data={"m": 1})
    inc = await persistence.create_backup(incremental=True, format="pickle.gz")
    state = await digest(store)
    info = persistence.migrate_backup(full, "msgpack.gz")
    assert (info.backup_id, info.format, info.sessions) == (full, "msgpack.gz", 9)
    info = persistence.migrate_backup(inc, "json.gz", allow_pickle=True)
    assert info.format == "json.gz"
    assert [b.format for b in persistence.list_backups()] == ["msgpack.gz", "json.gz"]
    assert (await persistence.verify_backup(inc)).ok
    await persistence.restore_backup(inc, "replace")
    assert await digest(store) == state


async def test_schema_migration_upgrades_old_backups(
    store: SessionStore, persistence: Persistence, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A schema-0 backup stored the version under "ver" and had no message count.
    forge_records(monkeypatch)
    codec = Codec("json")
    old = tmp_path / "backups" / "20200101T000000000000Z-full-old.json.scb"
    fields = {
        b"ver": b"3",
        b"s": b"active",
        b"c": b"1",
        b"u": b"2",
        b"a": b"3",
        b"e": b"0",
        b"hello": b"world",
    }
    manifest = {
        "backup_id": "20200101T000000000000Z-full-old",
        "kind": "full",
        "schema": 0,
        "namespace": "legacy",
        "created_at": "2020-01-01T00:00:00+00:00",
        "description": "legacy",
        "parent": None,
    }
    with BackupWriter(old, manifest, codec, KEY.encode()) as w:
        w.add_part([["s", "web:1:u1", 0, fields]])
        w.finish(chain="20200101T000000000000Z-full-old")
    report = await persistence.verify_backup("20200101T000000000000Z-full-old")
    assert not report.ok
    with pytest.raises(ValidationError, match="no migration registered from schema 0"):
        await persistence.restore_backup("20200101T000000000000Z-full-old")

    def upgrade(record: list) -> list:
        f = dict(record[3])
        f[b"v"] = f.pop(b"ver")
        f.setdefault(b"m", b"0")
        return [record[0], record[1], record[2], f]

    persistence.migrations.register(0, upgrade)
    assert (await persistence.verify_backup("20200101T000000000000Z-full-old")).ok
    await persistence.restore_backup("20200101T000000000000Z-full-old", "merge")
    s = await store.get("web:1:u1")
    assert (s.version, s.message_count, s.data) == (3, 0, {"hello": "world"})
    info = persistence.migrate_backup("20200101T000000000000Z-full-old", "msgpack")
    with BackupReader(info.path) as reader:
        assert reader.manifest["schema"] == 1


async def test_snapshot_files_by_time_with_retention(store: SessionStore, tmp_path: Path) -> None:
    p = Persistence(store, backup_dir=tmp_path / "b", key=KEY, snapshot_keep_last=2)
    await populate(store, 4)
    state = await digest(store)
    paths = [await p.snapshot() for _ in range(3)]
    assert all(path.name.startswith("snapshot-2") for path in paths)
    assert sorted(paths) == paths
    assert [b.path for b in p.list_backups(snapshots=True)] == paths[1:]
    assert not paths[0].exists()
    assert p.list_backups() == []  # snapshots are not part of the chain
    await store.delete((await store.list_user_sessions("user0"))[0].session_id)
    await p.restore_backup(paths[-1].name.split(".")[0], "replace")
    assert await digest(store) == state


async def test_bad_input_is_refused_and_redis_unchanged(
    store: SessionStore, persistence: Persistence, tmp_path: Path
) -> None:
    await populate(store, 3)
    backup_id = await persistence.create_backup()
    before = await all_keys(store)
    with pytest.raises(ValidationError, match="format"):
        await persistence.create_backup(format="xml")
    with pytest.raises(ValidationError, match="strategy"):
        await persistence.restore_backup(backup_id, "overwrite")
    with pytest.raises(ValidationError, match="callback"):
        await persistence.restore_backup(backup_id, "interactive")
    with pytest.raises(ValidationError, match="no backup with id"):
        await persistence.restore_backup("20990101T000000000000Z-full-none")
    with pytest.raises(ValidationError, match="invalid backup id"):
        await persistence.restore_backup(".hidden")
    with pytest.raises(ValidationError):
        await persistence.export_session("not a session id")
    no_key = Persistence(store, backup_dir=tmp_path / "nk")
    with pytest.raises(ValidationError, match="backup_key"):
        await no_key.create_backup(format="pickle")
    with pytest.raises(ValidationError, match="backup_dir"):
        await Persistence(store).create_backup()
    with pytest.raises(ValidationError, match="16 bytes"):
        Persistence(store, key="short")
    assert await all_keys(store) == before
