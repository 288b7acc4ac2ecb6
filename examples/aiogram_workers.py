"""Three aiogram worker processes sharing FSM state through sessioncache, fed simulated updates.

    python examples/aiogram_workers.py            # starts a private redis-server
    python examples/aiogram_workers.py --url redis://localhost:6379/0

Nothing goes to the network: the Bot's session answers API calls locally. Every step of each
user's sign-up dialogue (/start -> name -> age) is handled by a different worker, and then every
worker adds notes to the same chats at the same time; the parent checks nothing was lost.
The one line that moves a bot to sessioncache is the ``SessionCacheStorage.from_url(...)`` below.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
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


def build_dispatcher(url: str, namespace: str, worker: int) -> tuple[Any, Any, list[str]]:
    from aiogram import Bot, Dispatcher, F, Router
    from aiogram.client.session.base import BaseSession
    from aiogram.filters import Command
    from aiogram.fsm.context import FSMContext
    from aiogram.fsm.state import State, StatesGroup
    from aiogram.methods import SendMessage
    from aiogram.types import Chat, Message, User

    from sessioncache.integrations.aiogram import SessionCacheStorage

    replies: list[str] = []

    class LocalSession(BaseSession):
        """Answers sendMessage like the Bot API would, without a network."""

        async def make_request(self, bot: Any, method: Any, timeout: Any = None) -> Any:
            if isinstance(method, SendMessage):
                replies.append(str(method.text))
                return Message(
                    message_id=len(replies),
                    date=dt.datetime.now(dt.UTC),
                    chat=Chat(id=int(method.chat_id), type="private"),
                    from_user=User(id=bot.id, is_bot=True, first_name="bot"),
                    text=method.text,
                )
            return True

        async def stream_content(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("no downloads in this example")

        async def close(self) -> None:
            return None

    class Signup(StatesGroup):
        name = State()
        age = State()

    router = Router()

    @router.message(Command("start"))
    async def start(message: Message, state: FSMContext) -> None:
        await state.set_state(Signup.name)
        await state.update_data(started_by=worker)
        await message.answer("What is your name?")

    @router.message(Signup.name)
    async def got_name(message: Message, state: FSMContext) -> None:
        await state.update_data(name=message.text, name_by=worker)
        await state.set_state(Signup.age)
        await message.answer("How old are you?")

    @router.message(Signup.age)
    async def got_age(message: Message, state: FSMContext) -> None:
        data = await state.update_data(age=int(message.text or 0), age_by=worker)
        await state.set_state(None)
        await message.answer(f"Thanks {data['name']}!")

    @router.message(F.text.startswith("note "))
    async def note(message: Message, state: FSMContext) -> None:
        # Each note adds its own key: an atomic merge, so notes from other workers survive.
        await state.update_data({f"note-{message.message_id}": worker})

    # The one-line switch: RedisStorage.from_url(...) -> SessionCacheStorage.from_url(...).
    storage = SessionCacheStorage.from_url(url, namespace=namespace, state_ttl=3600, data_ttl=3600)
    dp = Dispatcher(storage=storage, events_isolation=storage.create_isolation(timeout=30))
    dp.include_router(router)
    return dp, Bot(TOKEN, session=LocalSession()), replies


def message_update(update_id: int, chat_id: int, user_id: int, text: str) -> dict[str, Any]:
    message: dict[str, Any] = {
        "message_id": update_id,
        "date": 0,
        "chat": {"id": chat_id, "type": "private" if chat_id == user_id else "group", "title": "t"},
        "from": {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"},
        "text": text,
    }
    if text.startswith("/"):
        message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text)}]
    return {"update_id": update_id, "message": message}


def worker_main(url: str, namespace: str, worker: int, inbox: Any, outbox: Any) -> None:
    """Handle each batch of updates the parent sends (concurrently), then acknowledge it."""

    async def main() -> None:
        from aiogram.types import Update

        dp, bot, replies = build_dispatcher(url, namespace, worker)
        loop = asyncio.get_running_loop()
        handled = 0
        while (batch := await loop.run_in_executor(None, inbox.get)) is not None:
            updates = [Update.model_validate(u, context={"bot": bot}) for u in batch]
            await asyncio.gather(*(dp.feed_update(bot, u) for u in updates))
            handled += len(updates)
            outbox.put((worker, len(updates)))
        await dp.storage.close()
        await bot.session.close()
        outbox.put((worker, f"handled {handled} updates, sent {len(replies)} replies"))

    asyncio.run(main())


async def check(url: str, namespace: str, users: list[int], chats: list[int], notes: int) -> bool:
    from aiogram.fsm.storage.base import StorageKey

    from sessioncache.integrations.aiogram import SessionCacheStorage

    storage = SessionCacheStorage.from_url(url, namespace=namespace)
    bot_id = int(TOKEN.split(":")[0])
    ok = True
    for user in users:
        key = StorageKey(bot_id=bot_id, chat_id=user, user_id=user)
        data, state = await storage.get_data(key), await storage.get_state(key)
        steps = (data.get("started_by"), data.get("name_by"), data.get("age_by"))
        print(f"user {user}: {data.get('name')}, {data.get('age')}, state={state}, "
              f"steps by workers {steps}")
        ok &= data.get("name") == f"name{user}" and data.get("age") == 20 + user % 50
        ok &= state is None and len(set(steps)) == WORKERS
    stored = 0
    for chat in chats:
        key = StorageKey(bot_id=bot_id, chat_id=chat, user_id=chat)
        data = await storage.get_data(key)
        by = sorted({v for k, v in data.items() if k.startswith("note-")})
        count = sum(k.startswith("note-") for k in data)
        stored += count
        print(f"chat {chat}: {count} notes, written by workers {by}")
    print(f"notes stored: {stored} of {notes}")
    ok &= stored == notes
    async for k in storage.client.scan_iter(match=f"{namespace}:*"):
        await storage.client.delete(k)
    await storage.close()
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
    chat_ids = [2000 + c for c in range(3)]
    next_id = iter(range(1, 10**9))

    def phase(batches: list[list[dict[str, Any]]]) -> None:
        for w, batch in enumerate(batches):
            inboxes[w].put(batch)
        for _ in range(WORKERS):
            outbox.get(timeout=120)

    # The dialogue: step k of user u goes to worker (u + k) % WORKERS.
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
        batches[n % WORKERS].append(message_update(next(next_id), chat, chat, f"note {n}"))
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
