"""A fleet-wide lease in Redis: one holder at a time, renewed and released by token."""

from __future__ import annotations

import asyncio
import contextlib
import os
from base64 import urlsafe_b64encode
from collections.abc import AsyncIterator
from typing import Any

from redis.exceptions import RedisError

from .errors import BackendUnavailable, ValidationError
from .scripts import ScriptRegistry


class Lease:
    """SET NX PX with a random token; renew and release run Lua that compares the token.

    A holder that stalls past the TTL loses the lease and cannot release or extend someone
    else's: the token check makes every call after the expiry a no-op.
    """

    def __init__(self, client: Any, key: str, ttl: float = 30.0) -> None:
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0.05 <= ttl <= 86400:
            raise ValidationError(f"lease ttl must be in [0.05, 86400] seconds, got {ttl!r}")
        self.client = client
        self.key = key
        self.ttl_ms = round(ttl * 1000)
        self.token = urlsafe_b64encode(os.urandom(12)).decode()
        self._scripts = ScriptRegistry()
        self._held = False

    @property
    def held(self) -> bool:
        """Whether our last acquire/renew succeeded (the lease may have lapsed since)."""
        return self._held

    async def acquire(self) -> bool:
        try:
            self._held = bool(await self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))
        except RedisError as exc:
            raise BackendUnavailable(
                f"Redis unavailable while taking lease {self.key}: {exc}"
            ) from exc
        return self._held

    async def renew(self) -> bool:
        self._held = bool(await self._call("lease_renew", [self.token, str(self.ttl_ms)]))
        return self._held

    async def release(self) -> bool:
        released = bool(await self._call("lease_release", [self.token]))
        self._held = False
        return released

    async def holder(self) -> str | None:
        """The token of whoever holds the lease now, or None."""
        raw = await self.client.get(self.key)
        return None if raw is None else raw.decode()

    async def _call(self, name: str, args: list[str]) -> Any:
        try:
            return await self._scripts[name](self.client, [self.key], args)
        except RedisError as exc:
            raise BackendUnavailable(
                f"Redis unavailable during {name} of {self.key}: {exc}"
            ) from exc

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[bool]:
        """Try to take the lease; while held, renew it every third of its TTL; release on exit.

        Yields whether the lease was taken: the body must do nothing if it was not.
        """
        if not await self.acquire():
            yield False
            return
        renewer = asyncio.create_task(self._keep())
        try:
            yield True
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            with contextlib.suppress(BackendUnavailable):
                await self.release()

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            with contextlib.suppress(BackendUnavailable):
                if not await self.renew():
                    return
