"""Invalidation sources for the near cache: Redis client tracking, or memory:// notifications.

For Redis (and Valkey) one dedicated connection per primary speaks RESP3 and runs
``CLIENT TRACKING ON BCAST PREFIX ...`` for the cached key prefixes, so the server pushes the
name of every key written under them, whoever wrote it. It is our own small connection, not
redis-py's: redis-py's client-side cache is for its sync client only and refuses Valkey, and
its asyncio push handling is internal. A PING every ``max_staleness / 4`` on the same
connection proves the invalidation stream is flowing: its PONG comes after every push the
server queued before it, so the cache is confirmed up to the PING's send time. A dropped or
stalled connection, a reconnect and a nil invalidation (FLUSHALL) empty the cache.

For memory:// the in-process server publishes keyspace notifications; they are drained before
every cached read, so a write in this process is never followed by a stale read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

from .backends import default_client_name, is_cluster
from .errors import BackendUnavailable
from .nearcache import NearCache

log = logging.getLogger(__name__)


class _Push(list[Any]):
    """A RESP3 push message (out of band, unlike a reply)."""


class _RespError(Exception):
    pass


async def read_resp3(reader: asyncio.StreamReader) -> Any:
    """One RESP3 value from the stream (replies and pushes alike)."""
    line = await reader.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("tracking connection closed")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        return _RespError(rest.decode(errors="replace"))
    if kind in (b":", b"("):
        return int(rest)
    if kind in (b"$", b"=", b"!"):
        size = int(rest)
        if size < 0:
            return None
        data = (await reader.readexactly(size + 2))[:-2]
        if kind == b"!":
            return _RespError(data.decode(errors="replace"))
        return data[4:] if kind == b"=" else data
    if kind in (b"*", b"~", b">"):
        size = int(rest)
        if size < 0:
            return None
        items = [await read_resp3(reader) for _ in range(size)]
        return _Push(items) if kind == b">" else items
    if kind == b"%":
        size = int(rest)
        return {await read_resp3(reader): await read_resp3(reader) for _ in range(size)}
    if kind == b"|":  # attributes precede the value they describe
        for _ in range(2 * int(rest)):
            await read_resp3(reader)
        return await read_resp3(reader)
    if kind == b"_":
        return None
    if kind == b"#":
        return rest == b"t"
    if kind == b",":
        return float(rest)
    raise ConnectionError(f"unexpected RESP3 type {kind!r} on the tracking connection")


def _pack(*args: str | bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class _NodeTracker:
    """The tracking connection to one server, kept open (reconnecting) until stopped."""

    def __init__(
        self,
        cache: NearCache,
        address: tuple[str, int] | str,
        options: dict[str, Any],
        prefixes: Iterable[str],
        timeout: float,
    ) -> None:
        self.cache = cache
        self.address = address
        self.options = options
        self.prefixes = list(prefixes)
        self.timeout = timeout
        self.interval = cache.config.max_staleness / 4
        self.confirmed = -float("inf")
        self.client_id: int | None = None
        self.connected = asyncio.Event()
        self.lost = asyncio.Event()
        """Set each time the connection drops (after the cache was emptied)."""
        self.confirmed_event = asyncio.Event()
        """Set by each heartbeat answered, cleared when the connection drops."""
        self.stopped = False
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self.stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._close()

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if isinstance(self.address, str):
            opening = asyncio.open_unix_connection(self.address)
        else:
            opening = asyncio.open_connection(*self.address, ssl=self.options.get("ssl"))
        reader, writer = await asyncio.wait_for(opening, self.timeout)
        hello: list[str] = ["HELLO", "3"]
        if self.options.get("password"):
            hello += ["AUTH", self.options.get("username") or "default", self.options["password"]]
        hello += ["SETNAME", self.options["name"]]
        tracking = ["CLIENT", "TRACKING", "ON", "BCAST"]
        for prefix in self.prefixes:
            tracking += ["PREFIX", prefix]
        writer.write(_pack(*hello) + _pack("CLIENT", "ID") + _pack(*tracking))
        replies = [await asyncio.wait_for(read_resp3(reader), self.timeout) for _ in range(3)]
        for reply in replies:
            if isinstance(reply, _RespError):
                writer.close()
                # The reply names the command, never the password.
                raise BackendUnavailable(f"cannot start client tracking: {reply}")
        self.client_id = int(replies[1])
        return reader, writer

    async def _run(self) -> None:
        failures = 0
        while not self.stopped:
            try:
                reader, writer = await self._open()
            except (OSError, TimeoutError, ConnectionError, BackendUnavailable) as exc:
                failures += 1
                log.warning("near cache: tracking connection to %s failed: %s", self.address, exc)
                await asyncio.sleep(min(2.0, 0.05 * 2**failures))
                continue
            failures = 0
            self._writer = writer
            # Anything cached before this connection existed may have missed invalidations.
            self.cache.flush()
            self.lost.clear()
            self.connected.set()
            try:
                await self._serve(reader, writer)
            except (OSError, TimeoutError, ConnectionError, asyncio.IncompleteReadError) as exc:
                log.warning("near cache: tracking connection to %s lost: %s", self.address, exc)
            finally:
                self.connected.clear()
                self.confirmed_event.clear()
                self.confirmed = -float("inf")
                self._close()
                self.cache.unconfirm()
                self.cache.stats.extra["disconnects"] = (
                    self.cache.stats.extra.get("disconnects", 0) + 1
                )
                self.lost.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pings: deque[float] = deque()

        async def heartbeat() -> None:
            while True:
                if pings and time.monotonic() - pings[0] > self.cache.config.max_staleness:
                    writer.close()  # stalled: the reader sees the close and we reconnect
                    return
                pings.append(time.monotonic())
                writer.write(b"*1\r\n$4\r\nPING\r\n")
                await asyncio.sleep(self.interval)

        beat = asyncio.get_running_loop().create_task(heartbeat())
        try:
            while True:
                message = await read_resp3(reader)
                if isinstance(message, _Push):
                    if message and message[0] == b"invalidate":
                        self.cache.invalidate(message[1])
                        self.cache.stats.extra["invalidation_messages"] = (
                            self.cache.stats.extra.get("invalidation_messages", 0) + 1
                        )
                    continue
                if message == b"PONG" and pings:
                    self.confirmed = pings.popleft()
                    self.confirmed_event.set()
                    self.on_confirm()
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    def on_confirm(self) -> None:
        """Replaced by the owner: a heartbeat came back."""


class TrackingInvalidator:
    """One tracking connection per primary (every primary of a cluster)."""

    def __init__(self, cache: NearCache, client: Any, url: str, prefixes: Iterable[str]) -> None:
        self.cache = cache
        self.client = client
        self.url = url
        self.prefixes = list(prefixes)
        self.nodes: dict[Any, _NodeTracker] = {}
        self._watch: asyncio.Task[None] | None = None

    def _options(self) -> dict[str, Any]:
        parts = urlsplit(self.url)
        options: dict[str, Any] = {
            "name": default_client_name().replace("sessioncache:", "sessioncache-nc:", 1),
            "password": unquote(parts.password) if parts.password else None,
            "username": unquote(parts.username) if parts.username else None,
        }
        if parts.scheme.startswith("rediss"):
            options["ssl"] = ssl.create_default_context()
        return options

    def _addresses(self) -> list[tuple[str, int] | str]:
        if is_cluster(self.client):
            return [(node.host, int(node.port)) for node in self.client.get_primaries()]
        parts = urlsplit(self.url)
        if parts.scheme == "unix":
            return [parts.path]
        return [(parts.hostname or "127.0.0.1", parts.port or 6379)]

    async def start(self, timeout: float = 5.0) -> None:
        """Open every tracking connection and wait until each is confirmed once."""
        self._sync()
        self._watch = asyncio.get_running_loop().create_task(self._watch_topology())
        waits = [node.confirmed_event.wait() for node in self.nodes.values()]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout)
        except TimeoutError as exc:
            await self.stop()
            raise BackendUnavailable("near cache: tracking connections did not open") from exc

    def _sync(self) -> None:
        wanted = set(self._addresses())
        if wanted == set(self.nodes):
            return
        # A primary appeared or left (failover, resharding): its writes were not tracked.
        self.cache.flush()
        for address in set(self.nodes) - wanted:
            node = self.nodes.pop(address)
            asyncio.get_running_loop().create_task(node.stop())
        for address in wanted - set(self.nodes):
            node = _NodeTracker(self.cache, address, self._options(), self.prefixes, 5.0)
            node.on_confirm = self._confirm  # type: ignore[method-assign]
            self.nodes[address] = node
            node.start()

    def _confirm(self) -> None:
        self.cache.confirm(min(node.confirmed for node in self.nodes.values()))

    async def _watch_topology(self) -> None:
        while True:
            await asyncio.sleep(self.cache.config.max_staleness)
            self._sync()

    async def stop(self) -> None:
        """Close every tracking connection."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        for node in self.nodes.values():
            await node.stop()
        self.nodes.clear()
        self.cache.unconfirm()

    def client_ids(self) -> list[int]:
        """Server-side ids of the tracking connections (to find them in CLIENT LIST)."""
        return [n.client_id for n in self.nodes.values() if n.client_id is not None]

    async def drain(self) -> None:
        """Nothing to do: pushes are applied as they arrive."""


class MemoryInvalidator:
    """memory://: keyspace notifications of the in-process server, drained before each read."""

    def __init__(self, cache: NearCache, client: Any, prefixes: Iterable[str]) -> None:
        self.cache = cache
        self.client = client
        self.prefixes = list(prefixes)
        self._pubsub: Any = None
        self._channel_head = len("__keyspace@0__:")

    async def start(self, timeout: float = 5.0) -> None:
        """Subscribe to the notifications of the cached prefixes."""
        self._pubsub = self.client.pubsub()
        await self._pubsub.psubscribe(*(f"__keyspace@0__:{p}*" for p in self.prefixes))
        await self.drain()
        self.cache.confirm(float("inf"))

    async def drain(self) -> None:
        """Apply every notification published so far (they are queued in-process)."""
        pubsub = self._pubsub
        if pubsub is None:
            return
        while True:
            message = await pubsub.get_message(timeout=0)
            if message is None:
                return
            if message["type"] == "pmessage":
                self.cache.invalidate([message["channel"][self._channel_head :]])

    async def stop(self) -> None:
        """Unsubscribe."""
        if self._pubsub is not None:
            await self._pubsub.aclose()
            self._pubsub = None
        self.cache.unconfirm()

    def client_ids(self) -> list[int]:
        """None: there is no server connection."""
        return []
