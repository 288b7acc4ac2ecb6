"""Backends chosen by URL: redis://, rediss://, unix://, redis+cluster://, memory://NAME."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.connection import HiredisRespSerializer
from redis.event import AsyncAfterConnectionReleasedEvent
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE

if HIREDIS_AVAILABLE:
    from hiredis import pack_command as hiredis_pack

from .errors import ValidationError

SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster", "memory")


def default_client_name() -> str:
    """A client name per process, shown by CLIENT LIST: sessioncache:<host>:<pid>."""
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname())
    return f"sessioncache:{host[:40]}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """How to reach Redis. Every timeout and retry setting is explicit rather than redis-py's."""

    url: str = "memory://default"
    socket_timeout: float = 5.0
    socket_connect_timeout: float = 2.0
    retries: int = 3
    backoff_base: float = 0.02
    backoff_cap: float = 1.0
    max_connections: int = 64
    health_check_interval: float = 30.0
    client_name: str | None = None
    protocol: int = 3
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        scheme = urlsplit(self.url).scheme if isinstance(self.url, str) else ""
        if scheme not in SCHEMES:
            raise ValidationError(
                f"unsupported URL {self.url!r}: use one of " + ", ".join(f"{s}://" for s in SCHEMES)
            )
        if self.protocol not in (2, 3):
            raise ValidationError(f"protocol must be 2 or 3, got {self.protocol!r}")
        for name in ("socket_timeout", "socket_connect_timeout", "backoff_base", "backoff_cap"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ValidationError(f"{name} must be a positive number, got {value!r}")
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ValidationError(f"retries must be an int >= 0, got {self.retries!r}")
        if not isinstance(self.max_connections, int) or self.max_connections < 1:
            raise ValidationError(
                f"max_connections must be an int >= 1, got {self.max_connections!r}"
            )

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @classmethod
    def from_options(cls, url: str, **options: Any) -> RedisSettings:
        """Settings from a URL and keyword options; unknown options raise."""
        known = set(cls.__dataclass_fields__) - {"url"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValidationError(
                f"unknown connection option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        return cls(url=url, **options)

    def with_url(self, url: str) -> RedisSettings:
        return replace(self, url=url)


class _FastPath(AbstractConnection):
    """Two per-command costs of redis-py's asyncio connection, removed.

    Packing: redis-py's sync connections use hiredis' C packer; its asyncio connections use a
    pure-Python packer whose cost grows with the argument count, and script calls carry many
    arguments.

    Sending: with a socket timeout set, every send runs as ``asyncio.wait_for(drain())``, which
    on Python 3.11 wraps the drain in a new Task, costing event-loop turns on every command.
    But ``drain()`` only waits when the transport's buffer is over its high-water mark, so the
    timeout is armed only then; a socket that stays full still times out as before.
    """

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        # redis-py's HiredisRespSerializer walks every argument in a Python generator first
        # (only to turn memoryview/bytearray into bytes); hand the args straight to C and
        # take that path only for what C refuses. Multi-word names ("CLIENT SETNAME") split.
        first = args[0]
        if (" " if isinstance(first, str) else b" ") in first:
            args = (*first.split(), *args[1:])
        try:
            return [hiredis_pack(args)]
        except TypeError:
            return self._packer.pack(*args)  # type: ignore[no-any-return]

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        writer = self._writer
        if writer is None or self._reader is None or writer.transport.is_closing():
            await super().send_packed_command(command, check_health)
            return
        if check_health:
            await self.check_health()  # type: ignore[no-untyped-call]
        if isinstance(command, str):
            command = command.encode()
        if isinstance(command, bytes):
            command = [command]
        try:
            writer.writelines(command)
            if writer.transport.get_write_buffer_size():
                if self.socket_timeout:
                    async with asyncio.timeout(self.socket_timeout):
                        await writer.drain()
                else:
                    await writer.drain()
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            await self.disconnect(nowait=True)
            raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc
        except BaseException:
            # As redis-py does: a half-sent command leaves the connection unusable.
            await self.disconnect(nowait=True)
            raise


class FastConnection(_FastPath, Connection):
    """TCP connection with the C packer and the cheap send."""


class FastSSLConnection(_FastPath, SSLConnection):
    """TLS connection with the C packer and the cheap send."""


class FastUnixConnection(_FastPath, UnixDomainSocketConnection):
    """Unix-socket connection with the C packer and the cheap send."""


class LeanConnectionPool(aioredis.ConnectionPool):
    """redis.asyncio.ConnectionPool without its per-checkout OpenTelemetry bookkeeping.

    Checkout and return keep redis-py's own steps (the lock, the in-use set, the connect and
    "no unread data" check, reconnect-if-needed on return, the release event that re-auths
    streaming credentials); only the connection-count metrics, four awaited calls per command,
    are left out. tests/test_backends.py pins the pool internals this relies on.
    """

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        async with self._lock:
            connection = self.get_available_connection()  # type: ignore[no-untyped-call]
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection

    async def release(self, connection: Any) -> None:
        async with self._lock:
            self._in_use_connections.remove(connection)
            if connection.should_reconnect():
                await connection.disconnect()
            self._available_connections.append(connection)
        dispatcher = self._event_dispatcher
        if dispatcher is not None:
            event = AsyncAfterConnectionReleasedEvent(connection)  # type: ignore[no-untyped-call]
            await dispatcher.dispatch_async(event)


class LeanRedis(aioredis.Redis):
    """redis.asyncio.Redis with a shorter path per command.

    The same pool, retry policy (a failed attempt disconnects, then retries with backoff) and
    reply parsing, without the per-command steps sessioncache never needs: redis-py's
    OpenTelemetry recording, HIMPORT dispatch and single-connection locking (a client made with
    ``single_connection_client`` takes redis-py's own path). Per-operation metrics come from
    sessioncache's own histograms (metrics.py) instead.
    """

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if self.single_connection_client:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        pool = self.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            return await conn.retry.call_with_retry(
                lambda: self._attempt(conn, args, options),
                lambda error, failures: conn.disconnect(error=error, failure_count=failures),
                with_failure_count=True,
            )
        finally:
            await pool.release(conn)

    async def _attempt(self, conn: Any, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        await conn.send_command(*args)
        return await self.parse_response(conn, args[0], **options)


_CONNECTION_CLASSES: dict[str, type[Connection] | type[UnixDomainSocketConnection]] = (
    {"redis": FastConnection, "rediss": FastSSLConnection, "unix": FastUnixConnection}
    if HIREDIS_AVAILABLE
    else {"redis": Connection, "rediss": SSLConnection, "unix": UnixDomainSocketConnection}
)

_MEMORY_SERVERS: dict[str, Any] = {}
_MEMORY_LOCK = threading.Lock()


def memory_server(name: str) -> Any:
    """The fakeredis server shared by every memory://NAME client of this process."""
    import fakeredis

    with _MEMORY_LOCK:
        server = _MEMORY_SERVERS.get(name)
        if server is None:
            server = fakeredis.FakeServer(version=(7, 0))
            _MEMORY_SERVERS[name] = server
        return server


def forget_memory_server(name: str) -> None:
    """Drop a named in-process server (its data goes with it)."""
    with _MEMORY_LOCK:
        _MEMORY_SERVERS.pop(name, None)


def connect(settings: RedisSettings) -> Any:
    """A redis.asyncio client (Redis, RedisCluster or fakeredis) for the settings."""
    scheme = settings.scheme
    retry = Retry(
        ExponentialWithJitterBackoff(cap=settings.backoff_cap, base=settings.backoff_base),
        settings.retries,
        supported_errors=(RedisConnectionError, RedisTimeoutError),
    )
    common: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.socket_connect_timeout,
        "retry": retry,
        "client_name": settings.client_name or default_client_name(),
        "protocol": settings.protocol,
        "decode_responses": False,
        **settings.extra,
    }
    if scheme == "memory":
        import fakeredis

        parts = urlsplit(settings.url)
        name = (parts.netloc + parts.path).strip("/") or "default"
        return fakeredis.aioredis.FakeRedis(
            server=memory_server(name), protocol=settings.protocol, decode_responses=False
        )
    if scheme.endswith("+cluster"):
        url = settings.url.replace("+cluster", "", 1)
        return RedisCluster.from_url(
            url,
            max_connections=settings.max_connections,
            health_check_interval=settings.health_check_interval,
            **common,
        )
    pool = LeanConnectionPool.from_url(
        settings.url,
        connection_class=_CONNECTION_CLASSES[scheme],
        max_connections=settings.max_connections,
        health_check_interval=settings.health_check_interval,
        **common,
    )
    client = LeanRedis(connection_pool=pool)
    client.auto_close_connection_pool = True  # as Redis.from_url: aclose() closes the pool
    return client


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)
