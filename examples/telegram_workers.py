"""Three python-telegram-bot worker processes sharing data through sessioncache, fed simulated
updates.

    python examples/telegram_workers.py            # starts a private redis-server
    python examples/telegram_workers.py --url redis://localhost:6379/0

Nothing goes to the network: the bot's request object answers the Bot API locally. Every step of
each user's sign-up conversation (/start -> name -> age) is handled by a different worker, and
then every worker adds notes to the same chats' chat_data at the same time; the parent checks
nothing was lost. The one line that moves a bot to sessioncache is ``.persistence(...)`` below.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import uuid
from pathlib import Path
from typing import Any

try:
    import sessioncache  # noqa: F401
except ImportError:  # running from a source checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TOKEN = "42:EXAMPLE"
WORKERS = 3
NAME, AGE = range(2)


def build_application(url: str, namespace: str, worker: int) -> tuple[Any, list[str]]:
    from telegram.ext import (
        Application,
        CommandHandler,
        ContextTypes,
        ConversationHandler,
        MessageHandler,
        filters,
    )
    from telegram.request import BaseRequest

    from sessioncache.integrations.telegram import SessionCachePersistence

    replies: list[str] = []

    class LocalRequest(BaseRequest):
        """Answers getMe and sendMessage like the Bot API would, without a network."""

        @property
        def read_timeout(self) -> float | None:
            return 1.0

        async def initialize(self) -> None:
            return None

        async def shutdown(self) -> None:
            return None

        async def do_request(self, url: str, method: str, request_data: Any = None,
                             *args: Any, **kwargs: Any) -> tuple[int, bytes]:
            bot = {"id": 42, "is_bot": True, "first_name": "bot", "username": "example_bot"}
            result: Any = True
            if url.endswith("/getMe"):
                result = bot
            elif url.endswith("/sendMessage"):
                params = request_data.parameters if request_data else {}
                replies.append(str(params.get("text")))
                result = {"message_id": len(replies), "date": 0, "from": bot, "text": "",
                          "chat": {"id": int(params["chat_id"]), "type": "private"}}
            return 200, json.dumps({"ok": True, "result": result}).encode()

    async def start(update: Any, context: ContextTypes.DEFAULT_TYPE) -> int:
        context.user_data["started_by"] = worker
        await update.message.reply_text("What is your name?")
        return NAME

    async def got_name(update: Any, context: ContextTypes.DEFAULT_TYPE) -> int:
        context.user_data.update(name=update.message.text, name_by=worker)
        await update.message.reply_text("How old are you?")
        return AGE

    async def got_age(update: Any, context: ContextTypes.DEFAULT_TYPE) -> int:
        context.user_data.update(age=int(update.message.text), age_by=worker)
        await update.message.reply_text(f"Thanks {context.user_data['name']}!")
        return ConversationHandler.END

    async def note(update: Any, context: ContextTypes.DEFAULT_TYPE) -> None:
        # Each note adds its own key; only changed keys are written, so other workers' notes stay.
        context.chat_data[f"note-{update.message.message_id}"] = worker

    text = filters.TEXT & ~filters.COMMAND
    # The one-line switch: .persistence(PicklePersistence(...)) -> SessionCachePersistence.
    persistence = SessionCachePersistence.from_url(url, namespace=namespace, data_ttl=3600)
    app = (
        Application.builder()
        .token(TOKEN)
        .request(LocalRequest())
        .get_updates_request(LocalRequest())
        .updater(None)
        .persistence(persistence)
        .build()
    )
    app.add_handler(MessageHandler(filters.Regex(r"^note "), note), group=1)
    app.add_handler(
        ConversationHandler(
            entry_points=[CommandHandler("start", start)],
            states={
                NAME: [MessageHandler(text & ~filters.Regex(r"^note "), got_name)],
                AGE: [MessageHandler(filters.Regex(r"^\d+$"), got_age)],
            },
            fallbacks=[],
            name="signup",
            persistent=True,
        )
    )
    # Optional second line: conversations read from Redis before each update, and each update's
    # changes written as soon as it is handled instead of at the next update_interval tick.
    persistence.install(app)
    return app, replies


def message_update(update_id: int, chat_id: int, user_id: int, text: str) -> dict[str, Any]:
    message: dict[str, Any] = {
        "message_id": update_id,
        "date": 0,
        "chat": {"id": chat_id, "type": "private"},
        "from": {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"},
        "text": text,
    }
    if text.startswith("/"):
        message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text)}]
    return {"update_id": update_id, "message": message}


def worker_main(url: str, namespace: str, worker: int, inbox: Any, outbox: Any) -> None:
    """Handle each batch of updates the parent sends (one by one), then acknowledge it."""

    async def main() -> None:
        from telegram import Update

        app, replies = build_application(url, namespace, worker)
        await app.initialize()
        loop = asyncio.get_running_loop()
        handled = 0
        while (batch := await loop.run_in_executor(None, inbox.get)) is not None:
            for raw in batch:
                await app.process_update(Update.de_json(raw, app.bot))
            handled += len(batch)
            outbox.put((worker, len(batch)))
        await app.shutdown()
        outbox.put((worker, f"handled {handled} updates, sent {len(replies)} replies"))

    asyncio.run(main())


async def check(url: str, namespace: str, users: list[int], chats: list[int], notes: int) -> bool:
    from sessioncache.integrations.telegram import SessionCachePersistence

    reader = SessionCachePersistence.from_url(url, namespace=namespace)
    ok = True
    conversations = await reader.get_conversations("signup")
    for user in users:
        data: dict[Any, Any] = {}
        await reader.refresh_user_data(user, data)
        steps = (data.get("started_by"), data.get("name_by"), data.get("age_by"))
        print(f"user {user}: {data.get('name')}, {data.get('age')}, "
              f"conversation={conversations.get((user, user), 'ended')}, "
              f"steps by workers {steps}")
        ok &= data.get("name") == f"name{user}" and data.get("age") == 20 + user % 50
        ok &= (user, user) not in conversations and len(set(steps)) == WORKERS
    stored = 0
    for chat in chats:
        chat_data: dict[Any, Any] = {}
        await reader.refresh_chat_data(chat, chat_data)
        count = sum(str(k).startswith("note-") for k in chat_data)
        stored += count
        print(f"chat {chat}: {count} notes, written by workers {sorted(set(chat_data.values()))}")
    print(f"notes stored: {stored} of {notes}")
    ok &= stored == notes
    async for k in reader.client.scan_iter(match=f"{namespace}:*"):
        await reader.client.delete(k)
    await reader.flush()
    return ok


def run(url: str, users: int, notes: int) -> bool:
    namespace = f"example{uuid.uuid4().hex[:6]}"
    ctx = multiprocessing.get_context("spawn")
    inboxes = [ctx.Queue() for _ in range(WORKERS)]
    outbox = ctx.Queue()
    procs = [
        ctx.Process(target=worker_main, args=(url, namespace, w, inboxes[w], outbox))
        for w in range(WORKERS)
    ]
    for p in procs:
        p.start()
    user_ids = [1000 + u for u in range(users)]
    chat_ids = [-2000 - c for c in range(3)]
    next_id = iter(range(1, 10**9))

    def phase(batches: list[list[dict[str, Any]]]) -> None:
        for w, batch in enumerate(batches):
            inboxes[w].put(batch)
        for _ in range(WORKERS):
            outbox.get(timeout=120)

    # The conversation: step k of user u goes to worker (u + k) % WORKERS.
    for step, text in enumerate(["/start", "name{u}", "{age}"]):
        batches: list[list[dict[str, Any]]] = [[] for _ in range(WORKERS)]
        for u in user_ids:
            body = text.format(u=u, age=20 + u % 50)
            batches[(u + step) % WORKERS].append(message_update(next(next_id), u, u, body))
        phase(batches)
    # Notes: every worker writes to every chat at the same time.
    batches = [[] for _ in range(WORKERS)]
    for n in range(notes):
        chat = chat_ids[(n // WORKERS) % len(chat_ids)]
        batches[n % WORKERS].append(message_update(next(next_id), chat, 3000 + n, f"note {n}"))
    phase(batches)
    for inbox in inboxes:
        inbox.put(None)
    for _ in range(WORKERS):
        worker, summary = outbox.get(timeout=120)
        print(f"worker {worker}: {summary}")
    for p in procs:
        p.join(60)
    ok = asyncio.run(check(url, namespace, user_ids, chat_ids, notes))
    ok &= all(p.exitcode == 0 for p in procs)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="Redis URL (default: start a private redis-server)")
    parser.add_argument("--users", type=int, default=6, help="users going through the dialogue")
    parser.add_argument("--notes", type=int, default=90, help="notes written across the chats")
    args = parser.parse_args()
    if args.url:
        ok = run(args.url, args.users, args.notes)
    else:
        from sessioncache.embedded import EmbeddedRedis

        with EmbeddedRedis() as redis_server:
            ok = run(redis_server.url, args.users, args.notes)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
