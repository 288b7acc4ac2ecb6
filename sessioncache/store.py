"""SessionStore: the core operations, each one round trip and each mutation one Lua script."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from redis.exceptions import RedisClusterException, RedisError

from .aliases import RedisClient
from .arguments import (
    DEFAULT_RETRY_HORIZON_MS,
    RETRY_MARGIN_S,
    StoreExtras,
    check_messages,
    check_priority,
    check_state,
    check_version,
    create_fields,
    new_op_id,
    op_args,
    retry_horizon_ms,
    ttl_ms,
    update_fields,
)
from .backends import RedisSettings, connect, is_cluster
from .codec import DEFAULT_LIMITS, Limits, data_field, decode_value
from .errors import (
    BackendUnavailable,
    SessionExists,
    SessionExpired,
    SessionNotFound,
    ValidationError,
    VersionConflict,
)
from .identity import Identity, make_identity, parse_session_id
from .keys import KeySchema
from .listing import ListingMethods
from .models import Platform, Session, SessionState, session_from_hash
from .redaction import redact_message
from .scripts import ScriptRegistry, registry

DEFAULT_TTL = 7 * 24 * 3600.0
"""Seconds a session lives after its last activity unless configured otherwise."""

_MISSING: Any = object()

log = logging.getLogger(__name__)

# Defined in arguments.py; importable from here, where they were defined before the split.
__all__ = [
    "DEFAULT_RETRY_HORIZON_MS",
    "DEFAULT_TTL",
    "RETRY_MARGIN_S",
    "SessionStore",
    "StoreExtras",
    "check_version",
    "new_op_id",
    "op_args",
    "retry_horizon_ms",
]


class SessionStore(ListingMethods):
    """Shared session storage over one Redis (standalone, cluster or in-memory).

    Identity arguments come first, in one order on every surface (this class, SessionSystem
    and the module-level functions): chat_id, user_id, platform, thread_id. Not-found
    contract: get() raises SessionNotFound, find() and find_by_id() return None; every write
    (update, set_field(s), delete_field, touch) raises SessionNotFound; delete() returns False.
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        namespace: str = "sc",
        default_ttl: float = DEFAULT_TTL,
        limits: Limits = DEFAULT_LIMITS,
        owns_client: bool = True,
        extras: Sequence[StoreExtras] = (),
        retry_horizon_ms: int = DEFAULT_RETRY_HORIZON_MS,
    ) -> None:
        # Any, not RedisClient: redis-py types replies as bytes | str (decode_responses is a
        # runtime option); our clients always run with decode_responses=False, so replies are bytes.
        self.client: Any = client
        self.keys = KeySchema(namespace, cluster=is_cluster(client))
        self.limits = limits
        self.default_ttl = default_ttl
        self.default_ttl_ms = str(ttl_ms(default_ttl, "default_ttl"))
        """The default TTL as the scripts take it (milliseconds, as text)."""
        # The constant ARGV of the hot scripts as bytes: stock redis-py's packer encodes every
        # str argument again on every call (bench core, "stock client" rows).
        self._ttl_arg = self.default_ttl_ms.encode()
        self._max_fields = str(limits.max_fields).encode()
        self.scripts: ScriptRegistry = registry()
        self._owns_client = owns_client
        if len(extras) > 1:
            raise ValidationError("create.lua and delete.lua take one feature's extra keys")
        self.extras: tuple[StoreExtras, ...] = tuple(extras)
        self.expiry_index_of: Callable[[Identity], str] | None = None
        """Set by the expiry engine: the expiry index bucket of a session (extra script key)."""
        self._keys_cache: dict[Identity, tuple[str, str, str, str]] = {}
        self._moving_keys: dict[Identity, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self.syncs = False
        """Set by follow_sync(): the scripts that move a session's expiry move its sync pair."""
        self._ids_cache: dict[str, tuple[Identity, tuple[str, str, str, str]]] = {}
        self._horizon_ms = str(retry_horizon_ms).encode()

    @classmethod
    async def connect(
        cls,
        url: str = "memory://default",
        *,
        namespace: str = "sc",
        default_ttl: float = DEFAULT_TTL,
        limits: Limits = DEFAULT_LIMITS,
        extras: Sequence[StoreExtras] = (),
        **options: Any,
    ) -> SessionStore:
        """Connect by URL, check the server answers, and load every script.

        ``extras``: features whose keys every create and delete also writes (StoreExtras).
        """
        settings = RedisSettings.from_options(url, **options)
        store = cls(
            connect(settings),
            namespace=namespace,
            default_ttl=default_ttl,
            limits=limits,
            extras=extras,
            retry_horizon_ms=retry_horizon_ms(settings),
        )
        try:
            await store.client.ping()
            await store.scripts.load(store.client)
        except (RedisError, RedisClusterException) as exc:  # the latter: no node reachable
            await store.close()
            raise BackendUnavailable(
                redact_message(f"cannot use Redis at {url}: {exc}", url=url)
            ) from exc
        return store

    @property
    def is_cluster(self) -> bool:
        """Whether the client talks to a Redis Cluster."""
        return is_cluster(self.client)

    async def close(self) -> None:
        """Close the client's connections, if this store created the client."""
        if self._owns_client:
            await self.client.aclose()

    # -- identity -------------------------------------------------------------------------

    @staticmethod
    def identity(
        chat_id: object,
        user_id: object,
        platform: object = Platform.WEB,
        thread_id: object = None,
    ) -> Identity:
        """The validated identity of a session (same argument order as create)."""
        return make_identity(platform, chat_id, user_id, thread_id)

    def _session_keys(self, ident: Identity) -> tuple[str, str, str, str]:
        """The session hash, its user index, its change bucket and its op log (cached: the hot
        path). The first KEYS of create, update, touch and delete.lua, in this order."""
        found = self._keys_cache.get(ident)
        if found is None:
            if len(self._keys_cache) >= 65536:
                self._keys_cache.clear()
            key = self.keys.session(ident)
            found = self._keys_cache[ident] = (
                key,
                self.keys.user_index(ident.user_tag),
                self.keys.change_bucket_of(ident),
                self.keys.op_log(key),
            )
        return found

    def _by_id(self, session_id: str) -> tuple[Identity, tuple[str, str, str, str]]:
        """parse_session_id and _session_keys in one lookup by the id itself (cached: its str
        hash is cached too, where an Identity hashes its fields on every call)."""
        found = self._ids_cache.get(session_id) if type(session_id) is str else None
        if found is None:
            ident = parse_session_id(session_id)  # refuses anything malformed, before caching
            if len(self._ids_cache) >= 65536:
                self._ids_cache.clear()
            found = self._ids_cache[session_id] = (ident, self._session_keys(ident))
        return found

    def follow_sync(self) -> None:
        """Shared fields are synced on this store (SyncManager): from now on every script that
        moves a session's expiry names its sync meta and conflicts too, so they live exactly
        as long as the session. A store without sync passes no such keys (no cost)."""
        self.syncs = True
        self._moving_keys.clear()

    def sync_pair(self, ident: Identity) -> tuple[str, ...]:
        """The session's sync meta and conflicts when the store syncs (follow_sync), else ():
        the last KEYS of every script that moves the session's expiry (lib/session.lua
        moving_keys)."""
        if self.syncs:
            return self.keys.sync_meta(ident), self.keys.sync_conflicts(ident)
        return ()

    def expiry_moving_keys(self, ident: Identity) -> tuple[str, ...]:
        """KEYS of update.lua and touch.lua, which move the session's expiry: the session keys,
        its context hash and history list (they take the same expiry, lib/session.lua), the
        expiry index bucket with expiry rules, then its sync pair when the store syncs (it
        takes the same expiry too) (cached: the hot path)."""
        found = self._moving_keys.get(ident)
        if found is None:
            if len(self._moving_keys) >= 65536:
                self._moving_keys.clear()
            base = (*self._session_keys(ident), self.keys.context(ident), self.keys.history(ident))
            pair = self.sync_pair(ident)
            found = self._moving_keys[ident] = ((*base, *pair), pair)
        # Not cached: the expiry engine may be attached after the first call.
        if self.expiry_index_of is not None:
            full, pair = found
            return (*full[: len(full) - len(pair)], self.expiry_index_of(ident), *pair)
        return found[0]

    def op_args(self, args: Sequence[Any]) -> list[Any]:
        """ARGV of a mutating script for this store: op id, digest and retry horizon first."""
        return op_args(self._horizon_ms, args)

    def _located(self, session_id: str) -> tuple[Identity, str, str]:
        ident, (key, index, _, _) = self._by_id(session_id)
        return ident, key, index

    # -- create / read --------------------------------------------------------------------

    def _create_args(
        self,
        ident: Identity,
        mode: str,
        data: Mapping[str, Any] | None,
        metadata: Mapping[str, Any] | None,
        state: str,
        priority: int,
        ttl: float | None,
    ) -> tuple[list[str], list[Any]]:
        pairs = create_fields(data, metadata, self.limits)
        state_name = check_state(state)
        keys = list(self._session_keys(ident))
        args = [
            mode,
            str(ttl_ms(ttl)),
            self._ttl_arg,
            ident.suffix,
            state_name,
            check_priority(priority) or "0",
            str(len(pairs) // 2),
            *pairs,
        ]
        for extra in self.extras:
            more_keys, more_args = extra.create_extras(self.keys, ident)
            keys += more_keys
            args += more_args
        return keys, self.op_args(args)

    async def create(
        self,
        chat_id: object,
        user_id: object,
        platform: object = Platform.WEB,
        thread_id: object = None,
        *,
        data: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        state: str = SessionState.NEW,
        priority: int = 0,
        ttl: float | None = None,
    ) -> Session:
        """Create a session; SessionExists if this identity already has one."""
        ident = self.identity(chat_id, user_id, platform, thread_id)
        keys, args = self._create_args(ident, "create", data, metadata, state, priority, ttl)
        reply = await self.scripts.create.run(self.client, keys, args)
        if reply[0] == -1:
            raise SessionExists(ident.session_id)
        if not reply[1]:  # an earlier attempt of this call created it; deleted since
            raise SessionNotFound(ident.session_id)
        return session_from_hash(ident, keys[0], reply[1])

    async def get_or_create(
        self,
        chat_id: object,
        user_id: object,
        platform: object = Platform.WEB,
        thread_id: object = None,
        *,
        data: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        state: str = SessionState.NEW,
        priority: int = 0,
        ttl: float | None = None,
    ) -> Session:
        """The identity's session, created with the given contents if it does not exist.

        Two processes racing on the same identity end with one session: the key is
        deterministic and the script checks and creates in one atomic step.
        """
        ident = self.identity(chat_id, user_id, platform, thread_id)
        keys, args = self._create_args(ident, "get", data, metadata, state, priority, ttl)
        reply = await self.scripts.create.run(self.client, keys, args)
        if not reply[1]:  # an earlier attempt of this call created it; deleted since
            raise SessionNotFound(ident.session_id)
        return session_from_hash(ident, keys[0], reply[1])

    async def get(self, session_id: str) -> Session:
        """The session, or SessionNotFound."""
        ident, (key, _, _, _) = self._by_id(session_id)
        try:
            flat = await self.client.hgetall(key)
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable during get: {exc}") from exc
        if not flat:
            raise SessionNotFound(session_id)
        return session_from_hash(ident, key, flat)

    async def find(
        self,
        chat_id: object,
        user_id: object,
        platform: object = Platform.WEB,
        thread_id: object = None,
    ) -> Session | None:
        """The session of an identity, or None."""
        ident = self.identity(chat_id, user_id, platform, thread_id)
        return await self.find_by_id(ident.session_id)

    async def find_by_id(self, session_id: str) -> Session | None:
        """The session, or None if it does not exist."""
        try:
            return await self.get(session_id)
        except SessionNotFound:
            return None

    async def exists(self, session_id: str) -> bool:
        """Whether the session exists."""
        _, key, _ = self._located(session_id)
        try:
            return bool(await self.client.exists(key))
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable during exists: {exc}") from exc

    # -- update ---------------------------------------------------------------------------

    async def _update(
        self,
        session_id: str,
        reply_mode: str | bytes,
        data: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        delete: Iterable[str] = (),
        delete_metadata: Iterable[str] = (),
        priority: int | None = None,
        expected_version: int | None = None,
    ) -> tuple[Identity, str, Any]:
        ident, keys, args = self.update_command(
            session_id,
            reply_mode,
            data,
            metadata,
            delete,
            delete_metadata,
            priority,
            expected_version,
        )
        reply = await self.scripts.update.run(self.client, keys, args)
        return ident, keys[0], self.update_outcome(session_id, reply, expected_version)

    def update_command(
        self,
        session_id: str,
        reply_mode: str | bytes,
        data: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        delete: Iterable[str] = (),
        delete_metadata: Iterable[str] = (),
        priority: int | None = None,
        expected_version: int | None = None,
        shared: tuple[Sequence[str], Sequence[Any]] = ((), ()),
    ) -> tuple[Identity, Sequence[str], list[Any]]:
        """The checked KEYS and ARGV of update.lua (batch.py pipelines many of them);
        ``shared``: the KEYS and ARGV of its shared-field section (SyncManager.update)."""
        ident = self._by_id(session_id)[0]
        keys = self.expiry_moving_keys(ident)
        npairs, pairs = update_fields(data, metadata, delete, delete_metadata, self.limits)
        args = [
            check_version(expected_version),
            reply_mode,
            self._ttl_arg,
            check_priority(priority),
            self._max_fields,
            str(npairs),
            *pairs[: 2 * npairs],
            str(len(pairs) - 2 * npairs),
            *pairs[2 * npairs :],
            *shared[1],
        ]
        if shared[0] and tuple(keys[-2:]) != tuple(shared[0]):  # not already named
            keys = (*keys, *shared[0])
        return ident, keys, self.op_args(args)

    def update_outcome(self, session_id: str, reply: Any, expected_version: int | None) -> Any:
        """update.lua's reply payload, or its failure as our exception."""
        status = reply[0]
        if status == -1:
            raise SessionNotFound(session_id)
        if status == -2:
            raise VersionConflict(session_id, int(expected_version or 0), int(reply[1]))
        if status == -4:
            raise SessionExpired(session_id)
        if status == -3:
            raise ValidationError(
                f"session {session_id!r} would hold {int(reply[1])} fields; "
                f"the limit is {self.limits.max_fields}"
            )
        return reply[1]

    async def update(
        self,
        session_id: str,
        data: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        delete: Iterable[str] = (),
        delete_metadata: Iterable[str] = (),
        priority: int | None = None,
        expected_version: int | None = None,
    ) -> Session:
        """Merge data and metadata fields (and delete some) in one atomic step.

        With expected_version the update applies only if the stored version still matches,
        else VersionConflict. Fields not named are left as they are. SessionNotFound if the
        session does not exist.
        """
        ident, key, flat = await self._update(
            session_id, b"full", data, metadata, delete, delete_metadata, priority, expected_version
        )
        return session_from_hash(ident, key, flat)

    async def set_field(
        self, session_id: str, name: str, value: Any, *, expected_version: int | None = None
    ) -> int:
        """Write one data field without rewriting the session; returns the new version.
        SessionNotFound if the session does not exist."""
        _, _, version = await self._update(
            session_id, b"version", {name: value}, expected_version=expected_version
        )
        return int(version)

    async def set_fields(
        self,
        session_id: str,
        fields: Mapping[str, Any],
        *,
        expected_version: int | None = None,
    ) -> int:
        """Write several data fields at once; returns the new version (SessionNotFound if the
        session does not exist)."""
        _, _, version = await self._update(
            session_id, b"version", fields, expected_version=expected_version
        )
        return int(version)

    async def delete_field(self, session_id: str, *names: str) -> int:
        """Remove data fields; returns the new version (SessionNotFound if no session)."""
        _, _, version = await self._update(session_id, b"version", delete=names)
        return int(version)

    async def get_field(self, session_id: str, name: str, default: Any = _MISSING) -> Any:
        """One data field; the default (or KeyError) if the field is absent; SessionNotFound
        if the session does not exist."""
        values = await self.get_fields(session_id, [name])
        if name in values:
            return values[name]
        if default is _MISSING:
            raise KeyError(name)
        return default

    async def get_fields(self, session_id: str, names: Iterable[str]) -> dict[str, Any]:
        """The named data fields that exist; SessionNotFound if the session does not."""
        _, key, _ = self._located(session_id)
        names = list(names)
        stored = [data_field(name, self.limits) for name in names]
        try:
            raw = await self.client.hmget(key, ["v", *stored])
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable during get_fields: {exc}") from exc
        if raw[0] is None:
            raise SessionNotFound(session_id)
        return {n: decode_value(r) for n, r in zip(names, raw[1:], strict=True) if r is not None}

    async def touch(
        self, session_id: str, *, messages: int = 0, ttl: float | None = None
    ) -> dt.datetime:
        """Record activity (and optionally messages); refreshes the TTL. Returns the new expiry.
        SessionNotFound if the session does not exist."""
        ident = self._by_id(session_id)[0]
        new_ttl = "" if ttl is None else str(ttl_ms(ttl))
        args = self.op_args([self._ttl_arg, check_messages(messages), new_ttl])
        keys = self.expiry_moving_keys(ident)
        reply = await self.scripts.touch.run(self.client, keys, args)
        if reply[0] == -1:
            raise SessionNotFound(session_id)
        if reply[0] == -4:
            raise SessionExpired(session_id)
        return dt.datetime.fromtimestamp(int(reply[1]) / 1000, tz=dt.UTC)

    async def delete(self, session_id: str) -> bool:
        """Remove a session; True if it existed, False if it did not."""
        keys, args = self.delete_command(session_id)
        return bool(await self.scripts.delete.run(self.client, keys, args))

    def delete_command(self, session_id: str) -> tuple[list[str], list[str]]:
        """The KEYS and ARGV of delete.lua for a session id."""
        ident = parse_session_id(session_id)
        keys = list(self._session_keys(ident))
        for extra in self.extras:
            keys += extra.delete_extras(self.keys, ident)
        if self.extras and self.expiry_index_of is not None:
            keys.append(self.expiry_index_of(ident))
        return keys, self.op_args([ident.suffix])
