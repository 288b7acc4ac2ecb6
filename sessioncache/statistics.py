"""Fleet statistics: the per-shard counters the scripts maintain on every write, read by
Statistics and summed into a StatisticsReport."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from .errors import BackendUnavailable, ValidationError
from .slots import all_slot_tags

if TYPE_CHECKING:  # metrics.py imports this module's histogram formula
    from .metrics import Metrics
    from .store import SessionStore

_PER_OCTAVE = 4  # the scripts' histograms: bucket b = floor(4 * log2(x + 1))
_LN2 = math.log(2)


def histogram_bucket(value: float) -> int:
    """The histogram bucket of a value >= 0, as lua/lib/stats.lua's log_bucket computes it.

    Written as the Lua is (natural logs, then a division) so both round alike at octave edges.
    """
    return math.floor(_PER_OCTAVE * math.log(value + 1) / _LN2)


def bucket_value(bucket: int) -> float:
    """The geometric middle of a histogram bucket, in the recorded unit."""
    return float(2 ** ((bucket + 0.5) / _PER_OCTAVE) - 1)


def bucket_range(bucket: int) -> tuple[float, float]:
    """The [low, high) values of a histogram bucket."""
    return 2 ** (bucket / _PER_OCTAVE) - 1.0, 2 ** ((bucket + 1) / _PER_OCTAVE) - 1.0


def histogram_quantile(hist: Mapping[int, int], q: float) -> float:
    """Quantile of a log2 histogram (value at the middle of the bucket holding it: +-9%)."""
    total = sum(hist.values())
    if not total:
        return 0.0
    rank, seen = q * total, 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= rank:
            return bucket_value(bucket)
    return bucket_value(max(hist))


@dataclass(frozen=True, slots=True)
class Summary:
    """count, mean (exact) and p50/p95 (from a log2 histogram, within about 9%)."""

    count: int = 0
    mean: float = 0.0
    p50: float = 0.0
    p95: float = 0.0


@dataclass(slots=True)
class StatisticsReport:
    """Fleet statistics at one moment (see docs/state.md for what is exact)."""

    generated_at: dt.datetime
    shards: int
    sessions_by_state: dict[str, int] = field(default_factory=dict)
    sessions_by_platform: dict[str, int] = field(default_factory=dict)
    sessions_by_platform_state: dict[str, dict[str, int]] = field(default_factory=dict)
    sessions_created: int = 0
    sessions_deleted: int = 0
    sessions_ended: int = 0
    transitions: dict[str, int] = field(default_factory=dict)
    events_by_type: dict[str, int] = field(default_factory=dict)
    events_per_hour: dict[str, int] = field(default_factory=dict)
    messages_total: int = 0
    duration_s: Summary = field(default_factory=Summary)
    messages_per_session: Summary = field(default_factory=Summary)
    active_users: int = 0
    active_window_s: float = 3600.0
    expiry_actions: dict[str, int] = field(default_factory=dict)
    """Exact count of each expiry action taken (docs/expiry.md), e.g. {"archive": 20000}."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: datetimes as ISO 8601 text."""
        out = asdict(self)
        out["generated_at"] = self.generated_at.isoformat()
        return out

    def to_table(self) -> str:
        """A plain-text table for the CLI."""
        rows: list[tuple[str, str]] = [
            ("generated at", self.generated_at.isoformat(timespec="seconds")),
            ("shards read", str(self.shards)),
            ("sessions created", str(self.sessions_created)),
            ("sessions deleted", str(self.sessions_deleted)),
            ("sessions ended", str(self.sessions_ended)),
            (f"active users ({self.active_window_s:g}s)", str(self.active_users)),
            ("messages", str(self.messages_total)),
        ]
        d, m = self.duration_s, self.messages_per_session
        rows.append(("duration s mean/p50/p95", f"{d.mean:.1f} / {d.p50:.1f} / {d.p95:.1f}"))
        rows.append(("messages/session mean/p50/p95", f"{m.mean:.1f} / {m.p50:.1f} / {m.p95:.1f}"))
        rows += [(f"state {k}", str(v)) for k, v in sorted(self.sessions_by_state.items())]
        rows += [(f"platform {k}", str(v)) for k, v in sorted(self.sessions_by_platform.items())]
        rows += [(f"transition {k}", str(v)) for k, v in sorted(self.transitions.items())]
        rows += [(f"events {k}", str(v)) for k, v in sorted(self.events_by_type.items())]
        rows += [(f"events in hour {k}", str(v)) for k, v in sorted(self.events_per_hour.items())]
        width = max(len(name) for name, _ in rows)
        lines = [f"{'statistic':<{width}}  value", f"{'-' * width}  {'-' * 12}"]
        lines += [f"{name:<{width}}  {value}" for name, value in rows]
        return "\n".join(lines)


def _hour_label(hour: int) -> str:
    return dt.datetime.fromtimestamp(hour * 3600, tz=dt.UTC).strftime("%Y-%m-%dT%H:00Z")


def build_report(
    shards: Iterable[Mapping[bytes, bytes]],
    *,
    active_users: int,
    active_window_s: float,
    now: dt.datetime,
    hours: int = 24,
) -> StatisticsReport:
    """Sum the shards' counters into a report (pure: no I/O)."""
    report = StatisticsReport(generated_at=now, shards=0, active_users=active_users,
                              active_window_s=active_window_s)
    durations: dict[int, int] = {}
    messages: dict[int, int] = {}
    dsum = msum = 0
    first_hour = math.floor(now.timestamp() / 3600) - hours + 1
    for shard in shards:
        report.shards += 1
        for raw_name, raw_value in shard.items():
            name, value = raw_name.decode(), int(raw_value)
            kind, _, rest = name.partition(":")
            if kind == "n":
                platform, _, state = rest.partition(":")
                cell = report.sessions_by_platform_state.setdefault(platform, {})
                cell[state] = cell.get(state, 0) + value
            elif kind == "tr":
                report.transitions[rest] = report.transitions.get(rest, 0) + value
            elif kind == "e":
                report.events_by_type[rest] = report.events_by_type.get(rest, 0) + value
            elif kind == "h":
                if int(rest) >= first_hour:
                    label = _hour_label(int(rest))
                    report.events_per_hour[label] = report.events_per_hour.get(label, 0) + value
            elif kind == "x":
                report.expiry_actions[rest] = report.expiry_actions.get(rest, 0) + value
            elif kind == "d":
                durations[int(rest)] = durations.get(int(rest), 0) + value
            elif kind == "mb":
                messages[int(rest)] = messages.get(int(rest), 0) + value
            elif name == "created":
                report.sessions_created += value
            elif name == "deleted":
                report.sessions_deleted += value
            elif name == "ended":
                report.sessions_ended += value
            elif name == "dsum":
                dsum += value
            elif name == "msum":
                msum += value
    report.messages_total = sum(
        report.events_by_type.get(t, 0) for t in ("message_received", "message_sent")
    )
    for platform, states in report.sessions_by_platform_state.items():
        for state, n in states.items():
            report.sessions_by_state[state] = report.sessions_by_state.get(state, 0) + n
        report.sessions_by_platform[platform] = sum(states.values())
    ended = report.sessions_ended
    report.duration_s = Summary(
        ended,
        dsum / ended / 1000 if ended else 0.0,
        histogram_quantile(durations, 0.5) / 1000,
        histogram_quantile(durations, 0.95) / 1000,
    )
    report.messages_per_session = Summary(
        ended,
        msum / ended if ended else 0.0,
        histogram_quantile(messages, 0.5),
        histogram_quantile(messages, 0.95),
    )
    report.events_per_hour = dict(sorted(report.events_per_hour.items()))
    return report


def gap_histograms(shards: Iterable[Mapping[bytes, bytes]]) -> dict[str, dict[int, int]]:
    """Per platform: histogram of gaps (ms) between a session's activity and the next inbound
    event, from the ``g:<platform>:<bucket>`` counters."""
    out: dict[str, dict[int, int]] = {}
    for shard in shards:
        for raw_name, raw_value in shard.items():
            if raw_name[:2] != b"g:":
                continue
            platform, _, bucket = raw_name[2:].decode().rpartition(":")
            hist = out.setdefault(platform, {})
            hist[int(bucket)] = hist.get(int(bucket), 0) + int(raw_value)
    return out


def stale_hours(shard: Mapping[bytes, bytes], oldest_hour: int) -> list[bytes]:
    """Hour counters older than the retention, for the report to drop."""
    return [n for n in shard if n[:2] == b"h:" and int(n[2:]) < oldest_hour]


class Statistics:
    """Reads the statistics shards of a SessionStore (1 standalone, one per slot on a cluster)."""

    def __init__(self, store: SessionStore, metrics: Metrics, *, retention_s: float) -> None:
        self.store = store
        self.keys = store.keys
        self.metrics = metrics
        self.retention_s = retention_s
        self._platform_hist: tuple[float, dict[str, dict[int, int]]] = (0.0, {})

    def shard_tags(self) -> list[str]:
        """Every shard's tag."""
        # One shard per slot on a cluster: a fixed 16384 reads, however many sessions exist.
        return all_slot_tags() if self.keys.cluster else ["0"]

    async def read_shards(
        self, window_s: float
    ) -> tuple[list[tuple[str, dict[bytes, bytes]]], int]:
        """Non-empty (stats key, counters) of every shard, and active users in the window."""
        shards = self.shard_tags()
        since = str(int((time.time() - window_s) * 1000))
        try:
            async with self.store.client.pipeline(transaction=False) as pipe:
                for shard in shards:
                    pipe.hgetall(self.keys.stats(shard))
                    pipe.zcount(self.keys.users(shard), since, "+inf")
                replies = await pipe.execute()
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable reading statistics: {exc}") from exc
        hashes = [(self.keys.stats(t), h) for t, h in zip(shards, replies[0::2], strict=True) if h]
        return hashes, sum(int(n) for n in replies[1::2])

    async def get_statistics(
        self, *, active_window: float = 3600.0, hours: int = 24
    ) -> StatisticsReport:
        """Fleet statistics from the shard counters (1 shard standalone, 16384 on a cluster)."""
        if isinstance(active_window, bool) or not isinstance(active_window, (int, float)) or not (
            0 < active_window <= 10 * 365 * 86400
        ):
            raise ValidationError(f"active_window must be seconds in (0, 10y]: {active_window!r}")
        if isinstance(hours, bool) or not isinstance(hours, int) or not 1 <= hours <= 24 * 366:
            raise ValidationError(f"hours must be an int in [1, 8784], got {hours!r}")
        with self.metrics.measure("get_statistics"):
            hashes, active = await self.read_shards(active_window)
            now = dt.datetime.now(dt.UTC)
            report = build_report(
                [h for _, h in hashes],
                active_users=active,
                active_window_s=active_window,
                now=now,
                hours=hours,
            )
            await self._prune_hours(hashes)
        return report

    async def _prune_hours(self, hashes: list[tuple[str, dict[bytes, bytes]]]) -> None:
        """Drop hour counters older than the event retention (one HDEL per shard holding any)."""
        oldest = math.floor((time.time() - self.retention_s) / 3600)
        try:
            for key, counters in hashes:
                names = stale_hours(counters, oldest)
                if names:
                    await self.store.client.hdel(key, *names)
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable pruning statistics: {exc}") from exc

    async def platform_gap_histograms(self, max_age: float = 60.0) -> dict[str, dict[int, int]]:
        """Per platform gap histograms (cached for max_age seconds)."""
        stamp, cached = self._platform_hist
        if time.monotonic() - stamp < max_age and cached:
            return cached
        hashes, _ = await self.read_shards(0)
        hist = gap_histograms(h for _, h in hashes)
        self._platform_hist = (time.monotonic(), hist)
        return hist

    def forget_cache(self) -> None:
        """Drop the cached platform histograms (the next prediction re-reads the shards)."""
        self._platform_hist = (0.0, {})
