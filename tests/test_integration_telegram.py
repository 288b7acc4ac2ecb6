"""python-telegram-bot persistence on sessioncache: data, merges, conversations, fleets."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from telegram.ext import (
    Application,
    BasePersistence,
    CommandHandler,
    ContextTypes,
    ConversationHandler,
    MessageHandler,
    PersistenceInput,
    filters,
)

from sessioncache.errors import ValidationError
from sessioncache.integrations.telegram import SessionCachePersistence

from .support.namespaces import drop_namespace, unique_namespace
from .support.ptb_support import LocalRequest, text_update
from .support.ptb_workers import CHAT, run_alternating_fleet, run_chat_fleet, run_migrate_fleet

_OPEN: list[SessionCachePersistence] = []


@pytest.fixture
async def url_ns(backend_url: str) -> AsyncIterator[tuple[str, str]]:
    namespace = unique_namespace()
    yield backend_url, namespace
    p = SessionCachePersistence.from_url(backend_url, namespace=namespace)
    await drop_namespace(p.client, namespace)
    await p.flush()
    while _OPEN:  # every client a test opened is closed, whatever the test did
        await _OPEN.pop().flush()


def persistence(url_ns: tuple[str, str], **kwargs: Any) -> SessionCachePersistence:
    url, namespace = url_ns
    p = SessionCachePersistence.from_url(url, namespace=namespace, **kwargs)
    _OPEN.append(p)
    return p


async def keys_of(p: SessionCachePersistence) -> list[bytes]:
    """The namespace's keys but the op logs (they expire one retry horizon after their last
    write: lua/lib/ops.lua)."""
    logs = p.keys.op_log_pattern()[:-1].encode()
    found = sorted([k async for k in p.client.scan_iter(match=f"{p.keys.namespace}:*")])
    return [k for k in found if not k.startswith(logs)]


def test_implements_every_abstract_method() -> None:
    assert issubclass(SessionCachePersistence, BasePersistence)
    assert not getattr(SessionCachePersistence, "__abstractmethods__", set())


async def test_everything_stored_is_returned_at_start(url_ns: tuple[str, str]) -> None:
    p1, p2 = persistence(url_ns), persistence(url_ns)
    await p1.update_user_data(1, {"a": 1})
    await p1.update_user_data(-7, {(1, "t"): [1]})
    await p1.update_chat_data(2, {"b": 2})
    assert await p2.get_user_data() == {1: {"a": 1}, -7: {(1, "t"): [1]}}
    assert await p2.get_chat_data() == {2: {"b": 2}}
    lazy = persistence(url_ns, lazy=True)
    assert lazy.lazy and not p2.lazy
    assert await lazy.get_user_data() == {}
    assert await lazy.get_chat_data() == {}
    user: dict[Any, Any] = {}
    await lazy.refresh_user_data(1, user)
    chat: dict[Any, Any] = {}
    await lazy.refresh_chat_data(2, chat)
    assert (user, chat) == ({"a": 1}, {"b": 2})


async def test_loaded_data_is_the_merge_base(url_ns: tuple[str, str]) -> None:
    """A worker that loaded a chat at start and changed nothing writes nothing."""
    p1 = persistence(url_ns)
    await p1.update_chat_data(2, {"b": 2, "c": 3})
    p2 = persistence(url_ns)
    chats = await p2.get_chat_data()
    await p1.update_chat_data(2, {"b": 2, "c": 3, "d": 4})
    await p2.update_chat_data(2, chats[2])  # unchanged here: must not delete "d"
    assert await persistence(url_ns).get_chat_data() == {2: {"b": 2, "c": 3, "d": 4}}


def test_slots_as_ptb_declares_them() -> None:
    slots = SessionCachePersistence.__dict__["__slots__"]
    assert not set(slots) & set(BasePersistence.__slots__)
    p = SessionCachePersistence.from_url("memory://slots")
    for attr in slots:
        assert hasattr(p, attr), attr
    with pytest.raises(AttributeError):
        p.not_a_slot = 1  # type: ignore[attr-defined]


async def test_keys_and_values_round_trip(url_ns: tuple[str, str]) -> None:
    p1, p2 = persistence(url_ns), persistence(url_ns)
    data = {
        "name": "Ann",
        "o": "one-char key",
        "~x": 1,
        7: "int key",
        ("tuple", 1): [1, {"deep": True}],
        "when": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        "raw": b"\x00",
    }
    await p1.update_user_data(5, data)
    got: dict[Any, Any] = {}
    await p2.refresh_user_data(5, got)
    assert got == data


async def test_two_workers_changing_different_keys_both_win(url_ns: tuple[str, str]) -> None:
    p1, p2 = persistence(url_ns), persistence(url_ns)
    d1: dict[Any, Any] = {}
    d2: dict[Any, Any] = {}
    await p1.refresh_chat_data(9, d1)
    await p2.refresh_chat_data(9, d2)
    d1["a"] = 1
    d2["b"] = 2
    await p1.update_chat_data(9, d1)
    await p2.update_chat_data(9, d2)  # p2 never saw "a": it must not delete it
    await p1.refresh_chat_data(9, d1)
    assert d1 == {"a": 1, "b": 2}
    fresh: dict[Any, Any] = {}
    await persistence(url_ns).refresh_chat_data(9, fresh)
    assert fresh == {"a": 1, "b": 2}


async def test_refresh_keeps_unwritten_local_changes(url_ns: tuple[str, str]) -> None:
    p1, p2 = persistence(url_ns), persistence(url_ns)
    d1: dict[Any, Any] = {"x": 0, "y": 0, "gone": 1, "mine": 1}
    await p1.update_chat_data(3, dict(d1))
    d2: dict[Any, Any] = {}
    await p1.refresh_chat_data(3, d1)
    await p2.refresh_chat_data(3, d2)
    d1["x"] = "local, not yet written"
    del d1["mine"]
    d2.update(x="remote", y="remote")
    del d2["gone"]
    await p2.update_chat_data(3, d2)
    await p1.refresh_chat_data(3, d1)
    assert d1 == {"x": "local, not yet written", "y": "remote"}
    await p1.update_chat_data(3, d1)
    final: dict[Any, Any] = {}
    await persistence(url_ns).refresh_chat_data(3, final)
    assert final == {"x": "local, not yet written", "y": "remote"}


async def test_unchanged_data_costs_no_write(url_ns: tuple[str, str]) -> None:
    p = persistence(url_ns)
    await p.update_user_data(1, {"a": 1})
    key = p.keys.ptb_user(1)
    await p.client.hset(key, "zz", b"set behind our back")
    await p.update_user_data(1, {"a": 1})  # nothing changed here: nothing sent
    assert await p.client.hget(key, "zz") == b"set behind our back"


async def test_drop_and_empty(url_ns: tuple[str, str]) -> None:
    p = persistence(url_ns)
    await p.update_user_data(1, {"a": 1})
    await p.update_chat_data(2, {"b": 1})
    await p.drop_user_data(1)
    await p.drop_chat_data(2)
    assert await keys_of(p) == []
    await p.update_chat_data(2, {"b": 1})
    await p.update_chat_data(2, {})  # every key removed: the record goes
    assert await keys_of(p) == []


def bare_app(p: SessionCachePersistence) -> App:
    return (
        Application.builder()
        .token("4242:TEST")
        .request(LocalRequest())
        .get_updates_request(LocalRequest())
        .persistence(p)
        .updater(None)
        .build()
    )


async def stored_chats(url_ns: tuple[str, str]) -> dict[int, Any]:
    return await persistence(url_ns).get_chat_data()


@pytest.mark.parametrize("lazy", [False, True], ids=["loading", "lazy"])
async def test_migrating_a_never_loaded_chat_moves_its_data(
    url_ns: tuple[str, str], lazy: bool
) -> None:
    """PTB's Application.migrate_chat_data of a chat this process never loaded: the stored
    data arrives at the new chat exactly once, replacing what it held, and the old one is gone."""
    app_p = persistence(url_ns, lazy=lazy)
    app = bare_app(app_p)
    app_p.install(app)
    await app.initialize()
    writer = persistence(url_ns)
    await writer.update_chat_data(1, {"key": "value", "n": [1, 2]})  # after app's start
    await writer.update_chat_data(2, {"foo": "bar"})
    await writer.update_chat_data(3, {"other": 1})
    app.migrate_chat_data(old_chat_id=1, new_chat_id=2)
    await app.update_persistence()
    assert await stored_chats(url_ns) == {2: {"key": "value", "n": [1, 2]}, 3: {"other": 1}}
    assert app.chat_data[2] == {"key": "value", "n": [1, 2]} and 1 not in app.chat_data
    # The second migration message (sent in the new chat) finds nothing to move: one copy.
    app.migrate_chat_data(old_chat_id=1, new_chat_id=2)
    await app.update_persistence()
    assert await stored_chats(url_ns) == {2: {"key": "value", "n": [1, 2]}, 3: {"other": 1}}
    await app.shutdown()


async def test_a_migration_that_cannot_be_written_keeps_the_old_chat(
    url_ns: tuple[str, str],
) -> None:
    """The move is refused (an unstorable value in the migrating chat) and PTB's drop of the
    old chat runs in the same flush: the old chat's stored data stays, nothing is lost."""
    app_p = persistence(url_ns, lazy=True)
    app = bare_app(app_p)
    app_p.install(app)
    await app.initialize()
    await persistence(url_ns).update_chat_data(1, {"k": "v"})
    chat = app.chat_data[1]
    await app_p.refresh_chat_data(1, chat)
    chat["bad"] = object()
    app.migrate_chat_data(old_chat_id=1, new_chat_id=2)
    await app.update_persistence()  # the ValidationError goes to PTB's error handling
    assert await stored_chats(url_ns) == {1: {"k": "v"}}
    app.drop_chat_data(1)  # a later, real drop of the old chat is not skipped
    await app.update_persistence()
    assert await stored_chats(url_ns) == {}
    await app.shutdown()


async def test_the_migration_hook_by_class_switch(url_ns: tuple[str, str]) -> None:
    """Where an Application has no instance __dict__ (Python 3.13+), the hook switches the
    instance to a subclass that only adds it; the move is the same. Hooking twice is a no-op."""
    from sessioncache.integrations._ptb_hooks import hook_migrations

    app_p = persistence(url_ns, lazy=True)
    app = bare_app(app_p)
    base_class = type(app)
    hook_migrations(app, switch_class=True)
    app_p.install(app)
    app_p.install(app)
    assert type(app) is not base_class and isinstance(app, base_class)
    assert type(app).__name__ == base_class.__name__ and type(app).__slots__ == ()
    await app.initialize()
    await persistence(url_ns).update_chat_data(1, {"key": "value"})
    app.migrate_chat_data(old_chat_id=1, new_chat_id=2)
    await app.update_persistence()
    assert await stored_chats(url_ns) == {2: {"key": "value"}}
    with pytest.raises(ValidationError):
        persistence(url_ns).watch_migrations(app)  # not this application's persistence
    await app.shutdown()


@pytest.mark.parametrize("lazy", [False, True], ids=["loading", "lazy"])
async def test_migration_keeps_unwritten_changes_and_drops(
    url_ns: tuple[str, str], lazy: bool
) -> None:
    app_p = persistence(url_ns, lazy=lazy)
    await persistence(url_ns).update_chat_data(5, {"a": 1, "b": 2})
    app = bare_app(app_p)
    app_p.install(app)
    await app.initialize()
    chat = app.chat_data[5]  # the dict PTB hands to handlers of chat 5
    await app_p.refresh_chat_data(5, chat)
    chat["c"] = 3  # changed in this worker, not written yet
    del chat["a"]
    app.migrate_chat_data(old_chat_id=5, new_chat_id=6)
    await app.update_persistence()
    assert await stored_chats(url_ns) == {6: {"b": 2, "c": 3}}
    app.drop_chat_data(6)
    await app.update_persistence()
    assert await stored_chats(url_ns) == {}
    assert await keys_of(app_p) == []
    await app.shutdown()


async def test_migrate_chat_data_directly_and_concurrently(url_ns: tuple[str, str]) -> None:
    p = persistence(url_ns)
    await p.update_chat_data(-10, {"k": "v"})
    await p.update_chat_data(-20, {"old": "target data"})
    others = [persistence(url_ns, lazy=True, socket_timeout=10) for _ in range(8)]
    results = await asyncio.gather(*(o.migrate_chat_data(-10, -20) for o in others))
    assert results == [{"k": "v"}] * 8
    assert await stored_chats(url_ns) == {-20: {"k": "v"}}
    assert await p.migrate_chat_data(-30, -20) == {"k": "v"}  # nothing stored at -30
    with pytest.raises(ValidationError):
        await p.migrate_chat_data(-20, -20)
    with pytest.raises(ValidationError):
        await p.migrate_chat_data("-20", -21)  # type: ignore[arg-type]
    assert await stored_chats(url_ns) == {-20: {"k": "v"}}


async def test_a_retried_migration_is_not_applied_twice(redis_url: str) -> None:
    from sessioncache.scripts import registry
    from sessioncache.store import DEFAULT_RETRY_HORIZON_MS, op_args

    p = persistence((redis_url, unique_namespace()))
    old, new = p.keys.ptb_chat(1), p.keys.ptb_chat(2)
    await p.update_chat_data(1, {"k": "v"})
    args = op_args(str(DEFAULT_RETRY_HORIZON_MS), ["", "1", b"extra", b"\xc1\xc3"])  # True
    script = registry().ptb_migrate
    keys = [old, new, p.keys.op_log(new)]
    first = await script.run(p.client, keys, args)
    await p.update_chat_data(1, {"again": "later write to the old chat"})
    second = await script.run(p.client, keys, args)  # the client's retry of the first
    assert (first[0], second[0]) == (1, 2)
    assert await p.client.exists(old) == 1  # the later write is not moved by the retry
    assert await stored_chats((redis_url, p.keys.namespace)) == {
        1: {"again": "later write to the old chat"},
        2: {"k": "v", "extra": True},
    }
    assert await p._writer.migrate(old, new, [], [], ttl="") is not None
    await drop_namespace(p.client, p.keys.namespace)


@pytest.mark.slow
@pytest.mark.parametrize("lazy", [False, True], ids=["loading", "lazy"])
async def test_two_processes_racing_one_migration_leave_one_copy(
    redis_url: str, lazy: bool
) -> None:
    namespace = unique_namespace()
    p = SessionCachePersistence.from_url(redis_url, namespace=namespace)
    for round_ in range(5):
        old, new = -(100 + round_), -(1000 + round_)
        await p.update_chat_data(old, {"round": round_, "items": list(range(round_))})
        await p.update_chat_data(new, {"stale": True})
        await asyncio.to_thread(run_migrate_fleet, redis_url, namespace, 2, old, new, lazy)
        assert await p.client.exists(p.keys.ptb_chat(old)) == 0
        chats = await SessionCachePersistence(p.client, namespace=namespace).get_chat_data()
        assert chats[new] == {"round": round_, "items": list(range(round_))}
    await drop_namespace(p.client, namespace)
    await p.flush()


async def test_bot_data(url_ns: tuple[str, str]) -> None:
    p1, p2 = persistence(url_ns), persistence(url_ns)
    assert await p1.get_bot_data() == {}
    bot1 = await p1.get_bot_data()
    bot1["config"] = {"lang": "en"}
    await p1.update_bot_data(bot1)
    bot2 = await p2.get_bot_data()
    assert bot2 == {"config": {"lang": "en"}}
    bot2["n"] = 1
    await p2.update_bot_data(bot2)
    await p1.refresh_bot_data(bot1)
    assert bot1 == {"config": {"lang": "en"}, "n": 1}


async def test_bad_data_is_refused_and_changes_nothing(url_ns: tuple[str, str]) -> None:
    p = persistence(url_ns)
    await p.update_user_data(1, {"keep": 1})
    unencodable_key = {"keep": 2, frozenset({1}): "x"}
    for bad in ({"keep": 2, "x": object()}, unencodable_key, {"": 1}):
        with pytest.raises(ValidationError):
            await p.update_user_data(1, bad)
    with pytest.raises(ValidationError):
        await p.update_user_data(True, {"a": 1})  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        await p.update_chat_data("5", {"a": 1})  # type: ignore[arg-type]
    check: dict[Any, Any] = {}
    await persistence(url_ns).refresh_user_data(1, check)
    assert check == {"keep": 1}
    assert len(await keys_of(p)) == 1


async def test_refresh_keeps_a_local_value_that_cannot_be_stored(url_ns: tuple[str, str]) -> None:
    p = persistence(url_ns)
    marker = object()
    d: dict[Any, Any] = {"obj": marker, frozenset({1}): "unstorable key"}
    await p.refresh_user_data(1, d)
    assert d["obj"] is marker and d[frozenset({1})] == "unstorable key"


async def test_callback_data(url_ns: tuple[str, str]) -> None:
    p1, p2 = persistence(url_ns), persistence(url_ns)
    assert await p1.get_callback_data() is None
    data = ([("kb1", 1700000000.5, {"b1": "x", "b2": {"n": 1}})], {"query1": "kb1"})
    await p1.update_callback_data(data)
    assert await p2.get_callback_data() == data
    await p1.update_callback_data(([], {}))
    assert await persistence(url_ns).get_callback_data() is None


async def test_conversations(url_ns: tuple[str, str]) -> None:
    p = persistence(url_ns)
    assert await p.get_conversations("conv") == {}
    await p.update_conversation("conv", (1, 2), 3)
    await p.update_conversation("conv", (1,), "state")
    await p.update_conversation("other:{x}", (1, 2), 4)
    assert await p.get_conversations("conv") == {(1, 2): 3, (1,): "state"}
    assert await p.conversation_state("conv", (1, 2)) == 3
    await p.update_conversation("conv", (1, 2), None)
    assert await p.get_conversations("conv") == {(1,): "state"}
    assert await p.get_conversations("other:{x}") == {(1, 2): 4}


async def test_an_unchanged_conversation_state_is_not_written_again(
    url_ns: tuple[str, str],
) -> None:
    p = persistence(url_ns)
    assert await p.get_conversations("conv") == {}
    await p.update_conversation("conv", (1, 2), 3)
    key = p.keys.ptb_conversation("conv")
    log = p.keys.op_log(key)
    ops = await p.client.zcard(log)  # every write records its op id here
    await p.update_conversation("conv", (1, 2), 3)
    await p.update_conversation("conv", (9, 9), None)  # ending a conversation that has none
    assert await p.client.zcard(log) == ops
    await p.update_conversation("conv", (1, 2), 4)
    assert await p.client.zcard(log) != ops
    other = persistence(url_ns)  # a worker that loaded state 4 and is handed 4 again
    assert await other.get_conversations("conv") == {(1, 2): 4}
    ops = await p.client.zcard(log)
    await other.update_conversation("conv", (1, 2), 4)
    assert await p.client.zcard(log) == ops


async def test_data_ttl(url_ns: tuple[str, str]) -> None:
    p = persistence(url_ns, data_ttl=dt.timedelta(hours=1))
    await p.update_user_data(1, {"a": 1})
    await p.update_bot_data({"b": 1})
    assert 3_590_000 < await p.client.pttl(p.keys.ptb_user(1)) <= 3_600_000
    assert await p.client.pttl(p.keys.ptb_bot()) == -1


async def test_settings_are_validated(memory_url: str) -> None:
    with pytest.raises(ValidationError):
        SessionCachePersistence.from_url(memory_url, data_ttl=-5)
    with pytest.raises(ValidationError):
        SessionCachePersistence.from_url(memory_url, namespace="bad namespace")
    p = SessionCachePersistence.from_url(
        memory_url, store_data=PersistenceInput(callback_data=False), update_interval=3
    )
    assert p.update_interval == 3 and not p.store_data.callback_data
    await p.flush()


# -- a whole Application, no network ----------------------------------------------------------


CHOOSING, TYPING = range(2)


App = Application[Any, Any, Any, Any, Any, Any]


def conversation_app(url: str, namespace: str) -> tuple[App, LocalRequest]:
    p = SessionCachePersistence.from_url(url, namespace=namespace)
    request = LocalRequest()
    app = (
        Application.builder()
        .token("4242:TEST")
        .request(request)
        .get_updates_request(LocalRequest())
        .persistence(p)
        .updater(None)
        .build()
    )

    async def start(update: Any, context: ContextTypes.DEFAULT_TYPE) -> int:
        context.user_data["started"] = True
        await update.message.reply_text("what is your name?")
        return CHOOSING

    async def name(update: Any, context: ContextTypes.DEFAULT_TYPE) -> int:
        context.user_data["name"] = update.message.text
        context.chat_data["names"] = [*context.chat_data.get("names", []), update.message.text]
        return TYPING

    async def age(update: Any, context: ContextTypes.DEFAULT_TYPE) -> int:
        context.user_data["age"] = int(update.message.text)
        return ConversationHandler.END

    app.add_handler(
        ConversationHandler(
            entry_points=[CommandHandler("start", start)],
            states={
                CHOOSING: [MessageHandler(filters.TEXT & ~filters.COMMAND, name)],
                TYPING: [MessageHandler(filters.TEXT & ~filters.COMMAND, age)],
            },
            fallbacks=[],
            name="signup",
            persistent=True,
        )
    )
    p.install(app)
    return app, request


async def test_a_conversation_moves_between_workers(url_ns: tuple[str, str]) -> None:
    """Each message of one conversation is handled by a different Application (worker)."""
    url, namespace = url_ns
    apps = [conversation_app(url, namespace) for _ in range(3)]
    for app, _ in apps:
        await app.initialize()
    user = 77
    steps = ["/start", "Ann", "31"]
    for i, (text, (app, _)) in enumerate(zip(steps, apps, strict=True)):
        await app.process_update(text_update(i + 1, user, user, text, app.bot))
    p = SessionCachePersistence.from_url(url, namespace=namespace)  # a reader of its own
    assert await p.get_conversations("signup") == {}
    user_data: dict[Any, Any] = {}
    await p.refresh_user_data(user, user_data)
    assert user_data == {"started": True, "name": "Ann", "age": 31}
    # A second round starting on the last worker: its in-memory state is refreshed too.
    for i, (text, (app, _)) in enumerate(zip(steps, reversed(apps), strict=True)):
        await app.process_update(text_update(10 + i, user, user, text, app.bot))
    chat: dict[Any, Any] = {}
    await p.refresh_chat_data(user, chat)
    assert chat == {"names": ["Ann", "Ann"]}
    # /start was answered by the first worker in round one and by the last in round two.
    assert [m["text"] for m in apps[0][1].sent] == ["what is your name?"]
    assert [m["text"] for m in apps[2][1].sent] == ["what is your name?"]
    assert apps[1][1].sent == []
    for app, _ in apps:
        await app.shutdown()


async def test_interval_writes_without_install(url_ns: tuple[str, str]) -> None:
    """Without install(), PTB's own update_persistence() tick writes the data."""
    url, namespace = url_ns
    p = SessionCachePersistence.from_url(url, namespace=namespace)
    app = (
        Application.builder()
        .token("4242:TEST")
        .request(LocalRequest())
        .get_updates_request(LocalRequest())
        .persistence(p)
        .updater(None)
        .build()
    )

    async def remember(update: Any, context: ContextTypes.DEFAULT_TYPE) -> None:
        context.chat_data["text"] = update.message.text

    app.add_handler(MessageHandler(filters.TEXT, remember))
    await app.initialize()
    await app.process_update(text_update(1, 5, 5, "hello", app.bot))
    reader = SessionCachePersistence.from_url(url, namespace=namespace)
    before: dict[Any, Any] = {}
    await reader.refresh_chat_data(5, before)
    await app.update_persistence()
    after: dict[Any, Any] = {}
    await reader.refresh_chat_data(5, after)
    assert (before, after) == ({}, {"text": "hello"})
    await app.shutdown()
    await reader.flush()


# -- several OS processes ---------------------------------------------------------------------


@pytest.mark.slow
async def test_eight_processes_write_one_chat_and_nothing_is_lost(redis_url: str) -> None:
    namespace = unique_namespace()
    workers, per_worker = 8, 25
    await asyncio.to_thread(run_chat_fleet, redis_url, namespace, workers, per_worker)
    p = SessionCachePersistence.from_url(redis_url, namespace=namespace)
    chat: dict[Any, Any] = {}
    await p.refresh_chat_data(CHAT, chat)
    assert chat == {f"w{w}-{i}": i for w in range(workers) for i in range(per_worker)}
    for w in range(workers):
        user: dict[Any, Any] = {}
        await p.refresh_user_data(1000 + w, user)
        assert user == {"last": f"w{w}:{per_worker - 1}"}
    await drop_namespace(p.client, namespace)
    await p.flush()


@pytest.mark.slow
@pytest.mark.parametrize("lazy", [False, True], ids=["loading", "lazy"])
async def test_workers_see_each_others_writes_on_their_next_update(
    redis_url: str, lazy: bool
) -> None:
    """Three processes take turns on one chat, user and bot: each turn's handler reads what the
    previous turns (other processes) wrote, so any stale read shows up in the exact log."""
    namespace = unique_namespace()
    workers, rounds = 3, 12
    await asyncio.to_thread(run_alternating_fleet, redis_url, namespace, workers, rounds, lazy)
    p = SessionCachePersistence.from_url(redis_url, namespace=namespace)
    assert await p.get_chat_data() == {CHAT: {"seen": [[r % workers, r] for r in range(rounds)]}}
    assert await p.get_user_data() == {77: {"n": rounds}}
    assert await p.get_bot_data() == {"rounds": rounds}
    await drop_namespace(p.client, namespace)
    await p.flush()
