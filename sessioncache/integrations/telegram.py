"""python-telegram-bot persistence on sessioncache, shared by several worker processes.

Switch by passing it to the builder::

    persistence = SessionCachePersistence.from_url("redis://localhost:6379/0")
    app = Application.builder().token(TOKEN).persistence(persistence).build()
    persistence.install(app)

PTB's own persistence classes load everything into one process at start and write it back on an
interval, so two workers overwrite each other. Here everything stored is returned at start (as
PTB's contract says; ``lazy=True`` skips that for bots with very many users), user and chat data
are read again from Redis when an update uses them (``refresh_*``, which PTB calls before every
handler), and writes send only the keys that changed since the last read, merged into the stored
hash by one Lua script per item. Two workers changing different keys of one chat both keep their
change; a key changed by both ends with the later write. A chat migration moves the stored record
in Redis (``ptb_migrate.lua``), whether or not this process ever loaded the old chat.
SessionTurnProcessor (``.concurrent_updates(processor)``) runs one update of a chat at a time
across the fleet, on the turn lock of ``system.turn``.
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

from ..codec import DEFAULT_LIMITS, VALUE_TAG, Limits, decode_value, encode_value
from ..errors import BackendUnavailable, IntegrityError, ValidationError
from ..keys import KeySchema
from ._ptb_hooks import hook_migrations
from ._ptb_turns import SessionTurnProcessor
from ._records import (
    Encoded,
    RecordWriter,
    client_from_url,
    decode_key,
    encode_key,
    remote_fields,
    ttl_ms,
)

__all__ = ["SessionCachePersistence", "SessionTurnProcessor"]

_UNSTORABLE = VALUE_TAG + VALUE_TAG  # never an encoded value: msgpack never emits 0xC1
_FIRST_GROUP = -(2**31)
_LAST_GROUP = 2**31 - 1
_LOAD_BATCH = 500


class SessionCachePersistence(BasePersistence[Any, Any, Any]):
    """BasePersistence for user, chat and bot data, callback data and conversations.

    :param update_interval: how often PTB hands changed data to the persistence (seconds); each
        write is immediate and atomic, so a short interval is cheap (unchanged data costs no round
        trip). ``install(app)`` additionally writes every update's changes as soon as it is done.
    :param data_ttl: seconds user and chat data live after their last write (None: forever).
    :param lazy: load no user or chat data at start (``get_user_data``/``get_chat_data`` return
        ``{}``); each is read when an update or job uses it. See docs/integrations.md.
    """

    __slots__ = (
        "_application",
        "_base",
        "_conversations",
        "_data_ttl",
        "_lazy",
        "_migrations",
        "_owns_client",
        "_skip_drop",
        "_writer",
        "client",
        "keys",
        "limits",
    )

    def __init__(
        self,
        client: Any,
        *,
        namespace: str = "sc",
        store_data: PersistenceInput | None = None,
        update_interval: float = 0.5,
        data_ttl: Any = None,
        limits: Limits = DEFAULT_LIMITS,
        lazy: bool = False,
        owns_client: bool = True,
    ) -> None:
        super().__init__(store_data=store_data, update_interval=update_interval)
        if not isinstance(lazy, bool):
            raise ValidationError(f"lazy must be True or False, got {lazy!r}")
        self.client = client
        self.keys = KeySchema(namespace)
        self.limits = limits
        data_ttl_ms = ttl_ms(data_ttl, "data_ttl")
        # Without a TTL a merge leaves the expiry alone rather than paying for a PERSIST.
        self._data_ttl = str(data_ttl_ms) if data_ttl_ms else ""
        self._writer = RecordWriter(client, limits, self.keys)
        self._owns_client = owns_client
        self._lazy = lazy
        # What Redis held for each record when this process last read or wrote it: the base of
        # the three-way merge that keeps other workers' changes and this worker's pending ones.
        self._base: dict[str, Encoded] = {}
        # The same for each persistent conversation: a state equal to it is not written again.
        self._conversations: dict[str, Encoded] = {}
        self._application: Application[Any, Any, Any, Any, Any, Any] | None = None
        # Application.migrate_chat_data calls seen by install()'s hook: new chat -> old chat
        # until the next flush moves the record, and the old chats whose drop in that flush is
        # skipped (PTB runs the update and the drop concurrently, in no fixed order; a drop
        # after a move that failed would delete the only copy).
        self._migrations: dict[int, int] = {}
        self._skip_drop: set[int] = set()

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
        lazy: bool = False,
        **connection_options: Any,
    ) -> SessionCachePersistence:
        """Build on a new client for the URL; connection options are sessioncache's
        RedisSettings (socket_timeout, retries, ...)."""
        KeySchema(namespace), ttl_ms(data_ttl, "data_ttl")  # refuse bad settings before connecting
        if not isinstance(lazy, bool):
            raise ValidationError(f"lazy must be True or False, got {lazy!r}")
        return cls(
            client_from_url(url, connection_options),
            namespace=namespace,
            store_data=store_data,
            update_interval=update_interval,
            data_ttl=data_ttl,
            limits=limits,
            lazy=lazy,
        )

    @property
    def lazy(self) -> bool:
        """True if user and chat data are not loaded at start."""
        return self._lazy

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
            return remote_fields(await self.client.hgetall(key))
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable reading {key!r}: {exc}") from exc

    async def _load(self, key: str) -> dict[Any, Any]:
        remote = await self._hgetall(key)
        self._base[key] = remote
        return {decode_key(f): decode_value(v) for f, v in remote.items()}

    async def _load_all(self, pattern: str) -> dict[int, dict[Any, Any]]:
        """Every user's (or chat's) stored record: SCAN, then HGETALL in pipelined batches."""
        loaded: dict[int, dict[Any, Any]] = {}
        try:
            keys = [k async for k in self.client.scan_iter(match=pattern, count=1000)]
            for start in range(0, len(keys), _LOAD_BATCH):
                batch = keys[start : start + _LOAD_BATCH]
                async with self.client.pipeline(transaction=False) as pipe:
                    for key in batch:
                        pipe.hgetall(key)
                    replies = await pipe.execute()
                for raw_key, flat in zip(batch, replies, strict=True):
                    remote = remote_fields(flat)
                    if not remote:
                        continue  # deleted between SCAN and HGETALL
                    key = raw_key.decode("utf-8") if isinstance(raw_key, bytes) else raw_key
                    self._base[key] = remote
                    decoded = {decode_key(f): decode_value(v) for f, v in remote.items()}
                    loaded[self.keys.ptb_id_of_key(key)] = decoded
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable loading {pattern!r}: {exc}") from exc
        return loaded

    async def _refresh(self, key: str, target: MutableMapping[Any, Any], what: str) -> None:
        """Bring target up to date with Redis, keeping this worker's not yet written changes."""
        self._mergeremote_fields(key, target, await self._hgetall(key), what)

    def _mergeremote_fields(
        self, key: str, target: MutableMapping[Any, Any], remote: Encoded, what: str
    ) -> None:
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

    def _changes(self, key: str, local: Encoded) -> tuple[list[bytes | str], list[bytes]]:
        """[field, value, ...] that differ from the last known stored state, and fields gone."""
        base = self._base.get(key, {})
        pairs: list[bytes | str] = []
        for field, value in local.items():
            if base.get(field) != value:
                pairs += [field, value]
        return pairs, [f for f in base if f not in local]

    async def _write(self, key: str, data: Mapping[Any, Any], what: str, ttl: str) -> None:
        """Send the keys that differ from the last known stored state, in one atomic script."""
        local, _ = self._encode(data, what)
        pairs, deletes = self._changes(key, local)
        if not pairs and not deletes:
            return
        await self._writer.merge(key, pairs, deletes, ttl=ttl, full=False)
        new_base = dict(self._base.get(key, {}))
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
        """Every stored user's data ({} with ``lazy=True``: each is read when used)."""
        if self._lazy:
            return {}
        return await self._load_all(self.keys.ptb_users_pattern())

    async def get_chat_data(self) -> dict[int, Any]:
        """Every stored chat's data ({} with ``lazy=True``: each is read when used)."""
        if self._lazy:
            return {}
        return await self._load_all(self.keys.ptb_chats_pattern())

    async def get_bot_data(self) -> Any:
        """The stored bot data ({} if none)."""
        return await self._load(self.keys.ptb_bot())

    async def refresh_user_data(self, user_id: int, user_data: Any) -> None:
        """Take other workers' changes of one user's data, keeping this worker's unwritten ones."""
        await self._refresh(self.keys.ptb_user(user_id), user_data, "user_data")

    async def refresh_chat_data(self, chat_id: int, chat_data: Any) -> None:
        """Take other workers' changes of one chat's data, keeping this worker's unwritten ones."""
        await self._refresh(self.keys.ptb_chat(chat_id), chat_data, "chat_data")

    async def refresh_bot_data(self, bot_data: Any) -> None:
        """Take other workers' changes of the bot data, keeping this worker's unwritten ones."""
        await self._refresh(self.keys.ptb_bot(), bot_data, "bot_data")

    async def update_user_data(self, user_id: int, data: Any) -> None:
        """Write the keys of one user's data that changed (nothing if none did)."""
        await self._write(self.keys.ptb_user(user_id), data, "user_data", self._data_ttl)

    async def update_chat_data(self, chat_id: int, data: Any) -> None:
        """Write the keys of one chat's data that changed; after a migration, move it first."""
        old = self._migrations.pop(chat_id, None)
        if old is not None:
            await self._migrate(old, chat_id, data)
            return
        await self._write(self.keys.ptb_chat(chat_id), data, "chat_data", self._data_ttl)

    async def update_bot_data(self, data: Any) -> None:
        """Write the keys of the bot data that changed (nothing if none did)."""
        await self._write(self.keys.ptb_bot(), data, "bot_data", "")

    async def drop_user_data(self, user_id: int) -> None:
        """Delete one user's stored data."""
        await self._drop(self.keys.ptb_user(user_id))

    async def drop_chat_data(self, chat_id: int) -> None:
        """Delete one chat's stored data (a migrated chat's record is moved, not deleted)."""
        if chat_id in self._skip_drop:
            self._skip_drop.discard(chat_id)  # the flush's update_chat_data moves it
            return
        for new, old in list(self._migrations.items()):
            if new == chat_id:  # dropped right after migrating to it: both go, as in PTB
                del self._migrations[new]
                await self._drop(self.keys.ptb_chat(old))
        await self._drop(self.keys.ptb_chat(chat_id))

    # -- chat migration -------------------------------------------------------------------

    async def migrate_chat_data(self, old_chat_id: int, new_chat_id: int) -> dict[Any, Any]:
        """Move the stored data of one chat to another in Redis and return what the new chat
        holds. The new chat's data is replaced; the old chat's is gone. If nothing is stored for
        the old chat (never, or another worker moved it first) the new chat is left as it is."""
        return await self._migrate(old_chat_id, new_chat_id, None)

    async def _migrate(
        self, old_chat_id: int, new_chat_id: int, data: Mapping[Any, Any] | None
    ) -> dict[Any, Any]:
        old_key, new_key = self.keys.ptb_chat(old_chat_id), self.keys.ptb_chat(new_chat_id)
        if old_key == new_key:
            raise ValidationError("old_chat_id and new_chat_id must differ")
        # This worker's changes of the old chat not written yet travel with the move.
        local, _ = self._encode(data, "chat_data") if data is not None else ({}, {})
        pairs, deletes = self._changes(old_key, local) if data is not None else ([], [])
        flat = await self._writer.migrate(old_key, new_key, pairs, deletes, ttl=self._data_ttl)
        self._base.pop(old_key, None)
        remote = remote_fields(flat)
        if data is not None and self._application is not None:
            # The application's dict for the new chat is still the old chat's; bring it to what
            # is stored now, keeping what its handlers changed since the flush's snapshot.
            self._base[new_key] = local
            target = self._application.chat_data.get(new_chat_id)
            if target is not None:
                self._mergeremote_fields(new_key, target, remote, "chat_data")
        self._base[new_key] = remote
        return {decode_key(f): decode_value(v) for f, v in remote.items()}

    def watch_migrations(self, application: Application[Any, Any, Any, Any, Any, Any]) -> None:
        """Make ``application.migrate_chat_data`` move the stored record in Redis at the next
        flush instead of writing the in-memory copy and deleting the old chat (which loses the
        old chat's data if this process never loaded it). ``install()`` calls this."""
        if application.persistence is not self:
            raise ValidationError("the application does not use this persistence")
        self._application = application
        hook_migrations(application)

    def note_migration(self, old_chat_id: int, new_chat_id: int) -> None:
        """Called by the hooked ``Application.migrate_chat_data``: the next flush moves the
        stored record (``update_chat_data`` of the new chat) and skips the old chat's drop."""
        if self.store_data.chat_data and old_chat_id != new_chat_id:
            self._migrations[new_chat_id] = old_chat_id
            self._skip_drop.add(old_chat_id)

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
        """Every stored state of one persistent ConversationHandler."""
        key = self.keys.ptb_conversation(name)
        remote = await self._hgetall(key)
        self._conversations[name] = dict(remote)
        return {decode_key(f): decode_value(v) for f, v in remote.items()}

    async def update_conversation(self, name: str, key: Any, new_state: object | None) -> None:
        """Write one conversation's state (None ends it); nothing if it is the stored one."""
        redis_key = self.keys.ptb_conversation(name)
        field = encode_key(list(key), self.limits)
        loaded = name in self._conversations
        known = self._conversations.setdefault(name, {})
        if new_state is None:
            if loaded and field not in known:
                return
            await self._writer.merge(redis_key, [], [field], ttl="", full=False)
            known.pop(field, None)
            return
        value = encode_value(new_state, self.limits, f"state of conversation {name!r}")
        if known.get(field) == value:
            return
        await self._writer.merge(redis_key, [field, value], ttl="", full=False)
        known[field] = value

    async def conversation_state(self, name: str, key: Any) -> object | None:
        """The stored state of one conversation key (None if it has none)."""
        redis_key = self.keys.ptb_conversation(name)
        field = encode_key(list(key), self.limits)
        try:
            raw = await self.client.hget(redis_key, field)
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable reading {redis_key!r}: {exc}") from exc
        known = self._conversations.setdefault(name, {})
        if raw is None:
            known.pop(field, None)
            return None
        known[field] = bytes(raw)
        state: object = decode_value(raw)
        return state

    # -- fleet helpers --------------------------------------------------------------------

    def install(self, application: Application[Any, Any, Any, Any, Any, Any]) -> None:
        """Make an application fleet-aware beyond what PTB's persistence hooks allow:

        * before any other handler, the state of every persistent ConversationHandler for the
          update's key is read from Redis (PTB reads conversations only once, at start);
        * after the last handler, the update's user, chat and bot data and conversation states
          are written at once instead of at the next ``update_interval`` tick;
        * ``application.migrate_chat_data`` moves the stored record (``watch_migrations``).
        """
        self.watch_migrations(application)
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
