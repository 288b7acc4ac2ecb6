"""A fleet-wide lease in Redis: one holder at a time, renewed and released by token."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from redis.exceptions import RedisError

from .aliases import RedisClient
from .errors import BackendUnavailable, ValidationError
from .locks import RedisLock
from .owner import is_dead, process_tag


class Lease:
    """A fleet-wide lease: a RedisLock taken without waiting and renewed while work runs.

    A holder that stalls past the TTL loses the lease and cannot release or extend someone
    else's: the lock's token check makes every call after the expiry a no-op. The token starts
    with the holder's process tag (sessioncache.owner): a holder killed on this host (kill -9,
    OOM) is seen dead and its lease taken over at once; elsewhere it lapses after the TTL,
    which keep() renews every third while the holder lives.
    """

    def __init__(self, client: RedisClient, key: str, ttl: float = 30.0) -> None:
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0.05 <= ttl <= 86400:
            raise ValidationError(f"lease ttl must be in [0.05, 86400] seconds, got {ttl!r}")
        # Any, not RedisClient: redis-py types replies as bytes | str (decode_responses is a
        # runtime option); our clients always run with decode_responses=False, so replies are bytes.
        self.client: Any = client
        self.key = key
        self.ttl_ms = round(ttl * 1000)
        self._lock = RedisLock(client, key, timeout=ttl, token_prefix=f"{process_tag()}.".encode())
        self._held = False

    @property
    def token(self) -> str | None:
        """Our owner token while we hold (or last held) the lease."""
        return None if self._lock.token is None else self._lock.token.decode()

    @property
    def held(self) -> bool:
        """Whether our last acquire/renew succeeded (the lease may have lapsed since)."""
        return self._held

    async def acquire(self) -> bool:
        """One attempt, no waiting (a lease whose holder is known dead is taken over)."""
        if not self._held and not await self._lock.try_acquire():
            holder = await self.holder()
            if holder is None or not is_dead(holder.split(".", 1)[0]):
                return False
            await self._lock.break_lock(holder.encode())
            if not await self._lock.try_acquire():
                return False
        self._held = True
        return True

    async def renew(self) -> bool:
        """Extend the lease by its TTL; False if it is no longer ours."""
        self._held = await self._lock.extend()
        return self._held

    async def release(self) -> bool:
        """Give the lease up; False if it was no longer ours."""
        self._held = False
        return await self._lock.release()

    async def holder(self) -> str | None:
        """The token of whoever holds the lease now, or None."""
        try:
            raw = await self.client.get(self.key)
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable reading lease {self.key}: {exc}") from exc
        return None if raw is None else raw.decode()

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[bool]:
        """Try to take the lease; while held, renew it every third of its TTL; release on exit.

        Yields whether the lease was taken: the body must do nothing if it was not.
        """
        if not await self.acquire():
            yield False
            return
        renewer = asyncio.create_task(self.keep())
        try:
            yield True
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            with contextlib.suppress(BackendUnavailable):
                await self.release()

    async def keep(self) -> None:
        """Renew every third of the TTL until cancelled or the lease is lost."""
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            with contextlib.suppress(BackendUnavailable):
                if not await self.renew():
                    return
