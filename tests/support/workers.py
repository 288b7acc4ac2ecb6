"""Worker processes for the concurrency tests (importable by multiprocessing's spawn)."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Callable
from typing import Any

from sessioncache import SessionStore, VersionConflict


async def _cas_increments(
    url: str, namespace: str, session_ids: list[str], n: int, start_at: float
) -> int:
    """n read-modify-write increments under optimistic concurrency; returns conflicts seen."""
    store = await SessionStore.connect(url, namespace=namespace, socket_timeout=10.0)
    conflicts = 0
    await asyncio.sleep(max(0.0, start_at - time.time()))  # all processes start together
    try:
        for i in range(n):
            sid = session_ids[i % len(session_ids)]
            while True:
                s = await store.get(sid)
                try:
                    await store.update(
                        sid,
                        data={"counter": s.data.get("counter", 0) + 1},
                        expected_version=s.version,
                    )
                    break
                except VersionConflict:
                    conflicts += 1
            await store.touch(sid, messages=1)
    finally:
        await store.close()
    return conflicts


def cas_increments(
    url: str, namespace: str, session_ids: list[str], n: int, start_at: float
) -> int:
    return asyncio.run(_cas_increments(url, namespace, session_ids, n, start_at))


def run_fleet(target: Callable[..., Any], args_per_worker: list[tuple[Any, ...]]) -> None:
    """One spawned process per args tuple, each given a shared start barrier as its last
    argument; waits for all and raises if any of them failed."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(args_per_worker))
    procs = [ctx.Process(target=target, args=(*args, barrier)) for args in args_per_worker]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    codes = [p.exitcode for p in procs]
    if codes != [0] * len(procs):
        raise RuntimeError(f"workers exited with {codes}")
