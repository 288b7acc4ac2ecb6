"""A Redis lock with an owner token, a time to live and a bounded wait to acquire it."""

from __future__ import annotations

import asyncio
import os
import random
import time
from base64 import urlsafe_b64encode
from types import TracebackType
from typing import Any

from redis.exceptions import RedisError

from .errors import BackendUnavailable, LockNotAcquired, ValidationError
from .scripts import Script, registry


def _seconds(value: float | None, what: str, allow_none: bool) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"{what} must be a number of seconds, got {value!r}")
    if not 0 < value <= 86400 * 365:
        raise ValidationError(f"{what} must be in (0, 1 year] seconds, got {value!r}")
    return float(value)


class RedisLock:
    """SET NX PX with a random token; release and extend compare the token in Lua.

    Waiting polls with jittered exponential backoff on the ordinary (socket-timeout bounded)
    connection pool instead of a blocking command, so a dead server surfaces as an error within
    the socket timeout and the wait is capped by ``blocking_timeout``.
    """

    def __init__(
        self,
        client: Any,
        key: str,
        *,
        timeout: float = 60.0,
        blocking_timeout: float | None = None,
        poll_min: float = 0.002,
        poll_max: float = 0.1,
        token_prefix: bytes = b"",
    ) -> None:
        self.client = client
        self.key = key
        self.timeout = _seconds(timeout, "timeout", False) or 60.0
        self.blocking_timeout = _seconds(blocking_timeout, "blocking_timeout", True)
        self._ttl_ms = max(1, round(self.timeout * 1000))
        self._poll_min = poll_min
        self._poll_max = poll_max
        self.token: bytes | None = None
        self._token_prefix = token_prefix
        self._release: Script = registry().lock_release
        self._extend: Script = registry().lock_extend

    @property
    def held(self) -> bool:
        """Whether this object acquired the lock and has not released it (it may have expired)."""
        return self.token is not None

    async def try_acquire(self) -> bool:
        """One attempt, no waiting."""
        if self.token is not None:
            raise ValidationError(f"lock {self.key!r} is already held by this object")
        token = self._token_prefix + urlsafe_b64encode(os.urandom(18))
        try:
            ok = await self.client.set(self.key, token, nx=True, px=self._ttl_ms)
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable locking {self.key!r}: {exc}") from exc
        if ok:
            self.token = token
            return True
        return False

    async def acquire(self) -> None:
        """Wait for the lock (up to blocking_timeout; forever if None); LockNotAcquired if not."""
        began = time.monotonic()
        delay = self._poll_min
        while not await self.try_acquire():
            waited = time.monotonic() - began
            if self.blocking_timeout is not None and waited >= self.blocking_timeout:
                raise LockNotAcquired(self.key, waited)
            sleep = random.uniform(delay / 2, delay)
            if self.blocking_timeout is not None:
                sleep = min(sleep, max(0.0, self.blocking_timeout - waited))
            await asyncio.sleep(sleep)
            delay = min(self._poll_max, delay * 2)

    async def release(self) -> bool:
        """Release if still ours; False if it had expired (another owner may have taken it)."""
        token, self.token = self.token, None
        if token is None:
            return False
        try:
            return bool(await self._release(self.client, [self.key], [token]))
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable unlocking {self.key!r}: {exc}") from exc

    async def break_lock(self, token: bytes) -> bool:
        """Delete the lock if it still holds ``token`` (an owner known to be dead)."""
        try:
            return bool(await self._release(self.client, [self.key], [token]))
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable unlocking {self.key!r}: {exc}") from exc

    async def extend(self, timeout: float | None = None) -> bool:
        """Reset the time to live to ``timeout`` (default: the lock's) if still ours."""
        if self.token is None:
            return False
        ttl = _seconds(timeout, "timeout", True)
        ttl_ms = self._ttl_ms if ttl is None else max(1, round(ttl * 1000))
        try:
            return bool(await self._extend(self.client, [self.key], [self.token, str(ttl_ms)]))
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable extending {self.key!r}: {exc}") from exc

    async def __aenter__(self) -> RedisLock:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()
