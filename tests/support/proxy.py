"""Loopback TCP proxies in front of Redis that lose a reply, or deliver a request late."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Self


class _Proxy:
    """A listening socket on a free loopback port; subclasses forward each connection."""

    def __init__(self, target_port: int, trigger: bytes = b"EVALSHA") -> None:
        self.target_port = target_port
        self.trigger = trigger
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Self:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class DroppingProxy(_Proxy):
    """Forwards to a Redis server; when armed, the next request containing `trigger` reaches
    the server (which applies it) but its reply is dropped and the client connection cut."""

    def __init__(self, target_port: int, trigger: bytes = b"EVALSHA") -> None:
        super().__init__(target_port, trigger)
        self.armed = 0
        self.dropped = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        try:
            while True:
                request = await reader.read(65536)
                if not request:
                    return
                drop = self.armed > 0 and self.trigger in request
                up_writer.write(request)
                await up_writer.drain()
                reply = await up_reader.read(65536)
                if drop:
                    self.armed -= 1
                    self.dropped += 1
                    return  # the server applied it; the client never hears back
                writer.write(reply)
                await writer.drain()
        finally:
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()


class HoldingProxy(_Proxy):
    """Forwards to a Redis server; when armed, holds back the next request containing
    `trigger` (the client times out and retries on a new connection, which is forwarded), until
    release() delivers it late, after its own retry, as a buffering proxy or a kernel might."""

    def __init__(self, target_port: int, trigger: bytes = b"EVALSHA") -> None:
        super().__init__(target_port, trigger)
        self.armed = False
        self.held: asyncio.Queue[tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]]
        self.held = asyncio.Queue()

    async def release(self) -> bytes:
        """Deliver the held request (waiting until one is held) and return the server's reply."""
        request, up_reader, up_writer = await self.held.get()
        try:
            up_writer.write(request)
            await up_writer.drain()
            return await up_reader.read(65536)
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        held = False
        try:
            while True:
                request = await reader.read(65536)
                if not request:
                    return
                if self.armed and self.trigger in request:
                    self.armed = False
                    held = True
                    await self.held.put((request, up_reader, up_writer))
                    continue  # no reply: the client times out and retries elsewhere
                up_writer.write(request)
                await up_writer.drain()
                writer.write(await up_reader.read(65536))
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if not held:
                up_writer.close()
                with contextlib.suppress(Exception):
                    await up_writer.wait_closed()
