"""Reads through the near cache: a NearCache wired to its invalidation source, and cached gets."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from redis.exceptions import RedisError

from .errors import BackendUnavailable
from .identity import parse_session_id
from .models import Session, session_from_parts, session_parts
from .nearcache import MISS, NearCache, NearCacheConfig
from .store import SessionStore
from .tracking import MemoryInvalidator, TrackingInvalidator


class CoherentCache:
    """The near cache of one SessionSystem, with the source that keeps it coherent."""

    def __init__(self, store: SessionStore, url: str, config: NearCacheConfig) -> None:
        self.store = store
        self.cache = NearCache(config)
        prefixes = store.keys.cached_prefixes()
        self.source: TrackingInvalidator | MemoryInvalidator
        if url.startswith("memory://"):
            self.source = MemoryInvalidator(self.cache, store.client, prefixes)
        else:
            self.source = TrackingInvalidator(self.cache, store.client, url, prefixes)

    @property
    def in_process(self) -> bool:
        """True on memory://, whose invalidations are drained before each read."""
        return isinstance(self.source, MemoryInvalidator)

    async def start(self) -> None:
        """Open the invalidation source (tracking connections) and wait for it."""
        await self.source.start()

    async def stop(self) -> None:
        """Close the source; the cache is emptied."""
        await self.source.stop()

    async def drain(self) -> None:
        """Apply invalidations already delivered (memory://)."""
        await self.source.drain()

    async def get_session(self, session_id: str) -> Session | None:
        """The session through the cache: a hit costs no round trip."""
        ident = parse_session_id(session_id)
        key = self.store.keys.session(ident)
        if self.in_process:
            await self.source.drain()
        cache = self.cache
        parts = cache.get(key)
        if parts is MISS:
            ticket = cache.begin((key,))
            try:
                flat = await self.store.client.hgetall(key)
                # Kept decoded, so a hit only builds the Session. An absent session is cached
                # too (as None): a burst of reads for a gone session stays off Redis, and its
                # creation invalidates the entry like any write.
                parts = session_parts(ident, key, flat) if flat else None
            except RedisError as exc:
                cache.abandon(ticket)
                raise BackendUnavailable(f"Redis unavailable during get: {exc}") from exc
            except BaseException:  # a corrupt hash (IntegrityError) or a cancellation
                cache.abandon(ticket)
                raise
            cache.fill(ticket, key, parts, 64 + sum(len(k) + len(v) for k, v in flat.items()))
        return None if parts is None else session_from_parts(parts)

    def written(self, keys: Iterable[str]) -> None:
        """This process wrote these keys: drop them now (before the server's push arrives)."""
        self.cache.invalidate(keys)

    def written_session(self, session_id: str) -> None:
        """This process changed a session: drop it and its context from the cache."""
        ident = parse_session_id(session_id)
        keys = self.store.keys
        self.cache.invalidate([keys.session(ident), keys.context(ident), keys.history(ident)])

    def summary(self) -> dict[str, Any]:
        """Hit, miss and invalidation counts, for get_performance_metrics()."""
        return self.cache.summary()
