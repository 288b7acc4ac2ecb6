"""SessionStore: the core operations, each one round trip and each mutation one Lua script."""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
from base64 import urlsafe_b64encode
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from redis.exceptions import RedisClusterException, RedisError

from .aliases import RedisClient
from .backends import RedisSettings, connect, is_cluster
from .codec import DEFAULT_LIMITS, Limits, data_field, decode_value, encode_mapping, metadata_field
from .errors import (
    BackendUnavailable,
    IntegrityError,
    SessionExists,
    SessionExpired,
    SessionNotFound,
    ValidationError,
    VersionConflict,
)
from .identity import Identity, make_identity, parse_session_id, user_tag
from .keys import KeySchema
from .models import Platform, Session, SessionState, session_from_hash
from .redaction import redact_message
from .scripts import ScriptRegistry, registry

DEFAULT_TTL = 7 * 24 * 3600.0
"""Seconds a session lives after its last activity unless configured otherwise."""

_MISSING: Any = object()

log = logging.getLogger(__name__)


RETRY_MARGIN_S = 30.0
"""Seconds added to the computed retry horizon: for a request that a proxy or a kernel buffer
delivers after its sender gave up (see docs/guarantees.md, "Retries")."""


def retry_horizon_ms(settings: RedisSettings) -> int:
    """How long after a write its op id is remembered, from the client's retry settings.

    Every attempt of a call may take a connect, a full socket timeout and a backoff pause:
    attempts x (connect timeout + socket timeout + backoff cap), plus RETRY_MARGIN_S.
    """
    attempts = settings.retries + 1
    per_attempt = settings.socket_connect_timeout + settings.socket_timeout + settings.backoff_cap
    return round((attempts * per_attempt + RETRY_MARGIN_S) * 1000)


DEFAULT_RETRY_HORIZON_MS = retry_horizon_ms(RedisSettings())


# Op ids need to be unique, not secret: a generator of our own, seeded from os.urandom (a
# syscall per call cost a microsecond on the hot path) and reseeded in a forked child, so two
# processes never share a sequence; random.seed() in user code does not touch it.
_op_random = random.Random()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_op_random.seed)


def new_op_id() -> str:
    """16 random characters (96 bits) naming one call; every retry of the call repeats it."""
    return urlsafe_b64encode(_op_random.getrandbits(96).to_bytes(12, "little")).decode()


def op_args(horizon_ms: str, args: Sequence[Any]) -> list[Any]:
    """A mutating script's ARGV: op id, call digest, retry horizon, then the call's own args.

    The digest binds the op id to these arguments, so a reused op id is refused rather than
    answered "already applied" (lib/ops.lua). Retries happen inside the process that made the
    call, so the process-salted built-in hash is enough, and cheap: str and bytes cache theirs.
    """
    digest = format(hash(tuple(args)) & 0xFFFFFFFFFFFFFFFF, "x")
    return [new_op_id(), digest, horizon_ms, *args]


def _ttl_ms(ttl: float | None, what: str = "ttl") -> int:
    if ttl is None:
        return 0
    if (
        isinstance(ttl, bool)
        or not isinstance(ttl, (int, float))
        or not 0 < ttl <= 10 * 365 * 86400
    ):
        raise ValidationError(f"{what} must be a number of seconds in (0, 10 years], got {ttl!r}")
    return max(1, round(ttl * 1000))


def check_version(expected_version: int | None) -> str:
    """An expected_version as a script argument (empty: unconditional); ValidationError if bad."""
    if expected_version is None:
        return ""
    if isinstance(expected_version, bool) or not isinstance(expected_version, int):
        raise ValidationError(f"expected_version must be an int, got {expected_version!r}")
    return str(expected_version)


def _check_priority(priority: int | None) -> str:
    if priority is None:
        return ""
    if isinstance(priority, bool) or not isinstance(priority, int) or not -1000 <= priority <= 1000:
        raise ValidationError(f"priority must be an int in [-1000, 1000], got {priority!r}")
    return str(priority)


class StoreExtras(Protocol):
    """Extra KEYS/ARGV a feature adds to create.lua and delete.lua (see their headers).

    Given to the store's constructor (``extras=``), so every create and delete of that store
    writes the feature's keys too; the state tracker's are ``TrackerConfig.store_extras()``.
    """

    def create_extras(self, keys: KeySchema, ident: Identity) -> tuple[list[str], list[Any]]:
        """KEYS appended after create.lua's four, and ARGV appended after its field pairs."""

    def delete_extras(self, keys: KeySchema, ident: Identity) -> list[str]:
        """KEYS appended after delete.lua's four."""


class SessionStore:
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
        self.default_ttl_ms = str(_ttl_ms(default_ttl, "default_ttl"))
        """The default TTL as the scripts take it (milliseconds, as text)."""
        self._max_fields = str(limits.max_fields)
        self.scripts: ScriptRegistry = registry()
        self._owns_client = owns_client
        if len(extras) > 1:
            raise ValidationError("create.lua and delete.lua take one feature's extra keys")
        self.extras: tuple[StoreExtras, ...] = tuple(extras)
        self.expiry_index_of: Callable[[Identity], str] | None = None
        """Set by the expiry engine: the expiry index bucket of a session (extra script key)."""
        self._keys_cache: dict[Identity, tuple[str, str, str, str]] = {}
        self._horizon_ms = str(retry_horizon_ms)

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

    def op_args(self, args: Sequence[Any]) -> list[Any]:
        """ARGV of a mutating script for this store: op id, digest and retry horizon first."""
        return op_args(self._horizon_ms, args)

    def _located(self, session_id: str) -> tuple[Identity, str, str]:
        ident = parse_session_id(session_id)
        key, index, _, _ = self._session_keys(ident)
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
        pairs = encode_mapping(data, data_field, self.limits, "data")
        pairs += encode_mapping(metadata, metadata_field, self.limits, "metadata")
        if len(pairs) // 2 > self.limits.max_fields:
            raise ValidationError(
                f"data and metadata hold {len(pairs) // 2} fields; "
                f"a session holds at most {self.limits.max_fields}"
            )
        state_name = state.value if isinstance(state, SessionState) else state
        if not isinstance(state_name, str) or not state_name or len(state_name) > 64:
            raise ValidationError(f"state must be a non-empty str of at most 64 chars: {state!r}")
        keys = list(self._session_keys(ident))
        args = [
            mode,
            str(_ttl_ms(ttl)),
            self.default_ttl_ms,
            ident.suffix,
            state_name,
            _check_priority(priority) or "0",
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
        ident = parse_session_id(session_id)
        key = self._session_keys(ident)[0]
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
        reply_mode: str,
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
        reply_mode: str,
        data: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        delete: Iterable[str] = (),
        delete_metadata: Iterable[str] = (),
        priority: int | None = None,
        expected_version: int | None = None,
    ) -> tuple[Identity, Sequence[str], list[Any]]:
        """The checked KEYS and ARGV of update.lua (batch.py pipelines many of them)."""
        ident = parse_session_id(session_id)
        keys: Sequence[str] = self._session_keys(ident)
        if self.expiry_index_of is not None:
            keys = (*keys, self.expiry_index_of(ident))
        pairs = encode_mapping(data, data_field, self.limits, "data") if data is not None else []
        if metadata is not None:
            pairs += encode_mapping(metadata, metadata_field, self.limits, "metadata")
        npairs = len(pairs) // 2
        if delete or delete_metadata:
            if isinstance(delete, str) or isinstance(delete_metadata, str):
                raise ValidationError("delete and delete_metadata take a list of names, not a str")
            dels = [data_field(name, self.limits) for name in delete]
            dels += [metadata_field(name, self.limits) for name in delete_metadata]
            if npairs + len(dels) > self.limits.max_fields:
                raise ValidationError(
                    f"one update may touch at most {self.limits.max_fields} fields"
                )
            pairs += dels
        elif npairs > self.limits.max_fields:
            raise ValidationError(f"one update may touch at most {self.limits.max_fields} fields")
        args = [
            check_version(expected_version),
            reply_mode,
            self.default_ttl_ms,
            _check_priority(priority),
            self._max_fields,
            str(npairs),
            *pairs,
        ]
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
            session_id, "full", data, metadata, delete, delete_metadata, priority, expected_version
        )
        return session_from_hash(ident, key, flat)

    async def set_field(
        self, session_id: str, name: str, value: Any, *, expected_version: int | None = None
    ) -> int:
        """Write one data field without rewriting the session; returns the new version.
        SessionNotFound if the session does not exist."""
        _, _, version = await self._update(
            session_id, "version", {name: value}, expected_version=expected_version
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
            session_id, "version", fields, expected_version=expected_version
        )
        return int(version)

    async def delete_field(self, session_id: str, *names: str) -> int:
        """Remove data fields; returns the new version (SessionNotFound if no session)."""
        _, _, version = await self._update(session_id, "version", delete=names)
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
        ident = parse_session_id(session_id)
        if (
            isinstance(messages, bool)
            or not isinstance(messages, int)
            or not 0 <= messages <= 10**6
        ):
            raise ValidationError(f"messages must be an int in [0, 1000000], got {messages!r}")
        new_ttl = "" if ttl is None else str(_ttl_ms(ttl))
        args = self.op_args([self.default_ttl_ms, str(messages), new_ttl])
        keys: Sequence[str] = self._session_keys(ident)
        if self.expiry_index_of is not None:
            keys = (*keys, self.expiry_index_of(ident))
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

    # -- listing --------------------------------------------------------------------------

    async def list_user_sessions(self, user_id: object) -> list[Session]:
        """Every live session of a user, across platforms, chats and threads (an empty list
        for an unknown user)."""
        tag = user_tag(user_id)
        index = self.keys.user_index(tag)
        try:
            suffixes = sorted(await self.client.hkeys(index))
            if not suffixes:
                return []
            keys = [self.keys.session_in_index(tag, s.decode()) for s in suffixes]
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hgetall(key)
                hashes = await pipe.execute()
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable during list_user_sessions: {exc}") from exc
        sessions, gone = [], []
        for key, suffix, flat in zip(keys, suffixes, hashes, strict=True):
            if not flat:
                gone.append((key, suffix))
                continue
            sid = self.keys.session_id_of_key(key)
            try:
                sessions.append(session_from_hash(parse_session_id(sid), key, flat))
            except (ValidationError, IntegrityError) as exc:
                # One session this version cannot read (written by an older version under
                # other id rules, or damaged) must not hide the user's other sessions.
                log.warning("list_user_sessions skips session %r: %s", sid[:200], exc)
        if gone:
            await self.scripts.prune_index.run(
                self.client, [index, *(k for k, _ in gone)], [s for _, s in gone]
            )
        return sessions

    async def count(self) -> int:
        """Number of live sessions in the namespace (SCAN over every primary)."""
        total = 0
        try:
            async for _ in self.client.scan_iter(match=self.keys.session_pattern(), count=1000):
                total += 1
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable during count: {exc}") from exc
        return total
