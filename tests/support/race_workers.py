"""Worker of the cross-process get_or_create race (importable by multiprocessing's spawn)."""

from __future__ import annotations

import asyncio
from typing import Any

from sessioncache import SessionStore

CHATS = 50  # under the pool's 64 connections (a burst beyond them is issue #10 point 1)


async def _race(url: str, namespace: str, n: int, barrier: Any) -> list[tuple[str, int, int]]:
    store = await SessionStore.connect(url, namespace=namespace, socket_timeout=10.0)
    try:
        # Warm a connection per call, so every process's calls leave at the same moment.
        await asyncio.gather(*(store.exists("web:c:u") for _ in range(CHATS)))
        await asyncio.to_thread(barrier.wait, 30)
        sessions = await asyncio.gather(
            *(store.get_or_create(f"c{c}", "u", "web", data={"n": n}) for c in range(CHATS))
        )
        return [(s.session_id, s.version, s.data["n"]) for s in sessions]
    finally:
        await store.close()


def race_get_or_create(url: str, namespace: str, n: int, barrier: Any, out: Any) -> None:
    """One process's get_or_create calls (one per chat) at the barrier; puts, per chat,
    (session id, version, the data's n)."""
    out.put(asyncio.run(_race(url, namespace, n, barrier)))
