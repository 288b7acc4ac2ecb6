"""Usage patterns: activity profiles, state paths, bursts and churn from the event streams
(pure functions, unit-testable), and PatternAnalysis, which reads the streams for them."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import unquote

from redis.exceptions import RedisError

from .errors import BackendUnavailable
from .events import INBOUND, Event, EventLog, EventType, epoch_ms
from .identity import parse_session_id, user_tag
from .metrics import Metrics
from .statistics import Statistics
from .store import SessionStore

_INBOUND_NAMES = frozenset(t.value for t in INBOUND)


@dataclass(slots=True)
class ActivityProfile:
    """When someone is active: inbound events per UTC hour and weekday (Monday = 0)."""

    events: int = 0
    hourly: list[int] = field(default_factory=lambda: [0] * 24)
    weekday: list[int] = field(default_factory=lambda: [0] * 7)

    @property
    def peak_hour(self) -> int:
        """The UTC hour with the most inbound events."""
        return max(range(24), key=lambda h: self.hourly[h])

    @property
    def peak_hour_share(self) -> float:
        """The share of inbound events in the peak hour."""
        return self.hourly[self.peak_hour] / self.events if self.events else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the peak hour and its share."""
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
    """A user whose last inbound event is older than the churn threshold."""

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
        """JSON-ready: datetimes as ISO 8601 text."""
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


class PatternAnalysis:
    """Reads event streams and the shards' last-activity sets for analyze()."""

    def __init__(
        self, store: SessionStore, events: EventLog, statistics: Statistics, metrics: Metrics
    ) -> None:
        self.store = store
        self.keys = store.keys
        self.events = events
        self.statistics = statistics
        self.metrics = metrics

    async def analyze_patterns(
        self,
        *,
        user_id: object = None,
        platform: str | None = None,
        since: dt.datetime | float | None = None,
        max_sessions: int = 1000,
        events_per_session: int = 1000,
        top_paths: int = 10,
        burst_gap: float = 60.0,
        idle_gap: float = 1800.0,
        churn_after: float = 7 * 86400.0,
        max_churned: int = 1000,
    ) -> PatternReport:
        """Activity profiles, state paths, bursts and churn from the event streams.

        With user_id: that user's live sessions. Without: up to max_sessions streams found by
        SCAN (an analysis job, not a hot path), optionally of one platform.
        """
        with self.metrics.measure("analyze_patterns"):
            if user_id is not None:
                streams = await self.events.user_streams(user_id)
            else:
                streams = await self._scan_streams(platform, max_sessions)
            if platform is not None:
                streams = [s for s in streams if s[0].split(":", 1)[0] == platform]
            events = await self.events.events_of(
                streams[:max_sessions], epoch_ms(since, "since"), events_per_session
            )
            last_seen = await self.last_seen(user_id, churn_after, max_churned)
            report = analyze(
                events, last_seen=last_seen, now=dt.datetime.now(dt.UTC), top_paths=top_paths,
                burst_gap_s=burst_gap, idle_gap_s=idle_gap, churn_after_s=churn_after,
            )
        return report

    async def _scan_streams(self, platform: str | None, limit: int) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        try:
            async for raw in self.store.client.scan_iter(
                match=self.keys.events_pattern(), count=1000
            ):
                key = raw.decode()
                sid = self.keys.session_id_of_events_key(key)
                if platform is None or sid.split(":", 1)[0] == platform:
                    out.append((sid, key))
                    if len(out) >= limit:
                        break
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable scanning streams: {exc}") from exc
        return sorted(out)

    async def last_seen(
        self, user_id: object, older_than: float, limit: int
    ) -> dict[str, dt.datetime]:
        """Last inbound event of the user, or of up to ``limit`` users per shard whose last one
        is older than ``older_than`` seconds (the churn candidates), from the shards' zsets."""
        tags = self.statistics.shard_tags()
        cutoff = int((time.time() - older_than) * 1000)
        try:
            if user_id is not None:
                tag = user_tag(user_id)
                shard = self.keys.shard_of_user(tag)
                score = await self.store.client.zscore(self.keys.users(shard), tag)
                if score is None:
                    return {}
                return {unquote(tag): dt.datetime.fromtimestamp(score / 1000, tz=dt.UTC)}
            async with self.store.client.pipeline(transaction=False) as pipe:
                for shard in tags:
                    pipe.zrangebyscore(
                        self.keys.users(shard), "-inf", cutoff, 0, limit, withscores=True
                    )
                replies = await pipe.execute()
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable reading users: {exc}") from exc
        out = {}
        for members in replies:
            for member, score in members:
                out[unquote(member.decode())] = dt.datetime.fromtimestamp(score / 1000, tz=dt.UTC)
        return out
