"""Cross-channel sync: shared fields of linked sessions, by strategy (decided in Lua) and mode."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .codec import data_field, decode_value, encode_value
from .errors import SessionNotFound, ValidationError
from .hlc import HybridClock
from .identity import Identity, parse_session_id
from .identity_links import IdentityLinks, identity_name, split_identity
from .store import SessionStore
from .sync_history import SyncHistory, SyncRecord

STRATEGIES = ("lww", "fww", "merge", "priority", "manual")
MODES = ("manual", "auto", "delayed", "batch")
_VERDICTS = {"a": "applied", "k": "kept", "c": "conflict", "x": "moved"}

Resolver = Callable[[str, Any, Any], Any]
"""A custom strategy: (field, stored value or None, incoming value) -> the value to store."""


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """What linked sessions share and how (docs/sync.md)."""

    shared_fields: Sequence[str] | str = ()
    """Data fields shared by a person's sessions, or "*" for all."""
    strategy: str | Resolver = "lww"
    mode: str = "auto"
    priority: Sequence[str] = ()
    """Platforms in priority order (first wins) for strategy "priority"."""
    delay: float = 2.0
    """Seconds a "delayed" sync waits for more writes."""
    history_cap: int = 10_000

    def __post_init__(self) -> None:
        if not callable(self.strategy) and self.strategy not in STRATEGIES:
            raise ValidationError(
                f"sync_strategy must be one of {', '.join(STRATEGIES)} or a callable; "
                f"got {self.strategy!r}"
            )
        if self.mode not in MODES:
            raise ValidationError(f"sync_mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        if isinstance(self.shared_fields, str) and self.shared_fields != "*":
            raise ValidationError('sync_shared_fields is a list of field names or "*"')

    def shares(self, name: str) -> bool:
        """Whether a data field is shared."""
        return self.shared_fields == "*" or name in self.shared_fields

    @property
    def strategy_name(self) -> str:
        """The strategy as recorded in history."""
        return "custom" if callable(self.strategy) else str(self.strategy)


@dataclass(slots=True)
class Conflict:
    """A field two channels changed concurrently under strategy "manual"; both values kept."""

    conflict_id: str
    session_id: str
    field: str
    stored: Any
    incoming: Any
    origin: str
    """The session the incoming value came from."""
    stamp: str


@dataclass(slots=True)
class SyncField:
    """One field as sync_apply.lua takes it (see its header)."""
    name: str
    stored: str
    stamp: str
    base: str
    kind: str
    value: bytes
    extra: dict[str, Any] = field(default_factory=dict)


def _conflict_id(stored_field: str, stamp: str) -> str:
    return hashlib.sha1(f"{stored_field}\0{stamp}".encode()).hexdigest()[:16]


def _plan(op: str, source: str, targets: list[str], payload: Sequence[SyncField]) -> dict[str, Any]:
    """A sync operation as the journal keeps it (JSON: values in base64)."""
    return {
        "op": op, "source": source, "targets": targets,
        "fields": [[f.name, f.stored, f.stamp, f.base, f.kind,
                    base64.b64encode(f.value).decode()] for f in payload],
    }


def _merge_state(value: Any, stamp: str, origin: str) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"c": {origin: [value, stamp]}}
    if isinstance(value, (list, tuple, set, frozenset)):
        return {"s": sorted(value, key=json.dumps) if isinstance(value, (set, frozenset))
                else list(value)}
    if isinstance(value, dict):
        return {"m": value, "t": stamp}
    return {"v": value, "t": stamp}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=json.dumps)
    return value


class SyncManager:
    """Stamps shared fields on write and applies them to a person's other sessions.

    Each target is one sync_apply.lua call in the target's slot; an operation that spans
    slots is journaled first ({idm} slot) and removed when every target has it, so a process
    killed between steps leaves a plan that ``recover()`` replays (every step is idempotent:
    an equal stamp is already applied).
    """

    def __init__(self, store: SessionStore, links: IdentityLinks, config: SyncConfig) -> None:
        self.store = store
        self.links = links
        self.config = config
        self.clock = HybridClock()
        self.history = SyncHistory(store.client, store.keys, config.history_cap)
        self.on_write: Callable[[str], None] | None = None
        """Told of every session this manager wrote (the near cache drops it at once)."""
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- keys -----------------------------------------------------------------------------

    def script_keys(self, ident: Identity) -> list[str]:
        """KEYS of sync_apply.lua for a session."""
        s = self.store
        key = s.keys.session(ident)
        return [key, s.keys.user_index(ident.user_tag), s.keys.change_bucket_of(ident),
                s.keys.op_log(key), s.keys.sync_meta(ident), s.keys.sync_conflicts(ident)]

    def _rank(self, platform: str) -> str:
        order = list(self.config.priority)
        return str(order.index(platform) if platform in order else len(order))

    async def _apply(
        self, session_id: str, mode: str, origin: str, fields: Sequence[SyncField]
    ) -> dict[str, str]:
        ident = parse_session_id(session_id)
        args: list[Any] = [mode, origin, self._rank(parse_session_id(origin).platform),
                           str(len(fields))]
        for f in fields:
            args += [f.stored, f.stamp, f.base, f.kind, f.value, _conflict_id(f.stored, f.stamp)]
        reply = await self.store.scripts.sync_apply.run(
            self.store.client, self.script_keys(ident), self.store.op_args(args)
        )
        if self.on_write is not None:
            self.on_write(session_id)
        if reply[0] == -1:
            raise SessionNotFound(session_id)
        if reply[0] == 2:
            return {f.name: "applied" for f in fields}
        return {
            f.name: _VERDICTS[v.decode() if isinstance(v, bytes) else v]
            for f, v in zip(fields, reply[2:], strict=True)
        }

    # -- local writes ---------------------------------------------------------------------

    async def write(
        self, session_id: str, data: Mapping[str, Any], delete: Iterable[str] = ()
    ) -> dict[str, str]:
        """Write (or delete) shared fields of a session with fresh stamps, then sync them as
        the mode says: now (auto), after ``delay`` (delayed), by the batch job, or on
        ``sync_sessions()`` (manual). Fields that are not shared are ignored here."""
        limits = self.store.limits
        merge = self.config.strategy == "merge"
        fields = []
        for name, value in data.items():
            if not self.config.shares(name):
                continue
            if merge:
                encode_value(value, limits)  # the same limits as any stored value
                try:
                    raw = json.dumps(_jsonable(value)).encode()
                except (TypeError, ValueError) as exc:
                    raise ValidationError(
                        f"field {name!r}: strategy 'merge' takes JSON values "
                        f"(numbers, text, lists, sets, dicts): {exc}"
                    ) from exc
                fields.append(
                    SyncField(name, data_field(name, limits), self.clock.now(), "", "m", raw)
                )
            else:
                fields.append(SyncField(name, data_field(name, limits), self.clock.now(), "", "v",
                                     encode_value(value, limits)))
        for name in delete:
            if self.config.shares(name):
                fields.append(SyncField(name, data_field(name, limits), self.clock.now(), "", "d",
                                     b""))
        if not fields:
            return {}
        result = await self._apply(session_id, "local", session_id, fields)
        await self._announce(session_id, [f.name for f in fields])
        await self._after_write(session_id)
        return result

    async def increment(self, session_id: str, name: str, by: int | float = 1) -> Any:
        """Add to a shared counter (strategy "merge"): this session's share grows by ``by``,
        so increments made concurrently on linked sessions all count. Returns the verdict."""
        if self.config.strategy != "merge" or not self.config.shares(name):
            raise ValidationError("increment() needs strategy 'merge' and a shared field")
        f = SyncField(name, data_field(name, self.store.limits), self.clock.now(), "", "m",
                   json.dumps({"+": by}).encode())
        result = await self._apply(session_id, "local", session_id, [f])
        await self._announce(session_id, [name])
        await self._after_write(session_id)
        return result[name]

    async def _announce(self, session_id: str, names: list[str]) -> None:
        await self.store.client.publish(
            self.store.keys.sync_channel(), json.dumps({"session": session_id, "fields": names})
        )

    async def _after_write(self, session_id: str) -> None:
        mode = self.config.mode
        if mode == "auto":
            await self.sync_sessions(session_id)
        elif mode == "delayed":
            self._debounce(session_id)
        elif mode == "batch":
            await self.store.client.zadd(self.store.keys.sync_pending(),
                                         {session_id: time.time() * 1000})

    def _debounce(self, session_id: str) -> None:
        loop = asyncio.get_running_loop()
        old = self._timers.pop(session_id, None)
        if old is not None:
            old.cancel()

        def fire() -> None:
            self._timers.pop(session_id, None)
            task = loop.create_task(self.sync_sessions(session_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self._timers[session_id] = loop.call_later(self.config.delay, fire)

    async def flush(self) -> None:
        """Run every delayed sync now and wait for those under way (before shutdown)."""
        timers, self._timers = self._timers, {}
        for sid, handle in timers.items():
            handle.cancel()
            await self.sync_sessions(sid)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def run_batch(self, *_: Any) -> int:
        """Sync every session waiting for the batch job; returns how many (a FleetJob func)."""
        key = self.store.keys.sync_pending()
        due = await self.store.client.zrange(key, 0, 999)
        for raw in due:
            sid = raw.decode()
            with contextlib.suppress(SessionNotFound):
                await self.sync_sessions(sid)
            await self.store.client.zrem(key, raw)
        return len(due)

    # -- linked sessions ------------------------------------------------------------------

    async def linked_sessions(self, session_id: str) -> list[str]:
        """The other sessions of the session's person: each linked identity's sessions on its
        platform (none for an unlinked identity)."""
        ident = parse_session_id(session_id)
        own = identity_name(ident.platform, ident.user_id)
        out = []
        for who in await self.links.linked_identities(ident.platform, ident.user_id):
            if who == own:
                continue
            platform, user = split_identity(who)
            # The user index's entries, not the sessions: a stale entry (an expired session)
            # costs a "gone" verdict at apply, a HGETALL per session would cost every sync.
            keys = self.store.keys
            for raw in await self.store.client.hkeys(keys.user_index(user)):
                sid = keys.session_id_of_key(keys.session_in_index(user, raw.decode()))
                if sid.startswith(platform + ":") and sid != session_id:
                    out.append(sid)
        return sorted(out)

    async def _person(self, session_id: str) -> str | None:
        ident = parse_session_id(session_id)
        return await self.links.person_of(ident.platform, ident.user_id)

    async def _read(self, session_id: str, names: Sequence[str] | None) -> list[SyncField]:
        ident = parse_session_id(session_id)
        limits = self.store.limits
        if names is None:
            if self.config.shared_fields == "*":
                names = list((await self.store.get(session_id)).data)
            else:
                names = list(self.config.shared_fields)
        stored = [data_field(n, limits) for n in names]
        reply = await self.store.scripts.sync_read.run(
            self.store.client,
            [self.store.keys.session(ident), self.store.keys.sync_meta(ident)],
            stored,
        )
        if not reply:
            raise SessionNotFound(session_id)
        out = []
        for name, sf, (value, stamp, state, base) in zip(names, stored, reply, strict=True):
            if not stamp:
                continue  # never written through sync: nothing to share yet
            stamp_s = stamp.decode()
            self.clock.observe(stamp_s)
            if self.config.strategy == "merge":
                st = json.loads(state) if state else _merge_state(
                    None if value is None else decode_value(value), stamp_s, session_id)
                out.append(SyncField(name, sf, stamp_s, "", "m", json.dumps(st).encode()))
            elif value is None:
                out.append(SyncField(name, sf, stamp_s, (base or b"").decode(), "d", b""))
            else:
                out.append(SyncField(name, sf, stamp_s, (base or b"").decode(), "v", value))
        return out

    # -- operations -----------------------------------------------------------------------

    async def sync_sessions(
        self, session_id: str, *, fields: Sequence[str] | None = None, op: str = "update"
    ) -> dict[str, dict[str, str]]:
        """Apply the session's shared fields to every linked session (target -> field -> verdict).

        Journaled first: a process killed between targets leaves the plan for recover().
        """
        targets = await self.linked_sessions(session_id)
        if not targets:
            return {}
        payload = await self._read(session_id, fields)
        if not payload:
            return {}
        plan_id = self.clock.now()
        plan = _plan(op, session_id, targets, payload)
        journal = self.store.keys.sync_journal()
        await self.store.client.hset(journal, plan_id, json.dumps(plan))
        results = await self._run_plan(plan)
        await self.store.client.hdel(journal, plan_id)
        return results

    async def _run_plan(self, plan: dict[str, Any]) -> dict[str, dict[str, str]]:
        source = plan["source"]
        payload = [SyncField(n, sf, st, b, k, base64.b64decode(v))
                   for n, sf, st, b, k, v in plan["fields"]]
        person = await self._person(source)
        results: dict[str, dict[str, str]] = {}
        records = []
        for target in plan["targets"]:
            results[target] = await self._apply_target(target, source, payload)
            records.append(SyncRecord(
                plan["op"], source, target, [f.name for f in payload],
                self.config.strategy_name, results[target], time.time(), person))
        await self.history.record(records)
        return results

    async def _apply_target(
        self, target: str, source: str, payload: Sequence[SyncField]
    ) -> dict[str, str]:
        try:
            strategy = self.config.strategy
            if callable(strategy):
                return await self._apply_custom(target, source, payload, strategy)
            return await self._apply(target, strategy, source, payload)
        except SessionNotFound:
            return {f.name: "gone" for f in payload}

    async def _apply_custom(
        self, target: str, source: str, payload: Sequence[SyncField], resolve: Resolver
    ) -> dict[str, str]:
        out = {}
        for f in payload:
            for _ in range(16):  # a concurrent writer moved the stamp: read again
                [cur] = await self._read_raw(target, f.stored)
                value, stamp = cur[0], cur[1]
                if stamp and stamp.decode() == f.stamp:
                    out[f.name] = "kept"
                    break
                stored = None if value is None else decode_value(value)
                incoming = None if f.kind == "d" else decode_value(f.value)
                chosen = resolve(f.name, stored, incoming)
                new = SyncField(f.name, f.stored, max(f.stamp, self.clock.now()),
                             (stamp or b"").decode(), "v",
                             encode_value(chosen, self.store.limits))
                verdict = (await self._apply(target, "cas", source, [new]))[f.name]
                if verdict != "moved":
                    out[f.name] = verdict
                    break
        return out

    async def _read_raw(self, session_id: str, stored: str) -> list[Any]:
        ident = parse_session_id(session_id)
        reply = await self.store.scripts.sync_read.run(
            self.store.client,
            [self.store.keys.session(ident), self.store.keys.sync_meta(ident)], [stored])
        if not reply:
            raise SessionNotFound(session_id)
        return list(reply)

    async def pull(self, session_id: str) -> dict[str, dict[str, str]]:
        """The "create" operation: a new session of a linked identity takes the shared fields
        of the person's other sessions."""
        out = {}
        for other in await self.linked_sessions(session_id):
            payload = await self._read(other, None)
            if payload:
                out.update(await self._run_plan(_plan("create", other, [session_id], payload)))
        return out

    async def merge_sessions(self, a: str, b: str) -> None:
        """The "merge" operation: each session's shared fields applied to the other."""
        for src, dst in ((a, b), (b, a)):
            payload = await self._read(src, None)
            if payload:
                await self._run_plan(_plan("merge", src, [dst], payload))

    async def recover(self) -> int:
        """Replay every journaled plan a killed process left (idempotent); returns how many."""
        journal = self.store.keys.sync_journal()
        plans = await self.store.client.hgetall(journal)
        for plan_id, raw in plans.items():
            await self._run_plan(json.loads(raw))
            await self.store.client.hdel(journal, plan_id)
        return len(plans)

    async def forget(self, session_id: str) -> None:
        """Drop a deleted session's stamps and conflicts (its slot's two keys)."""
        ident = parse_session_id(session_id)
        keys = self.store.keys
        await self.store.client.delete(keys.sync_meta(ident))
        await self.store.client.delete(keys.sync_conflicts(ident))

    # -- conflicts ------------------------------------------------------------------------

    async def list_conflicts(self, session_id: str | None = None) -> list[Conflict]:
        """Conflicts kept for review (strategy "manual"), of one session or of all."""
        keys = self.store.keys
        if session_id is not None:
            cf_keys = [keys.sync_conflicts(parse_session_id(session_id))]
        else:
            cf_keys = [k.decode() if isinstance(k, bytes) else k async for k in
                       self.store.client.scan_iter(match=keys.sync_conflicts_pattern(),
                                                   count=1000)]
        out = []
        for cf in cf_keys:
            sid = keys.session_id_of_conflicts_key(cf)
            parts = await self.store.client.hgetall(cf)
            if not parts:
                continue
            by_id: dict[str, dict[str, bytes]] = {}
            for k, v in parts.items():
                cid, _, part = k.decode().partition(":")
                by_id.setdefault(cid, {})[part] = v
            stored_raw = await self.store.client.hmget(
                keys.session(parse_session_id(sid)), [p["f"].decode() for p in by_id.values()])
            for (cid, p), cur in zip(by_id.items(), stored_raw, strict=True):
                name = p["f"].decode()
                out.append(Conflict(
                    cid, sid, name[1:] if name.startswith("~") else name,
                    None if cur is None else decode_value(cur),
                    None if p["k"] == b"d" else decode_value(p["v"]),
                    p["o"].decode(), p["s"].decode()))
        return sorted(out, key=lambda c: c.stamp)

    async def resolve_conflict(self, conflict_id: str, choose: Any = "incoming") -> Conflict:
        """Settle a conflict: "incoming", "stored", or a value of your own; the choice is
        written with a fresh stamp and synced (last-writer-wins), and the record removed."""
        for c in await self.list_conflicts():
            if c.conflict_id == conflict_id:
                break
        else:
            raise ValidationError(f"no conflict {conflict_id!r}")
        value = c.incoming if choose == "incoming" else c.stored if choose == "stored" else choose
        stored = data_field(c.field, self.store.limits)
        f = SyncField(c.field, stored, self.clock.now(), "", "v",
                   encode_value(value, self.store.limits))
        await self._apply(c.session_id, "local", c.session_id, [f])
        await self.store.client.hdel(
            self.store.keys.sync_conflicts(parse_session_id(c.session_id)),
            *(f"{conflict_id}:{p}" for p in "fvksoh"))
        targets = await self.linked_sessions(c.session_id)
        for target in targets:
            await self._apply(target, "lww", c.session_id, [f])
        await self.history.record([SyncRecord(
            "resolve", c.session_id, t, [c.field], "manual", {c.field: "applied"},
            time.time(), await self._person(c.session_id)) for t in targets])
        return c

