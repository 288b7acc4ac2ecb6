"""pytest plugin: python-telegram-bot's own persistence tests run on SessionCachePersistence.

Loaded by tests/test_peer_suites.py into a pytest run inside PTB's source distribution
(``-p ptb_peer_plugin``). It imports nothing from our tests package (PTB's is also ``tests``).
PTB's test_basepersistence.py builds every application on ``TrackingPersistence``, an in-memory
stand-in that counts calls; here that name is replaced by ``RedisTrackingPersistence``: our
persistence on a real Redis (SESSIONCACHE_PEER_URL), a fresh namespace per instance, counting the
same calls and showing what is *stored in Redis* through the attributes the tests read
(``chat_data``, ``user_data``, ``bot_data``, ``conversations``, ``callback_data``). The
``pickle_persistence`` fixture of test_picklepersistence.py is replaced by our persistence too.
SESSIONCACHE_PEER_LAZY=1 builds them with ``lazy=True``.
"""

from __future__ import annotations

import collections
import itertools
import os
import uuid
from typing import Any

import pytest
import redis

from sessioncache.codec import DEFAULT_LIMITS, decode_value, encode_value
from sessioncache.integrations._records import client_from_url, decode_key, encode_key
from sessioncache.integrations.telegram import SessionCachePersistence

URL = os.environ.get("SESSIONCACHE_PEER_URL", "")
LAZY = os.environ.get("SESSIONCACHE_PEER_LAZY") == "1"
RUN = f"peer{uuid.uuid4().hex[:8]}"
_ids = itertools.count()


def _sync() -> redis.Redis:
    return redis.Redis.from_url(URL, socket_timeout=10)


def _decode(flat: dict[bytes, bytes]) -> dict[Any, Any]:
    return {decode_key(f): decode_value(v) for f, v in flat.items() if len(f) > 1}


def _encode(data: dict[Any, Any]) -> dict[bytes, bytes]:
    limits = DEFAULT_LIMITS
    return {encode_key(k, limits): encode_value(v, limits, "value") for k, v in data.items()}


class _States(dict[Any, Any]):
    """One conversation's states as read from Redis; setting or popping a state writes it."""

    def __init__(self, owner: RedisTrackingPersistence, name: str) -> None:
        super().__init__()
        self.owner, self.name = owner, name
        self.key = owner.keys.ptb_conversation(name)

    def __setitem__(self, key: Any, state: Any) -> None:
        field = encode_key(list(key), DEFAULT_LIMITS)
        self.owner.redis.hset(self.key, field, encode_value(state, DEFAULT_LIMITS, "state"))
        self.owner.conversation_names.add(self.name)
        super().__setitem__(key, state)

    def pop(self, key: Any, *default: Any) -> Any:
        self.owner.redis.hdel(self.key, encode_key(list(key), DEFAULT_LIMITS))
        return super().pop(key, *default)


class _Conversations(dict[str, _States]):
    """Every conversation's states; a name not stored yet gives an empty, writable _States."""

    def __init__(self, owner: RedisTrackingPersistence) -> None:
        super().__init__()
        self.owner = owner

    def __missing__(self, name: str) -> _States:
        return _States(self.owner, name)


class RedisTrackingPersistence(SessionCachePersistence):
    """Our persistence, counting calls like PTB's TrackingPersistence; its data attributes are
    read from Redis (synchronously, on a second client) every time a test looks at them."""

    CALLBACK_DATA: Any = None  # set from PTB's TrackingPersistence when the plugin patches it

    def __init__(
        self,
        store_data: Any = None,
        update_interval: float = 60,
        fill_data: bool = False,
    ) -> None:
        super().__init__(
            client_from_url(URL, {"socket_timeout": 10}),
            namespace=f"{RUN}x{next(_ids)}",
            store_data=store_data,
            update_interval=update_interval,
            lazy=LAZY,
        )
        self.redis = _sync()
        self.conversation_names: set[str] = set()
        self.reset_counters()
        self.ended: dict[str, set[Any]] = collections.defaultdict(set)
        if fill_data:
            self.fill()

    def reset_counters(self) -> None:
        self.updated_chat_ids: collections.Counter[int] = collections.Counter()
        self.updated_user_ids: collections.Counter[int] = collections.Counter()
        self.refreshed_chat_ids: collections.Counter[int] = collections.Counter()
        self.refreshed_user_ids: collections.Counter[int] = collections.Counter()
        self.dropped_chat_ids: collections.Counter[int] = collections.Counter()
        self.dropped_user_ids: collections.Counter[int] = collections.Counter()
        self.updated_conversations: Any = collections.defaultdict(collections.Counter)
        self.updated_bot_data = False
        self.refreshed_bot_data = False
        self.updated_callback_data = False
        self.flushed = False

    # -- what Redis holds, as the attributes PTB's tests read ------------------------------

    def _records(self, pattern: str) -> dict[int, dict[Any, Any]]:
        out = {}
        for key in self.redis.scan_iter(match=pattern, count=1000):
            out[self.keys.ptb_id_of_key(key)] = _decode(self.redis.hgetall(key))
        return out

    def _replace(self, key: str, data: dict[Any, Any]) -> None:
        self.redis.delete(key)
        if data:
            self.redis.hset(key, mapping=_encode(data))  # type: ignore[arg-type]

    @property
    def chat_data(self) -> dict[int, dict[Any, Any]]:
        return self._records(self.keys.ptb_chats_pattern())

    @chat_data.setter
    def chat_data(self, value: dict[int, dict[Any, Any]]) -> None:
        for key in self.redis.scan_iter(match=self.keys.ptb_chats_pattern()):
            self.redis.delete(key)
        for chat_id, data in value.items():
            self._replace(self.keys.ptb_chat(chat_id), data)

    @property
    def user_data(self) -> dict[int, dict[Any, Any]]:
        return self._records(self.keys.ptb_users_pattern())

    @user_data.setter
    def user_data(self, value: dict[int, dict[Any, Any]]) -> None:
        for key in self.redis.scan_iter(match=self.keys.ptb_users_pattern()):
            self.redis.delete(key)
        for user_id, data in value.items():
            self._replace(self.keys.ptb_user(user_id), data)

    @property
    def bot_data(self) -> dict[Any, Any]:
        return _decode(self.redis.hgetall(self.keys.ptb_bot()))

    @bot_data.setter
    def bot_data(self, value: dict[Any, Any]) -> None:
        self._replace(self.keys.ptb_bot(), value)

    @property
    def callback_data(self) -> Any:
        keyboards = _decode(self.redis.hgetall(self.keys.ptb_callback_keyboards()))
        queries = _decode(self.redis.hgetall(self.keys.ptb_callback_queries()))
        return [(u, t, dict(d)) for u, (t, d) in keyboards.items()], queries

    @callback_data.setter
    def callback_data(self, value: Any) -> None:
        entries, queries = value
        keyboards = {uuid_: (t, d) for uuid_, t, d in entries}
        self._replace(self.keys.ptb_callback_keyboards(), keyboards)
        self._replace(self.keys.ptb_callback_queries(), dict(queries))

    @property
    def conversations(self) -> dict[str, dict[Any, Any]]:
        """Stored states; a conversation ended through update_conversation(None) shows None,
        as TrackingPersistence stores it (Redis holds no entry for it). Tests set and pop
        states through it to prepare what is stored."""
        out = _Conversations(self)
        for name in self.conversation_names | set(self.ended):
            states = _States(self, name)
            dict.update(states, dict.fromkeys(self.ended[name]))
            dict.update(states, _decode(self.redis.hgetall(self.keys.ptb_conversation(name))))
            if states:
                out[name] = states
        return out

    @conversations.setter
    def conversations(self, value: dict[str, dict[Any, Any]]) -> None:
        self.ended.clear()
        for name in self.conversation_names:
            self.redis.delete(self.keys.ptb_conversation(name))
        self.conversation_names = set(value)
        for name, states in value.items():
            self._replace(self.keys.ptb_conversation(name), states)

    def fill(self) -> None:
        self.chat_data = {1: {"key": "value"}, 2: {"foo": "bar"}}
        self.user_data = {1: {"key": "value"}, 2: {"foo": "bar"}}
        self.bot_data = {"key": "value"}
        # HandlerStates.STATE_n are the ints n.
        self.conversations = {"conv_1": {(1, 1): 1, (2, 2): 2}, "conv_2": {(3, 3): 3, (4, 4): 4}}
        self.callback_data = self.CALLBACK_DATA

    def reset_tracking(self) -> None:
        self.reset_counters()
        self.chat_data = {}
        self.user_data = {}
        self.conversations = {}
        self.bot_data = {}
        self.callback_data = ([], {})
        self.ended.clear()

    # -- the persistence, counted ------------------------------------------------------------

    async def update_bot_data(self, data: Any) -> None:
        self.updated_bot_data = True
        await super().update_bot_data(data)

    async def update_chat_data(self, chat_id: int, data: Any) -> None:
        self.updated_chat_ids[chat_id] += 1
        await super().update_chat_data(chat_id, data)

    async def update_user_data(self, user_id: int, data: Any) -> None:
        self.updated_user_ids[user_id] += 1
        await super().update_user_data(user_id, data)

    async def update_conversation(self, name: str, key: Any, new_state: Any) -> None:
        self.updated_conversations[name][key] += 1
        self.conversation_names.add(name)
        if new_state is None:
            self.ended[name].add(key)
        else:
            self.ended[name].discard(key)
        await super().update_conversation(name, key, new_state)

    async def update_callback_data(self, data: Any) -> None:
        self.updated_callback_data = True
        await super().update_callback_data(data)

    async def get_callback_data(self) -> Any:
        stored = await super().get_callback_data()
        return ([], {}) if stored is None else stored  # TrackingPersistence's empty value

    async def drop_chat_data(self, chat_id: int) -> None:
        self.dropped_chat_ids[chat_id] += 1
        await super().drop_chat_data(chat_id)

    async def drop_user_data(self, user_id: int) -> None:
        self.dropped_user_ids[user_id] += 1
        await super().drop_user_data(user_id)

    async def refresh_user_data(self, user_id: int, user_data: Any) -> None:
        self.refreshed_user_ids[user_id] += 1
        await super().refresh_user_data(user_id, user_data)
        user_data["refreshed"] = True

    async def refresh_chat_data(self, chat_id: int, chat_data: Any) -> None:
        self.refreshed_chat_ids[chat_id] += 1
        await super().refresh_chat_data(chat_id, chat_data)
        chat_data["refreshed"] = True

    async def refresh_bot_data(self, bot_data: Any) -> None:
        self.refreshed_bot_data = True
        await super().refresh_bot_data(bot_data)
        bot_data["refreshed"] = True

    async def flush(self) -> None:
        self.flushed = True
        await super().flush()


def _build_papp_with_hook(original: Any) -> Any:
    def build_papp(*args: Any, **kwargs: Any) -> Any:
        app = original(*args, **kwargs)
        app.persistence.watch_migrations(app)  # what install() does for migrations
        return app

    return build_papp


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = getattr(item, "module", None)
        if module is None or module.__name__ != "tests.ext.test_basepersistence":
            continue
        if getattr(module, "TrackingPersistence", None) is not RedisTrackingPersistence:
            RedisTrackingPersistence.CALLBACK_DATA = module.TrackingPersistence.CALLBACK_DATA
            module.TrackingPersistence = RedisTrackingPersistence
            module.build_papp = _build_papp_with_hook(module.build_papp)


@pytest.hookimpl(tryfirst=True)
def pytest_fixture_setup(fixturedef: Any, request: Any) -> Any:
    if fixturedef.argname != "pickle_persistence":
        return None
    value = SessionCachePersistence(
        client_from_url(URL, {"socket_timeout": 10}), namespace=f"{RUN}x{next(_ids)}", lazy=LAZY
    )
    fixturedef.cached_result = (value, fixturedef.cache_key(request), None)
    return value


def pytest_sessionfinish() -> None:
    if not URL:
        return
    with _sync() as client:
        for key in client.scan_iter(match=f"{RUN}x*", count=1000):
            client.delete(key)


def pytest_configure(config: pytest.Config) -> None:
    # PTB's suite marks timing-sensitive cases flaky (the flaky plugin reruns them); without
    # the plugin each runs once, which is stricter.
    config.addinivalue_line("markers", "flaky: rerun by the flaky plugin in PTB's own CI")
