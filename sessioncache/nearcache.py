"""The near cache: an in-process LRU of recent reads, dropped as soon as Redis says they changed.

Coherence comes from an invalidation source (sessioncache.tracking): Redis client tracking on a
dedicated connection, or keyspace notifications of an in-process memory:// server. The cache
only serves a hit while that source has proven itself recently: the source calls ``confirm()``
with the time it sent a heartbeat whose answer came back after every invalidation the server
had queued before it, and a hit is served only while that time is within ``max_staleness``.
So a value changed and acknowledged more than ``max_staleness`` seconds ago is never served,
even when the tracking connection silently stalls.

The race every client-side cache has (a write lands between a miss and the fill) is closed by
tickets: ``begin()`` is called before the read, an invalidation of any key the read depends on
voids the ticket, and ``fill()`` stores nothing for a void ticket.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import ValidationError

MISS: Any = object()
"""What ``get()`` returns when the key is not served from the cache."""


@dataclass(frozen=True, slots=True)
class NearCacheConfig:
    """Bounds of the near cache.

    ``max_staleness``: the longest time after a write is acknowledged during which a reader may
    still be served the old value (when invalidations are delayed or the connection stalls).
    """

    max_entries: int = 10_000
    max_bytes: int = 64 * 1024 * 1024
    ttl: float = 300.0
    max_staleness: float = 1.0

    def __post_init__(self) -> None:
        for name in ("max_entries", "max_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(f"near cache {name} must be a positive int, got {value!r}")
        for name in ("ttl", "max_staleness"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValidationError(f"near cache {name} must be > 0 seconds, got {value!r}")


@dataclass(slots=True)
class _Entry:
    value: Any
    size: int
    expires: float
    deps: tuple[str, ...]


@dataclass(slots=True)
class Ticket:
    """A read in flight: void once any key it depends on is invalidated."""

    deps: tuple[str, ...]
    epoch: int
    valid: bool = True


@dataclass(slots=True)
class NearCacheStats:
    """Counters for the metrics."""

    hits: int = 0
    misses: int = 0
    fills: int = 0
    invalidations: int = 0
    flushes: int = 0
    evictions: int = 0
    refused_fills: int = 0
    stale_refusals: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class NearCache:
    """LRU bounded by entries, bytes and age; served only while its invalidation source is live."""

    def __init__(self, config: NearCacheConfig | None = None) -> None:
        self.config = config or NearCacheConfig()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._by_dep: dict[str, set[str]] = {}
        self._pending: dict[str, list[Ticket]] = {}
        self._bytes = 0
        self._epoch = 0
        self._confirmed = -float("inf")
        self.stats = NearCacheStats()

    # -- freshness, set by the invalidation source -----------------------------------------

    def confirm(self, sent_at: float) -> None:
        """Every invalidation queued before ``sent_at`` (time.monotonic()) has been applied."""
        if sent_at > self._confirmed:
            self._confirmed = sent_at

    def unconfirm(self) -> None:
        """The source lost its connection: serve nothing until it confirms again."""
        self._confirmed = -float("inf")
        self.flush()

    @property
    def live(self) -> bool:
        """Whether hits may be served now."""
        return time.monotonic() - self._confirmed <= self.config.max_staleness

    # -- reads --------------------------------------------------------------------------------

    def get(self, key: str) -> Any:
        """The cached value, or MISS."""
        entry = self._entries.get(key)
        if entry is None:
            self.stats.misses += 1
            return MISS
        now = time.monotonic()
        if now - self._confirmed > self.config.max_staleness:
            # The source has not proven itself lately: whatever is here may be too old.
            self.stats.stale_refusals += 1
            self.flush()
            return MISS
        if entry.expires <= now:
            self._drop(key)
            self.stats.misses += 1
            return MISS
        self._entries.move_to_end(key)
        self.stats.hits += 1
        return entry.value

    def begin(self, deps: tuple[str, ...]) -> Ticket | None:
        """Call before reading from Redis; None when nothing may be filled now."""
        if not self.live:
            return None
        ticket = Ticket(deps, self._epoch)
        for dep in deps:
            self._pending.setdefault(dep, []).append(ticket)
        return ticket

    def fill(self, ticket: Ticket | None, key: str, value: Any, size: int) -> None:
        """Store what the read returned, unless an invalidation voided the ticket meanwhile."""
        if ticket is None:
            return
        self._release(ticket)
        if not ticket.valid or ticket.epoch != self._epoch or not self.live:
            self.stats.refused_fills += 1
            return
        if size > self.config.max_bytes:
            return
        self._drop(key)
        self._entries[key] = _Entry(value, size, time.monotonic() + self.config.ttl, ticket.deps)
        for dep in ticket.deps:
            self._by_dep.setdefault(dep, set()).add(key)
        self._bytes += size
        self.stats.fills += 1
        while len(self._entries) > self.config.max_entries or self._bytes > self.config.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self.stats.evictions += 1

    def abandon(self, ticket: Ticket | None) -> None:
        """The read failed: forget its ticket."""
        if ticket is not None:
            self._release(ticket)

    # -- invalidation -------------------------------------------------------------------------

    def invalidate(self, keys: Iterable[str | bytes] | None) -> None:
        """Drop every entry depending on one of ``keys``; None (a nil invalidation) drops all."""
        if keys is None:
            self.flush()
            return
        for raw in keys:
            key = raw.decode() if isinstance(raw, bytes) else raw
            tickets = self._pending.pop(key, None)
            if tickets:
                for ticket in tickets:
                    ticket.valid = False
            dependents = self._by_dep.pop(key, None)
            if dependents:
                for entry_key in list(dependents):
                    self._drop(entry_key)
                self.stats.invalidations += 1

    def flush(self) -> None:
        """Drop everything, and void every read in flight."""
        self._epoch += 1
        self._entries.clear()
        self._by_dep.clear()
        for tickets in self._pending.values():
            for ticket in tickets:
                ticket.valid = False
        self._pending.clear()
        self._bytes = 0
        self.stats.flushes += 1

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        """Whether an entry is held for ``key`` (whether or not it may be served now)."""
        return key in self._entries

    @property
    def size_bytes(self) -> int:
        """Bytes held (as estimated by the callers of fill())."""
        return self._bytes

    def summary(self) -> dict[str, Any]:
        """Counters and sizes, for get_performance_metrics()."""
        s = self.stats
        return {
            "hits": s.hits,
            "misses": s.misses,
            "fills": s.fills,
            "invalidations": s.invalidations,
            "flushes": s.flushes,
            "evictions": s.evictions,
            "refused_fills": s.refused_fills,
            "stale_refusals": s.stale_refusals,
            "entries": len(self._entries),
            "bytes": self._bytes,
            "live": self.live,
            **s.extra,
        }

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._bytes -= entry.size
        for dep in entry.deps:
            dependents = self._by_dep.get(dep)
            if dependents is not None:
                dependents.discard(key)
                if not dependents:
                    del self._by_dep[dep]

    def _release(self, ticket: Ticket) -> None:
        for dep in ticket.deps:
            tickets = self._pending.get(dep)
            if tickets is not None:
                with contextlib.suppress(ValueError):
                    tickets.remove(ticket)
                if not tickets:
                    del self._pending[dep]
