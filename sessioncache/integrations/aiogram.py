"""aiogram 3 FSM storage and event isolation on sessioncache: update_data is one atomic round trip.

Switch from aiogram's RedisStorage by changing one line::

    storage = SessionCacheStorage.from_url("redis://localhost:6379/0")
    dp = Dispatcher(storage=storage, events_isolation=storage.create_isolation())

``create_isolation()`` is a SessionTurnIsolation: the events of one StorageKey run one at a
time across every worker process, on the same turn lock as ``system.turn`` (sessioncache.turns).

aiogram's RedisStorage keeps a chat's data as one JSON string and its ``update_data`` reads it,
merges in Python and writes it back, so two workers updating the same chat lose one of the
writes. Here the data is a hash with one field per top-level key, and update_data merges the
given keys in a Lua script and returns the merged dict in the same round trip.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

from aiogram.exceptions import DataNotDictLikeError
from aiogram.fsm.state import State
from aiogram.fsm.storage.base import BaseEventIsolation, BaseStorage, StateType, StorageKey
from redis.exceptions import RedisError

from ..codec import DEFAULT_LIMITS, Limits, data_field, decode_value
from ..errors import BackendUnavailable, ValidationError
from ..identity import FsmIdentity, make_fsm_identity
from ..keys import KeySchema
from ..locks import RedisLock
from ..turns import TurnLock, wait_seconds
from ._records import (
    RecordWriter,
    client_from_url,
    decode_str_record,
    encode_str_fields,
    ttl_ms,
)

__all__ = ["SessionCacheStorage", "SessionLockIsolation", "SessionTurnIsolation"]

_MAX_STATE_LENGTH = 4096


def _plain(key: StorageKey) -> bool:
    """Exactly the field types aiogram builds, so equal keys are also equally typed (a cache keyed
    by StorageKey alone would take True for 1 and 2.0 for 2 and skip their validation)."""
    return (
        type(key.bot_id) is int
        and type(key.chat_id) is int
        and type(key.user_id) is int
        and (key.thread_id is None or type(key.thread_id) is int)
        and (key.business_connection_id is None or type(key.business_connection_id) is str)
        and type(key.destiny) is str
    )


def fsm_identity(key: StorageKey) -> FsmIdentity:
    """Every StorageKey field, validated and encoded."""
    if not isinstance(key, StorageKey):
        raise ValidationError(f"expected an aiogram StorageKey, got {type(key).__name__}")
    return make_fsm_identity(
        key.bot_id,
        key.chat_id,
        key.user_id,
        key.thread_id,
        key.business_connection_id,
        key.destiny,
    )


def _state_name(state: StateType) -> str | None:
    name = state.state if isinstance(state, State) else state
    if name is None:
        if isinstance(state, State):
            raise ValidationError("this State has no name: declare it inside a StatesGroup")
        return None
    if not isinstance(name, str):
        raise ValidationError(f"state must be a str, a State or None, not {type(state).__name__}")
    if len(name) > _MAX_STATE_LENGTH:
        raise ValidationError(f"state is {len(name)} characters; the limit is {_MAX_STATE_LENGTH}")
    return name


class SessionCacheStorage(BaseStorage):
    """aiogram BaseStorage: state in a string key, data in a hash merged atomically by Lua."""

    def __init__(
        self,
        client: Any,
        *,
        namespace: str = "sc",
        state_ttl: Any = None,
        data_ttl: Any = None,
        limits: Limits = DEFAULT_LIMITS,
        owns_client: bool = True,
    ) -> None:
        """
        :param client: a redis.asyncio client (Redis, RedisCluster, or fakeredis for memory://)
        :param namespace: key namespace shared with the rest of sessioncache
        :param state_ttl: seconds or timedelta a state lives after it was set (None: forever)
        :param data_ttl: seconds or timedelta data lives after its last write (None: forever)
        """
        self.client = client
        self.keys = KeySchema(namespace)
        self.limits = limits
        self.state_ttl_ms = ttl_ms(state_ttl, "state_ttl")
        self.data_ttl_ms = ttl_ms(data_ttl, "data_ttl")
        self._data_ttl = str(self.data_ttl_ms)
        # Without a data TTL a merge leaves the expiry alone rather than paying for a PERSIST.
        self._merge_ttl = self._data_ttl if self.data_ttl_ms else ""
        self._writer = RecordWriter(client, limits, self.keys)
        self._owns_client = owns_client
        # Key names per StorageKey, cached: building them (validation, percent-encoding) costs
        # about as much Python time as the round trip's own client overhead.
        self._cached_names = lru_cache(maxsize=16384)(self._build_names)

    def _build_names(self, key: StorageKey) -> tuple[str, str]:
        fid = fsm_identity(key)
        return self.keys.fsm_state(fid), self.keys.fsm_data(fid)

    def _names(self, key: StorageKey) -> tuple[str, str]:
        """(state key, data key) of a StorageKey."""
        if isinstance(key, StorageKey) and _plain(key):
            return self._cached_names(key)
        return self._build_names(key)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str = "sc",
        state_ttl: Any = None,
        data_ttl: Any = None,
        limits: Limits = DEFAULT_LIMITS,
        **connection_options: Any,
    ) -> SessionCacheStorage:
        """Build on a new client for the URL (redis://, rediss://, unix://, redis+cluster://,
        memory://); connection options are sessioncache's RedisSettings (socket_timeout, ...).
        Synchronous like aiogram's RedisStorage.from_url: the first call connects."""
        # Refuse bad settings before a client (and its pool) exists.
        KeySchema(namespace), ttl_ms(state_ttl, "state_ttl"), ttl_ms(data_ttl, "data_ttl")
        client = client_from_url(url, connection_options)
        return cls(
            client, namespace=namespace, state_ttl=state_ttl, data_ttl=data_ttl, limits=limits
        )

    def create_isolation(
        self, *, timeout: float | None = None, lease: float = 30.0
    ) -> SessionTurnIsolation:
        """The recommended event isolation: a SessionTurnIsolation on the same client and
        namespace (one event per StorageKey at a time, fleet-wide, in arrival order)."""
        return SessionTurnIsolation(
            self.client,
            namespace=self.keys.namespace,
            timeout=timeout,
            lease=lease,
            owns_client=False,
        )

    async def close(self) -> None:
        if self._owns_client:
            await self.client.aclose()

    # -- state ----------------------------------------------------------------------------

    async def set_state(self, key: StorageKey, state: StateType = None) -> None:
        # One SET or DEL: a single command is atomic and idempotent, so no script is needed.
        redis_key = self._names(key)[0]
        name = _state_name(state)
        try:
            if name is None:
                await self.client.delete(redis_key)
            elif self.state_ttl_ms:
                await self.client.set(redis_key, name.encode("utf-8"), px=self.state_ttl_ms)
            else:
                await self.client.set(redis_key, name.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise ValidationError("state is not valid Unicode text") from exc
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable during set_state: {exc}") from exc

    async def get_state(self, key: StorageKey) -> str | None:
        redis_key = self._names(key)[0]
        try:
            value = await self.client.get(redis_key)
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable during get_state: {exc}") from exc
        return None if value is None else bytes(value).decode("utf-8")

    # -- data -----------------------------------------------------------------------------

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        """Replace the data atomically; an empty dict deletes it."""
        if not isinstance(data, dict):
            msg = f"Data must be a dict or dict-like object, got {type(data).__name__}"
            raise DataNotDictLikeError(msg)
        redis_key = self._names(key)[1]
        pairs = encode_str_fields(data, self.limits, "data")
        await self._writer.replace(redis_key, pairs, ttl=self._data_ttl)

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        redis_key = self._names(key)[1]
        try:
            flat = await self.client.hgetall(redis_key)
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable during get_data: {exc}") from exc
        return decode_str_record(flat)

    async def get_value(
        self, storage_key: StorageKey, dict_key: str, default: Any | None = None
    ) -> Any | None:
        """One data value (one HGET, not the whole record), or default."""
        redis_key = self._names(storage_key)[1]
        try:
            field = data_field(dict_key, self.limits)
        except ValidationError:
            return default  # a name that can never be stored is simply absent
        try:
            raw = await self.client.hget(redis_key, field)
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable during get_value: {exc}") from exc
        return default if raw is None else decode_value(raw)

    async def update_data(self, key: StorageKey, data: Mapping[str, Any]) -> dict[str, Any]:
        """Merge the given keys (like dict.update) and return the merged data: one round trip,
        atomic, so concurrent updates of different keys by different workers are all kept."""
        if not isinstance(data, Mapping):
            msg = f"Data must be a dict or dict-like object, got {type(data).__name__}"
            raise DataNotDictLikeError(msg)
        redis_key = self._names(key)[1]
        pairs = encode_str_fields(data, self.limits, "data")
        flat = await self._writer.merge(redis_key, pairs, ttl=self._merge_ttl, full=True)
        return decode_str_record(flat)

    async def clear(self, key: StorageKey) -> None:
        """Drop state and data of one key in one round trip (both keys share a hash tag)."""
        try:
            await self.client.delete(*self._names(key))
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable during clear: {exc}") from exc


class SessionLockIsolation(BaseEventIsolation):
    """aiogram event isolation: one sessioncache RedisLock per StorageKey, across processes.

    ``timeout`` bounds how long a crashed worker can block a chat (the lock expires);
    ``blocking_timeout`` bounds how long an event waits for the lock (None: until it is free),
    after which LockNotAcquired is raised and aiogram reports the event as failed.
    """

    def __init__(
        self,
        client: Any,
        *,
        namespace: str = "sc",
        timeout: float = 60.0,
        blocking_timeout: float | None = None,
        owns_client: bool = True,
    ) -> None:
        self.client = client
        self.keys = KeySchema(namespace)
        self.timeout = timeout
        self.blocking_timeout = blocking_timeout
        self._owns_client = owns_client
        # Validate the settings now rather than on the first event.
        RedisLock(client, "probe", timeout=timeout, blocking_timeout=blocking_timeout)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str = "sc",
        timeout: float = 60.0,
        blocking_timeout: float | None = None,
        **connection_options: Any,
    ) -> SessionLockIsolation:
        KeySchema(namespace)
        RedisLock(None, "probe", timeout=timeout, blocking_timeout=blocking_timeout)
        client = client_from_url(url, connection_options)
        return cls(client, namespace=namespace, timeout=timeout, blocking_timeout=blocking_timeout)

    def lock_for(self, key: StorageKey) -> RedisLock:
        return RedisLock(
            self.client,
            self.keys.fsm_lock(fsm_identity(key)),
            timeout=self.timeout,
            blocking_timeout=self.blocking_timeout,
        )

    @asynccontextmanager
    async def lock(self, key: StorageKey) -> AsyncGenerator[None, None]:
        async with self.lock_for(key):
            yield None

    async def close(self) -> None:
        if self._owns_client:
            await self.client.aclose()


class SessionTurnIsolation(BaseEventIsolation):
    """aiogram event isolation on sessioncache's turn lock (turns.TurnLock), across processes.

    The events of one StorageKey run one at a time in the whole fleet, in arrival order. The
    holder's lease (``lease`` seconds) is renewed while its handler runs, so a long handler
    keeps the key, and a crashed worker's key is taken over when its lease ends. ``timeout``
    bounds how long an event waits (None: until its turn comes), after which TurnBusy is
    raised and aiogram reports the event as failed. If the lease could not be renewed in time
    TurnLost is raised after the handler.
    """

    def __init__(
        self,
        client: Any,
        *,
        namespace: str = "sc",
        timeout: float | None = None,
        lease: float = 30.0,
        owns_client: bool = True,
    ) -> None:
        self.client = client
        self.keys = KeySchema(namespace)
        self.timeout = timeout
        wait_seconds(timeout)  # validate the settings now rather than on the first event
        self.turns = TurnLock(client, lease=lease)
        self._owns_client = owns_client

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str = "sc",
        timeout: float | None = None,
        lease: float = 30.0,
        **connection_options: Any,
    ) -> SessionTurnIsolation:
        """Build on a new client for the URL (any sessioncache URL, as SessionCacheStorage)."""
        KeySchema(namespace), wait_seconds(timeout), TurnLock(None, lease=lease)
        client = client_from_url(url, connection_options)
        return cls(client, namespace=namespace, timeout=timeout, lease=lease)

    def turn_keys(self, key: StorageKey) -> tuple[str, str, str]:
        """The turn lease, waiter queue and waiter liveness keys of a StorageKey."""
        return self.keys.fsm_turn(fsm_identity(key))

    @asynccontextmanager
    async def lock(self, key: StorageKey) -> AsyncGenerator[None, None]:
        keys = self.turn_keys(key)
        async with self.turns.hold(keys, keys[0], timeout=self.timeout):
            yield None

    async def close(self) -> None:
        if self._owns_client:
            await self.client.aclose()
