"""Patterns and lifecycle prediction (pure functions, plus end to end), and the metrics."""

from __future__ import annotations

import datetime as dt

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from bench.evaluation import evaluate_next_activity, synthetic_gaps
from sessioncache import EventType, ValidationError
from sessioncache.events import Event
from sessioncache.metrics import Metrics, PrometheusCollector
from sessioncache.patterns import analyze, burst_stats, state_paths
from sessioncache.prediction import GapModel, arrival_gaps, choose_model, predict
from sessioncache.store import SessionStore

from .support.tracker_helpers import new_tracker

MONDAY = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)  # a Monday


def ev(sid: str, at: dt.datetime, kind: str, **kw: object) -> Event:
    ms = int(at.timestamp() * 1000)
    return Event(f"{ms}-{kw.pop('seq', 0)}", sid, kind, at, **kw)  # type: ignore[arg-type]


def test_profiles_paths_bursts_and_churn() -> None:
    a, b = "telegram:1:alice", "discord:2:bob"
    events = [ev(a, MONDAY + dt.timedelta(hours=9, seconds=10 * i), "message_received")
              for i in range(4)]
    events += [ev(a, MONDAY + dt.timedelta(days=1, hours=20), "command")]
    events += [ev(b, MONDAY + dt.timedelta(days=2, hours=9), "message_received")]
    events += [ev(b, MONDAY + dt.timedelta(days=2, hours=9), "message_sent", seq=1)]
    events += [
        ev(a, MONDAY, "created", state="new"),
        ev(a, MONDAY + dt.timedelta(hours=1), "state_changed", from_state="new", state="active"),
        ev(a, MONDAY + dt.timedelta(hours=2), "state_changed", from_state="active", state="closed"),
        ev(b, MONDAY, "created", state="new"),
        ev(b, MONDAY + dt.timedelta(hours=1), "state_changed", from_state="new", state="active"),
    ]
    now = MONDAY + dt.timedelta(days=10)
    seen = {"alice": MONDAY + dt.timedelta(days=9), "bob": MONDAY + dt.timedelta(days=2)}
    report = analyze(events, last_seen=seen, now=now, churn_after_s=5 * 86400)
    alice = report.by_user["alice"]
    assert alice.events == 5 and alice.hourly[9] == 4 and alice.hourly[20] == 1
    assert alice.weekday[0] == 4 and alice.weekday[1] == 1
    assert (alice.peak_hour, alice.peak_hour_share) == (9, 0.8)
    assert report.by_platform["discord"].weekday[2] == 1
    assert [(p.path, p.sessions) for p in report.paths] == [
        (("new", "active"), 1), (("new", "active", "closed"), 1)
    ] or [(p.path, p.sessions) for p in report.paths] == [
        (("new", "active", "closed"), 1), (("new", "active"), 1)
    ]
    bursts = report.bursts["alice"]
    assert (bursts.bursts, bursts.mean_burst_size, bursts.burst_share) == (1, 4.0, 0.8)
    assert bursts.idle_periods == 1 and bursts.mean_idle_s == pytest.approx(86400 + 11 * 3600 - 30)
    assert [c.user_id for c in report.churned] == ["bob"]
    assert report.churned[0].inactive_s == 8 * 86400
    assert report.to_dict()["by_user"]["alice"]["peak_hour"] == 9


def test_state_paths_share_and_order() -> None:
    events = []
    for i in range(3):
        sid = f"web:{i}:u"
        events.append(ev(sid, MONDAY, "created", state="new"))
        events.append(ev(sid, MONDAY + dt.timedelta(seconds=1), "state_changed",
                         from_state="new", state="active" if i else "closed"))
    paths = state_paths(events)
    assert (paths[0].path, paths[0].sessions, round(paths[0].share, 3)) == (
        ("new", "active"), 2, 0.667)


def test_burst_stats_edge_cases() -> None:
    assert burst_stats([]).events == 0
    stats = burst_stats([0, 1, 2, 500, 501, 5000], burst_gap_s=60, idle_gap_s=1000)
    assert (stats.bursts, stats.mean_burst_size, stats.idle_periods) == (2, 2.5, 1)
    assert stats.median_gap_s == 1.0


def test_prediction_uses_user_then_platform() -> None:
    last = MONDAY
    gaps = [100.0, 110.0, 120.0, 130.0, 140.0, 5000.0]
    model = choose_model(gaps, None)
    assert model is not None and model.basis == "user"
    p = predict("web:1:u", model, last_activity=last, expires_at=last + dt.timedelta(hours=2),
                now=last + dt.timedelta(seconds=50), horizon_s=3600, idle_after_s=1800)
    assert p.basis == "user" and p.seconds_until_next == pytest.approx(70.0)
    # Only the 5000 s gap outlasts the idle point: P = (1 + 0.5) / (6 + 1).
    assert p.p_idle_within == pytest.approx(1.5 / 7)
    assert p.p_expire_within == 0.0  # expiry (7200 s after activity) is beyond the horizon
    late = predict("web:1:u", model, last_activity=last, expires_at=last + dt.timedelta(hours=2),
                   now=last + dt.timedelta(seconds=3000), horizon_s=7200, idle_after_s=1800)
    assert late.p_idle_within == 1.0 and late.seconds_until_next == pytest.approx(2000.0)
    assert late.p_expire_within == pytest.approx(0.5 / 2)
    platform = choose_model([1.0], {40: 10, 44: 10})
    assert platform is not None and platform.basis == "platform"
    assert choose_model([], None) is None
    none = predict("web:1:u", None, last_activity=last, expires_at=last, now=last,
                   horizon_s=10, idle_after_s=5)
    assert none.basis == "none" and none.expected_next_activity is None
    hist_model = GapModel.from_histogram({40: 3}, "platform")
    # Bucket 40 of a millisecond histogram: its middle is 2^(40.5/4) - 1 ms.
    assert hist_model.conditional_median(0) == pytest.approx((2 ** (40.5 / 4) - 1) / 1000)


def test_prediction_beats_naive_baselines_on_synthetic_workload() -> None:
    result = evaluate_next_activity(synthetic_gaps(users=200, gaps_per_user=40, seed=7))
    assert result.predictions == 200 * 30
    # Users differ by orders of magnitude, so their own history predicts far better than the
    # population's mean or the last gap alone.
    assert result.mae_model_s < 0.5 * result.mae_population_s
    assert result.mae_model_s < 0.8 * result.mae_last_gap_s


def test_arrival_gaps_measure_from_previous_activity() -> None:
    sid = "web:1:u"
    events = [
        ev(sid, MONDAY, "created", state="new"),
        ev(sid, MONDAY + dt.timedelta(seconds=10), "message_received"),
        ev(sid, MONDAY + dt.timedelta(seconds=12), "message_sent"),
        ev(sid, MONDAY + dt.timedelta(seconds=40), "error"),
        ev(sid, MONDAY + dt.timedelta(seconds=72), "command"),
    ]
    assert arrival_gaps(events) == [10.0, 60.0]


async def test_predict_lifecycle_end_to_end(store: SessionStore) -> None:
    tracker = await new_tracker(store)
    store = tracker.store
    s = await store.create(1, "u1", "web")
    with pytest.raises(ValidationError):
        await tracker.predict_lifecycle(s.session_id, horizon=0)
    first = await tracker.predict_lifecycle(s.session_id)
    assert first.basis == "none" and first.p_idle_within == 0.0
    for _ in range(6):
        await tracker.track_event(s.session_id, EventType.MESSAGE_RECEIVED)
    result = await tracker.predict_lifecycle(s.session_id, horizon=60, idle_after=30.0)
    assert result.basis == "user" and result.samples == 6
    # The six events came back to back: the next one is expected well inside idle_after (how
    # soon exactly depends on how fast this machine ran the loop, so no tighter bound).
    assert result.seconds_until_next is not None and 0.0 <= result.seconds_until_next < 30.0
    # No gap so far came close to 30 s: at most the smoothed "no evidence" 0.5.
    assert 0.0 < result.p_idle_within <= 0.5
    beyond = await tracker.predict_lifecycle(s.session_id, horizon=60, idle_after=600.0)
    assert beyond.p_idle_within == 0.0 and beyond.p_expire_within == 0.0
    other = await store.create(2, "u2", "web")
    tracker.statistics.forget_cache()
    fallback = await tracker.predict_lifecycle(other.session_id)
    assert fallback.basis == "platform" and fallback.samples == 6
    report = await tracker.analyze_patterns(user_id="u1")
    assert report.by_user["u1"].events == 6 and report.sessions == 1
    fleet = await tracker.analyze_patterns(platform="web")
    assert fleet.sessions == 2 and fleet.paths[0].path == ("new",)
    assert set(await tracker.patterns.last_seen(None, -60.0, 10)) == {"u1"}
    assert await tracker.patterns.last_seen(None, 3600.0, 10) == {}
    assert set(await tracker.patterns.last_seen("u1", 3600.0, 10)) == {"u1"}


def test_metrics_quantiles_and_prometheus() -> None:
    metrics = Metrics()
    for i in range(1, 101):
        metrics.observe("op", i / 1000)
    metrics.observe("op", 0.5, error=True)
    summary = metrics.snapshot()["op"]
    assert summary["count"] == 101 and summary["errors"] == 1
    assert 45 <= summary["p50_ms"] <= 60 and 90 <= summary["p95_ms"] <= 115
    assert summary["p99_ms"] <= 120 and summary["max_ms"] == 500
    registry = CollectorRegistry()
    registry.register(PrometheusCollector(metrics))
    text = generate_latest(registry).decode()
    assert 'sessioncache_operation_seconds_count{operation="op"} 101.0' in text
    assert 'sessioncache_operation_errors_total{operation="op"} 1.0' in text
    metrics.reset()
    assert metrics.snapshot() == {}


def test_prometheus_exporter_serves_http() -> None:
    import urllib.request

    from sessioncache.embedded import free_port
    from sessioncache.metrics import start_prometheus_exporter

    metrics = Metrics()
    with metrics.measure("transition"):
        pass
    port = free_port()
    _, server = start_prometheus_exporter(metrics, port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert 'sessioncache_operation_seconds_count{operation="transition"} 1.0' in text
