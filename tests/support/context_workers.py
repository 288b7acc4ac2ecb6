"""Worker processes for the context, turn, seen-update and near-cache fleet tests.

Each worker is an ``async`` function (so memory:// runs them as tasks in the test's process)
wrapped by a sync entry point for multiprocessing's spawn. Results go to Redis or to a JSON file.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sessioncache.context import ContextConfig
from sessioncache.history import HistoryConfig, Message
from sessioncache.system import SessionSystem

from .workers import run_fleet


async def start(url: str, namespace: str, **options: Any) -> SessionSystem:
    """A SessionSystem on any test URL."""
    if url.startswith("memory://"):
        kind = "MEMORY"
    elif "+cluster" in url:
        kind = "CLUSTER"
    else:
        kind = "REDIS"
    return await SessionSystem.start(
        kind, {"url": url, "socket_timeout": 10.0}, namespace=namespace, **options
    )


async def covering_summary(messages: list[Message]) -> str:
    """A summarize hook whose summary names every original message it stands for."""
    covered: list[int] = []
    for m in messages:
        covered += json.loads(m.content) if m.is_summary else [m.number]
    await asyncio.sleep(0)  # a real hook awaits a model; let appends interleave
    return json.dumps(covered)


def history_options(cap: int | None, summarize: bool) -> dict[str, Any]:
    history = HistoryConfig(
        max_messages=cap,
        max_bytes=None,
        summarize=covering_summary if summarize else None,
        hard_factor=1000.0,
    )
    return {"context": ContextConfig(history=history)}


async def append_messages(
    url: str, namespace: str, sid: str, writer: int, n: int, cap: int | None, summarize: bool
) -> list[int]:
    """n appends of {"w": writer, "i": i}; returns the message numbers the server gave."""
    system = await start(url, namespace, **history_options(cap, summarize))
    try:
        numbers = []
        for i in range(n):
            message = await system.append_message(sid, "user", {"w": writer, "i": i}, tokens=1)
            numbers.append(message.number)
        await system.context.wait_summaries()
        return numbers
    finally:
        await system.shutdown()


def append_worker(
    url: str,
    namespace: str,
    sid: str,
    writer: int,
    n: int,
    cap: int | None,
    summarize: bool,
    out: str,
    barrier: Any,
) -> None:
    barrier.wait()
    numbers = asyncio.run(append_messages(url, namespace, sid, writer, n, cap, summarize))
    with open(out, "w") as f:
        json.dump(numbers, f)


async def take_turns(url: str, namespace: str, sids: list[str], n: int, seed: int) -> None:
    """n turns over the conversations; inside each, a holders counter must read exactly 1."""
    system = await start(url, namespace, turn_lease=5.0)
    client = system.store.client
    rng = random.Random(seed)
    try:
        for _ in range(n):
            sid = rng.choice(sids)
            async with system.turn(sid, timeout=120):
                holders = f"{namespace}:test:holders:{sid}"
                if await client.incr(holders) != 1:
                    await client.incr(f"{namespace}:test:violations")
                await asyncio.sleep(0)
                await client.incr(f"{namespace}:test:turns:{sid}")
                await client.decr(holders)
    finally:
        await system.shutdown()


def turn_worker(url: str, namespace: str, sids: list[str], n: int, seed: int, barrier: Any) -> None:
    barrier.wait()
    asyncio.run(take_turns(url, namespace, sids, n, seed))


def dying_holder(url: str, namespace: str, sid: str, lease: float, ready: Any) -> None:
    """Takes the turn, says so, and is killed (SIGKILL) while holding it."""

    async def main() -> None:
        system = await start(url, namespace)
        async with system.turn(sid, timeout=30, lease=lease):
            ready.set()
            os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main())


async def mark_seen(url: str, namespace: str, ids: int, seed: int) -> int:
    """seen_update on ids 0..ids-1 in a shuffled order, 50 at a time (the pool holds 64);
    returns how many were True."""
    system = await start(url, namespace)
    order = list(range(ids))
    random.Random(seed).shuffle(order)
    firsts = 0
    try:
        for start_at in range(0, ids, 50):
            chunk = order[start_at : start_at + 50]
            calls = [system.seen_update("telegram", i, ttl=600) for i in chunk]
            firsts += sum(await asyncio.gather(*calls))
        await system.store.client.incrby(f"{namespace}:test:firsts", firsts)
        return firsts
    finally:
        await system.shutdown()


def seen_worker(url: str, namespace: str, ids: int, seed: int, barrier: Any) -> None:
    barrier.wait()
    asyncio.run(mark_seen(url, namespace, ids, seed))


async def write_versions(
    url: str, namespace: str, sid: str, n: int, go: Callable[[], Awaitable[None]]
) -> list[float]:
    """n updates of data["v"] = 1..n; returns each one's acknowledgement time (monotonic)."""
    system = await start(url, namespace)
    acks = []
    try:
        await go()
        for v in range(1, n + 1):
            await system.update_session(sid, {"v": v})
            acks.append(time.monotonic())
            await asyncio.sleep(0.002)  # pace the writes so each delay is measured alone
        return acks
    finally:
        await system.shutdown()


async def read_versions(
    url: str,
    namespace: str,
    sid: str,
    n: int,
    staleness: float,
    ready: Callable[[], Awaitable[None]],
) -> dict[str, Any]:
    """Reads through the near cache until it sees v == n.

    Returns, per version seen, the latest time a read that began then still returned it
    ("last_begin") and the end time of the first read that returned it ("first_end").
    """
    from sessioncache.nearcache import NearCacheConfig

    system = await start(url, namespace, near_cache=NearCacheConfig(max_staleness=staleness))
    last_begin: dict[int, float] = {}
    first_end: dict[int, float] = {}
    try:
        await system.get_session(sid)
        await ready()
        v = 0
        while v < n:
            began = time.monotonic()
            session = await system.get_session(sid)
            ended = time.monotonic()
            assert session is not None
            v = int(session.data.get("v", 0))
            last_begin[v] = began
            first_end.setdefault(v, ended)
            await asyncio.sleep(0)
        stats = system.get_performance_metrics()["near_cache"]
        return {"last_begin": last_begin, "first_end": first_end, "stats": stats}
    finally:
        await system.shutdown()


def reader_worker(
    url: str, namespace: str, sid: str, n: int, staleness: float, out: str, barrier: Any
) -> None:
    async def ready() -> None:
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait)

    result = asyncio.run(read_versions(url, namespace, sid, n, staleness, ready))
    with open(out, "w") as f:
        json.dump(result, f)


def writer_worker(url: str, namespace: str, sid: str, n: int, out: str, barrier: Any) -> None:
    async def go() -> None:
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait)

    acks = asyncio.run(write_versions(url, namespace, sid, n, go))
    with open(out, "w") as f:
        json.dump(acks, f)


__all__ = ["run_fleet"]
