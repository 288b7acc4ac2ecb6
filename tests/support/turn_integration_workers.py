"""Worker processes for the fleet tests of the aiogram event isolation and the PTB update
processor on the turn lock: each handler counts the holders of its chat, which must be 1."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from .workers import run_fleet

BOT_ID = 42
USER = 7


async def _count_turn(client: Any, namespace: str, chat: int) -> None:
    """A handler's body: exactly one holder of the chat may be inside at any moment."""
    holders = f"{namespace}:test:holders:{chat}"
    if await client.incr(holders) != 1:
        await client.incr(f"{namespace}:test:violations")
    await asyncio.sleep(0.001)  # widen the window two holders would need
    await client.incr(f"{namespace}:test:turns:{chat}")
    await client.decr(holders)


def _chats(seed: int, n: int, chats: list[int]) -> list[int]:
    rng = random.Random(seed)
    return [rng.choice(chats) for _ in range(n)]


async def aiogram_turns(
    url: str, namespace: str, chats: list[int], n: int, seed: int, go: Any = None
) -> None:
    """A Dispatcher on SessionCacheStorage and its create_isolation() handles n messages spread
    over the chats, 10 at a time."""
    from aiogram import Bot, Dispatcher
    from aiogram.types import Message, Update

    from sessioncache.integrations.aiogram import SessionCacheStorage

    storage = SessionCacheStorage.from_url(url, namespace=namespace, socket_timeout=10)
    dp = Dispatcher(storage=storage, events_isolation=storage.create_isolation(lease=5))
    bot = Bot(f"{BOT_ID}:TEST")

    @dp.message()
    async def handle(message: Message) -> None:
        await _count_turn(storage.client, namespace, message.chat.id)

    def update(i: int, chat: int) -> Update:
        user = {"id": USER, "is_bot": False, "first_name": "u"}
        message = {
            "message_id": i,
            "date": 0,
            "chat": {"id": chat, "type": "group"},
            "from": user,
            "text": f"m{i}",
        }
        return Update.model_validate(
            {"update_id": seed * n + i, "message": message}, context={"bot": bot}
        )

    await storage.get_state(_storage_key(chats[0]))  # connect before the start line
    if go is not None:
        await go()
    gate = asyncio.Semaphore(10)

    async def feed(i: int, chat: int) -> None:
        async with gate:
            await dp.feed_update(bot, update(i, chat))

    await asyncio.gather(*(feed(i, chat) for i, chat in enumerate(_chats(seed, n, chats))))
    await storage.close()
    await bot.session.close()


def _storage_key(chat: int) -> Any:
    from aiogram.fsm.storage.base import StorageKey

    return StorageKey(bot_id=BOT_ID, chat_id=chat, user_id=USER)


async def ptb_turns(
    url: str, namespace: str, chats: list[int], n: int, seed: int, go: Any = None
) -> None:
    """An Application whose updates go through SessionTurnProcessor (16 at a time) handles n
    messages spread over the chats, fed through its update queue as an Updater would."""
    from telegram.ext import Application, ContextTypes, MessageHandler, filters

    from sessioncache.integrations.telegram import SessionTurnProcessor

    from .ptb_support import LocalRequest, text_update

    processor = SessionTurnProcessor.from_url(
        url, 16, namespace=namespace, lease=5, socket_timeout=10
    )
    app = (
        Application.builder()
        .token("4242:TEST")
        .request(LocalRequest())
        .get_updates_request(LocalRequest())
        .concurrent_updates(processor)
        .updater(None)
        .build()
    )

    async def handle(update: Any, context: ContextTypes.DEFAULT_TYPE) -> None:
        await _count_turn(processor.client, namespace, update.effective_chat.id)

    app.add_handler(MessageHandler(filters.TEXT, handle))
    await app.initialize()
    await processor.client.ping()  # connect before the start line
    if go is not None:
        await go()
    await app.start()
    for i, chat in enumerate(_chats(seed, n, chats)):
        await app.update_queue.put(text_update(seed * n + i + 1, chat, USER, f"m{i}", app.bot))
    await app.update_queue.join()
    # join() returns when the last update was taken; wait for the handlers still running.
    while processor.current_concurrent_updates:
        await asyncio.sleep(0.01)
    await app.stop()
    await app.shutdown()


def fleet_worker(
    framework: str, url: str, namespace: str, chats: list[int], n: int, seed: int, barrier: Any
) -> None:
    async def go() -> None:
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait)

    run = aiogram_turns if framework == "aiogram" else ptb_turns
    asyncio.run(run(url, namespace, chats, n, seed, go))


def run_turn_fleet(
    framework: str, url: str, namespace: str, chats: list[int], n: int, workers: int
) -> None:
    """`workers` spawned processes, each handling n updates over the chats."""
    run_fleet(fleet_worker, [(framework, url, namespace, chats, n, w) for w in range(workers)])
