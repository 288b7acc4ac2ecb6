"""The statistics report: exact counters from the scripts, summaries, JSON and the CLI table."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest

from sessioncache import EventType, ValidationError, initialize_sessions, shutdown_sessions
from sessioncache.cli import main as cli_main
from sessioncache.statistics import build_report, histogram_quantile
from sessioncache.store import SessionStore

from .support.namespaces import drop_namespace, unique_namespace
from .support.tracker_helpers import new_tracker


async def test_report_counts_states_platforms_events(store: SessionStore) -> None:
    tracker = await new_tracker(store)
    store = tracker.store
    a = await store.create(1, "alice", "telegram")
    b = await store.create(2, "bob", "telegram")
    c = await store.create(3, "carol", "discord")
    d = await store.create(4, "dave", "discord")
    for sid in (a.session_id, b.session_id, c.session_id):
        await tracker.transition(sid, "active")
    for _ in range(3):
        await tracker.track_event(a.session_id, EventType.MESSAGE_RECEIVED)
    await tracker.track_event(a.session_id, EventType.MESSAGE_SENT)
    await tracker.track_event(c.session_id, EventType.COMMAND, name="/start")
    await tracker.track_event(b.session_id, EventType.ERROR)
    await asyncio.sleep(0.02)
    await tracker.transition(a.session_id, "closed")
    await store.delete(d.session_id)
    await store.delete(d.session_id)  # a second delete changes no counter

    report = await tracker.get_statistics(active_window=600)
    assert report.sessions_by_state == {"new": 0, "active": 2, "closed": 1}
    assert report.sessions_by_platform == {"telegram": 2, "discord": 1}
    assert report.sessions_by_platform_state["discord"] == {"new": 0, "active": 1}
    assert (report.sessions_created, report.sessions_deleted, report.sessions_ended) == (4, 1, 1)
    assert report.transitions == {"new>active": 3, "active>closed": 1}
    assert report.events_by_type == {
        "created": 4, "state_changed": 4, "message_received": 3, "message_sent": 1,
        "command": 1, "error": 1,
    }
    assert sum(report.events_per_hour.values()) == 14
    assert report.messages_total == 4
    assert report.active_users == 2  # alice and carol sent something; bob only had an error
    assert report.duration_s.count == 1 and report.duration_s.mean >= 0.02
    assert report.messages_per_session.mean == 4.0
    assert 3.0 <= report.messages_per_session.p50 <= 5.0
    encoded = json.loads(json.dumps(report.to_dict()))
    assert encoded["transitions"] == {"new>active": 3, "active>closed": 1}
    table = report.to_table()
    assert "transition new>active" in table and "state active" in table
    with pytest.raises(ValidationError):
        await tracker.get_statistics(active_window=0)
    with pytest.raises(ValidationError):
        await tracker.get_statistics(hours=0)


def test_histogram_quantiles_are_close() -> None:
    values = [10, 20, 30, 40, 1000]
    hist: dict[int, int] = {}
    for v in values:
        b = int(4 * __import__("math").log2(v + 1))
        hist[b] = hist.get(b, 0) + 1
    assert abs(histogram_quantile(hist, 0.5) - 30) / 30 < 0.1
    assert abs(histogram_quantile(hist, 0.95) - 1000) / 1000 < 0.1
    assert histogram_quantile({}, 0.5) == 0.0


def test_build_report_drops_hours_outside_the_window() -> None:
    now = dt.datetime(2026, 1, 2, 12, 30, tzinfo=dt.UTC)
    hour = int(now.timestamp() // 3600)
    shard = {f"h:{hour}".encode(): b"5", f"h:{hour - 30}".encode(): b"7", b"created": b"2"}
    report = build_report([shard, {b"created": b"1"}], active_users=0, active_window_s=60,
                          now=now, hours=24)
    assert report.events_per_hour == {"2026-01-02T12:00Z": 5}
    assert report.sessions_created == 3 and report.shards == 2


async def test_system_api_and_cli_table(redis_url: str, capsys: object) -> None:
    namespace = unique_namespace()
    system = await initialize_sessions("REDIS", {"url": redis_url}, namespace=namespace)
    try:
        s = await system.create_session("c1", "u1", "telegram")
        await system.transition(s.session_id, "active")
        await system.track_event(s.session_id, EventType.MESSAGE_RECEIVED, text="hi")
        events = await system.get_events(s.session_id, types=["message_received"])
        assert [e.fields for e in events] == [{"text": "hi"}]
        report = await system.get_statistics()
        assert report.sessions_by_state == {"new": 0, "active": 1}
        metrics = system.get_performance_metrics()
        assert metrics["transition"]["count"] == 1 and metrics["track_event"]["count"] == 1
        assert await asyncio.to_thread(
            cli_main, ["stats", "--url", redis_url, "--namespace", namespace]
        ) == 0
        out = capsys.readouterr().out  # type: ignore[attr-defined]
        assert "transition new>active" in out and "messages" in out
        assert await asyncio.to_thread(
            cli_main, ["stats", "--url", redis_url, "--namespace", namespace, "--json"]
        ) == 0
        assert json.loads(capsys.readouterr().out)["messages_total"] == 1  # type: ignore[attr-defined]
    finally:
        await drop_namespace(system.store.client, namespace)
        await shutdown_sessions()
