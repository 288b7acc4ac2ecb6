"""Worker processes for the multi-process integration tests and the lost-update comparison."""

from __future__ import annotations

import asyncio
from typing import Any

STORAGE_KEY = {"bot_id": 1, "chat_id": -100, "user_id": 7}


async def _update_many(storage: Any, worker: int, n: int, tasks: int) -> None:
    from aiogram.fsm.storage.base import StorageKey

    key = StorageKey(**STORAGE_KEY)  # type: ignore[arg-type]

    async def one_task(t: int) -> None:
        for i in range(t, n, tasks):
            await storage.update_data(key, {f"w{worker}-{i}": i})

    await asyncio.gather(*(one_task(t) for t in range(tasks)))


def aiogram_update_worker(
    kind: str, url: str, namespace: str, worker: int, n: int, tasks: int, barrier: Any
) -> None:
    """n update_data calls on one chat, each adding its own key, spread over `tasks` tasks."""

    async def main() -> None:
        if kind == "sessioncache":
            from sessioncache.integrations.aiogram import SessionCacheStorage

            storage: Any = SessionCacheStorage.from_url(url, namespace=namespace, socket_timeout=10)
        else:
            from aiogram.fsm.storage.base import DefaultKeyBuilder
            from aiogram.fsm.storage.redis import RedisStorage
            from redis.asyncio import Redis

            storage = RedisStorage(
                Redis.from_url(url, socket_timeout=10),
                key_builder=DefaultKeyBuilder(prefix=namespace, with_bot_id=True),
            )
        await storage.get_data(_key())  # connect before the start line
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
        await _update_many(storage, worker, n, tasks)
        await storage.close()

    asyncio.run(main())


def _key() -> Any:
    from aiogram.fsm.storage.base import StorageKey

    return StorageKey(**STORAGE_KEY)  # type: ignore[arg-type]


def run_update_fleet(kind: str, url: str, namespace: str, workers: int, n: int, tasks: int) -> None:
    """Start `workers` spawned processes that update one chat at the same moment; wait for all."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(workers)
    procs = [
        ctx.Process(
            target=aiogram_update_worker,
            args=(kind, url, namespace, w, n, tasks, barrier),
        )
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    codes = [p.exitcode for p in procs]
    if codes != [0] * workers:
        raise RuntimeError(f"{kind} workers exited with {codes}")


async def count_fields(kind: str, url: str, namespace: str) -> int:
    """How many keys the chat's data holds after a fleet run."""
    if kind == "sessioncache":
        from sessioncache.integrations.aiogram import SessionCacheStorage

        storage: Any = SessionCacheStorage.from_url(url, namespace=namespace)
    else:
        from aiogram.fsm.storage.base import DefaultKeyBuilder
        from aiogram.fsm.storage.redis import RedisStorage
        from redis.asyncio import Redis

        storage = RedisStorage(
            Redis.from_url(url), key_builder=DefaultKeyBuilder(prefix=namespace, with_bot_id=True)
        )
    data = await storage.get_data(_key())
    await storage.close()
    return len(data)
