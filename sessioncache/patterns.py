"""Usage patterns and lifecycle prediction: pure functions over events (no I/O, unit-testable)."""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .events import ACTIVITY, INBOUND, Event, EventType
from .keys import parse_session_id
from .statistics import bucket_value, histogram_bucket

_ACTIVITY_NAMES = frozenset(t.value for t in ACTIVITY) | {EventType.CREATED.value}
_INBOUND_NAMES = frozenset(t.value for t in INBOUND)


@dataclass(slots=True)
class ActivityProfile:
    """When someone is active: inbound events per UTC hour and weekday (Monday = 0)."""

    events: int = 0
    hourly: list[int] = field(default_factory=lambda: [0] * 24)
    weekday: list[int] = field(default_factory=lambda: [0] * 7)

    @property
    def peak_hour(self) -> int:
        return max(range(24), key=lambda h: self.hourly[h])

    @property
    def peak_hour_share(self) -> float:
        return self.hourly[self.peak_hour] / self.events if self.events else 0.0

    def to_dict(self) -> dict[str, Any]:
        peak = {"peak_hour": self.peak_hour, "peak_hour_share": self.peak_hour_share}
        return {**asdict(self), **peak}


@dataclass(frozen=True, slots=True)
class PathCount:
    """A sequence of states sessions went through, and how many sessions did."""

    path: tuple[str, ...]
    sessions: int
    share: float


@dataclass(frozen=True, slots=True)
class BurstStats:
    """Bursts (inbound events closer than burst_gap) and idle periods (gaps over idle_gap)."""

    events: int
    bursts: int
    mean_burst_size: float
    burst_share: float
    idle_periods: int
    mean_idle_s: float
    median_gap_s: float


@dataclass(frozen=True, slots=True)
class ChurnedUser:
    user_id: str
    last_seen: dt.datetime
    inactive_s: float


@dataclass(slots=True)
class PatternReport:
    """Everything analyze_patterns() finds; numbers, not just labels."""

    sessions: int
    events: int
    by_user: dict[str, ActivityProfile]
    by_platform: dict[str, ActivityProfile]
    paths: list[PathCount]
    bursts: dict[str, BurstStats]
    churned: list[ChurnedUser]

    def to_dict(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions,
            "events": self.events,
            "by_user": {k: v.to_dict() for k, v in self.by_user.items()},
            "by_platform": {k: v.to_dict() for k, v in self.by_platform.items()},
            "paths": [asdict(p) for p in self.paths],
            "bursts": {k: asdict(v) for k, v in self.bursts.items()},
            "churned": [
                {**asdict(c), "last_seen": c.last_seen.isoformat()} for c in self.churned
            ],
        }


def _owner(session_id: str) -> tuple[str, str]:
    ident = parse_session_id(session_id)
    return ident.user_id, ident.platform


def activity_profiles(
    events: Iterable[Event],
) -> tuple[dict[str, ActivityProfile], dict[str, ActivityProfile]]:
    """Hourly and weekday profiles of inbound events, per user and per platform."""
    users: dict[str, ActivityProfile] = defaultdict(ActivityProfile)
    platforms: dict[str, ActivityProfile] = defaultdict(ActivityProfile)
    for event in events:
        if event.type not in _INBOUND_NAMES:
            continue
        user, platform = _owner(event.session_id)
        for profile in (users[user], platforms[platform]):
            profile.events += 1
            profile.hourly[event.at.hour] += 1
            profile.weekday[event.at.weekday()] += 1
    return dict(users), dict(platforms)


def state_paths(events: Iterable[Event], top: int = 10) -> list[PathCount]:
    """The most common state sequences, from each session's created/state_changed events."""
    paths: dict[str, list[str]] = {}
    for event in sorted(events, key=lambda e: (e.session_id, e.ms, e.event_id)):
        if event.type == EventType.CREATED and event.state:
            paths[event.session_id] = [event.state]
        elif event.type == EventType.STATE_CHANGED and event.state:
            path = paths.setdefault(event.session_id, [event.from_state or "?"])
            path.append(event.state)
    counts = Counter(tuple(p) for p in paths.values())
    total = sum(counts.values())
    return [PathCount(path, n, n / total) for path, n in counts.most_common(top)]


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def burst_stats(
    times_s: Sequence[float], burst_gap_s: float = 60.0, idle_gap_s: float = 1800.0
) -> BurstStats:
    """Bursts and idle periods in one user's sorted inbound event times (seconds)."""
    gaps = [b - a for a, b in itertools.pairwise(times_s)]
    bursts, in_bursts, size = 0, 0, 1
    for gap in [*gaps, math.inf]:
        if gap < burst_gap_s:
            size += 1
            continue
        if size > 1:
            bursts += 1
            in_bursts += size
        size = 1
    idle = [g for g in gaps if g > idle_gap_s]
    return BurstStats(
        events=len(times_s),
        bursts=bursts,
        mean_burst_size=in_bursts / bursts if bursts else 0.0,
        burst_share=in_bursts / len(times_s) if times_s else 0.0,
        idle_periods=len(idle),
        mean_idle_s=sum(idle) / len(idle) if idle else 0.0,
        median_gap_s=_median(gaps),
    )


def churned_users(
    last_seen: Mapping[str, dt.datetime], now: dt.datetime, churn_after_s: float
) -> list[ChurnedUser]:
    """Users whose last inbound event is older than churn_after_s, longest gone first."""
    out = [
        ChurnedUser(user, seen, (now - seen).total_seconds())
        for user, seen in last_seen.items()
        if (now - seen).total_seconds() > churn_after_s
    ]
    return sorted(out, key=lambda c: -c.inactive_s)


def analyze(
    events: Sequence[Event],
    *,
    last_seen: Mapping[str, dt.datetime],
    now: dt.datetime,
    top_paths: int = 10,
    burst_gap_s: float = 60.0,
    idle_gap_s: float = 1800.0,
    churn_after_s: float = 7 * 86400.0,
) -> PatternReport:
    """All patterns of a set of events."""
    by_user, by_platform = activity_profiles(events)
    times: dict[str, list[float]] = defaultdict(list)
    for event in events:
        if event.type in _INBOUND_NAMES:
            times[_owner(event.session_id)[0]].append(event.ms / 1000)
    bursts = {
        user: burst_stats(sorted(ts), burst_gap_s, idle_gap_s) for user, ts in times.items()
    }
    return PatternReport(
        sessions=len({e.session_id for e in events}),
        events=len(events),
        by_user=by_user,
        by_platform=by_platform,
        paths=state_paths(events, top_paths),
        bursts=bursts,
        churned=churned_users(last_seen, now, churn_after_s),
    )


# -- lifecycle prediction -------------------------------------------------------------------


def arrival_gaps(events: Iterable[Event]) -> list[float]:
    """Seconds from a session's previous activity to each inbound event (the quantity the
    scripts histogram per platform), pooled over the sessions given."""
    by_session: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        if event.type in _ACTIVITY_NAMES:
            by_session[event.session_id].append(event)
    gaps: list[float] = []
    for items in by_session.values():
        items.sort(key=lambda e: (e.ms, e.event_id))
        for prev, cur in itertools.pairwise(items):
            if cur.type in _INBOUND_NAMES:
                gaps.append(max(0.0, (cur.ms - prev.ms) / 1000))
    return gaps


@dataclass(frozen=True, slots=True)
class GapModel:
    """An empirical distribution of gaps (seconds) with weights."""

    values: tuple[float, ...]
    weights: tuple[float, ...]
    basis: str

    @classmethod
    def from_samples(cls, gaps: Iterable[float], basis: str) -> GapModel:
        ordered = tuple(sorted(gaps))
        return cls(ordered, (1.0,) * len(ordered), basis)

    @classmethod
    def from_histogram(cls, hist: Mapping[int, int], basis: str) -> GapModel:
        """From a scripts' log2 histogram of milliseconds."""
        pairs = sorted((bucket_value(b) / 1000, float(n)) for b, n in hist.items() if n > 0)
        return cls(tuple(v for v, _ in pairs), tuple(w for _, w in pairs), basis)

    @property
    def size(self) -> float:
        return sum(self.weights)

    def tail(self, beyond: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
        start = bisect.bisect_right(self.values, beyond)
        return self.values[start:], self.weights[start:]

    def survival(self, x: float, given: float) -> float:
        """P(G > x | G > given), smoothed so it is never exactly 0 or 1 from few samples."""
        _, w_given = self.tail(given)
        _, w_x = self.tail(x)
        return (sum(w_x) + 0.5) / (sum(w_given) + 1.0)

    def conditional_median(self, elapsed: float) -> float:
        """Median remaining time until the next gap ends, given `elapsed` already passed."""
        values, weights = self.tail(elapsed)
        if not values:
            values, weights = self.values, self.weights
            elapsed = 0.0
        half, seen = sum(weights) / 2, 0.0
        for value, weight in zip(values, weights, strict=True):
            seen += weight
            if seen >= half:
                return max(0.0, value - elapsed)
        return max(0.0, values[-1] - elapsed)


@dataclass(frozen=True, slots=True)
class LifecyclePrediction:
    """When the session's user is expected back, and the chance it idles or expires first."""

    session_id: str
    expected_next_activity: dt.datetime | None
    seconds_until_next: float | None
    p_idle_within: float
    p_expire_within: float
    horizon_s: float
    idle_after_s: float
    basis: str
    samples: int

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.expected_next_activity is not None:
            out["expected_next_activity"] = self.expected_next_activity.isoformat()
        return out


def choose_model(
    user_gaps: Sequence[float],
    platform_hist: Mapping[int, int] | None,
    min_samples: int = 5,
) -> GapModel | None:
    """The user's own gaps if there are enough, else the platform's histogram, else None."""
    if len(user_gaps) >= min_samples:
        return GapModel.from_samples(user_gaps, "user")
    if platform_hist and sum(platform_hist.values()) >= min_samples:
        return GapModel.from_histogram(platform_hist, "platform")
    if user_gaps:
        return GapModel.from_samples(user_gaps, "user")
    return None


def predict(
    session_id: str,
    model: GapModel | None,
    *,
    last_activity: dt.datetime,
    expires_at: dt.datetime,
    now: dt.datetime,
    horizon_s: float,
    idle_after_s: float,
) -> LifecyclePrediction:
    """Predict next activity (conditional median) and idle/expiry probabilities in a horizon.

    The session goes idle at last_activity + idle_after_s and expires at expires_at unless the
    user comes back first; both are "the current gap outlasts that point".
    """
    elapsed = max(0.0, (now - last_activity).total_seconds())
    to_idle = idle_after_s
    to_expire = (expires_at - last_activity).total_seconds()
    end = elapsed + horizon_s
    if model is None or not model.values:
        return LifecyclePrediction(
            session_id, None, None,
            1.0 if elapsed >= to_idle else 0.0,
            1.0 if elapsed >= to_expire else 0.0,
            horizon_s, idle_after_s, "none", 0,
        )

    def p_within(point: float) -> float:
        if elapsed >= point:
            return 1.0
        if point > end:
            return 0.0
        return model.survival(point, elapsed)

    remaining = model.conditional_median(elapsed)
    return LifecyclePrediction(
        session_id=session_id,
        expected_next_activity=now + dt.timedelta(seconds=remaining),
        seconds_until_next=remaining,
        p_idle_within=p_within(to_idle),
        p_expire_within=p_within(to_expire),
        horizon_s=horizon_s,
        idle_after_s=idle_after_s,
        basis=model.basis,
        samples=round(model.size),
    )


# -- evaluation on a synthetic workload -------------------------------------------------------


def synthetic_gaps(
    users: int = 200, gaps_per_user: int = 40, seed: int = 7
) -> dict[str, list[float]]:
    """Known behaviour: each user's gaps are log-normal around the user's own typical gap,
    and typical gaps differ between users by orders of magnitude (1 minute to 1 day)."""
    rng = random.Random(seed)
    out: dict[str, list[float]] = {}
    for u in range(users):
        typical = math.exp(rng.uniform(math.log(60), math.log(86400)))
        out[f"user{u}"] = [rng.lognormvariate(math.log(typical), 0.5) for _ in range(gaps_per_user)]
    return out


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Mean absolute error (seconds) of next-activity time: the model against two baselines."""

    predictions: int
    mae_model_s: float
    mae_population_s: float
    mae_last_gap_s: float

    @property
    def improvement(self) -> float:
        """Model error as a fraction of the population baseline's (lower is better)."""
        return self.mae_model_s / self.mae_population_s if self.mae_population_s else 0.0


def evaluate_next_activity(
    histories: Mapping[str, Sequence[float]], *, warmup: int = 10, min_samples: int = 5
) -> Evaluation:
    """Walk forward through each user's gaps: predict gap i from gaps before it.

    Model: choose_model() on the user's history, falling back to the population (as the
    platform histogram would). Baselines: the population's mean gap, and the user's last gap.
    """
    pooled = [g for gaps in histories.values() for g in gaps[:warmup]]
    population_mean = sum(pooled) / len(pooled)
    population_hist: dict[int, int] = Counter(histogram_bucket(g * 1000) for g in pooled)
    err_model = err_pop = err_last = 0.0
    n = 0
    for gaps in histories.values():
        for i in range(warmup, len(gaps)):
            model = choose_model(gaps[:i], population_hist, min_samples)
            guess = model.conditional_median(0.0) if model else population_mean
            err_model += abs(guess - gaps[i])
            err_pop += abs(population_mean - gaps[i])
            err_last += abs(gaps[i - 1] - gaps[i])
            n += 1
    return Evaluation(n, err_model / n, err_pop / n, err_last / n)
