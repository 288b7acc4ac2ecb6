"""StateTracker: the facade over the state tracker's parts (transitions, events, statistics,
patterns, prediction), and the extra keys it adds to the store's create and delete scripts."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import ValidationError
from .events import Event, EventLimits, EventLog, EventType
from .identity import Identity
from .keys import KeySchema
from .metrics import Metrics
from .models import Session
from .patterns import PatternAnalysis, PatternReport
from .prediction import LifecyclePrediction, Predictor
from .states import StateHooks, TransitionTable
from .statistics import Statistics, StatisticsReport
from .store import SessionStore
from .transitions import Transitions

log = logging.getLogger(__name__)


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

    def store_extras(self) -> TrackerExtras:
        """What the store's create and delete scripts write for the tracker: pass it as
        ``SessionStore.connect(..., extras=[config.store_extras()])``."""
        return TrackerExtras(int(self.event_max_len), int(self.event_max_age * 1000))


@dataclass(frozen=True, slots=True)
class TrackerExtras:
    """The tracker's part of create.lua and delete.lua: the session's statistics shard and
    event stream (with the stream's bounds) on create, the shard on delete."""

    max_len: int
    max_age_ms: int

    def create_extras(self, keys: KeySchema, ident: Identity) -> tuple[list[str], list[Any]]:
        """The stats shard and event stream of a new session, with the stream's bounds."""
        return [keys.stats(keys.shard_tag(ident)), keys.events(ident)], [
            str(self.max_len),
            str(self.max_age_ms),
        ]

    def delete_extras(self, keys: KeySchema, ident: Identity) -> list[str]:
        """The stats shard of a deleted session."""
        return [keys.stats(keys.shard_tag(ident))]


class StateTracker:
    """The state machine, event streams, statistics, patterns and metrics of a SessionStore.

    The store must be built with this config's ``store_extras()`` (SessionSystem does it), so
    its create and delete scripts also write the tracker's keys.
    """

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
        self.config = config = config or TrackerConfig()
        self.keys = store.keys
        self.metrics = metrics or Metrics()
        self.events = EventLog(
            store,
            self.metrics,
            max_len=int(config.event_max_len),
            max_age_ms=int(config.event_max_age * 1000),
            event_limits=config.event_limits,
        )
        self.transitions = Transitions(
            store,
            self.events,
            self.metrics,
            table=config.table or TransitionTable(),
            refresh=config.table_refresh,
        )
        self.statistics = Statistics(store, self.metrics, retention_s=config.event_max_age)
        self.patterns = PatternAnalysis(store, self.events, self.statistics, self.metrics)
        self.prediction = Predictor(
            store, self.events, self.statistics, self.metrics, idle_after=config.idle_after
        )
        if config.store_extras() not in store.extras:
            raise ValidationError(
                "this store does not write the tracker's keys on create and delete: build it "
                "with SessionStore.connect(..., extras=[tracker_config.store_extras()]) for the "
                "same TrackerConfig"
            )

    @property
    def table(self) -> TransitionTable:
        """This process's copy of the fleet's transition table."""
        return self.transitions.table

    @property
    def hooks(self) -> StateHooks:
        """Guards and on_enter/on_exit hooks of transitions."""
        return self.transitions.hooks

    async def start(self) -> TransitionTable:
        """Read the fleet's table, publishing ours as version 1 if there is none."""
        configured = self.transitions.table
        table = await self.transitions.load_table()
        if table is None:
            return await self.transitions.publish_table(configured)
        if self.config.table is not None and not table.same_rules(configured):
            log.warning(
                "the fleet's transition table (version %d) differs from the configured one; "
                "using the fleet's (publish_table() replaces it)",
                table.version,
            )
        return table

    # -- delegation ---------------------------------------------------------------------------

    async def load_table(self) -> TransitionTable | None:
        """The fleet's current table (also made this process's table), or None if none."""
        return await self.transitions.load_table()

    async def publish_table(self, table: TransitionTable) -> TransitionTable:
        """Store a table as the fleet's next version (compare-and-set on the version read)."""
        return await self.transitions.publish_table(table)

    async def transition(
        self,
        session_id: str,
        to_state: str,
        *,
        expected_version: int | None = None,
        reason: str | None = None,
    ) -> Session:
        """Move a session to ``to_state`` if the table (and any guard) allows it; see
        Transitions.transition(). SessionNotFound if the session does not exist."""
        return await self.transitions.transition(
            session_id, to_state, expected_version=expected_version, reason=reason
        )

    async def track_event(
        self, session_id: str, event_type: EventType | str, **fields: Any
    ) -> str | None:
        """Append an event; returns its stream id (None if a retry found it already applied).
        SessionNotFound if the session does not exist."""
        return await self.events.track_event(session_id, event_type, **fields)

    async def get_events(
        self,
        session_id: str,
        since: dt.datetime | float | None = None,
        until: dt.datetime | float | None = None,
        types: Iterable[EventType | str] | None = None,
        limit: int = 100,
    ) -> list[Event]:
        """Events of a session, oldest first; since/until inclusive (datetime or epoch s).
        A session that does not exist gives an empty list."""
        return await self.events.get_events(session_id, since, until, types, limit)

    async def get_statistics(
        self, *, active_window: float = 3600.0, hours: int = 24
    ) -> StatisticsReport:
        """Fleet statistics from the shard counters (1 shard standalone, 16384 on a cluster)."""
        return await self.statistics.get_statistics(active_window=active_window, hours=hours)

    async def platform_gap_histograms(self, max_age: float = 60.0) -> dict[str, dict[int, int]]:
        """Per platform gap histograms (cached for max_age seconds)."""
        return await self.statistics.platform_gap_histograms(max_age)

    async def analyze_patterns(self, **options: Any) -> PatternReport:
        """Activity profiles, state paths, bursts and churn; see
        PatternAnalysis.analyze_patterns() for the options."""
        return await self.patterns.analyze_patterns(**options)

    async def predict_lifecycle(
        self,
        session_id: str,
        *,
        horizon: float = 3600.0,
        idle_after: float | None = None,
        min_samples: int = 5,
    ) -> LifecyclePrediction:
        """Expected next activity and P(idle), P(expired) within ``horizon`` seconds.
        SessionNotFound if the session does not exist."""
        return await self.prediction.predict_lifecycle(
            session_id, horizon=horizon, idle_after=idle_after, min_samples=min_samples
        )

    def get_performance_metrics(self) -> dict[str, dict[str, Any]]:
        """Per operation of this process: count, errors, mean/p50/p95/p99/max latency (ms)."""
        return self.metrics.snapshot()
