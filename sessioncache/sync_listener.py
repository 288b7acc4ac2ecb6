"""SyncListener: learns of every synced write in the namespace on its own pub/sub connection."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from .store import SessionStore


class SyncListener:
    """Learns of every synced write in the namespace (any process) on its own pub/sub
    connection: ``{"session": id, "fields": [...]}`` per write. Delivery is at most once (pub/sub):
    a listener that was not connected misses writes; the stored stamps stay the truth."""

    def __init__(self, store: SessionStore) -> None:
        self.client = store.client
        self.channel = store.keys.sync_channel()
        self._pubsub: Any = None

    async def start(self) -> None:
        """Subscribe (returns once the server confirmed the subscription)."""
        self._pubsub = self.client.pubsub()
        await self._pubsub.subscribe(self.channel)
        while True:
            msg = await self._pubsub.get_message(timeout=5.0)
            if msg is not None and msg["type"] == "subscribe":
                return

    async def next(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """The next announcement, or None if none came within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (left := deadline - loop.time()) > 0:
            msg = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
            if msg is not None and msg["type"] == "message":
                value: dict[str, Any] = json.loads(msg["data"])
                return value
        return None

    async def aclose(self) -> None:
        """Unsubscribe and give the connection back."""
        if self._pubsub is not None:
            await self._pubsub.aclose()
            self._pubsub = None
