"""Event streams in backups (when asked): every format, incrementals, strategies, validation."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ResponseError

from sessioncache import EventType, IntegrityError, Session, ValidationError
from sessioncache.persistence import FORMATS, Persistence
from sessioncache.persistence.backups import events_record
from sessioncache.persistence.container import FRAME, MAGIC, BackupReader, BackupWriter
from sessioncache.persistence.formats import Codec, _json_record, kind_counts
from sessioncache.persistence.records import (
    MAX_EVENT_ENTRIES,
    MAX_EVENT_ENTRY_VALUES,
    MAX_EVENT_VALUES,
    check_record,
)
from sessioncache.store import SessionStore
from sessioncache.tracker import StateTracker, TrackerConfig

from .support.namespaces import drop_namespace, unique_namespace
from .support.persistence_helpers import all_keys, digest, streams
from .support.tracker_helpers import new_tracker

KEY = "events-backup-key-0123456789"


@pytest.fixture
async def store(backend_url: str) -> AsyncIterator[SessionStore]:
    """The conftest store, its creates and deletes also writing the tracker's keys."""
    s = await SessionStore.connect(
        backend_url,
        namespace=unique_namespace(),
        socket_timeout=5.0,
        extras=[TrackerConfig().store_extras()],
    )
    yield s
    await drop_namespace(s.client, s.keys.namespace)
    await s.close()


@pytest.fixture
async def tracker(store: SessionStore) -> StateTracker:
    return await new_tracker(store)


@pytest.fixture
async def persistence(
    store: SessionStore, tracker: StateTracker, tmp_path: Path
) -> AsyncIterator[Persistence]:
    p = Persistence(store, backup_dir=tmp_path / "backups", key=KEY, batch_size=5, events=True)
    yield p
    await p.changes.disarm()


def stream_key(store: SessionStore, session_id: str) -> str:
    return store.keys.events_of_session_key(store.keys.restore_keys(session_id)[0])


async def populate(tracker: StateTracker, n: int, prefix: str = "c") -> list[str]:
    """Sessions with streams: created events, transitions, text, unicode and binary fields."""
    store = tracker.store
    ids = []
    for i in range(n):
        s = await store.create(
            f"{prefix}{i}",
            f"user{i % 3}",
            "telegram" if i % 2 else "web",
            thread_id=None if i % 4 else f"t/{i}",
            data={"i": i},
        )
        sid = s.session_id
        await tracker.track_event(
            sid, EventType.MESSAGE_RECEIVED, text=f"héllo {i} ✓", raw=b"\x00\xff\xc1", n=i
        )
        if i % 2:
            await tracker.transition(sid, "active", reason="first message")
        await tracker.track_event(sid, EventType.CUSTOM, big="x" * (i * 50))
        ids.append(sid)
    return ids


async def _records(path: Path) -> list[list[Any]]:
    with BackupReader(path) as reader:
        return [r for part in reader.records(pickle_allowed=True) for r in part]


# The codec is the same on every backend: the format axis runs on redis and memory://, and the
# cluster covers the default format through every other test of this module.
@pytest.mark.parametrize("backend_url", ["redis", "memory"], indirect=True)
@pytest.mark.parametrize("fmt", FORMATS)
async def test_round_trip_with_events_every_format(
    store: SessionStore, tracker: StateTracker, persistence: Persistence, fmt: str
) -> None:
    ids = await populate(tracker, 9)
    # One stream without an expiry, one session without a stream at all.
    await store.client.persist(stream_key(store, ids[1]))
    await store.client.delete(stream_key(store, ids[2]))
    before_streams = await streams(store)
    before = await digest(store)
    assert len(before_streams) == 8
    assert before_streams[stream_key(store, ids[1]).encode()][1] == -1
    assert all(exp > 0 for key, (_, exp) in before_streams.items() if b":c1" not in key)

    pickled = fmt.startswith("pickle")
    backup_id = await persistence.create_backup(format=fmt)
    info = persistence.list_backups()[-1]
    assert (info.sessions, info.events) == (9, 8)
    report = await persistence.verify_backup(backup_id, allow_pickle=pickled)
    assert report.ok and (report.sessions, report.events) == (9, 8), report
    with BackupReader(info.path) as reader:
        assert reader.manifest["events"] is True
        assert reader.manifest["counts"] == {"sessions": 9, "tombstones": 0, "events": 8}
    records = await _records(info.path)
    # Each stream right after its session, in the same part.
    for i, record in enumerate(records):
        if record[0] == "e":
            assert records[i - 1][:2] == ["s", record[1]]

    # Live changes the restore must undo: new events, a lost stream, a stream of a new session.
    await tracker.track_event(ids[0], EventType.MESSAGE_SENT, text="after the backup")
    await store.client.delete(stream_key(store, ids[3]))
    assert await store.client.xtrim(stream_key(store, ids[4]), maxlen=1, approximate=False) == 2
    await store.create("later", "user9", "web")
    restored = await persistence.restore_backup(backup_id, "replace", allow_pickle=pickled)
    assert (restored.written, restored.events, restored.events_skipped) == (9, 8, 0)
    after = await streams(store)
    assert after == before_streams  # entry by entry: ids, fields, values, expiry
    assert await digest(store) == before
    events = await tracker.get_events(ids[5])
    assert [e.type for e in events] == ["created", "message_received", "state_changed", "custom"]
    assert events[1].fields == {"text": "héllo 5 ✓", "raw": b"\x00\xff\xc1", "n": 5}


async def test_events_only_when_asked(
    store: SessionStore, tracker: StateTracker, tmp_path: Path
) -> None:
    ids = await populate(tracker, 3)
    p = Persistence(store, backup_dir=tmp_path / "b", key=KEY)  # default: no events
    plain = await p.create_backup()
    asked = await p.create_backup(events=True)
    on = Persistence(store, backup_dir=tmp_path / "b", key=KEY, events=True)
    declined = await on.create_backup(events=False)
    infos = {b.backup_id: b for b in p.list_backups()}
    assert [infos[b].events for b in (plain, asked, declined)] == [0, 3, 0]
    with BackupReader(infos[plain].path) as reader:
        assert reader.manifest["events"] is False
        assert reader.manifest["counts"]["events"] == 0
    assert {r[0] for r in await _records(infos[plain].path)} == {"s"}
    # Without events a merge leaves every live stream alone.
    await tracker.track_event(ids[0], EventType.MESSAGE_SENT, text="live")
    live = await streams(store)
    await store.delete(ids[1])
    report = await p.restore_backup(plain, "merge")
    assert (report.written, report.events, report.events_skipped) == (1, 0, 0)
    assert await streams(store) == live
    with pytest.raises(ValidationError, match="events must be a bool"):
        Persistence(store, events="yes")  # type: ignore[arg-type]
    await on.changes.disarm()


async def test_incremental_after_new_events_carries_the_new_stream(
    store: SessionStore, tracker: StateTracker, persistence: Persistence
) -> None:
    ids = await populate(tracker, 6)
    full = await persistence.create_backup()
    await tracker.track_event(ids[0], EventType.MESSAGE_RECEIVED, text="new")
    await tracker.transition(ids[2], "active")
    await store.delete(ids[3])
    inc = await persistence.create_backup(incremental=True)
    info = persistence.list_backups()[-1]
    assert (info.backup_id, info.sessions, info.tombstones, info.events) == (inc, 2, 1, 2)
    records = await _records(info.path)
    by_kind = {(r[0], r[1]) for r in records}
    assert by_kind == {
        ("s", ids[0]),
        ("e", ids[0]),
        ("s", ids[2]),
        ("e", ids[2]),
        ("d", ids[3]),
    }
    newest = {r[1]: r for r in records if r[0] == "e"}
    live = await store.client.xrange(stream_key(store, ids[0]))
    assert [e[0] for e in newest[ids[0]][3]] == [entry_id for entry_id, _ in live]
    assert newest[ids[0]][3][-1][1][:2] == [b"t", b"message_received"]

    expected = await streams(store)
    expected.pop(stream_key(store, ids[3]).encode())  # a deleted session's stream: not backed up
    sessions = await digest(store)
    await tracker.track_event(ids[1], EventType.MESSAGE_SENT, text="noise")
    report = await persistence.restore_backup(inc, "replace")
    assert report.chain == [full, inc]
    # ids[0] and ids[2] from the incremental, the rest from the full backup.
    assert (report.written, report.events, report.events_skipped) == (5, 5, 0)
    assert await streams(store) == expected
    assert await digest(store) == sessions


async def test_a_newer_link_without_events_decides_the_stream_too(
    store: SessionStore, tracker: StateTracker, persistence: Persistence
) -> None:
    """A session's records of one link stay together: an incremental taken without events
    supersedes the older link's stream of the sessions it holds (the stream is not mixed in
    from another point in time)."""
    ids = await populate(tracker, 3)
    await persistence.create_backup()
    await store.update(ids[0], data={"later": True})
    inc = await persistence.create_backup(incremental=True, events=False)
    expected = await streams(store)
    report = await persistence.restore_backup(inc, "replace")
    assert (report.written, report.events) == (3, 2)
    got = await streams(store)
    assert stream_key(store, ids[0]).encode() not in got
    expected.pop(stream_key(store, ids[0]).encode())
    assert got == expected


async def _backup_then_diverge(
    store: SessionStore, tracker: StateTracker, p: Persistence
) -> tuple[str, list[str], dict[bytes, Any]]:
    """A backup of four sessions (v3, with streams); then live: ids[0] newer (v4, more events),
    ids[1] re-created (v1, its stream gained a 'created' entry), ids[2] gone (stream kept),
    ids[3] unchanged."""
    ids = []
    for i in range(4):
        sid = (await store.create(i, "u", "web", data={"from": "backup"})).session_id
        await store.update(sid, data={"step": 2})
        await store.update(sid, data={"step": 3})
        await tracker.track_event(sid, EventType.MESSAGE_RECEIVED, text=f"before {i}")
        ids.append(sid)
    backup_id = await p.create_backup()
    backed_up = await streams(store)
    await store.update(ids[0], data={"from": "live"})
    await tracker.track_event(ids[0], EventType.MESSAGE_SENT, text="live reply")
    await store.delete(ids[1])
    await store.create(1, "u", "web", data={"from": "live"})
    await store.delete(ids[2])
    return backup_id, ids, backed_up


async def test_merge_keeps_the_newer_sides_stream(
    store: SessionStore, tracker: StateTracker, persistence: Persistence
) -> None:
    backup_id, ids, backed_up = await _backup_then_diverge(store, tracker, persistence)
    live = await streams(store)
    key = [stream_key(store, sid).encode() for sid in ids]
    assert live[key[0]] != backed_up[key[0]] and live[key[1]] != backed_up[key[1]]
    report = await persistence.restore_backup(backup_id, "merge")
    # ids[1] (v1 < v3) and ids[2] (absent) are written, with their streams; ids[0] (v4 > v3)
    # and ids[3] (same version) keep theirs.
    assert (report.written, report.kept) == (2, 2)
    assert (report.events, report.events_skipped) == (2, 2)
    got = await streams(store)
    assert got[key[0]] == live[key[0]]  # live session newer: live stream kept
    assert got[key[1]] == backed_up[key[1]]  # backup newer: the backup's stream, exactly
    assert got[key[2]] == backed_up[key[2]]
    assert got[key[3]] == live[key[3]] == backed_up[key[3]]
    assert (await store.get(ids[0])).data["from"] == "live"
    assert (await store.get(ids[1])).data["from"] == "backup"


async def test_skip_and_interactive_replace_streams_only_with_their_session(
    store: SessionStore, tracker: StateTracker, persistence: Persistence
) -> None:
    backup_id, ids, backed_up = await _backup_then_diverge(store, tracker, persistence)
    live = await streams(store)
    key = [stream_key(store, sid).encode() for sid in ids]
    report = await persistence.restore_backup(backup_id, "skip")
    assert (report.written, report.events, report.events_skipped) == (1, 1, 3)
    got = await streams(store)
    assert got[key[2]] == backed_up[key[2]]
    assert all(got[key[i]] == live[key[i]] for i in (0, 1, 3))

    async def decide(stored: Session, incoming: Session) -> bool:
        return stored.session_id == ids[0]  # the backup's ids[0]; every other stored one kept

    report = await persistence.restore_backup(backup_id, "interactive", decide=decide)
    assert (report.written, report.kept) == (1, 3)
    assert (report.events, report.events_skipped) == (1, 3)
    got = await streams(store)
    assert got[key[0]] == backed_up[key[0]]
    assert got[key[1]] == live[key[1]]


async def test_longest_stream_is_capped_to_its_newest_entries(
    redis_store: SessionStore, tmp_path: Path
) -> None:
    store = redis_store
    sid = (await store.create("long", "u", "web")).session_id
    key = stream_key(store, sid)
    async with store.client.pipeline(transaction=False) as pipe:
        for i in range(1, MAX_EVENT_ENTRIES + 51):
            pipe.xadd(key, {"t": "custom", "i": str(i)}, id=f"{i}-1")
        await pipe.execute()
    await store.client.pexpire(key, 3_600_000)
    newest = await store.client.xrevrange(key, count=MAX_EVENT_ENTRIES)
    expiry = await store.client.pexpiretime(key)
    p = Persistence(store, backup_dir=tmp_path / "b", key=KEY, events=True)
    backup_id = await p.create_backup()
    await store.client.delete(key)
    report = await p.restore_backup(backup_id, "replace")
    assert report.events == 1
    assert await store.client.xrange(key) == newest[::-1]
    assert await store.client.xlen(key) == MAX_EVENT_ENTRIES
    assert await store.client.pexpiretime(key) == expiry
    await p.changes.disarm()


def test_writer_keeps_every_stream_record_restorable() -> None:
    """Entries no sessioncache script could write are left out, and a stream past the value
    bound keeps its newest entries: check_record accepts whatever the writer produces."""
    wide = {b"f%d" % i: b"v" for i in range(MAX_EVENT_ENTRY_VALUES // 2 + 1)}
    full = {b"k%d" % i: b"v" for i in range(3900)}  # 7800 values: one XADD can take it
    newest_first = [
        (b"1000-0", {b"t": b"custom"}),
        (b"999-0", wide),  # more values than one XADD through Lua can take: left out
        *((b"%d-0" % ms, full) for ms in range(998, 868, -1)),  # 130 * 7800 values
    ]
    record = events_record("web:1:u1", newest_first, -1)
    assert record[:3] == ["e", "web:1:u1", 0]  # PEXPIRETIME -1 (no expiry) is 0
    kept = [entry_id for entry_id, _ in record[3]]
    fit = (MAX_EVENT_VALUES - 2) // 7800  # the newest entries that fit in MAX_EVENT_VALUES
    assert fit == 128
    assert kept == [b"%d-0" % ms for ms in range(999 - fit, 999)] + [b"1000-0"]
    assert check_record(record) is record


# -- validation --------------------------------------------------------------------------------

CORE = {b"v": b"1", b"s": b"new", b"c": b"1", b"u": b"1", b"a": b"1", b"e": b"0", b"m": b"0"}
GOOD_S = ["s", "web:1:u1", 0, CORE]
GOOD_E = ["e", "web:1:u1", 0, [[b"1-1", [b"t", b"custom"]], [b"2-0", [b"t", b"x", b"k", b""]]]]


def _manifest(backup_id: str, namespace: str = "x") -> dict[str, Any]:
    return {
        "backup_id": backup_id,
        "kind": "full",
        "schema": 1,
        "namespace": namespace,
        "created_at": "2024-01-01T00:00:00+00:00",
        "description": "",
        "parent": None,
        "events": True,
    }


def _entries(*pairs: tuple[bytes, list[Any]]) -> list[Any]:
    return [[entry_id, values] for entry_id, values in pairs]


BAD_PARTS: list[tuple[str, list[Any]]] = [
    ("bad session id", [GOOD_S, ["e", "web:1:{u1}", 0, GOOD_E[3]]]),
    ("session id not str", [GOOD_S, ["e", b"web:1:u1", 0, GOOD_E[3]]]),
    ("negative expiry", [GOOD_S, ["e", "web:1:u1", -1, GOOD_E[3]]]),
    ("bool expiry", [GOOD_S, ["e", "web:1:u1", True, GOOD_E[3]]]),
    ("entries not a list", [GOOD_S, ["e", "web:1:u1", 0, {b"1-1": [b"t", b"x"]}]]),
    ("too short", [GOOD_S, ["e", "web:1:u1", 0]]),
    ("too long", [GOOD_S, ["e", "web:1:u1", 0, GOOD_E[3], 1]]),
    ("id not ms-seq", [GOOD_S, ["e", "web:1:u1", 0, _entries((b"1-x", [b"t", b"x"]))]]),
    ("id as str", [GOOD_S, ["e", "web:1:u1", 0, _entries(("1-1", [b"t", b"x"]))]]),
    ("id with a star", [GOOD_S, ["e", "web:1:u1", 0, _entries((b"*", [b"t", b"x"]))]]),
    ("id 0-0", [GOOD_S, ["e", "web:1:u1", 0, _entries((b"0-0", [b"t", b"x"]))]]),
    ("id not canonical", [GOOD_S, ["e", "web:1:u1", 0, _entries((b"01-1", [b"t", b"x"]))]]),
    (
        "id beyond 64 bits",
        [GOOD_S, ["e", "web:1:u1", 0, _entries((b"18446744073709551616-0", [b"t", b"x"]))]],
    ),
    (
        "ids out of order",
        [GOOD_S, ["e", "web:1:u1", 0, _entries((b"5-0", [b"t", b"x"]), (b"4-9", [b"t", b"x"]))]],
    ),
    (
        "duplicate ids",
        [GOOD_S, ["e", "web:1:u1", 0, _entries((b"5-0", [b"t", b"x"]), (b"5-0", [b"t", b"y"]))]],
    ),
    ("odd field list", [GOOD_S, ["e", "web:1:u1", 0, _entries((b"1-1", [b"t", b"x", b"k"]))]]),
    ("empty field list", [GOOD_S, ["e", "web:1:u1", 0, _entries((b"1-1", []))]]),
    ("str field", [GOOD_S, ["e", "web:1:u1", 0, _entries((b"1-1", ["t", b"x"]))]]),
    ("int value", [GOOD_S, ["e", "web:1:u1", 0, _entries((b"1-1", [b"t", 5]))]]),
    ("entry of 3 items", [GOOD_S, ["e", "web:1:u1", 0, [[b"1-1", [b"t", b"x"], b""]]]]),
    (
        "too many entries",
        [
            GOOD_S,
            [
                "e",
                "web:1:u1",
                0,
                _entries(*((b"%d-0" % i, [b"t", b"x"]) for i in range(1, MAX_EVENT_ENTRIES + 2))),
            ],
        ],
    ),
    ("too many values", [GOOD_S, ["e", "web:1:u1", 0, _entries((b"1-1", [b"k"] * 8000))]]),
    ("stream before its session", [GOOD_E, GOOD_S]),
    ("stream alone", [GOOD_E]),
    ("stream of another session", [GOOD_S, ["e", "web:2:u2", 0, GOOD_E[3]]]),
    ("stream twice", [GOOD_S, GOOD_E, GOOD_E]),
    ("stream after a tombstone", [["d", "web:1:u1"], GOOD_E]),
]

BINARY_ONLY = {"session id not str", "id as str", "str field"}


def _loose_json(item: Any) -> Any:
    """JSON as a hand editor would write it: bytes as text, "s" records as the codec does."""
    if isinstance(item, list) and item[:1] == ["s"] and len(item) == 4:
        return _json_record(item)
    if isinstance(item, list):
        return [_loose_json(x) for x in item]
    if isinstance(item, dict):
        return {_loose_json(k): _loose_json(v) for k, v in item.items()}
    return item.decode() if isinstance(item, bytes) else item


def _write_parts(path: Path, backup_id: str, fmt: str, parts: list[list[Any]]) -> None:
    """A backup of any records, valid or not, with consistent checksums and counts, unsigned."""
    with BackupWriter(path, _manifest(backup_id), Codec(fmt), None) as w:
        for records in parts:
            if fmt == "json":
                raw = json.dumps([_loose_json(r) for r in records]).encode()
            else:
                raw = Codec(fmt).encode(records)
            w.parts.append(
                {
                    "offset": w._offset,
                    "length": len(raw),
                    "records": len(records),
                    "sha256": hashlib.sha256(raw).hexdigest(),
                }
            )
            w._write(FRAME.pack(b"P", len(raw)) + raw)
            counted = kind_counts([r for r in records if isinstance(r, list) and r])
            for name, n in zip(("sessions", "tombstones", "events"), counted, strict=True):
                w.counts[name] += n
        w.finish(chain=backup_id)


@pytest.mark.parametrize(
    ("why", "part"), [pytest.param(w, p, id=w.replace(" ", "-")) for w, p in BAD_PARTS]
)
async def test_invalid_event_records_are_refused_and_redis_unchanged(
    store: SessionStore, tracker: StateTracker, tmp_path: Path, why: str, part: list[Any]
) -> None:
    p = Persistence(store, backup_dir=tmp_path / "nokey")  # unsigned: the full pre-check runs
    await populate(tracker, 2)
    before = await all_keys(store)
    # In json, text is how ids and values are written: str-for-bytes damage is msgpack's only.
    formats = ["msgpack"] if why in BINARY_ONLY else ["msgpack", "json"]
    for fmt in formats:
        backup_id = f"20240101T000000000000Z-full-{fmt}"
        path = tmp_path / "nokey" / f"{backup_id}.{fmt}.scb"
        _write_parts(path, backup_id, fmt, [[GOOD_S, GOOD_E], part])
        report = await p.verify_backup(backup_id)
        assert not report.ok and report.error, why
        with pytest.raises(IntegrityError):
            await p.restore_backup(backup_id, "replace")
        assert await all_keys(store) == before, why
        path.unlink()


async def test_json_event_encoding_is_readable_and_checked(
    store: SessionStore, tracker: StateTracker, persistence: Persistence, tmp_path: Path
) -> None:
    [sid] = await populate(tracker, 1)
    backup_id = await persistence.create_backup(format="json")
    with BackupReader(persistence.find(backup_id)) as reader:
        [(_, payload)] = list(reader.raw_parts())
    doc = json.loads(payload)
    [_, record] = doc
    assert record[:3] == ["e", sid, record[2]] and record[2] > 0
    created, received, _ = record[3]
    assert created == [created[0], ["t", "created", "s", "new", "v", "1"]]
    values = received[1]
    assert values[values.index("text") + 1] == "héllo 0 ✓"  # text stays text
    assert values[values.index("raw") + 1] == ["wcQDAP/B"]  # not UTF-8: [base64]
    assert Codec("json").decode(payload)[1][3][1][1][values.index("raw") + 1] == (
        b"\xc1\xc4\x03\x00\xff\xc1"
    )

    # Hand-edited json: refused with IntegrityError whatever the damage.
    p = Persistence(store, backup_dir=tmp_path / "nokey")
    before = await all_keys(store)
    bad_values: list[Any] = [["!!not base64"], ["a", "b"], 5, None, {"b64": "AA=="}, "\ud800"]
    for i, bad in enumerate(bad_values):
        edited = json.loads(payload)
        edited[1][3][1][1][1] = bad
        backup_id = f"20240101T00000000000{i}Z-full-json"
        path = tmp_path / "nokey" / f"{backup_id}.json.scb"
        raw = json.dumps(edited).encode()
        with BackupWriter(path, _manifest(backup_id), Codec("json"), None) as w:
            w._write(FRAME.pack(b"P", len(raw)) + raw)
            w.parts.append(
                {
                    "offset": len(MAGIC),
                    "length": len(raw),
                    "records": 2,
                    "sha256": hashlib.sha256(raw).hexdigest(),
                }
            )
            w.counts.update(sessions=1, events=1)
            w.finish(chain=backup_id)
        assert not (await p.verify_backup(backup_id)).ok
        with pytest.raises(IntegrityError):
            await p.restore_backup(backup_id, "merge")
        assert await all_keys(store) == before


async def test_tampered_signed_events_backup_is_refused(
    store: SessionStore, tracker: StateTracker, persistence: Persistence
) -> None:
    await populate(tracker, 4)
    backup_id = await persistence.create_backup(format="msgpack")
    path = persistence.find(backup_id)
    pristine = path.read_bytes()
    codec = Codec("msgpack")
    with BackupReader(path) as reader:
        parts = list(reader.raw_parts())
    records = codec.decode(parts[0][1])
    index = next(i for i, r in enumerate(records) if r[0] == "e")
    assert records[index][3][0][1][1] == b"created"
    records[index][3][0][1][1] = b"Created"  # one value of one entry
    forged = codec.encode(records)
    assert len(forged) == len(parts[0][1])  # same length: only the checksums can tell
    offset = parts[0][0]["offset"] + FRAME.size
    path.write_bytes(pristine[:offset] + forged + pristine[offset + len(forged) :])
    await tracker.track_event(records[index][1], EventType.MESSAGE_SENT, text="live")
    before = await all_keys(store)
    assert not (await persistence.verify_backup(backup_id)).ok
    with pytest.raises(IntegrityError, match="checksum"):
        await persistence.restore_backup(backup_id, "replace")
    assert await all_keys(store) == before
    path.write_bytes(pristine)
    assert (await persistence.verify_backup(backup_id)).ok


async def test_old_backups_without_event_counts_still_verify(
    store: SessionStore, tmp_path: Path
) -> None:
    manifest = _manifest("20200101T000000000000Z-full-old0", store.keys.namespace)
    del manifest["events"]  # written before event streams existed
    path = tmp_path / "b" / f"{manifest['backup_id']}.msgpack.scb"
    with BackupWriter(path, manifest, Codec("msgpack"), KEY.encode()) as w:
        w.add_part([GOOD_S])
        del w.counts["events"]
        w.finish(chain=manifest["backup_id"])
    with BackupReader(path) as reader:
        assert reader.manifest["counts"] == {"sessions": 1, "tombstones": 0}
    p = Persistence(store, backup_dir=tmp_path / "b", key=KEY)
    report = await p.verify_backup(manifest["backup_id"])
    assert report.ok and (report.sessions, report.events) == (1, 0)
    assert p.list_backups()[0].events == 0
    restored = await p.restore_backup(manifest["backup_id"], "merge")
    assert (restored.written, restored.events) == (1, 0)
    # The same file holding an event record its counts do not mention: refused.
    with BackupWriter(path, manifest, Codec("msgpack"), KEY.encode()) as w:
        w.add_part([GOOD_S, GOOD_E])
        del w.counts["events"]
        w.finish(chain=manifest["backup_id"])
    report = await p.verify_backup(manifest["backup_id"])
    assert not report.ok and "counts" in (report.error or "")


# -- restore_events.lua ------------------------------------------------------------------------


async def test_restore_events_script_twice_gives_the_same_stream(store: SessionStore) -> None:
    script = store.scripts.restore_events
    key = store.keys.events_of_session_key(store.keys.restore_keys("web:1:u1")[0])
    await store.client.xadd(key, {"t": "live"})
    expire = 4_000_000_000_000
    args: list[Any] = [str(expire), b"5-0", 2, b"t", b"created"]
    args += [b"6-3", 4, b"t", b"\xff", b"", b"v"]
    assert await script(store.client, [key], args) == 2
    first = (await store.client.xrange(key), await store.client.pexpiretime(key))
    assert await script(store.client, [key], args) == 2
    assert (await store.client.xrange(key), await store.client.pexpiretime(key)) == first
    assert first == (
        [(b"5-0", {b"t": b"created"}), (b"6-3", {b"t": b"\xff", b"": b"v"})],
        expire,
    )
    # Already expired: nothing written, the live stream left alone.
    assert await script(store.client, [key], ["1000", b"7-0", 2, b"t", b"x"]) == -1
    assert (await store.client.xrange(key), await store.client.pexpiretime(key)) == first
    # No expiry: the stream persists.
    assert await script(store.client, [key], ["0", b"9-0", 2, b"t", b"x"]) == 1
    assert await store.client.pexpiretime(key) == -1
    # Malformed arguments (the client never sends them) change nothing.
    stored = await store.client.xrange(key)
    for bad in (
        ["0", b"9-0", 3, b"t", b"x", b"y"],  # odd count
        ["0", b"9-0", 4, b"t", b"x"],  # count beyond the arguments
        ["0", b"9-0", 2, b"t", b"x", b"8-0", 2, b"t", b"x"],  # out of order
        ["0", b"09-0", 2, b"t", b"x"],  # not canonical
        ["0", b"0-0", 2, b"t", b"x"],  # not above 0-0
        ["0", b"9-0"],  # no count
        ["x", b"9-0", 2, b"t", b"x"],  # bad expiry
    ):
        with pytest.raises(ResponseError):
            await script(store.client, [key], bad)
        assert await store.client.xrange(key) == stored


