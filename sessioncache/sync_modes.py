"""Sync modes after a local write: "delayed" (debounced per session) and "batch" (a fleet job)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .errors import SessionNotFound

if TYPE_CHECKING:
    from .store import SessionStore
    from .sync import SyncConfig


class SyncModes:
    """The part of SyncManager that decides when a written session is synced: at once
    ("auto", by the caller), never by itself ("manual"), after ``delay`` seconds without
    another write ("delayed", in this process), or by the next run of the fleet's batch job
    ("batch": a sorted set of pending sessions in Redis, so any process's job syncs them)."""

    store: SessionStore
    config: SyncConfig
    _timers: dict[str, asyncio.TimerHandle]
    _tasks: set[asyncio.Task[Any]]

    sync_sessions: Callable[..., Coroutine[Any, Any, Any]]
    """SyncManager.sync_sessions: apply a session's shared fields to its linked sessions."""

    async def _after_write(self, session_id: str) -> None:
        mode = self.config.mode
        if mode == "delayed":
            self._debounce(session_id)
        elif mode == "batch":
            await self.store.client.zadd(self.store.keys.sync_pending(),
                                         {session_id: time.time() * 1000})

    def _debounce(self, session_id: str) -> None:
        loop = asyncio.get_running_loop()
        old = self._timers.pop(session_id, None)
        if old is not None:
            old.cancel()

        def fire() -> None:
            self._timers.pop(session_id, None)
            task = loop.create_task(self.sync_sessions(session_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self._timers[session_id] = loop.call_later(self.config.delay, fire)

    async def flush(self) -> None:
        """Run every delayed sync now and wait for those under way (before shutdown)."""
        timers, self._timers = self._timers, {}
        for sid, handle in timers.items():
            handle.cancel()
            await self.sync_sessions(sid)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def run_batch(self, *_: Any) -> int:
        """Sync every session waiting for the batch job; returns how many (a FleetJob func)."""
        key = self.store.keys.sync_pending()
        due = await self.store.client.zrange(key, 0, 999, withscores=True)
        for raw, score in due:
            sid = raw.decode()
            with contextlib.suppress(SessionNotFound):
                await self.sync_sessions(sid)
            # Dropped only if not written again meanwhile (a new score): that write waits
            # for the next run instead of being lost.
            await self.store.scripts.sync_pending_done.run(
                self.store.client, [key], [sid, repr(float(score))])
        return len(due)

