"""Events: one script per event, message_count/last_activity, stream caps, queries, bad input."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from sessioncache import EventType, SessionNotFound, ValidationError
from sessioncache.store import SessionStore

from .support.tracker_helpers import new_tracker, snapshot


async def test_message_events_count_and_refresh_activity(store: SessionStore) -> None:
    tracker = await new_tracker(store)
    store = tracker.store
    s = await store.create(1, "u1", "telegram")
    await asyncio.sleep(0.01)
    eid = await tracker.track_event(s.session_id, EventType.MESSAGE_RECEIVED, text="hi", n=2)
    assert eid is not None and "-" in eid
    await tracker.track_event(s.session_id, "message_sent", text="hello")
    after = await store.get(s.session_id)
    assert after.message_count == 2 and after.last_activity > s.last_activity
    assert after.version == s.version  # events are not content changes
    await tracker.track_event(s.session_id, EventType.ERROR, code=500)
    later = await store.get(s.session_id)
    assert (later.message_count, later.last_activity) == (2, after.last_activity)
    events = await tracker.get_events(s.session_id)
    assert [e.type for e in events] == ["created", "message_received", "message_sent", "error"]
    assert events[1].fields == {"text": "hi", "n": 2} and events[1].event_id == eid
    assert events[3].fields == {"code": 500} and events[3].state == "new"


async def test_every_event_type_is_recorded(store: SessionStore) -> None:
    tracker = await new_tracker(store)
    store = tracker.store
    s = await store.create(1, "u1", "web")
    recordable = [t for t in EventType if t not in (EventType.STATE_CHANGED, EventType.CREATED)]
    for t in recordable:
        await tracker.track_event(s.session_id, t, kind=t.value)
    events = await tracker.get_events(s.session_id, types=recordable)
    assert [e.type for e in events] == [t.value for t in recordable]
    assert [e.fields["kind"] for e in events] == [t.value for t in recordable]
    report = await tracker.get_statistics()
    assert all(report.events_by_type[t.value] == 1 for t in recordable)
    assert report.messages_total == 2


async def test_query_since_until_types_limit(store: SessionStore) -> None:
    tracker = await new_tracker(store)
    store = tracker.store
    s = await store.create(1, "u1", "web")
    for i in range(6):
        await tracker.track_event(s.session_id, EventType.COMMAND, i=i)
        await tracker.track_event(s.session_id, EventType.MESSAGE_SENT, i=i)
        await asyncio.sleep(0.003)
    every = await tracker.get_events(s.session_id, limit=1000)
    assert len(every) == 13
    commands = await tracker.get_events(s.session_id, types=["command"], limit=4)
    assert [e.fields["i"] for e in commands] == [0, 1, 2, 3]
    middle = every[5]
    since = await tracker.get_events(s.session_id, since=middle.at)
    assert since and since[0].ms >= middle.ms and all(e.ms >= middle.ms for e in since)
    until = await tracker.get_events(s.session_id, until=middle.ms / 1000)
    assert until and all(e.ms <= middle.ms for e in until)
    assert len(await tracker.get_events(s.session_id, limit=3)) == 3
    with pytest.raises(ValidationError):
        await tracker.get_events(s.session_id, types=["nope"])
    with pytest.raises(ValidationError):
        await tracker.get_events(s.session_id, limit=0)
    with pytest.raises(ValidationError):
        await tracker.get_events(s.session_id, since=dt.datetime(2026, 1, 1))
    with pytest.raises(ValidationError):
        await tracker.get_events(s.session_id, until=-5)


async def test_bad_events_raise_and_write_nothing(store: SessionStore) -> None:
    tracker = await new_tracker(store)
    store = tracker.store
    s = await store.create(1, "u1", "web")
    before = await snapshot(tracker, s.session_id)
    with pytest.raises(ValidationError, match="unknown event type 'clicked'"):
        await tracker.track_event(s.session_id, "clicked")
    with pytest.raises(ValidationError, match="transition"):
        await tracker.track_event(s.session_id, EventType.STATE_CHANGED)
    with pytest.raises(ValidationError, match="16384"):
        await tracker.track_event(s.session_id, EventType.CUSTOM, blob="x" * 20000)
    with pytest.raises(ValidationError, match="at most 32 fields"):
        await tracker.track_event(s.session_id, EventType.CUSTOM, **{f"f{i}": i for i in range(33)})
    with pytest.raises(ValidationError):
        await tracker.track_event(s.session_id, EventType.CUSTOM, obj=object())
    with pytest.raises(ValidationError):
        await tracker.track_event(s.session_id, EventType.CUSTOM, n=float("nan"))
    assert await snapshot(tracker, s.session_id) == before
    missing = "web:2:ghost"
    with pytest.raises(SessionNotFound):
        await tracker.track_event(missing, EventType.MESSAGE_RECEIVED)
    _, keys, _ = tracker.events.locate(missing)
    assert await store.client.exists(keys[2]) == 0
    assert tracker.get_performance_metrics()["track_event"]["errors"] == 7


async def test_retried_event_applies_once(store: SessionStore) -> None:
    tracker = await new_tracker(store)
    store = tracker.store
    s = await store.create(1, "u1", "web")
    _, keys, _ = tracker.events.locate(s.session_id)
    args = store.op_args(
        ["message_received 1 1 1", f"{store.default_ttl_ms} 1000 60000 u1 web", "text", "hi"]
    )
    first = await store.scripts.track_event(store.client, keys, args)
    again = await store.scripts.track_event(store.client, keys, args)
    assert (first[0], first[2], again[0], again[2]) == (1, 1, 2, 1)
    assert (await store.get(s.session_id)).message_count == 1
    assert await store.client.xlen(keys[2]) == 2  # created + one message
    assert (await tracker.get_statistics()).messages_total == 1


async def test_stream_is_capped_by_count_and_age(store: SessionStore) -> None:
    tracker = await new_tracker(store, event_max_len=10, event_max_age=120.0)
    store = tracker.store
    s = await store.create(1, "u1", "web")
    for i in range(400):
        await tracker.track_event(s.session_id, EventType.CUSTOM, i=i)
    _, keys, _ = tracker.events.locate(s.session_id)
    length = await store.client.xlen(keys[2])
    # Approximate trimming keeps at least the cap and drops whole nodes (<= 100 entries each).
    assert 10 <= length <= 110
    newest = await tracker.get_events(s.session_id, since=None, limit=1000)
    assert newest[-1].fields["i"] == 399
    assert 0 < await store.client.pttl(keys[2]) <= 120_000


async def test_old_events_are_trimmed_by_age(store: SessionStore) -> None:
    tracker = await new_tracker(store, event_max_age=0.3)
    store = tracker.store
    s = await store.create(1, "u1", "web")
    for i in range(150):
        await tracker.track_event(s.session_id, EventType.CUSTOM, i=i)
    await asyncio.sleep(0.4)  # the scenario: the events age past event_max_age (server clock)
    # A transition always trims by age (events trim on about one call in 32); approximate
    # trimming drops whole stream nodes (100 entries), so the first node must go.
    await tracker.transition(s.session_id, "active")
    remaining = await tracker.get_events(s.session_id, limit=1000)
    assert len(remaining) <= 52 and remaining[-1].type == "state_changed"
