"""Worker processes for the multi-process integration tests and the lost-update comparison."""

from __future__ import annotations

import asyncio
from typing import Any

from .workers import run_fleet

STORAGE_KEY = {"bot_id": 1, "chat_id": -100, "user_id": 7}


async def _update_many(storage: Any, worker: int, n: int, tasks: int) -> None:
    from aiogram.fsm.storage.base import StorageKey

    key = StorageKey(**STORAGE_KEY)  # type: ignore[arg-type]

    async def one_task(t: int) -> None:
        for i in range(t, n, tasks):
            await storage.update_data(key, {f"w{worker}-{i}": i})

    await asyncio.gather(*(one_task(t) for t in range(tasks)))


def _storage(kind: str, url: str, namespace: str) -> Any:
    if kind == "sessioncache":
        from sessioncache.integrations.aiogram import SessionCacheStorage

        return SessionCacheStorage.from_url(url, namespace=namespace, socket_timeout=10)
    from aiogram.fsm.storage.base import DefaultKeyBuilder
    from aiogram.fsm.storage.redis import RedisStorage
    from redis.asyncio import Redis

    return RedisStorage(
        Redis.from_url(url, socket_timeout=10),
        key_builder=DefaultKeyBuilder(prefix=namespace, with_bot_id=True),
    )


def aiogram_update_worker(
    runs: list[tuple[str, str]], url: str, worker: int, n: int, tasks: int, barrier: Any
) -> None:
    """For each (kind, namespace): wait for every worker, then n update_data calls on one chat,
    each adding its own key, spread over `tasks` asyncio tasks."""

    async def main() -> None:
        for kind, namespace in runs:
            storage = _storage(kind, url, namespace)
            await storage.get_data(_key())  # connect before the start line
            await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
            await _update_many(storage, worker, n, tasks)
            await storage.close()

    asyncio.run(main())


def _key() -> Any:
    from aiogram.fsm.storage.base import StorageKey

    return StorageKey(**STORAGE_KEY)  # type: ignore[arg-type]


def run_update_fleet(
    runs: list[tuple[str, str]], url: str, workers: int, n: int, tasks: int
) -> None:
    """Start `workers` spawned processes; each run starts in all of them at the same moment."""
    run_fleet(aiogram_update_worker, [(runs, url, w, n, tasks) for w in range(workers)])


async def read_data(kind: str, url: str, namespace: str) -> dict[str, Any]:
    """The chat's data after a fleet run."""
    storage = _storage(kind, url, namespace)
    data = await storage.get_data(_key())
    await storage.close()
    return dict(data)


def aiogram_alternating_worker(
    url: str, namespace: str, me: int, workers: int, rounds: int, barrier: Any
) -> None:
    """Round r is handled by worker r % workers alone, through a Dispatcher on our storage: its
    handler appends [worker, what it saw] to the chat's FSM data, so every handler must see the
    other processes' earlier writes on its own next update."""

    async def main() -> None:
        from aiogram import Bot, Dispatcher
        from aiogram.fsm.context import FSMContext
        from aiogram.types import Message, Update

        from sessioncache.integrations.aiogram import SessionCacheStorage

        storage = SessionCacheStorage.from_url(url, namespace=namespace, socket_timeout=10)
        dp = Dispatcher(storage=storage, events_isolation=storage.create_isolation())
        bot = Bot("42:TEST")

        @dp.message()
        async def log(message: Message, state: FSMContext) -> None:
            seen = (await state.get_data()).get("seen", [])
            await state.update_data(seen=[*seen, [me, len(seen)]])

        wait = asyncio.get_running_loop().run_in_executor
        await storage.get_data(_key())  # connect before the start line
        await wait(None, barrier.wait)
        for r in range(rounds):
            if r % workers == me:
                update = Update.model_validate(
                    {
                        "update_id": r + 1,
                        "message": {
                            "message_id": r + 1,
                            "date": 0,
                            "chat": {"id": STORAGE_KEY["chat_id"], "type": "group"},
                            "from": {"id": STORAGE_KEY["user_id"], "is_bot": False,
                                     "first_name": "u"},
                            "text": f"r{r}",
                        },
                    },
                    context={"bot": bot},
                )
                await dp.feed_update(bot, update)
            await wait(None, barrier.wait)
        await storage.close()
        await bot.session.close()

    asyncio.run(main())


def run_aiogram_alternating_fleet(url: str, namespace: str, workers: int, rounds: int) -> None:
    run_fleet(
        aiogram_alternating_worker, [(url, namespace, w, workers, rounds) for w in range(workers)]
    )
