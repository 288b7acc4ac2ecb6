"""The context of a session: variables, the slots of the current dialogue step, and its history.

A context lives in two keys in the session's slot (KeySchema.context and .history). Every
script that touches them first compares the context's generation with the session's creation
time, so a context left behind by an earlier session of the same identity is never seen. The
context keys always expire with the session: every context write gives them the session's
expiry, and every touch, update or tracked activity that moves the session's expiry moves
theirs (lib/session.lua expire_session); SessionSystem.delete_session deletes them with it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from base64 import urlsafe_b64encode
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from .errors import BackendUnavailable, IntegrityError, SessionNotFound, ValidationError
from .history import (
    SUMMARY_ROLE,
    HistoryConfig,
    Message,
    check_limit,
    check_message,
    decode_item,
    encode_payload,
    last_within,
)
from .identity import Identity, parse_session_id
from .nearcache import MISS, NearCache
from .serialization import SCHEMA_VERSION, codec_named, decode
from .store import SessionStore
from .validation import ContextValidator

log = logging.getLogger(__name__)

_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class ContextConfig:
    """How contexts are stored and checked."""

    codec: str = "msgpack"
    """"msgpack" (compact, the default) or "json" (readable with redis-cli)."""
    history: HistoryConfig = field(default_factory=HistoryConfig)
    validator: ContextValidator = field(default_factory=ContextValidator)

    def __post_init__(self) -> None:
        codec_named(self.codec)


@dataclass(frozen=True, slots=True)
class DialogueStep:
    """The current dialogue step and the slots filled in it."""

    step: str | None
    slots: dict[str, Any]


class SessionContext:
    """Variables, dialogue slots and conversation history of sessions (one round trip each)."""

    def __init__(
        self,
        store: SessionStore,
        config: ContextConfig | None = None,
        near_cache: NearCache | None = None,
    ) -> None:
        self.store = store
        self.config = config or ContextConfig()
        self.codec = codec_named(self.config.codec)
        self.validator = self.config.validator
        self.near_cache = near_cache
        self.drain: Any = None
        """Set by the system on memory://: applies queued invalidations before a cached read."""
        self._caps = self.config.history.append_caps()
        self._version = str(SCHEMA_VERSION)
        self._summarizing: dict[str, asyncio.Task[None]] = {}
        self._keys: dict[str, tuple[Identity, list[str]]] = {}
        scripts = store.scripts
        self._append = scripts.context_append
        self._write = scripts.context_write
        self._read = scripts.context_read
        self._clear = scripts.context_clear
        self._summarize = scripts.context_summarize

    def keys_of(self, session_id: str) -> tuple[Identity, list[str]]:
        """The identity and [session, context, history] keys of a session id."""
        found = self._keys.get(session_id)
        if found is None:
            if len(self._keys) >= 65536:  # bounded: ids of a burst of one-off sessions
                self._keys.clear()
            ident = parse_session_id(session_id)
            keys = self.store.keys
            found = ident, [keys.session(ident), keys.context(ident), keys.history(ident)]
            self._keys[session_id] = found
        return found

    # -- history ------------------------------------------------------------------------------

    async def append_message(
        self, session_id: str, role: str, content: Any, *, tokens: int | None = None, **meta: Any
    ) -> Message:
        """Append a message to the session's history in one round trip; returns it as stored.

        The oldest messages are dropped (or summarized, see HistoryConfig) past the caps.
        SessionNotFound if the session does not exist.
        """
        role, token_arg = check_message(role, tokens, self.validator.limits.max_role_length)
        payload = encode_payload(self.codec, role, content, meta)
        self._check_message_size(payload)
        _, keys = self.keys_of(session_id)
        args = self.store.op_args(
            [token_arg, payload, *self._caps, self._version]
        )
        log = self.store.keys.op_log(keys[0])
        reply = await self._append.run(self.store.client, [*keys, log], args)
        self._invalidate(keys)
        if reply[0] == -1:
            raise SessionNotFound(session_id)
        number, over, ms = int(reply[0]), int(reply[1]), int(reply[3])
        if over and self.config.history.summarize is not None:
            self._start_summary(session_id, keys)
        stamp = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
        return Message(number, role, content, stamp, tokens, meta)

    def _check_message_size(self, payload: bytes) -> None:
        limit = self.validator.limits.max_message_bytes
        cap = self.config.history.max_bytes
        if cap is not None:
            limit = min(limit, cap)
        if len(payload) > limit:
            raise ValidationError(f"message encodes to {len(payload)} bytes; the limit is {limit}")

    async def get_history(
        self, session_id: str, limit: int | None = None, max_tokens: int | None = None
    ) -> list[Message]:
        """The newest ``limit`` messages (all by default), oldest first, trimmed further to the
        newest that fit ``max_tokens``; empty if the session or its history does not exist."""
        count = check_limit(limit)
        _, keys = self.keys_of(session_id)
        cache = self.near_cache
        if cache is None:
            _, items = await self._run_read(keys, "history", count)
            messages = [decode_item(raw) for raw in items]
        else:
            messages = await self._cached(keys, keys[2], "history")
            if count:
                messages = messages[-count:]
        return last_within(messages, max_tokens)

    async def clear_history(self, session_id: str) -> int:
        """Remove every message of the session's history; returns how many there were."""
        _, keys = self.keys_of(session_id)
        removed = await self._clear.run(self.store.client, keys[1:], [])
        self._invalidate(keys)
        return int(removed)

    # -- variables ------------------------------------------------------------------------------

    async def set_variable(self, session_id: str, name: str, value: Any) -> None:
        """Set one variable (validated first: ValidationError writes nothing)."""
        await self.set_variables(session_id, {name: value})

    async def set_variables(
        self, session_id: str, values: Mapping[str, Any], *, delete: Iterable[str] = ()
    ) -> None:
        """Set several variables and delete others in one atomic step."""
        if not isinstance(values, Mapping):
            raise ValidationError(f"values must be a mapping, not {type(values).__name__}")
        if isinstance(delete, str):
            raise ValidationError("delete takes a list of names, not a str")
        pairs: list[str | bytes] = []
        for name, value in values.items():
            self.validator.name(name)
            encoded = self.codec.encode(value)
            self.validator.variable(name, value, encoded)
            pairs += ["v:" + name, encoded]
        dels = [self.validator.name(n) for n in delete]
        if set(dels) & set(values):
            raise ValidationError("a variable cannot be both set and deleted in one call")
        self.validator.deletions(dels)
        await self._write_context(session_id, pairs, ["v:" + n for n in dels], "")

    async def delete_variable(self, session_id: str, name: str) -> None:
        """Remove one variable (refused for a required one in strict mode)."""
        await self.set_variables(session_id, {}, delete=[name])

    async def get_variable(self, session_id: str, name: str, default: Any = None) -> Any:
        """One variable, or ``default``."""
        raw = (await self._context_hash(session_id)).get(b"v:" + name.encode())
        return default if raw is None else decode(raw)

    async def get_variables(self, session_id: str) -> dict[str, Any]:
        """Every variable of the session (empty if none or no session)."""
        flat = await self._context_hash(session_id)
        return {k[2:].decode(): decode(v) for k, v in flat.items() if k[:2] == b"v:"}

    # -- dialogue slots -----------------------------------------------------------------------

    async def set_slots(
        self, session_id: str, slots: Mapping[str, Any], *, step: str | None = None
    ) -> None:
        """Fill slots of the dialogue step; naming a new ``step`` first drops the old slots."""
        if not isinstance(slots, Mapping):
            raise ValidationError(f"slots must be a mapping, not {type(slots).__name__}")
        if len(slots) > self.validator.limits.max_slots:
            raise ValidationError(f"at most {self.validator.limits.max_slots} slots per step")
        pairs: list[str | bytes] = []
        for name, value in slots.items():
            self.validator.name(name, "slot name")
            encoded = self.codec.encode(value)
            if len(encoded) > self.validator.limits.max_variable_bytes:
                raise ValidationError(f"slot {name!r} encodes to {len(encoded)} bytes")
            pairs += ["s:" + name, encoded]
        step_arg = "" if step is None else "=" + self.validator.name(step, "step")
        await self._write_context(session_id, pairs, [], step_arg)

    async def clear_slots(self, session_id: str) -> None:
        """Leave the dialogue step: its slots are dropped and no step is current."""
        await self._write_context(session_id, [], [], "=")

    async def get_slots(self, session_id: str) -> DialogueStep:
        """The current dialogue step and its slots."""
        flat = await self._context_hash(session_id)
        step = flat.get(b"#step")
        slots = {k[2:].decode(): decode(v) for k, v in flat.items() if k[:2] == b"s:"}
        return DialogueStep(step.decode() if step else None, slots)

    # -- internals ------------------------------------------------------------------------------

    async def _write_context(
        self, session_id: str, pairs: list[str | bytes], dels: list[str], step: str
    ) -> None:
        _, keys = self.keys_of(session_id)
        required = ["v:" + n for n in self.validator.required] if self.validator.strict else []
        args: list[str | bytes] = [
            self._version,
            str(self.validator.limits.max_variables),
            step,
            str(len(required)),
            *required,
            str(len(pairs) // 2),
            *pairs,
            str(len(dels)),
            *dels,
        ]
        reply = await self._write.run(self.store.client, keys, args)
        self._invalidate(keys)
        status = int(reply[0])
        if status == -1:
            raise SessionNotFound(session_id)
        if status == -2:
            name = reply[1].decode()[2:]
            raise ValidationError(f"required variable {name!r} would be missing; nothing written")
        if status == -3:
            raise ValidationError(
                f"the context would hold {int(reply[1])} variables; the limit is "
                f"{self.validator.limits.max_variables}; nothing written"
            )

    async def _context_hash(self, session_id: str) -> dict[bytes, bytes]:
        _, keys = self.keys_of(session_id)
        if self.near_cache is None:
            flat, _ = await self._run_read(keys, "vars", 0)
            return _pairs(flat)
        cached: dict[bytes, bytes] = await self._cached(keys, keys[1], "vars")
        return cached

    async def _run_read(
        self, keys: list[str], mode: str, count: int
    ) -> tuple[list[Any], list[Any]]:
        reply = await self._read.run(self.store.client, keys, [mode, str(count)])
        flat, items = reply[0], reply[1]
        version = _pairs(flat).get(b"#v")
        if version is not None and int(version) > SCHEMA_VERSION:
            raise IntegrityError(
                f"context written with schema version {int(version)}; this sessioncache reads "
                f"up to {SCHEMA_VERSION}: upgrade it"
            )
        return flat, items

    async def _cached(self, keys: list[str], entry_key: str, mode: str) -> Any:
        cache = self.near_cache
        assert cache is not None
        if self.drain is not None:
            await self.drain()
        found = cache.get(entry_key)
        if found is not MISS:
            return found
        deps = tuple(keys) if mode == "history" else (keys[0], keys[1])
        ticket = cache.begin(deps)
        try:
            flat, items = await self._run_read(keys, mode, 0)
        except BaseException:
            cache.abandon(ticket)
            raise
        if mode == "history":
            value: Any = [decode_item(raw) for raw in items]
            size = sum(len(raw) for raw in items) + 64
        else:
            value = _pairs(flat)
            size = sum(len(k) + len(v) for k, v in value.items()) + 64
        cache.fill(ticket, entry_key, value, size)
        return list(value) if mode == "history" else dict(value)

    def _invalidate(self, keys: list[str]) -> None:
        # Read-your-writes in this process, before the server's invalidation arrives.
        if self.near_cache is not None:
            self.near_cache.invalidate(keys[1:])

    # -- the summarize hook -----------------------------------------------------------------

    def _start_summary(self, session_id: str, keys: list[str]) -> None:
        running = self._summarizing.get(session_id)
        if running is not None and not running.done():
            return
        task = asyncio.get_running_loop().create_task(self._summary(session_id, keys))
        self._summarizing[session_id] = task
        task.add_done_callback(lambda t: self._summary_done(session_id, t))

    def _summary_done(self, session_id: str, task: asyncio.Task[None]) -> None:
        if self._summarizing.get(session_id) is task:
            del self._summarizing[session_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("summarizing %s failed: %s", session_id, task.exception())

    async def _summary(self, session_id: str, keys: list[str]) -> None:
        history = self.config.history
        hook = history.summarize
        assert hook is not None
        token = urlsafe_b64encode(os.urandom(12)).decode()
        client, ctx_keys = self.store.client, keys[1:]
        lease = str(max(1, round(history.claim_lease * 1000)))
        claimed = await self._summarize.run(
            client, ctx_keys, ["claim", token, lease, *history.caps(history.summarize_to)]
        )
        k = int(claimed[0])
        if k == 0:
            return
        items = claimed[1:]
        try:
            result = await hook([decode_item(raw) for raw in items])
            content, tokens = result if isinstance(result, tuple) else (result, None)
            _, token_arg = check_message("assistant", tokens, 1 << 30)
            payload = encode_payload(self.codec, SUMMARY_ROLE, content, {"summarized": k})
        except BaseException:
            await self._summarize.run(client, ctx_keys, ["release", token])
            raise
        await self._summarize.run(
            client, ctx_keys, ["apply", token, str(k), items[0], items[-1], payload, token_arg]
        )
        self._invalidate(keys)

    async def wait_summaries(self) -> None:
        """Wait until the summaries this process started are done (before a shutdown)."""
        while self._summarizing:
            await asyncio.gather(*self._summarizing.values(), return_exceptions=True)

    async def delete_context(self, session_id: str) -> None:
        """Remove the session's context keys (SessionSystem.delete_session calls this)."""
        _, keys = self.keys_of(session_id)
        try:
            await self.store.client.delete(keys[1], keys[2])
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable deleting a context: {exc}") from exc
        self._invalidate(keys)


def _pairs(flat: Any) -> dict[bytes, bytes]:
    if isinstance(flat, dict):
        return flat
    it = iter(flat)
    return dict(zip(it, it, strict=True))
