"""Shared helpers of the state tracker tests."""

from __future__ import annotations

from typing import Any

from sessioncache.store import SessionStore
from sessioncache.tracker import StateTracker


async def snapshot(tracker: StateTracker, session_id: str) -> dict[str, Any]:
    """Everything a tracker write may touch for one session (to prove nothing changed)."""
    _, keys, _ = tracker._locate(session_id)
    client = tracker.store.client
    return {
        "hash": await client.hgetall(keys[0]),
        "stream": await client.xrange(keys[2]),
        "stats": await client.hgetall(keys[3]),
        "users": await client.zrange(keys[4], 0, -1, withscores=True),
    }


async def new_tracker(store: SessionStore, **config: Any) -> StateTracker:
    from sessioncache.tracker import TrackerConfig

    tracker = StateTracker(store, TrackerConfig(**config))
    await tracker.start()
    return tracker
