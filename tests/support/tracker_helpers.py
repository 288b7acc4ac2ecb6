"""Shared helpers of the state tracker tests."""

from __future__ import annotations

from typing import Any

from sessioncache.store import SessionStore
from sessioncache.tracker import StateTracker, TrackerConfig


async def snapshot(tracker: StateTracker, session_id: str) -> dict[str, Any]:
    """Everything a tracker write may touch for one session (to prove nothing changed)."""
    _, keys, _ = tracker.events.locate(session_id)
    client = tracker.store.client
    return {
        "hash": await client.hgetall(keys[0]),
        "stream": await client.xrange(keys[2]),
        "stats": await client.hgetall(keys[3]),
        "users": await client.zrange(keys[4], 0, -1, withscores=True),
    }


def tracked(store: SessionStore, config: TrackerConfig | None = None) -> SessionStore:
    """The same namespace over the same client, its creates and deletes writing the tracker's
    keys (the store fixture is built without them)."""
    extras = (config or TrackerConfig()).store_extras()
    if extras in store.extras:
        return store
    return SessionStore(
        store.client,
        namespace=store.keys.namespace,
        default_ttl=store.default_ttl,
        limits=store.limits,
        owns_client=False,
        extras=[extras],
    )


async def new_tracker(store: SessionStore, **config: Any) -> StateTracker:
    """A started tracker over ``tracked(store)``: use ``tracker.store`` for creates."""
    cfg = TrackerConfig(**config)
    tracker = StateTracker(tracked(store, cfg), cfg)
    await tracker.start()
    return tracker
