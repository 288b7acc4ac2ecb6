"""The aiogram event isolation and the PTB update processor share the turn lock: several worker
processes handling updates of a few chats never run two handlers of one chat at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sessioncache.backends import RedisSettings, connect
from sessioncache.errors import ValidationError

from .support.namespaces import drop_namespace, unique_namespace
from .support.ptb_support import text_update
from .support.turn_integration_workers import aiogram_turns, ptb_turns, run_turn_fleet

CHATS = [-101, -102, -103]
pytestmark = pytest.mark.timeout(120)  # spawned workers importing a framework


@pytest.fixture
async def client(backend_url: str) -> AsyncIterator[Any]:
    c = connect(RedisSettings(url=backend_url, socket_timeout=10.0))
    await c.ping()
    yield c
    await c.aclose()


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["aiogram", "telegram"])
async def test_workers_handle_one_update_of_a_chat_at_a_time(
    backend_url: str, client: Any, framework: str
) -> None:
    """4 workers x 60 updates over 3 chats, many in flight in each worker: every handler finds
    itself the chat's only holder, and every update is handled."""
    namespace, workers, n = unique_namespace(), 4, 60
    if backend_url.startswith("memory://"):
        # One process can share memory://: the workers are tasks, each with its own client.
        run = aiogram_turns if framework == "aiogram" else ptb_turns
        await asyncio.gather(*(run(backend_url, namespace, CHATS, n, w) for w in range(workers)))
    else:
        await asyncio.to_thread(
            run_turn_fleet, framework, backend_url, namespace, CHATS, n, workers
        )
    turns = [int(await client.get(f"{namespace}:test:turns:{chat}") or 0) for chat in CHATS]
    assert sum(turns) == workers * n  # no update lost
    assert await client.get(f"{namespace}:test:violations") is None  # never two holders
    # Every turn was given back and every waiter left its line.
    prefix = f"{namespace}:".encode()
    left = [k async for k in client.scan_iter(match=f"{namespace}:*")]
    assert [k for k in left if not k.startswith(prefix + b"test:") and b":o:" not in k] == []
    await drop_namespace(client, namespace)


async def test_ptb_processor_busy_and_chatless_updates(memory_url: str) -> None:
    """A chat's update waiting past the timeout is not processed (on_busy hears of it, its
    coroutine is closed unstarted); an update without a chat never waits."""
    from telegram import Update

    from sessioncache.integrations.telegram import SessionTurnProcessor

    busy: list[object] = []

    async def on_busy(update: object) -> None:
        busy.append(update)

    processor = SessionTurnProcessor.from_url(memory_url, 4, timeout=0.05, on_busy=on_busy)
    update = text_update(1, -5, 7, "hi", None)
    ran: list[str] = []

    async def handlers(what: str) -> None:
        ran.append(what)

    async with processor.turns.hold(processor.keys.ptb_turn(-5), "held elsewhere"):
        late = handlers("late")
        await processor.process_update(update, late)
        assert busy == [update] and ran == [] and late.cr_frame is None  # closed, never run
        chatless = Update(update_id=2)  # like an inline query or a poll: no chat
        await processor.process_update(chatless, handlers("chatless"))
    await processor.process_update(update, handlers("in turn"))
    assert ran == ["chatless", "in turn"]
    await processor.shutdown()
    with pytest.raises(ValidationError):
        SessionTurnProcessor.from_url(memory_url, timeout=-1)

