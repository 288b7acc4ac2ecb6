"""Lifecycle prediction: when a session's user is expected back and the chance it idles or
expires first, from the user's own gaps or the platform's histogram (Predictor reads them)."""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .errors import ValidationError
from .events import ACTIVITY, INBOUND, Event, EventLog, EventType
from .metrics import Metrics
from .statistics import Statistics, bucket_value
from .store import SessionStore

_ACTIVITY_NAMES = frozenset(t.value for t in ACTIVITY) | {EventType.CREATED.value}
_INBOUND_NAMES = frozenset(t.value for t in INBOUND)


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
        """From observed gaps, each weighing one."""
        ordered = tuple(sorted(gaps))
        return cls(ordered, (1.0,) * len(ordered), basis)

    @classmethod
    def from_histogram(cls, hist: Mapping[int, int], basis: str) -> GapModel:
        """From a scripts' log2 histogram of milliseconds."""
        pairs = sorted((bucket_value(b) / 1000, float(n)) for b, n in hist.items() if n > 0)
        return cls(tuple(v for v, _ in pairs), tuple(w for _, w in pairs), basis)

    @property
    def size(self) -> float:
        """Total weight (the number of samples behind the model)."""
        return sum(self.weights)

    def tail(self, beyond: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The values above ``beyond`` and their weights."""
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
        """JSON-ready: the expected time as ISO 8601 text."""
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


class Predictor:
    """predict_lifecycle() over a SessionStore: reads the user's streams and the platform's
    histogram, then predict()."""

    def __init__(
        self,
        store: SessionStore,
        events: EventLog,
        statistics: Statistics,
        metrics: Metrics,
        *,
        idle_after: float,
    ) -> None:
        self.store = store
        self.events = events
        self.statistics = statistics
        self.metrics = metrics
        self.idle_after = idle_after

    async def predict_lifecycle(
        self,
        session_id: str,
        *,
        horizon: float = 3600.0,
        idle_after: float | None = None,
        min_samples: int = 5,
    ) -> LifecyclePrediction:
        """Expected next activity and P(idle), P(expired) within ``horizon`` seconds, from the
        user's own gaps between activity and inbound events, else the platform's.

        SessionNotFound if the session does not exist.
        """
        with self.metrics.measure("predict_lifecycle"):
            if isinstance(horizon, bool) or not isinstance(horizon, (int, float)) or horizon <= 0:
                raise ValidationError(f"horizon must be a positive number of seconds: {horizon!r}")
            session = await self.store.get(session_id)
            streams = await self.events.user_streams(session.user_id)
            events = await self.events.events_of(streams, None, self.events.max_len)
            gaps = arrival_gaps(events)
            hist = (await self.statistics.platform_gap_histograms()).get(session.platform.value)
            model = choose_model(gaps, hist, min_samples)
            idle = float(idle_after if idle_after is not None else self.idle_after)
            result = predict(
                session_id, model, last_activity=session.last_activity,
                expires_at=session.expires_at, now=dt.datetime.now(dt.UTC),
                horizon_s=float(horizon),
                idle_after_s=idle,
            )
        return result
