"""aiogram FSM storage: sessioncache against aiogram's RedisStorage on the same server, same run.

Rows compare set_state, get_state, update_data and get_data; "raw" is aiogram's RedisStorage on a
redis.asyncio client for the same server. Targets: update_data at most 0.67 (1.5x faster: one
script instead of GET + SET), the others at most 1.0. A second table counts lost updates when
8 processes call update_data on one chat at once.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import uuid
from typing import Any

from bench.common import Row, compare, print_table, server

WORKERS = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", type=int, default=2000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per operation")
    parser.add_argument(
        "--updates", type=int, default=50, help="update_data calls per process (lost-update run)"
    )


def _key(i: int) -> Any:
    from aiogram.fsm.storage.base import StorageKey

    return StorageKey(bot_id=1, chat_id=-(1000 + i), user_id=1000 + i)


def _storages(url: str, prefix: str) -> tuple[Any, Any]:
    from aiogram.fsm.storage.base import DefaultKeyBuilder
    from aiogram.fsm.storage.redis import RedisStorage
    from redis.asyncio import Redis

    from sessioncache.integrations.aiogram import SessionCacheStorage

    ours = SessionCacheStorage.from_url(url, namespace=f"{prefix}sc", socket_timeout=10)
    theirs = RedisStorage(
        Redis.from_url(url, socket_timeout=10),
        key_builder=DefaultKeyBuilder(prefix=f"{prefix}aio", with_bot_id=True),
    )
    return ours, theirs


async def _speed(url: str, n: int, rounds: int, concurrent: int = 0) -> list[Row]:
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    ours, theirs = _storages(url, prefix)
    keys = [_key(i) for i in range(100)]
    seed = {"name": "Ann", "age": 31, "lang": "en", "step": 2, "tags": ["a", "b"]}
    for storage in (ours, theirs):
        for k in keys:
            await storage.set_state(k, "Form:name")
            await storage.set_data(k, seed)

    def pair(method: str, *extra: Any) -> tuple[Any, Any]:
        async def run_ours(i: int) -> object:
            return await getattr(ours, method)(keys[i % 100], *extra)

        async def run_theirs(i: int) -> object:
            return await getattr(theirs, method)(keys[i % 100], *extra)

        return run_ours, run_theirs

    async def upd_ours(i: int) -> object:
        return await ours.update_data(keys[i % 100], {"step": i})

    async def upd_theirs(i: int) -> object:
        return await theirs.update_data(keys[i % 100], {"step": i})

    rows = []
    for name, (a, b), target in [
        ("set_state", pair("set_state", "Form:age"), 1.0),
        ("get_state", pair("get_state"), 1.0),
        ("update_data (1 key, 5-key record)", (upd_ours, upd_theirs), 0.67),
        ("get_data (5-key record)", pair("get_data"), 1.0),
    ]:
        mine, raw = await compare(a, b, n, rounds=rounds, concurrent=concurrent)
        rows.append(Row(name, mine, raw, target))
    for storage, pattern in ((ours, f"{prefix}sc:*"), (theirs, f"{prefix}aio:*")):
        client = storage.client if storage is ours else storage.redis
        async for k in client.scan_iter(match=pattern, count=1000):
            await client.delete(k)
        await storage.close()
    return rows


def _update_worker(kind: str, url: str, prefix: str, worker: int, n: int, barrier: Any) -> None:
    async def main() -> None:
        ours, theirs = _storages(url, prefix)
        storage = ours if kind == "sessioncache" else theirs
        await (theirs if storage is ours else ours).close()
        key = _key(0)
        await storage.get_data(key)
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait)

        async def task(t: int) -> None:
            for i in range(t, n, 5):
                await storage.update_data(key, {f"w{worker}-{i}": i})

        await asyncio.gather(*(task(t) for t in range(5)))
        await storage.close()

    asyncio.run(main())


async def _lost_updates(url: str, n: int) -> dict[str, int]:
    """update_data from WORKERS processes at once on one chat, each call adding its own key."""
    kept = {}
    ctx = multiprocessing.get_context("spawn")
    for kind in ("aiogram", "sessioncache"):
        prefix = f"lost{uuid.uuid4().hex[:6]}"
        barrier = ctx.Barrier(WORKERS)
        procs = [
            ctx.Process(target=_update_worker, args=(kind, url, prefix, w, n, barrier))
            for w in range(WORKERS)
        ]
        for p in procs:
            p.start()
        for p in procs:
            await asyncio.to_thread(p.join)
        ours, theirs = _storages(url, prefix)
        storage = ours if kind == "sessioncache" else theirs
        kept[kind] = len(await storage.get_data(_key(0)))
        await ours.client.delete(*[k async for k in ours.client.scan_iter(match=f"{prefix}*")])
        await ours.close()
        await theirs.close()
    return kept


async def run(args: argparse.Namespace) -> bool:
    with server(args.url) as url:
        ok = True
        # Sequential: one chat after another. 50 tasks: a worker serving many chats at once,
        # where each side's client CPU per call shows (100 chats, so no key is contended).
        for label, concurrent in (("sequential", 0), ("50 concurrent tasks", 50)):
            rows = await _speed(url, args.n, args.rounds, concurrent)
            title = f"aiogram FSM storage, {label}: sessioncache vs aiogram RedisStorage"
            ok &= print_table(title, rows)
        kept = await _lost_updates(url, args.updates)
    total = WORKERS * args.updates
    print(f"\nlost updates: {total} concurrent update_data calls from {WORKERS} processes")
    print(f"{'storage':<24}{'kept':>8}{'lost':>8}")
    for kind in ("sessioncache", "aiogram"):
        print(f"{kind:<24}{kept[kind]:>8}{total - kept[kind]:>8}")
    return ok and kept["sessioncache"] == total
