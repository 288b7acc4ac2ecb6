"""Connection pools that wait for a free connection (up to pool_timeout) instead of failing."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from .errors import PoolExhausted

DEFAULT_POOL_TIMEOUT = 10.0


class ConnectionSlots:
    """At most ``size`` connections in use; a caller past that waits (FIFO) up to ``timeout``
    (None: no limit).

    redis-py's default pool raises "Too many connections" at once when all are in use, so a
    burst of tasks (one per bot update) fails instead of queueing for a few milliseconds.
    """

    def __init__(self, size: int, timeout: float | None) -> None:
        self.size = size
        self.timeout = timeout
        self._free = asyncio.Semaphore(size)
        self.in_use = 0
        self.waiting = 0

    async def acquire(self) -> None:
        """Take a slot, waiting for one up to the timeout; raises PoolExhausted past it."""
        if not self._free.locked():
            # Taking a free slot does not yield (no timer armed on the common path).
            await self._free.acquire()
        else:
            self.waiting += 1
            try:
                async with asyncio.timeout(self.timeout):
                    await self._free.acquire()
            except TimeoutError:
                raise PoolExhausted(self.size, self.timeout or 0.0) from None
            finally:
                self.waiting -= 1
        self.in_use += 1

    def release(self) -> None:
        """Give a slot back (wakes the longest waiter)."""
        self.in_use -= 1
        self._free.release()


class BoundedConnectionPool(aioredis.ConnectionPool):
    """redis-py's pool, through its public get_connection/release, plus waiting for a slot."""

    def __init__(
        self, *args: Any, pool_timeout: float | None = DEFAULT_POOL_TIMEOUT, **kwargs: Any
    ):
        super().__init__(*args, **kwargs)
        self.slots = ConnectionSlots(self.max_connections, pool_timeout)
        # Connections handed out with a slot: redis-py's get_connection releases a connection
        # itself when its connect check fails, and that slot must be given back only once.
        self._holding: set[Any] = set()

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        await self.slots.acquire()
        try:
            connection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except BaseException:
            self.slots.release()
            raise
        self._holding.add(connection)
        return connection

    async def release(self, connection: Any) -> None:
        try:
            await super().release(connection)
        finally:
            if connection in self._holding:
                self._holding.discard(connection)
                self.slots.release()


class BoundedRedisCluster(RedisCluster):
    """redis-py's cluster client, with commands waiting for a slot when all are in use.

    Each node's pool raises MaxConnectionsError when full; a command uses at most one
    connection per node, so ``max_connections`` commands in flight never overfill a node.
    """

    slots: ConnectionSlots

    @classmethod
    def bounded(cls, url: str, pool_timeout: float | None, **kwargs: Any) -> BoundedRedisCluster:
        """from_url, plus the slots (sized by ``max_connections``)."""
        client = cast(BoundedRedisCluster, cls.from_url(url, **kwargs))
        client.slots = ConnectionSlots(kwargs.get("max_connections", 100), pool_timeout)
        return client

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        # A burst on a client not yet initialized fails in redis-py (commands resolve their
        # policy and nodes before the topology is loaded, then lose their connections when it
        # is): load it first, once (initialize() returns at once when it is done).
        await self.initialize()
        await self.slots.acquire()
        try:
            try:
                return await super().execute_command(*args, **kwargs)
            except AttributeError as e:
                if not unsent_on_closed_connection(e):
                    raise
                # redis-py's cluster client disconnects every node's connections when it
                # reinitializes after a timeout elsewhere; a command that was about to write
                # on one of them finds its writer gone. Nothing was sent, so one more attempt
                # on a fresh connection is safe (and every write we send carries an op id).
                return await super().execute_command(*args, **kwargs)
        finally:
            self.slots.release()


def unsent_on_closed_connection(error: AttributeError) -> bool:
    """True for redis-py's write on a connection closed under it (its writer is None)."""
    return "'NoneType' object has no attribute 'write" in str(error)
