"""python-telegram-bot persistence on sessioncache, shared by several worker processes.

Switch by passing it to the builder::

    persistence = SessionCachePersistence.from_url("redis://localhost:6379/0")
    app = Application.builder().token(TOKEN).persistence(persistence).build()

PTB's own persistence classes load everything into one process at start and write it back on an
interval, so two workers overwrite each other. Here nothing is loaded up front: user and chat data
are read from Redis when an update uses them (``refresh_*``, which PTB calls before every
handler), and writes send only the keys that changed since the last read, merged into the stored
hash by one Lua script per item. Two workers changing different keys of one chat both keep their
change; a key changed by both ends with the later write.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from redis.exceptions import RedisError
from telegram import Update
from telegram.ext import (
    Application,
    BasePersistence,
    ContextTypes,
    ConversationHandler,
    PersistenceInput,
    TypeHandler,
)
from telegram.ext._utils.trackingdict import TrackingDict

from ..codec import DEFAULT_LIMITS, Limits, data_field, decode_value, encode_value
from ..errors import BackendUnavailable, IntegrityError, ValidationError
from ..keys import KeySchema
from ._records import RecordWriter, client_from_url, pairs_of, ttl_ms

__all__ = ["SessionCachePersistence"]

_TAG = b"\xc1"
_UNSTORABLE = _TAG + _TAG  # never an encoded value: msgpack never emits 0xC1
_FIRST_GROUP = -(2**31)
_LAST_GROUP = 2**31 - 1

Encoded = dict[bytes, bytes]


def _freeze(value: Any) -> Any:
    """msgpack hands lists back; keys (and conversation keys) must be hashable tuples."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def encode_key(key: Any, limits: Limits) -> bytes:
    """A dict key as a hash field: str keys as the core codec's data fields, others msgpack'd."""
    if isinstance(key, str):
        return data_field(key, limits).encode("utf-8")
    raw = encode_value(key, limits, "key")
    if raw[:1] != _TAG:  # pragma: no cover - encode_value tags every non-str value
        raise ValidationError(f"cannot use {key!r} as a key")
    return raw


def decode_key(raw: bytes) -> Any:
    if raw[:1] == _TAG:
        return _freeze(decode_value(raw))
    text = raw.decode("utf-8")
    return text[1:] if text[0] == "~" else text


def _remote(flat: Any) -> Encoded:
    """A stored record without its own one-character fields (op ids)."""
    return {bytes(f): bytes(v) for f, v in pairs_of(flat) if len(f) > 1}


class SessionCachePersistence(BasePersistence[Any, Any, Any]):
    """BasePersistence for user, chat and bot data, callback data and conversations.

    :param update_interval: how often PTB hands changed data to the persistence (seconds); each
        write is immediate and atomic, so a short interval is cheap (unchanged data costs no round
        trip). ``install(app)`` additionally writes every update's changes as soon as it is done.
    :param data_ttl: seconds user and chat data live after their last write (None: forever).
    """

    def __init__(
        self,
        client: Any,
        *,
        namespace: str = "sc",
        store_data: PersistenceInput | None = None,
        update_interval: float = 0.5,
        data_ttl: Any = None,
        limits: Limits = DEFAULT_LIMITS,
        owns_client: bool = True,
    ) -> None:
        super().__init__(store_data=store_data, update_interval=update_interval)
        self.client = client
        self.keys = KeySchema(namespace)
        self.limits = limits
        data_ttl_ms = ttl_ms(data_ttl, "data_ttl")
        # Without a TTL a merge leaves the expiry alone rather than paying for a PERSIST.
        self._data_ttl = str(data_ttl_ms) if data_ttl_ms else ""
        self._writer = RecordWriter(client, limits, self.keys)
        self._owns_client = owns_client
        # What Redis held for each record when this process last read or wrote it: the base of
        # the three-way merge that keeps other workers' changes and this worker's pending ones.
        self._base: dict[str, Encoded] = {}

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str = "sc",
        store_data: PersistenceInput | None = None,
        update_interval: float = 0.5,
        data_ttl: Any = None,
        limits: Limits = DEFAULT_LIMITS,
        **connection_options: Any,
    ) -> SessionCachePersistence:
        """Build on a new client for the URL; connection options are sessioncache's
        RedisSettings (socket_timeout, retries, ...)."""
        KeySchema(namespace), ttl_ms(data_ttl, "data_ttl")  # refuse bad settings before connecting
        return cls(
            client_from_url(url, connection_options),
            namespace=namespace,
            store_data=store_data,
            update_interval=update_interval,
            data_ttl=data_ttl,
            limits=limits,
        )

    # -- records: encoding, three-way merge, diff writes ----------------------------------

    def _encode(self, data: Mapping[Any, Any], what: str) -> tuple[Encoded, dict[bytes, Any]]:
        if not isinstance(data, Mapping):
            raise ValidationError(f"{what} must be a mapping, not {type(data).__name__}")
        if len(data) > self.limits.max_fields:
            raise ValidationError(
                f"{what} has {len(data)} keys; the limit is {self.limits.max_fields}"
            )
        encoded: Encoded = {}
        originals: dict[bytes, Any] = {}
        for key, value in data.items():
            field = encode_key(key, self.limits)
            encoded[field] = encode_value(value, self.limits, f"{what}[{key!r}]"[:120])
            originals[field] = key
        return encoded, originals

    async def _hgetall(self, key: str) -> Encoded:
        try:
            return _remote(await self.client.hgetall(key))
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable reading {key!r}: {exc}") from exc

    async def _load(self, key: str) -> dict[Any, Any]:
        remote = await self._hgetall(key)
        self._base[key] = remote
        return {decode_key(f): decode_value(v) for f, v in remote.items()}

    async def _refresh(self, key: str, target: MutableMapping[Any, Any], what: str) -> None:
        """Bring target up to date with Redis, keeping this worker's not yet written changes."""
        remote = await self._hgetall(key)
        base = self._base.get(key, {})
        local: Encoded = {}
        originals: dict[bytes, Any] = {}
        for k, value in target.items():
            try:
                field = encode_key(k, self.limits)
            except ValidationError:
                continue  # a key that can never be stored stays as it is, only in this worker
            originals[field] = k
            try:
                local[field] = encode_value(value, self.limits, what)
            except ValidationError:
                local[field] = _UNSTORABLE  # counts as a local change, so it is kept
        for field in set(remote) | set(local) | set(base):
            if local.get(field) != base.get(field):
                continue  # changed here and not written yet: the local value wins
            if field in remote:
                if remote[field] != local.get(field):
                    target[originals.get(field, decode_key(field))] = decode_value(remote[field])
            elif field in originals:
                del target[originals[field]]
        self._base[key] = remote

    async def _write(self, key: str, data: Mapping[Any, Any], what: str, ttl: str) -> None:
        """Send the keys that differ from the last known stored state, in one atomic script."""
        local, _ = self._encode(data, what)
        base = self._base.get(key, {})
        pairs: list[bytes | str] = []
        for field, value in local.items():
            if base.get(field) != value:
                pairs += [field, value]
        deletes = [f for f in base if f not in local]
        if not pairs and not deletes:
            return
        await self._writer.merge(key, pairs, deletes, ttl=ttl, full=False)
        new_base = dict(base)
        for f in deletes:
            new_base.pop(f, None)
        new_base.update(zip(pairs[0::2], pairs[1::2], strict=True))  # type: ignore[arg-type]
        self._base[key] = new_base

    async def _drop(self, key: str) -> None:
        self._base.pop(key, None)
        try:
            await self.client.delete(key)
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable deleting {key!r}: {exc}") from exc

    # -- user, chat and bot data ----------------------------------------------------------

    async def get_user_data(self) -> dict[int, Any]:
        """Nothing up front: each user's data is read when an update uses it."""
        return {}

    async def get_chat_data(self) -> dict[int, Any]:
        """Nothing up front: each chat's data is read when an update uses it."""
        return {}

    async def get_bot_data(self) -> Any:
        return await self._load(self.keys.ptb_bot())

    async def refresh_user_data(self, user_id: int, user_data: Any) -> None:
        await self._refresh(self.keys.ptb_user(user_id), user_data, "user_data")

    async def refresh_chat_data(self, chat_id: int, chat_data: Any) -> None:
        await self._refresh(self.keys.ptb_chat(chat_id), chat_data, "chat_data")

    async def refresh_bot_data(self, bot_data: Any) -> None:
        await self._refresh(self.keys.ptb_bot(), bot_data, "bot_data")

    async def update_user_data(self, user_id: int, data: Any) -> None:
        await self._write(self.keys.ptb_user(user_id), data, "user_data", self._data_ttl)

    async def update_chat_data(self, chat_id: int, data: Any) -> None:
        await self._write(self.keys.ptb_chat(chat_id), data, "chat_data", self._data_ttl)

    async def update_bot_data(self, data: Any) -> None:
        await self._write(self.keys.ptb_bot(), data, "bot_data", "")

    async def drop_user_data(self, user_id: int) -> None:
        await self._drop(self.keys.ptb_user(user_id))

    async def drop_chat_data(self, chat_id: int) -> None:
        await self._drop(self.keys.ptb_chat(chat_id))

    # -- callback data --------------------------------------------------------------------

    async def get_callback_data(self) -> Any:
        """Keyboards and callback queries stored by every worker so far, or None."""
        keyboards = await self._load(self.keys.ptb_callback_keyboards())
        queries = await self._load(self.keys.ptb_callback_queries())
        if not keyboards and not queries:
            return None
        entries = []
        for uuid, stored in keyboards.items():
            if not isinstance(stored, list) or len(stored) != 2:
                raise IntegrityError(f"callback keyboard {uuid!r} is not a (time, data) pair")
            entries.append((uuid, stored[0], dict(stored[1])))
        return entries, dict(queries)

    async def update_callback_data(self, data: Any) -> None:
        entries, queries = data
        keyboards = {uuid: (access_time, buttons) for uuid, access_time, buttons in entries}
        await self._write(self.keys.ptb_callback_keyboards(), keyboards, "callback data", "")
        await self._write(self.keys.ptb_callback_queries(), queries, "callback queries", "")

    # -- conversations --------------------------------------------------------------------

    async def get_conversations(self, name: str) -> dict[Any, object]:
        key = self.keys.ptb_conversation(name)
        remote = await self._hgetall(key)
        return {decode_key(f): decode_value(v) for f, v in remote.items()}

    async def update_conversation(self, name: str, key: Any, new_state: object | None) -> None:
        redis_key = self.keys.ptb_conversation(name)
        field = encode_key(list(key), self.limits)
        if new_state is None:
            await self._writer.merge(redis_key, [], [field], ttl="", full=False)
        else:
            value = encode_value(new_state, self.limits, f"state of conversation {name!r}")
            await self._writer.merge(redis_key, [field, value], ttl="", full=False)

    async def conversation_state(self, name: str, key: Any) -> object | None:
        """The stored state of one conversation key (None if it has none)."""
        redis_key = self.keys.ptb_conversation(name)
        try:
            raw = await self.client.hget(redis_key, encode_key(list(key), self.limits))
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable reading {redis_key!r}: {exc}") from exc
        return None if raw is None else decode_value(raw)

    # -- fleet helpers --------------------------------------------------------------------

    def install(self, application: Application[Any, Any, Any, Any, Any, Any]) -> None:
        """Make an application fleet-aware beyond what PTB's persistence hooks allow:

        * before any other handler, the state of every persistent ConversationHandler for the
          update's key is read from Redis (PTB reads conversations only once, at start);
        * after the last handler, the update's user, chat and bot data and conversation states
          are written at once instead of at the next ``update_interval`` tick.
        """
        application.add_handler(TypeHandler(Update, self._before_update), group=_FIRST_GROUP)
        application.add_handler(TypeHandler(Update, self._after_update), group=_LAST_GROUP)

    async def _before_update(
        self, update: Update, context: ContextTypes.DEFAULT_TYPE
    ) -> None:
        for group in context.application.handlers.values():
            for handler in group:
                if isinstance(handler, ConversationHandler) and handler.persistent:
                    await self._refresh_conversation(handler, update)

    async def _refresh_conversation(
        self, handler: ConversationHandler[Any], update: Update
    ) -> None:
        try:
            key = handler._get_key(update)
        except RuntimeError:
            return  # the update carries no chat/user/message this conversation is keyed by
        conversations = handler._conversations
        if not isinstance(conversations, TrackingDict):
            return  # the application has not loaded its persistence yet
        if key in conversations._write_access_keys or handler.name is None:
            return  # changed here and not written yet: the local state wins
        state = await self.conversation_state(handler.name, key)
        if state is None:
            conversations.data.pop(key, None)
        else:
            conversations.update_no_track({key: state})

    async def _after_update(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        application = context.application
        chat, user = update.effective_chat, update.effective_user
        application.mark_data_for_update_persistence(
            chat_ids=chat.id if chat else None, user_ids=user.id if user else None
        )
        await application.update_persistence()

    async def flush(self) -> None:
        """Every write already reached Redis; close the client if this persistence owns it."""
        if self._owns_client:
            await self.client.aclose()
