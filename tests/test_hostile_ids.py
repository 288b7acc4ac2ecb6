"""Hostile ids on every public path: what create accepts, every call reaches; what it refuses,
every call refuses, leaving Redis unchanged; one bad session never breaks a user's listing."""

from __future__ import annotations

import pytest

from sessioncache import EventType, Platform, SessionStore, ValidationError
from sessioncache.identity import MAX_ID_BYTES, MAX_SESSION_ID_LENGTH, parse_session_id
from sessioncache.tracker import StateTracker

from .support.tracker_helpers import new_tracker

EMOJI = "\U0001f642"  # 4 bytes in UTF-8

ACCEPTED: list[object] = [
    EMOJI * (MAX_ID_BYTES // 4),  # exactly the bound, each byte percent-encoded
    "x" * MAX_ID_BYTES,
    "\u00e9" * (MAX_ID_BYTES // 2),
    "a:b{c}*?[d]\\ \t\n%3A%",
    "%41",
    "~@._-",
    "\x00",
    "\u202eevil",
    "e\u0301",
    "{user}",
    2**63 - 1,
    -1,
    0,
]

REFUSED: list[object] = [
    EMOJI * (MAX_ID_BYTES // 4) + "x",
    "x" * (MAX_ID_BYTES + 1),
    EMOJI * 256,  # the case that create once accepted and get could not reach
    "",
    True,
    False,
    1.0,
    None,
    b"1",
    "\ud800",
    10 ** (MAX_ID_BYTES + 1),
    ["1"],
]

BAD_PLATFORMS: list[object] = ["web\n", "Web", "web ", "", "a" * 33, "we:b", "w{b}", 1, None]


async def _all_keys(store: SessionStore) -> list[bytes]:
    pattern = store.keys.all_pattern()
    return sorted([k async for k in store.client.scan_iter(match=pattern, count=1000)])


async def _every_path_reaches(tracker: StateTracker, chat: object, user: object) -> None:
    store = tracker.store
    created = await store.create(chat, user, "web", thread_id=chat, data={"n": 1})
    sid = created.session_id
    assert len(sid) <= MAX_SESSION_ID_LENGTH
    assert parse_session_id(sid) == store.identity(chat, user, "web", chat)
    assert (await store.get(sid)).data == {"n": 1}
    assert (await store.update(sid, {"n": 2})).version == 2
    await store.touch(sid, messages=1)
    assert await tracker.track_event(sid, EventType.MESSAGE_RECEIVED, text="hi") is not None
    assert (await tracker.transition(sid, "active")).state == "active"
    again = await store.get_or_create(chat, user, "web", chat)
    assert (again.session_id, again.version, again.data) == (sid, 3, {"n": 2})
    found = await store.find(chat, user, "web", chat)
    assert found is not None and found.session_id == sid
    listed = await store.list_user_sessions(user)
    assert [s.session_id for s in listed] == [sid]
    assert [e.type for e in await tracker.get_events(sid)][-2:] == [
        "message_received",
        "state_changed",
    ]
    assert await store.delete(sid) is True
    assert await store.find_by_id(sid) is None
    assert await store.list_user_sessions(user) == []


@pytest.mark.parametrize("hostile", ACCEPTED, ids=lambda v: repr(v)[:24])
async def test_an_accepted_id_reaches_every_path(store: SessionStore, hostile: object) -> None:
    tracker = await new_tracker(store)
    await _every_path_reaches(tracker, hostile, hostile)
    await _every_path_reaches(tracker, hostile, "plain-user")


@pytest.mark.parametrize("hostile", REFUSED, ids=lambda v: repr(v)[:40])
async def test_a_refused_id_is_refused_on_every_path_and_redis_is_unchanged(
    store: SessionStore, hostile: object
) -> None:
    tracker = await new_tracker(store)
    store = tracker.store
    keep = await store.create("c", "u", "web")
    before = await _all_keys(store)
    calls = [
        lambda: store.create(hostile, "u", "web"),
        lambda: store.create("c2", hostile, "web"),
        lambda: store.get_or_create(hostile, "u", "web"),
        lambda: store.get_or_create("c", hostile, "web"),
        lambda: store.find(hostile, "u", "web"),
        lambda: store.list_user_sessions(hostile),
    ]
    if hostile is not None:  # thread_id=None is "no thread"
        calls.append(lambda: store.create("c3", "u", "web", thread_id=hostile))
    for call in calls:
        with pytest.raises(ValidationError):
            await call()
    # The same id smuggled in through a session id, as a caller could build one by hand.
    if isinstance(hostile, str) and hostile:
        from urllib.parse import quote

        # Not valid UTF-8 once decoded (a lone surrogate has no UTF-8 form).
        part = "%ED%A0%80" if hostile == "\ud800" else quote(hostile, safe="@")
        for sid in (f"web:{part}:u", f"web:c:{part}", f"web:c:u:{part}"):
            for call in (
                lambda sid=sid: store.get(sid),
                lambda sid=sid: store.update(sid, {"a": 1}),
                lambda sid=sid: store.touch(sid),
                lambda sid=sid: store.delete(sid),
                lambda sid=sid: tracker.transition(sid, "active"),
                lambda sid=sid: tracker.track_event(sid, EventType.CUSTOM),
            ):
                with pytest.raises(ValidationError):
                    await call()
    assert await _all_keys(store) == before
    assert [s.session_id for s in await store.list_user_sessions("u")] == [keep.session_id]


@pytest.mark.parametrize("platform", BAD_PLATFORMS, ids=repr)
async def test_a_bad_platform_is_refused_everywhere(store: SessionStore, platform: object) -> None:
    tracker = await new_tracker(store)
    store = tracker.store
    before = await _all_keys(store)
    with pytest.raises(ValidationError):
        await store.create("c", "u", platform)
    with pytest.raises(ValidationError):
        await store.get_or_create("c", "u", platform)
    # ("we:b:c:u" is the well-formed id of platform "we", so that one only goes through create.)
    sid = f"{platform}:c:u" if ":" not in str(platform) else "web\n:c:u"
    for call in (
        lambda: store.get(sid),
        lambda: store.update(sid, {"a": 1}),
        lambda: store.touch(sid),
        lambda: tracker.transition(sid, "active"),
        lambda: tracker.track_event(sid, EventType.MESSAGE_RECEIVED, text="x"),
    ):
        # A ValidationError before Redis, never a script or backend error.
        with pytest.raises(ValidationError):
            await call()
    assert await _all_keys(store) == before


async def test_a_warm_identity_cache_does_not_widen_what_is_accepted(
    store: SessionStore,
) -> None:
    s = await store.create(1, 1, Platform.WEB)  # the cache now holds (web, 1, 1)
    assert s.session_id == "web:1:1"
    assert (await store.get_or_create("1", "1", "web")).session_id == s.session_id
    for twin in (True, 1.0):
        with pytest.raises(ValidationError):
            await store.create(twin, 1, Platform.WEB)
        with pytest.raises(ValidationError):
            await store.get_or_create(1, twin, Platform.WEB)
        with pytest.raises(ValidationError):
            await store.find(twin, 1, Platform.WEB)
        with pytest.raises(ValidationError):
            await store.list_user_sessions(twin)
    assert [x.session_id for x in await store.list_user_sessions(1)] == [s.session_id]


async def test_one_unreadable_session_does_not_break_the_users_listing(
    store: SessionStore,
) -> None:
    good = await store.create("c1", "victim", "web")
    other = await store.create("c2", "victim", "api")
    # A session written under other id rules (an older version allowed 256 emoji): its
    # encoded chat part is longer than any id this version accepts. Its hash and index entry
    # are copied from a real session, as that version's create.lua wrote them.
    tag = store.identity("x", "victim").user_tag
    suffix = "web:" + "%F0%9F%99%82" * 256
    legacy_key = store.keys.session_in_index(tag, suffix)
    await store.client.hset(legacy_key, mapping=await store.client.hgetall(good.session_key))
    await store.client.hset(store.keys.user_index(tag), suffix, 1)
    listed = await store.list_user_sessions("victim")
    assert sorted(s.session_id for s in listed) == sorted([good.session_id, other.session_id])
    # The unreadable one is skipped, not pruned: its data stays for whoever can read it.
    assert await store.client.exists(legacy_key) == 1
    await store.client.delete(legacy_key)
