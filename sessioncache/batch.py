"""Batch operations: many sessions per round trip, each item's result or error on its own.

Commands go out in pipelines (not transactions) of at most ``chunk`` items; on a cluster,
redis-py's cluster pipeline groups them by the node owning each slot. Bad input for one item
(an invalid id, an oversized value) is that item's error and is never sent; one item's failure
in Redis never fails the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from redis.exceptions import NoScriptError, RedisError, ResponseError

from .errors import BackendUnavailable, SessionCacheError, SessionNotFound
from .identity import parse_session_id
from .models import Session, session_from_hash
from .scripts import Script
from .slots import tag_slot
from .store import SessionStore

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ItemResult(Generic[T]):
    """The outcome for one session of a batch: a value, or the error that item met."""

    session_id: str
    value: T | None = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        """True when the item succeeded."""
        return self.error is None

    def unwrap(self) -> T | None:
        """The value, or the item's error raised."""
        if self.error is not None:
            raise self.error
        return self.value


@dataclass(slots=True)
class _Call:
    index: int
    session_id: str
    script: Script | None
    keys: Sequence[str]
    args: Sequence[Any]
    finish: Callable[[Any], Any]
    members: list[tuple[int, str, Any, str]] = field(default_factory=list)


class Batch:
    """get_many, set_many, update_many and delete_many over one store."""

    def __init__(self, store: SessionStore, *, chunk: int = 1000) -> None:
        self.store = store
        self.chunk = chunk
        self.on_write: Callable[[list[str]], None] | None = None
        """Called with the session keys a batch wrote (the near cache's read-your-writes)."""

    async def get_many(self, session_ids: Iterable[str]) -> list[ItemResult[Session]]:
        """Each session, or None if it does not exist, in the order asked.

        Sessions of one slot are read by one read_many.lua call (all of them on a standalone
        server, up to ``chunk`` per call): one reply to parse instead of one per session.
        """
        results: list[ItemResult[Any]] = []
        groups: dict[int, list[tuple[int, str, Any, str]]] = {}
        cluster = self.store.is_cluster
        for index, sid in enumerate(session_ids):
            try:
                ident = parse_session_id(sid)
            except SessionCacheError as exc:
                results.append(ItemResult(sid, error=exc))
                continue
            results.append(ItemResult(sid))
            slot = tag_slot(ident.user_tag) if cluster else 0
            groups.setdefault(slot, []).append((index, sid, ident, self.store.keys.session(ident)))
        calls: list[_Call] = []
        for members in groups.values():
            for start in range(0, len(members), self.chunk):
                part = members[start : start + self.chunk]
                calls.append(
                    _Call(
                        -1, part[0][1], self.store.scripts.read_many, [m[3] for m in part], [], list
                    )
                )
                calls[-1].members = part
        replies = await self._send_with_reload(calls)
        for call, reply in zip(calls, replies, strict=True):
            for member, flat in zip(call.members, _per_key(reply, len(call.members)), strict=True):
                index, sid, ident, key = member
                if isinstance(flat, Exception):
                    results[index] = ItemResult(sid, error=flat)
                else:
                    results[index] = ItemResult(
                        sid, session_from_hash(ident, key, flat) if flat else None
                    )
        return results

    async def set_many(self, items: Mapping[str, Mapping[str, Any]]) -> list[ItemResult[int]]:
        """Write data fields of several sessions (like set_fields); each item's new version,
        or SessionNotFound for a session that does not exist."""
        return await self._updates(
            {sid: {"data": data} for sid, data in items.items()}, "version", int
        )

    async def update_many(
        self, updates: Mapping[str, Mapping[str, Any]]
    ) -> list[ItemResult[Session]]:
        """Apply SessionStore.update keyword arguments (data, metadata, delete, ...) per session;
        each item's updated session or error (SessionNotFound, VersionConflict, ...)."""
        return await self._updates(updates, "full", None)

    async def _updates(
        self, updates: Mapping[str, Mapping[str, Any]], mode: str, convert: Any
    ) -> list[ItemResult[Any]]:
        calls: list[_Call] = []
        results: list[ItemResult[Any]] = []
        written: list[str] = []
        for index, (sid, options) in enumerate(updates.items()):
            try:
                ident, keys, args = self.store.update_command(sid, mode, **options)
            except (SessionCacheError, TypeError) as exc:
                results.append(ItemResult(sid, error=exc))
                continue
            results.append(ItemResult(sid))
            written.append(keys[0])
            expected = options.get("expected_version")

            def finish(
                reply: Any,
                sid: str = sid,
                ident: Any = ident,
                key: str = keys[0],
                exp: Any = expected,
            ) -> Any:
                payload = self.store.update_outcome(sid, reply, exp)
                return convert(payload) if convert else session_from_hash(ident, key, payload)

            calls.append(_Call(index, sid, self.store.scripts.update, keys, args, finish))
        await self._run(calls, results)
        self._written(written)
        return results

    async def delete_many(self, session_ids: Iterable[str]) -> list[ItemResult[bool]]:
        """Delete several sessions; each item True if it existed."""
        calls: list[_Call] = []
        results: list[ItemResult[Any]] = []
        written: list[str] = []
        for index, sid in enumerate(session_ids):
            try:
                keys, args = self.store.delete_command(sid)
            except SessionCacheError as exc:
                results.append(ItemResult(sid, error=exc))
                continue
            results.append(ItemResult(sid))
            written.append(keys[0])
            calls.append(_Call(index, sid, self.store.scripts.delete, keys, args, bool))
        await self._run(calls, results)
        self._written(written)
        return results

    def _written(self, keys: list[str]) -> None:
        if self.on_write is not None and keys:
            self.on_write(keys)

    async def _run(self, calls: list[_Call], results: list[ItemResult[Any]]) -> None:
        for start in range(0, len(calls), self.chunk):
            chunk = calls[start : start + self.chunk]
            replies = await self._send_with_reload(chunk)
            for call, reply in zip(chunk, replies, strict=True):
                results[call.index] = self._outcome(call, reply)

    async def _send_with_reload(self, chunk: list[_Call]) -> list[Any]:
        replies = await self._send(chunk)
        retry = [c for c, r in zip(chunk, replies, strict=True) if isinstance(r, NoScriptError)]
        if retry:
            # The server lost its script cache (restart, failover): load and resend those.
            for script in {c.script.name: c.script for c in retry if c.script}.values():
                await self.store.client.script_load(script.source)
            again = dict(zip(map(id, retry), await self._send(retry), strict=True))
            replies = [again.get(id(c), r) for c, r in zip(chunk, replies, strict=True)]
        return replies

    def _outcome(self, call: _Call, reply: Any) -> ItemResult[Any]:
        if isinstance(reply, ResponseError):
            error: Exception = BackendUnavailable(f"{call.session_id}: {reply}")
            return ItemResult(call.session_id, error=error)
        if isinstance(reply, Exception):
            return ItemResult(call.session_id, error=BackendUnavailable(str(reply)))
        try:
            return ItemResult(call.session_id, call.finish(reply))
        except (SessionCacheError, SessionNotFound) as exc:
            return ItemResult(call.session_id, error=exc)

    async def _send(self, calls: list[_Call]) -> list[Any]:
        try:
            async with self.store.client.pipeline(transaction=False) as pipe:
                for call in calls:
                    if call.script is not None:
                        # execute_command: redis-py blocks the evalsha method on cluster
                        # pipelines, yet routes EVALSHA by its first key like any command.
                        sha, nkeys = call.script.sha, len(call.keys)
                        pipe.execute_command("EVALSHA", sha, nkeys, *call.keys, *call.args)
                return list(await pipe.execute(raise_on_error=False))
        except RedisError as exc:
            failed = BackendUnavailable(f"Redis unavailable during a batch: {exc}")
            return [failed] * len(calls)


def _per_key(reply: Any, n: int) -> list[Any]:
    """read_many.lua's reply split per key, or the call's error repeated for each key."""
    if isinstance(reply, ResponseError):
        return [BackendUnavailable(f"read_many failed: {reply}")] * n
    if isinstance(reply, Exception):
        return [reply] * n
    return list(reply)
