"""The lean standalone client: redis-py with a shorter path per command, on tested versions only.

Everything here leans on redis-py internals (the pool's ``_lock``, ``_in_use_connections``,
``_available_connections``, ``_event_dispatcher``, the connection's ``_writer``/``_reader`` and
``Redis.execute_command``'s steps), which change between minor releases (8.0 -> 8.1 added the
lock to ``release`` and HIMPORT dispatch). So ``lean_supported()`` admits only the redis-py
versions CI runs tests/test_lean_client.py on; any other version gets stock redis-py
(backends.connect). Add a version to LEAN_REDIS_VERSIONS only with CI running it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.connection import HiredisRespSerializer
from redis.event import AsyncAfterConnectionReleasedEvent
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE

from .pool import DEFAULT_POOL_TIMEOUT, ConnectionSlots

if HIREDIS_AVAILABLE:
    from hiredis import pack_command as hiredis_pack

# The lowest and the newest redis-py that `redis>=8.0,<9` admits, both run by .ci/run.
LEAN_REDIS_VERSIONS = ("8.0.0", "8.1.0")


def lean_supported(version: str | None = None) -> bool:
    """Whether the lean path may run on this redis-py (hiredis installed, a tested version)."""
    return HIREDIS_AVAILABLE and (version or redis.__version__) in LEAN_REDIS_VERSIONS


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


FAST_CONNECTIONS: dict[str, type[Connection] | type[UnixDomainSocketConnection]] = {
    "redis": FastConnection,
    "rediss": FastSSLConnection,
    "unix": FastUnixConnection,
}


class LeanConnectionPool(aioredis.ConnectionPool):
    """redis.asyncio.ConnectionPool without its per-checkout OpenTelemetry bookkeeping.

    Checkout and return keep redis-py's own steps (the lock, the in-use set, the connect and
    "no unread data" check, reconnect-if-needed on return, the release event that re-auths
    streaming credentials); only the connection-count metrics, four awaited calls per command,
    are left out. Like BoundedConnectionPool, a checkout waits for a slot up to pool_timeout.
    tests/test_lean_client.py exercises each of these steps on every version admitted.
    """

    def __init__(
        self, *args: Any, pool_timeout: float | None = DEFAULT_POOL_TIMEOUT, **kwargs: Any
    ):
        super().__init__(*args, **kwargs)
        self.slots = ConnectionSlots(self.max_connections, pool_timeout)

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        # Every connection in _in_use_connections holds one slot; release() gives it back.
        await self.slots.acquire()
        try:
            async with self._lock:
                connection = self.get_available_connection()  # type: ignore[no-untyped-call]
        except BaseException:
            self.slots.release()
            raise
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection

    async def release(self, connection: Any) -> None:
        async with self._lock:
            self._in_use_connections.remove(connection)
            try:
                if connection.should_reconnect():
                    await connection.disconnect()
            finally:
                self._available_connections.append(connection)
                self.slots.release()
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
