"""Workers of the sync tests (importable by multiprocessing's spawn)."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from sessioncache.identity_links import IdentityLinks
from sessioncache.store import SessionStore
from sessioncache.sync import SyncConfig, SyncManager


def larger(field: str, stored: Any, incoming: Any) -> Any:
    """The custom strategy of the tests: the larger value wins (order-independent)."""
    return incoming if stored is None or incoming > stored else stored


async def writes(store: SessionStore, sid: str, strategy: str, n: int, who: str) -> None:
    """n synced writes to one session by a manager of its own (auto mode)."""
    sync = SyncManager(store, IdentityLinks(store.client, store.keys),
                       SyncConfig(shared_fields=["topic", "count"],
                                  strategy=larger if strategy == "custom" else strategy,
                                  mode="auto", priority=("discord", "telegram")))
    platform = sid.split(":")[0]
    for i in range(n):
        if strategy == "merge":
            await sync.increment(sid, "count")
        else:
            await sync.write(sid, {"topic": f"{platform}-{who}-{i}"})


async def _writes(url: str, ns: str, sid: str, strategy: str, n: int, start: Any) -> None:
    store = await SessionStore.connect(url, namespace=ns, socket_timeout=10.0)
    try:
        await store.client.ping()
        start.wait(60)  # every writer connected: the writes overlap, not one process after another
        await writes(store, sid, strategy, n, str(os.getpid()))
    finally:
        await store.close()


def write_many(url: str, ns: str, sid: str, strategy: str, n: int, start: Any) -> None:
    """n synced writes to one session (auto mode), after the ``start`` barrier."""
    asyncio.run(_writes(url, ns, sid, strategy, n, start))


async def _killed(url: str, ns: str, sid: str) -> None:
    store = await SessionStore.connect(url, namespace=ns, socket_timeout=10.0)
    sync = SyncManager(store, IdentityLinks(store.client, store.keys),
                       SyncConfig(shared_fields=["topic"], mode="manual"))
    await sync.write(sid, {"topic": "killed"})
    original = sync._apply_target
    done = 0

    async def die_after_one(*args: Any) -> Any:
        nonlocal done
        if done == 1:
            os._exit(17)  # killed between the steps of one sync
        done += 1
        return await original(*args)

    sync._apply_target = die_after_one  # type: ignore[method-assign]
    await sync.sync_sessions(sid)


def killed_mid_sync(url: str, ns: str, sid: str) -> None:
    """Sync a session to its two linked sessions, dying after the first."""
    asyncio.run(_killed(url, ns, sid))


async def _killed_after_write(url: str, ns: str, sid: str) -> None:
    store = await SessionStore.connect(url, namespace=ns, socket_timeout=10.0)
    sync = SyncManager(store, IdentityLinks(store.client, store.keys),
                       SyncConfig(shared_fields=["topic"], mode="auto"))

    async def die(*args: Any, **kwargs: Any) -> Any:
        os._exit(17)  # killed after the local write, before any target has it

    sync.targets.each = die  # type: ignore[method-assign]
    await sync.update(sid, {"topic": "written", "draft": "x"})


def killed_after_write(url: str, ns: str, sid: str) -> None:
    """An auto-mode update of a shared field, dying right after the local write."""
    asyncio.run(_killed_after_write(url, ns, sid))


async def _resolve(url: str, ns: str, cid: str, choose: str, start: Any) -> int:
    from sessioncache import sync_records
    from sessioncache.errors import ValidationError

    listing = sync_records.list_conflicts

    async def listed(*args: Any) -> Any:
        found = await listing(*args)
        start.wait(60)  # every resolver has listed the conflict: they race at the script
        return found

    sync_records.list_conflicts = listed  # type: ignore[assignment]
    store = await SessionStore.connect(url, namespace=ns, socket_timeout=10.0)
    try:
        sync = SyncManager(store, IdentityLinks(store.client, store.keys),
                           SyncConfig(shared_fields=["topic"], strategy="manual", mode="manual"))
        try:
            await sync.resolve_conflict(cid, choose=choose)
        except ValidationError as exc:
            return 3 if "resolved by another call" in str(exc) else 4
        return 0
    finally:
        await store.close()


def resolve_once(url: str, ns: str, cid: str, choose: str, start: Any) -> None:
    """Resolve one conflict once every resolver has listed it (the ``start`` barrier): exit
    code 0 if this call settled it, 3 if the script found it settled by another (nothing
    written), 4 for any other "no conflict"."""
    sys.exit(asyncio.run(_resolve(url, ns, cid, choose, start)))
