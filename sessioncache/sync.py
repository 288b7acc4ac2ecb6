"""Cross-channel sync: shared fields of linked sessions, by strategy (decided in Lua) and mode."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .codec import data_field, decode_value, encode_value
from .errors import SessionCacheError, SessionNotFound, ValidationError
from .hlc import HybridClock
from .identity import Identity, parse_session_id
from .identity_links import IdentityLinks, identity_name
from .models import Session, session_from_hash
from .store import SessionStore
from .sync_history import SyncHistory, SyncRecord
from .sync_modes import SyncModes
from .sync_records import (
    Conflict,
    SyncField,
    conflict_id,
    list_conflicts,
    merge_state,
    plan_of,
    resolve_conflict,
    stamp_fields,
)
from .sync_targets import Entries, Targets

__all__ = ["Conflict", "Resolver", "SyncConfig", "SyncField", "SyncManager"]

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


class SyncManager(SyncModes):
    """Stamps shared fields on write and applies them to a person's other sessions.

    A local write is one update.lua call: its shared fields are stamped, decided and announced
    in the same step as the rest of the write (one version). A sync then takes three more round
    trips (docs/sync.md, "Round trips"): the link lookup that journals the plan ({idm} slot,
    sync_plan.lua), one sync_apply.lua per target in the target's slot, and sync_done.lua,
    which drops the plan and records history. The targets come from each other identity's user
    index, remembered and checked by sync_apply.lua itself (sync_targets.py). A process killed
    between steps leaves a plan that ``recover()`` replays (every step is idempotent: an equal
    stamp is already applied).
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
        self.targets = Targets(store)
        if config.shared_fields:
            store.follow_sync()  # stamps and conflicts expire with their session

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

    async def apply(
        self, session_id: str, mode: str, origin: str, fields: Sequence[SyncField],
        index: Entries | None = None,
    ) -> dict[str, str]:
        """One sync_apply.lua call: ``fields`` from ``origin`` decided by ``mode`` (a strategy,
        or "local"); field -> applied/kept/conflict/moved. SessionNotFound if it is gone;
        with ``index`` (the user index's entries as last seen), {} if the index changed."""
        ident = parse_session_id(session_id)
        args: list[Any] = [mode, origin, self._rank(parse_session_id(origin).platform),
                           str(len(fields))]
        for f in fields:
            args += [f.stored, f.stamp, f.base, f.kind, f.value, conflict_id(f.stored, f.stamp)]
        if index is not None:
            args += [str(len(index)), *index]
        reply = await self.store.scripts.sync_apply.run(
            self.store.client, self.script_keys(ident), self.store.op_args(args)
        )
        if reply[0] == -2:
            return {}
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

    def _stamped(self, data: Mapping[str, Any], delete: Iterable[str]) -> list[SyncField]:
        """The shared fields of a write, freshly stamped (the others are not sync's)."""
        return stamp_fields(self.config.shares, self.config.strategy == "merge", self.clock,
                            self.store.limits, data, delete)

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
        """SessionStore.update() with the shared fields stamped in the same update.lua call
        (one atomic step, one version), announced, then synced as the mode says: now (auto),
        after ``delay`` (delayed), by the batch job, or on ``sync_sessions()`` (manual)."""
        if isinstance(delete, str):
            raise ValidationError("delete and delete_metadata take a list of names, not a str")
        delete = list(delete)
        shared = self._stamped(data or {}, delete)
        names = {f.name for f in shared}
        plain = None if data is None else {k: v for k, v in data.items() if k not in names}
        session, _ = await self._local(
            session_id, shared, plain, metadata, [d for d in delete if d not in names],
            delete_metadata, priority, expected_version)
        return session

    async def _local(
        self,
        session_id: str,
        shared: Sequence[SyncField],
        data: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        delete: Iterable[str] = (),
        delete_metadata: Iterable[str] = (),
        priority: int | None = None,
        expected_version: int | None = None,
    ) -> tuple[Session, list[SyncField]]:
        store = self.store
        ident = parse_session_id(session_id)
        section: tuple[list[str], list[Any]] = ([], [])
        if shared:
            args: list[Any] = [
                str(len(shared)), session_id, self._rank(ident.platform),
                store.keys.sync_channel(),
                json.dumps({"session": session_id, "fields": [f.name for f in shared]}),
            ]
            for f in shared:
                args += [f.stored, f.stamp, f.base, f.kind, f.value, ""]
            section = ([store.keys.sync_meta(ident), store.keys.sync_conflicts(ident)], args)
        ident, keys, argv = store.update_command(
            session_id, "full", data, metadata, delete, delete_metadata, priority,
            expected_version, shared=section)
        journaled = None
        if shared and self.config.mode == "auto":
            # Journaled before the write: a process killed after it finds the plan in recover().
            journaled = await self._journal("update", session_id, [f.name for f in shared])
        # Any failure without a reply (a lost connection, a timeout, a cancellation) may
        # follow a write that was applied: the plan stays for recover(), which replays it
        # idempotently. Only a refusal update.lua answered means nothing was written.
        reply = await store.scripts.update.run(store.client, keys, argv)
        try:
            flat = store.update_outcome(session_id, reply, expected_version)
        except SessionCacheError:
            if journaled is not None:  # refused: nothing written, nothing to sync
                await self._done(journaled[0], [])
            raise
        session = session_from_hash(ident, keys[0], flat)
        if self.on_write is not None:
            self.on_write(session_id)
        if not shared:
            return session, []
        if len(reply) > 2:
            parts = reply[2]
            for st in parts[0::3]:
                # A stamp the script ordered after a newer stored one (lib/sync.lua, "+"):
                # observed, so this clock's next stamp is later and needs no suffix.
                self.clock.observe(st.decode())
            payload = [
                SyncField(f.name, f.stored, st.decode(), b.decode(), "m" if j else f.kind,
                          j or f.value)
                for f, st, b, j in zip(shared, parts[0::3], parts[1::3], parts[2::3], strict=True)
            ]
        else:  # a retry the op log answered: what it stored, read back
            payload = await self._read(session_id, [f.name for f in shared])
        if journaled is not None:
            await self._run(*journaled, payload)
        else:
            await self._after_write(session_id)
        return session, payload

    async def write(
        self, session_id: str, data: Mapping[str, Any], delete: Iterable[str] = ()
    ) -> dict[str, str]:
        """Write (or delete) shared fields of a session (the others are ignored here), as
        update() does; field -> "applied"."""
        fields = self._stamped(data, delete)
        if not fields:
            return {}
        await self._local(session_id, fields)
        return {f.name: "applied" for f in fields}

    async def increment(self, session_id: str, name: str, by: int | float = 1) -> Any:
        """Add to a shared counter (strategy "merge"): this session's share grows by ``by``,
        so increments made concurrently on linked sessions all count. Returns the verdict."""
        if self.config.strategy != "merge" or not self.config.shares(name):
            raise ValidationError("increment() needs strategy 'merge' and a shared field")
        f = SyncField(name, data_field(name, self.store.limits), self.clock.now(), "", "m",
                      json.dumps({"+": by}).encode())
        await self._local(session_id, [f])
        return "applied"

    # -- linked sessions ------------------------------------------------------------------

    async def linked_sessions(self, session_id: str) -> list[str]:
        """The other sessions of the session's person: each linked identity's sessions on its
        platform (none for an unlinked identity)."""
        ident = parse_session_id(session_id)
        return await self.targets.of(
            await self.links.linked_identities(ident.platform, ident.user_id), session_id)

    async def _read(self, session_id: str, names: Sequence[str] | None) -> list[SyncField]:
        ident = parse_session_id(session_id)
        limits = self.store.limits
        if names is None:
            if self.config.shared_fields == "*":
                names = list((await self.store.get(session_id)).data)
            else:
                names = list(self.config.shared_fields)
        if not names:
            return []  # nothing shared: nothing to read (the script would answer as for no session)
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
                st = json.loads(state) if state else merge_state(
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
        payload = await self._read(session_id, fields)
        if not payload:
            return {}
        journaled = await self._journal(op, session_id, [f.name for f in payload])
        return {} if journaled is None else await self._run(*journaled, payload)

    async def _journal(
        self, op: str, source: str, names: Sequence[str], conflict: str | None = None
    ) -> tuple[str, dict[str, Any], str, list[str]] | None:
        """Look the person up and journal the plan in one step (sync_plan.lua): (plan id,
        plan, person, members), or None for an identity that is not linked (nothing
        journaled: nobody to sync to). ``conflict``: the conflict a "resolve" settles."""
        ident = parse_session_id(source)
        plan_id = self.clock.now()
        plan = plan_of(op, source, names, conflict)
        keys = self.store.keys
        found = await self.store.scripts.sync_plan.run(
            self.store.client,
            [keys.link_owners(), keys.link_members(), keys.sync_journal()],
            [identity_name(ident.platform, ident.user_id), plan_id, json.dumps(plan)],
        )
        if not found:
            return None
        return plan_id, plan, found[0].decode(), found[1].decode().split()

    async def _run(
        self, plan_id: str, plan: Mapping[str, Any], person: str | None,
        members: Iterable[str], payload: Sequence[SyncField],
    ) -> dict[str, dict[str, str]]:
        """Apply a journaled plan to the person's other sessions, one target after another
        (each one step in its slot), then end it (sync_done.lua: plan dropped, history)."""
        source = plan["source"]
        if not payload:
            await self._done(plan_id, [])
            return {}
        # A resolve's choice is final: it goes to the linked sessions last-writer-wins (its
        # stamp is fresh), not by the strategy that kept the conflict.
        strategy = "lww" if plan["op"] == "resolve" else self.config.strategy
        results = await self.targets.each(
            members, source,
            lambda t, index: self._apply_target(t, source, payload, index, strategy),
            remembered=not callable(strategy))
        await self._done(plan_id, self._records(plan["op"], source, payload, results, person))
        return results

    async def _done(self, plan_id: str, records: Sequence[SyncRecord]) -> None:
        keys = self.store.keys
        await self.store.scripts.sync_done.run(
            self.store.client, [keys.sync_journal(), keys.sync_history()],
            [plan_id, str(self.history.cap), *(r.to_json() for r in records)],
        )

    def _records(
        self, op: str, source: str, payload: Sequence[SyncField],
        results: Mapping[str, dict[str, str]], person: str | None,
    ) -> list[SyncRecord]:
        names = [f.name for f in payload]
        now = time.time()
        return [SyncRecord(op, source, t, names, self.config.strategy_name, r, now, person)
                for t, r in results.items()]

    async def _run_one(
        self, op: str, source: str, target: str, payload: Sequence[SyncField]
    ) -> dict[str, dict[str, str]]:
        """A sync to one target without the journal (create, merge: run again to recover)."""
        got = await self._apply_target(target, source, payload)  # no index: never None
        results = {target: got or {}}
        ident = parse_session_id(source)
        person = await self.links.person_of(ident.platform, ident.user_id)
        await self.history.record(self._records(op, source, payload, results, person))
        return results

    async def _apply_target(
        self, target: str, source: str, payload: Sequence[SyncField],
        index: Entries | None = None, strategy: str | Resolver | None = None,
    ) -> dict[str, str] | None:
        """Apply to one target by ``strategy`` (the configured one if None); None if
        ``index`` is stale (nothing applied)."""
        try:
            strategy = self.config.strategy if strategy is None else strategy
            if callable(strategy):
                return await self._apply_custom(target, source, payload, strategy)
            return await self.apply(target, strategy, source, payload, index) or None
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
                verdict = (await self.apply(target, "cas", source, [new]))[f.name]
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
                out.update(await self._run_one("create", other, session_id, payload))
        return out

    async def merge_sessions(self, a: str, b: str) -> None:
        """The "merge" operation: each session's shared fields applied to the other."""
        for src, dst in ((a, b), (b, a)):
            payload = await self._read(src, None)
            if payload:
                await self._run_one("merge", src, dst, payload)

    async def recover(self, min_age: float = 60.0) -> int:
        """Replay every journaled plan a killed process left (idempotent); returns how many.

        Plans younger than ``min_age`` seconds are left alone: a running process is still on
        them (replaying one early is harmless, but its history would show the replay)."""
        plans = await self.store.client.hgetall(self.store.keys.sync_journal())
        cutoff = (time.time() - min_age) * 1000
        done = 0
        for plan_id, raw in plans.items():
            if int(plan_id[:13]) > cutoff:  # an HLC stamp: wall ms first (hlc.py)
                continue
            done += 1
            plan = json.loads(raw)
            ident = parse_session_id(plan["source"])
            if plan.get("conflict") and await self.store.client.hexists(
                    self.store.keys.sync_conflicts(ident), f"{plan['conflict']}:f"):
                # A resolve killed before its step ran: the conflict stands, nothing to sync.
                await self._done(plan_id.decode(), [])
                continue
            person = await self.links.person_of(ident.platform, ident.user_id)
            members = [] if person is None else await self.links.members(person)
            try:
                payload = await self._read(plan["source"], plan["fields"])
            except SessionNotFound:
                payload = []  # the source is gone: nothing left to share
            await self._run(plan_id.decode(), plan, person, members, payload)
        return done

    async def forget(self, session_id: str) -> None:
        """Drop a deleted session's stamps and conflicts (its slot's two keys)."""
        ident = parse_session_id(session_id)
        keys = self.store.keys
        await self.store.client.delete(keys.sync_meta(ident))
        await self.store.client.delete(keys.sync_conflicts(ident))

    # -- conflicts (sync_conflicts.py) ----------------------------------------------------

    async def list_conflicts(self, session_id: str | None = None) -> list[Conflict]:
        """Conflicts kept for review (strategy "manual"), of one session or of all."""
        return await list_conflicts(self, session_id)

    async def resolve_conflict(self, conflict_id: str, choose: Any = "incoming") -> Conflict:
        """Settle a conflict: "incoming", "stored", or a value of your own. The choice is
        written with a fresh stamp and the record removed in one step (sync_resolve.lua); only
        that call syncs it (last-writer-wins) and records history. ValidationError "no
        conflict" if there is none, or another call settled it first (nothing written)."""
        return await resolve_conflict(self, conflict_id, choose)
