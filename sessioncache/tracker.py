"""StateTracker: state transitions and events (one Lua script each), statistics and analysis."""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from redis.exceptions import RedisError

from .codec import encode_value
from .errors import (
    BackendUnavailable,
    InvalidTransition,
    SessionExpired,
    SessionNotFound,
    ValidationError,
    VersionConflict,
)
from .events import Event, EventLimits, EventType, decode_event, encode_fields, event_flags
from .keys import (
    Identity,
    TrackerKeys,
    all_slot_tags,
    parse_session_id,
    user_tag,
)
from .metrics import Metrics
from .models import Session, session_from_hash
from .patterns import (
    LifecyclePrediction,
    PatternReport,
    analyze,
    arrival_gaps,
    choose_model,
    predict,
)
from .states import GuardRejected, StateHooks, TransitionTable, check_state
from .statistics import StatisticsReport, build_report, gap_histograms, stale_hours
from .store import SessionStore, _check_version, new_op_id

log = logging.getLogger(__name__)

_GUARD_RETRIES = 3


@dataclass(frozen=True)
class TrackerConfig:
    """Options of the state tracker (SessionSystemConfig.tracker)."""

    table: TransitionTable | None = None
    """The table to publish if the fleet has none yet (default: the default lifecycle)."""
    event_max_len: int = 10_000
    """Approximate cap on entries per session stream."""
    event_max_age: float = 30 * 86400.0
    """Seconds events are kept (approximate trim); a stream expires this long after its last
    event."""
    table_refresh: float = 10.0
    """Seconds between re-reads of the fleet's transition table."""
    event_limits: EventLimits = field(default_factory=EventLimits)
    idle_after: float = 1800.0
    """Seconds without activity after which predict_lifecycle() considers a session idle."""

    def __post_init__(self) -> None:
        for name in ("event_max_len", "event_max_age", "table_refresh", "idle_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValidationError(f"tracker option {name} must be a positive number")


def _ms(value: dt.datetime | float | int | None, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValidationError(f"{what} must be a timezone-aware datetime")
        value = value.timestamp()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValidationError(f"{what} must be a datetime or epoch seconds, got {value!r}")
    if value < 0:
        raise ValidationError(f"{what} must not be before 1970, got {value!r}")
    return int(value * 1000)


class StateTracker:
    """The state machine, event streams, statistics, patterns and metrics of a SessionStore."""

    def __init__(
        self,
        store: SessionStore,
        config: TrackerConfig | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        if config is not None and not isinstance(config, TrackerConfig):
            raise ValidationError(
                f"tracker options must be a TrackerConfig, not {type(config).__name__}"
            )
        self.store = store
        self.config = config or TrackerConfig()
        self.keys = TrackerKeys(store.keys, store.is_cluster)
        self.table = self.config.table or TransitionTable()
        self.hooks = StateHooks()
        self.metrics = metrics or Metrics()
        self._max_len = int(self.config.event_max_len)
        self._max_age_ms = int(self.config.event_max_age * 1000)
        self._table_read = 0.0
        self._table_json: bytes | None = None
        self._located: dict[str, tuple[Identity, list[str], bytes]] = {}
        self._platform_hist: tuple[float, dict[str, dict[int, int]]] = (0.0, {})
        store.extras = self

    async def start(self) -> TransitionTable:
        """Read the fleet's table, publishing ours as version 1 if there is none."""
        configured = self.table
        table = await self.load_table()
        if table is None:
            return await self.publish_table(configured)
        if self.config.table is not None and not table.same_rules(configured):
            log.warning(
                "the fleet's transition table (version %d) differs from the configured one; "
                "using the fleet's (publish_table() replaces it)",
                table.version,
            )
        return table

    # -- the store's extra keys for create.lua / delete.lua ---------------------------------

    def create_extras(self, ident: Identity) -> tuple[list[str], list[Any]]:
        shard = self.keys.shard_tag(ident)
        return [self.keys.stats(shard), self.keys.events(ident)], [
            str(self._max_len),
            str(self._max_age_ms),
        ]

    def delete_extras(self, ident: Identity) -> list[str]:
        return [self.keys.stats(self.keys.shard_tag(ident))]

    # -- the transition table ---------------------------------------------------------------

    async def load_table(self) -> TransitionTable | None:
        """The fleet's current table (also made this process's table), or None if none."""
        try:
            raw = await self.store.client.get(self.keys.transitions())
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable reading the table: {exc}") from exc
        self._table_read = time.monotonic()
        if raw is None:
            return None
        if raw != self._table_json:
            # Parsed only when it changed, so the table's per-target script arguments stay cached.
            self.table = TransitionTable.from_json(raw)
            self._table_json = raw
        return self.table

    async def publish_table(self, table: TransitionTable) -> TransitionTable:
        """Store a table as the fleet's next version (compare-and-set on the version read)."""
        for _ in range(5):
            current = await self.load_table()
            base = current.version if current else 0
            if current is not None and current.same_rules(table):
                return current
            new = table.with_version(base + 1)
            reply = await self.store.scripts.publish_table.run(
                self.store.client,
                [self.keys.transitions()],
                [str(base), new.to_json()],
            )
            if reply[0] == 1:
                self.table = new
                self._table_read = time.monotonic()
                return new
        raise VersionConflict(self.keys.transitions(), base, int(reply[1]))

    async def _current_table(self) -> TransitionTable:
        if time.monotonic() - self._table_read > self.config.table_refresh:
            await self.load_table()
        return self.table

    # -- transitions ------------------------------------------------------------------------

    def _locate(self, session_id: str) -> tuple[Identity, list[str], bytes]:
        """A session's identity, its [session, index, stream, stats, users, change bucket] keys and
        track_event.lua's per-session ARGV[3] (cached per id)."""
        found = self._located.get(session_id)
        if found is None:
            ident = parse_session_id(session_id)
            shard = self.keys.shard_tag(ident)
            keys = [
                self.store.keys.session(ident),
                self.store.keys.user_index(ident.user_tag),
                self.keys.events(ident),
                self.keys.stats(shard),
                self.keys.users(shard),
                self.store.keys.change_bucket_of(ident),
            ]
            if self.store.expiry_index_of is not None:
                keys.append(self.store.expiry_index_of(ident))
            fixed = (
                f"{self.store._default_ttl_ms} {self._max_len} {self._max_age_ms} "
                f"{ident.user_tag} {ident.platform}"
            ).encode()
            if len(self._located) >= 65536:
                self._located.clear()
            found = self._located[session_id] = (ident, keys, fixed)
        return found

    async def transition(
        self,
        session_id: str,
        to_state: str,
        *,
        expected_version: int | None = None,
        reason: str | None = None,
    ) -> Session:
        """Move a session to ``to_state`` if the table (and any guard) allows it.

        InvalidTransition names the current state and the allowed targets; nothing is written
        then. on_exit/on_enter hooks run after the write committed.
        """
        with self.metrics.measure("transition"):
            session, source = await self._transition(
                session_id, to_state, expected_version, reason
            )
        if source is not None and self.hooks.active:
            await self._run_hooks(session, source)
        return session

    async def _transition(
        self, session_id: str, to_state: str, expected_version: int | None, reason: str | None
    ) -> tuple[Session, str | None]:
        table = await self._current_table()
        # Fast path: a known state name needs no further validation.
        known = isinstance(to_state, str) and to_state in table.states
        target = str(to_state) if known else check_state(to_state, "to_state")
        if target not in table.states:
            raise ValidationError(
                f"unknown state {target!r}; the transition table knows: "
                + ", ".join(sorted(table.states))
            )
        if reason is not None and (not isinstance(reason, str) or len(reason) > 256):
            raise ValidationError("reason must be a str of at most 256 characters")
        _check_version(expected_version)
        ident, keys, _ = self._locate(session_id)
        if not self.hooks.has_guards(target):
            return await self._apply(
                session_id, ident, keys, target, table, expected_version, reason
            )
        conflict: VersionConflict | None = None
        for _ in range(_GUARD_RETRIES):
            current = await self.store.get(session_id)
            if expected_version is not None and current.version != expected_version:
                raise VersionConflict(session_id, expected_version, current.version)
            allowed = table.targets(ident.platform, current.state)
            if target not in allowed:
                raise InvalidTransition(session_id, current.state, target, allowed)
            if not await self.hooks.check(current, current.state, target):
                raise GuardRejected(session_id, current.state, target, allowed)
            try:
                # The guard saw this version: apply only if nobody changed the session since.
                return await self._apply(
                    session_id, ident, keys, target, table, current.version, reason
                )
            except VersionConflict as exc:
                if expected_version is not None:
                    raise
                conflict = exc
        assert conflict is not None
        raise conflict

    async def _apply(
        self,
        sid: str,
        ident: Identity,
        keys: list[str],
        target: str,
        table: TransitionTable,
        expected_version: int | None,
        reason: str | None,
    ) -> tuple[Session, str | None]:
        args = [
            new_op_id(),
            target,
            _check_version(expected_version),
            "" if reason is None else encode_value(reason),
            table.script_arg(ident.platform, target, self._max_len, self._max_age_ms),
        ]
        reply = await self.store.scripts.transition.run(
            self.store.client, [keys[0], keys[2], keys[3], keys[5]], args
        )
        status = reply[0]
        if status == 1:
            return session_from_hash(ident, keys[0], reply[1]), reply[2].decode()
        if status == 2:
            return session_from_hash(ident, keys[0], reply[1]), None
        if status == -1:
            raise SessionNotFound(sid)
        if status == -2:
            raise VersionConflict(sid, int(expected_version or 0), int(reply[1]))
        current = reply[1].decode()
        raise InvalidTransition(sid, current, target, table.targets(ident.platform, current))

    async def _run_hooks(self, session: Session, source: str) -> None:
        for hook in self.hooks.hooks_for(source, session.state):
            began = time.perf_counter()
            try:
                result = hook(session, source, session.state)
                if result is not None:
                    await result
            except Exception:
                # The transition is committed; a failing hook must not pretend otherwise.
                log.exception("state hook %r failed for %s", hook, session.session_id)
                self.metrics.observe("hook", time.perf_counter() - began, True)
            else:
                self.metrics.observe("hook", time.perf_counter() - began)

    # -- events -----------------------------------------------------------------------------

    async def track_event(
        self, session_id: str, event_type: EventType | str, **fields: Any
    ) -> str | None:
        """Append an event; returns its stream id (None if a retry found it already applied)."""
        with self.metrics.measure("track_event"):
            flags = event_flags(event_type)
            pairs = encode_fields(fields, self.store.limits, self.config.event_limits)
            _, keys, fixed = self._locate(session_id)
            args = [new_op_id(), flags.arg, fixed, *pairs]
            reply = await self.store.scripts.track_event.run(self.store.client, keys, args)
            if reply[0] == -1:
                raise SessionNotFound(session_id)
            if reply[0] == -4:
                raise SessionExpired(session_id)
        return reply[1].decode() if reply[0] == 1 else None

    async def get_events(
        self,
        session_id: str,
        since: dt.datetime | float | None = None,
        until: dt.datetime | float | None = None,
        types: Iterable[EventType | str] | None = None,
        limit: int = 100,
    ) -> list[Event]:
        """Events of a session, oldest first; since/until inclusive (datetime or epoch s)."""
        with self.metrics.measure("get_events"):
            events = await self._get_events(session_id, since, until, types, limit)
        return events

    async def _get_events(
        self,
        session_id: str,
        since: dt.datetime | float | None,
        until: dt.datetime | float | None,
        types: Iterable[EventType | str] | None,
        limit: int,
    ) -> list[Event]:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100_000:
            raise ValidationError(f"limit must be an int in [1, 100000], got {limit!r}")
        wanted: set[str] | None = None
        if types is not None:
            if isinstance(types, (str, EventType)):
                types = [types]
            wanted = set()
            for t in types:
                try:
                    wanted.add(EventType(t).value)
                except ValueError as exc:
                    raise ValidationError(f"unknown event type {t!r}") from exc
        low, high = _ms(since, "since"), _ms(until, "until")
        _, keys, _ = self._locate(session_id)
        start = "-" if low is None else str(low)
        stop = "+" if high is None else str(high)
        out: list[Event] = []
        page = limit if wanted is None else max(limit, 200)
        try:
            while len(out) < limit:
                entries = await self.store.client.xrange(keys[2], start, stop, count=page)
                for entry_id, raw in entries:
                    event = decode_event(session_id, entry_id, raw)
                    if wanted is None or event.type in wanted:
                        out.append(event)
                        if len(out) == limit:
                            break
                if len(entries) < page:
                    break
                start = "(" + entries[-1][0].decode()
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable during get_events: {exc}") from exc
        return out

    async def _events_of(
        self, stream_keys: list[tuple[str, str]], since_ms: int | None, per_session: int
    ) -> list[Event]:
        """The newest ``per_session`` events (since ``since_ms``) of each stream, one pipeline."""
        start = "-" if since_ms is None else str(since_ms)
        try:
            async with self.store.client.pipeline(transaction=False) as pipe:
                for _, key in stream_keys:
                    pipe.xrevrange(key, "+", start, count=per_session)
                replies = await pipe.execute()
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable reading events: {exc}") from exc
        events: list[Event] = []
        for (sid, _), entries in zip(stream_keys, replies, strict=True):
            events += [decode_event(sid, eid, raw) for eid, raw in reversed(entries)]
        return events

    async def _user_streams(self, user_id: object) -> list[tuple[str, str]]:
        tag = user_tag(user_id)
        try:
            suffixes = await self.store.client.hkeys(self.store.keys.user_index(tag))
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable listing sessions: {exc}") from exc
        out = []
        for suffix in sorted(s.decode() for s in suffixes):
            key = self.keys.events_in_index(tag, suffix)
            out.append((self.keys.session_id_of_events_key(key), key))
        return out

    # -- statistics -------------------------------------------------------------------------

    async def _read_shards(
        self, window_s: float
    ) -> tuple[list[tuple[str, dict[bytes, bytes]]], int]:
        """Non-empty (stats key, counters) of every shard, and active users in the window."""
        shards = self._shard_tags()
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

    def _shard_tags(self) -> list[str]:
        # One shard per slot on a cluster: a fixed 16384 reads, however many sessions exist.
        return all_slot_tags() if self.keys.cluster else ["0"]

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
            hashes, active = await self._read_shards(active_window)
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
        oldest = math.floor((time.time() - self.config.event_max_age) / 3600)
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
        hashes, _ = await self._read_shards(0)
        hist = gap_histograms(h for _, h in hashes)
        self._platform_hist = (time.monotonic(), hist)
        return hist

    # -- patterns and prediction ------------------------------------------------------------

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
                streams = await self._user_streams(user_id)
            else:
                streams = await self._scan_streams(platform, max_sessions)
            if platform is not None:
                streams = [s for s in streams if s[0].split(":", 1)[0] == platform]
            events = await self._events_of(
                streams[:max_sessions], _ms(since, "since"), events_per_session
            )
            last_seen = await self._last_seen(user_id, churn_after, max_churned)
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

    async def _last_seen(
        self, user_id: object, older_than: float, limit: int
    ) -> dict[str, dt.datetime]:
        """Last inbound event of the user, or of up to ``limit`` users per shard whose last one
        is older than ``older_than`` seconds (the churn candidates), from the shards' zsets."""
        tags = self._shard_tags()
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

    async def predict_lifecycle(
        self,
        session_id: str,
        *,
        horizon: float = 3600.0,
        idle_after: float | None = None,
        min_samples: int = 5,
    ) -> LifecyclePrediction:
        """Expected next activity and P(idle), P(expired) within ``horizon`` seconds, from the
        user's own gaps between activity and inbound events, else the platform's."""
        with self.metrics.measure("predict_lifecycle"):
            if isinstance(horizon, bool) or not isinstance(horizon, (int, float)) or horizon <= 0:
                raise ValidationError(f"horizon must be a positive number of seconds: {horizon!r}")
            session = await self.store.get(session_id)
            streams = await self._user_streams(session.user_id)
            events = await self._events_of(streams, None, self.config.event_max_len)
            gaps = arrival_gaps(events)
            hist = (await self.platform_gap_histograms()).get(session.platform.value)
            model = choose_model(gaps, hist, min_samples)
            idle = float(idle_after if idle_after is not None else self.config.idle_after)
            result = predict(
                session_id, model, last_activity=session.last_activity,
                expires_at=session.expires_at, now=dt.datetime.now(dt.UTC),
                horizon_s=float(horizon),
                idle_after_s=idle,
            )
        return result

    def get_performance_metrics(self) -> dict[str, dict[str, Any]]:
        """Per operation of this process: count, errors, mean/p50/p95/p99/max latency (ms)."""
        return self.metrics.snapshot()
