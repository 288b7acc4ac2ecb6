"""python-telegram-bot worker processes for the multi-process persistence tests."""

from __future__ import annotations

import asyncio
from typing import Any

from .workers import run_fleet

CHAT = -500
TOKEN = "4242:TEST"


def build_app(url: str, namespace: str, *, lazy: bool = False) -> Any:
    """An Application on SessionCachePersistence whose handlers count into chat and bot data."""
    from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters

    from sessioncache.integrations.telegram import SessionCachePersistence

    from .ptb_support import LocalRequest

    persistence = SessionCachePersistence.from_url(
        url, namespace=namespace, socket_timeout=10, lazy=lazy
    )
    app = (
        Application.builder()
        .token(TOKEN)
        .request(LocalRequest())
        .get_updates_request(LocalRequest())
        .persistence(persistence)
        .updater(None)
        .build()
    )

    async def remember(update: Any, context: ContextTypes.DEFAULT_TYPE) -> None:
        worker, i = update.message.text.split(":")
        context.chat_data[f"{worker}-{i}"] = int(i)
        context.user_data["last"] = update.message.text
        context.bot_data.setdefault("seen_by", {})

    async def reply(update: Any, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.message.reply_text(str(len(context.chat_data)))

    app.add_handler(CommandHandler("count", reply))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, remember))
    persistence.install(app)
    return app


def chat_worker(url: str, namespace: str, worker: int, n: int, barrier: Any) -> None:
    """Process n updates, each adding the key "w<worker>-<i>" to one shared chat's chat_data."""

    async def main() -> None:
        from .ptb_support import text_update

        app = build_app(url, namespace)
        await app.initialize()
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
        for i in range(n):
            user = 1000 + worker
            update = text_update(worker * n + i, CHAT, user, f"w{worker}:{i}", app.bot)
            await app.process_update(update)
        await app.shutdown()

    asyncio.run(main())


def run_chat_fleet(url: str, namespace: str, workers: int, n: int) -> None:
    run_fleet(chat_worker, [(url, namespace, w, n) for w in range(workers)])


def migrate_worker(
    url: str, namespace: str, lazy: bool, old: int, new: int, barrier: Any
) -> None:
    """Start an Application (loading or lazy), then migrate old -> new through PTB's own
    Application.migrate_chat_data and flush, at the same moment as the other workers."""

    async def main() -> None:
        app = build_app(url, namespace, lazy=lazy)
        await app.initialize()
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
        app.migrate_chat_data(old_chat_id=old, new_chat_id=new)
        await app.update_persistence()
        await app.shutdown()

    asyncio.run(main())


def run_migrate_fleet(
    url: str, namespace: str, workers: int, old: int, new: int, lazy: bool
) -> None:
    run_fleet(migrate_worker, [(url, namespace, lazy, old, new) for _ in range(workers)])


def alternating_worker(
    url: str, namespace: str, lazy: bool, me: int, workers: int, rounds: int, barrier: Any
) -> None:
    """Round r is handled by worker r % workers alone (the others wait at the barrier): its
    handler appends [worker, what it saw] to the shared chat's list. Each handler must see
    every earlier round's write, made by another process, on its own next update."""

    async def main() -> None:
        from telegram.ext import Application, ContextTypes, MessageHandler, filters

        from sessioncache.integrations.telegram import SessionCachePersistence

        from .ptb_support import LocalRequest, text_update

        persistence = SessionCachePersistence.from_url(
            url, namespace=namespace, socket_timeout=10, lazy=lazy
        )
        app = (
            Application.builder()
            .token(TOKEN)
            .request(LocalRequest())
            .get_updates_request(LocalRequest())
            .persistence(persistence)
            .updater(None)
            .build()
        )

        async def log(update: Any, context: ContextTypes.DEFAULT_TYPE) -> None:
            seen = context.chat_data.get("seen", [])
            context.chat_data["seen"] = [*seen, [me, len(seen)]]
            context.user_data["n"] = context.user_data.get("n", 0) + 1
            context.bot_data["rounds"] = context.bot_data.get("rounds", 0) + 1

        app.add_handler(MessageHandler(filters.TEXT, log))
        persistence.install(app)
        await app.initialize()
        wait = asyncio.get_running_loop().run_in_executor
        await wait(None, barrier.wait)
        for r in range(rounds):
            if r % workers == me:
                await app.process_update(text_update(r + 1, CHAT, 77, f"r{r}", app.bot))
            await wait(None, barrier.wait)
        await app.shutdown()

    asyncio.run(main())


def run_alternating_fleet(url: str, namespace: str, workers: int, rounds: int, lazy: bool) -> None:
    run_fleet(
        alternating_worker,
        [(url, namespace, lazy, w, workers, rounds) for w in range(workers)],
    )
