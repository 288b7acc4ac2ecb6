"""Sync's records: fields as the scripts take them, plans as the journal keeps them, and the
conflicts kept for review (strategy "manual"), listed and resolved."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .codec import Limits, data_field, decode_value, encode_value
from .errors import SessionNotFound, ValidationError
from .hlc import HybridClock
from .identity import parse_session_id

if TYPE_CHECKING:
    from .sync import SyncManager


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
    """One field as lib/sync.lua takes it (sync_fields: see its header)."""

    name: str
    stored: str
    stamp: str
    base: str
    kind: str
    value: bytes
    extra: dict[str, Any] = field(default_factory=dict)


def conflict_id(stored_field: str, stamp: str) -> str:
    """The id a conflict over this field and incoming stamp is kept under."""
    return hashlib.sha1(f"{stored_field}\0{stamp}".encode()).hexdigest()[:16]


def plan_of(
    op: str, source: str, names: Sequence[str], conflict: str | None = None
) -> dict[str, Any]:
    """A sync as the journal keeps it: the operation, its source and the fields' names (and
    for a "resolve", the conflict it settles). Not their values: a recovery syncs what the
    source holds then (stamped: the strategies decide as for any sync). Not its targets: they
    are the source person's other sessions when it runs, so a recovery after an unlink does
    not share what the unlink stopped."""
    plan: dict[str, Any] = {"op": op, "source": source, "fields": list(names)}
    if conflict is not None:
        plan["conflict"] = conflict
    return plan


def merge_state(value: Any, stamp: str, origin: str) -> Any:
    """The merge state of a value never written through sync (lib/sync.lua's forms)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"c": {origin: [value, stamp]}}
    if isinstance(value, (list, tuple, set, frozenset)):
        return {"s": sorted(value, key=json.dumps) if isinstance(value, (set, frozenset))
                else list(value)}
    if isinstance(value, dict):
        return {"m": value, "t": stamp}
    return {"v": value, "t": stamp}


def jsonable(value: Any) -> Any:
    """A value as JSON takes it (sets as sorted lists)."""
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=json.dumps)
    return value



def stamp_fields(
    shares: Callable[[str], bool], merge: bool, clock: HybridClock, limits: Limits,
    data: Mapping[str, Any], delete: Iterable[str],
) -> list[SyncField]:
    """The shared fields of a write (``shares``), each with a fresh stamp; with ``merge``
    (strategy "merge") values go as JSON merge states."""
    fields = []
    for name, value in data.items():
        if not shares(name):
            continue
        if merge:
            encode_value(value, limits)  # the same limits as any stored value
            try:
                raw = json.dumps(jsonable(value)).encode()
            except (TypeError, ValueError) as exc:
                raise ValidationError(
                    f"field {name!r}: strategy 'merge' takes JSON values "
                    f"(numbers, text, lists, sets, dicts): {exc}"
                ) from exc
            fields.append(
                SyncField(name, data_field(name, limits), clock.now(), "", "m", raw)
            )
        else:
            fields.append(SyncField(name, data_field(name, limits), clock.now(), "", "v",
                                    encode_value(value, limits)))
    for name in delete:
        if shares(name):
            fields.append(SyncField(name, data_field(name, limits), clock.now(), "", "d",
                                    b""))
    return fields



def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


async def list_conflicts(sync: SyncManager, session_id: str | None = None) -> list[Conflict]:
    """Conflicts kept for review, of one session or of all (a SCAN: an admin call)."""
    store = sync.store
    keys = store.keys
    if session_id is not None:
        cf_keys = [keys.sync_conflicts(parse_session_id(session_id))]
    else:
        cf_keys = [k.decode() if isinstance(k, bytes) else k async for k in
                   store.client.scan_iter(match=keys.sync_conflicts_pattern(), count=1000)]
    out = []
    for cf in cf_keys:
        sid = keys.session_id_of_conflicts_key(cf)
        parts = await store.client.hgetall(cf)
        if not parts:
            continue
        by_id: dict[str, dict[str, bytes]] = {}
        for k, v in parts.items():
            cid, _, part = k.decode().partition(":")
            by_id.setdefault(cid, {})[part] = v
        stored_raw = await store.client.hmget(
            keys.session(parse_session_id(sid)), [p["f"].decode() for p in by_id.values()])
        for (cid, p), cur in zip(by_id.items(), stored_raw, strict=True):
            name = p["f"].decode()
            out.append(Conflict(
                cid, sid, name[1:] if name.startswith("~") else name,
                None if cur is None else decode_value(cur),
                None if p["k"] == b"d" else decode_value(p["v"]),
                p["o"].decode(), p["s"].decode()))
    return sorted(out, key=lambda c: c.stamp)


async def resolve_conflict(sync: SyncManager, conflict_id: str, choose: Any) -> Conflict:
    """Settle a conflict: "incoming", "stored" (what the session holds when it runs), or a
    value of your own. The choice is written with a fresh stamp and the record removed in one
    step (sync_resolve.lua); only the call that removed it syncs the choice to the linked
    sessions (last-writer-wins, journaled like any sync: recover() finishes it) and records
    the "resolve" history. ValidationError "no conflict" if there is none (another call
    resolved it first: nothing written)."""
    for c in await list_conflicts(sync):
        if c.conflict_id == conflict_id:
            break
    else:
        raise ValidationError(f"no conflict {conflict_id!r}")
    store = sync.store
    ident = parse_session_id(c.session_id)
    # Encoded before anything is journaled: a value the codec refuses changes nothing.
    raw = b"" if choose in ("incoming", "stored") else encode_value(choose, store.limits)
    stored = data_field(c.field, store.limits)
    journaled = await sync._journal("resolve", c.session_id, [c.field], conflict_id)
    # No except here: a failure without a reply may follow an applied resolve (conflict
    # gone, choice written), so the plan stays; recover() replays it, or drops it if the
    # conflict still stands (the step never ran).
    reply = await store.scripts.sync_resolve.run(store.client, [
        store.keys.session(ident), store.keys.change_bucket_of(ident),
        store.keys.op_log(store.keys.session(ident)), store.keys.sync_meta(ident),
        store.keys.sync_conflicts(ident),
    ], store.op_args([
        conflict_id, choose if choose in ("incoming", "stored") else "value",
        sync.clock.now(), c.session_id, sync._rank(ident.platform), raw]))
    if reply[0] in (-1, -3):
        if journaled is not None:
            await sync._done(journaled[0], [])
        if reply[0] == -1:
            raise SessionNotFound(c.session_id)
        raise ValidationError(f"no conflict {conflict_id!r} (resolved by another call)")
    if sync.on_write is not None:
        sync.on_write(c.session_id)
    if reply[0] == 2:  # a retry the op log answered: what it stored, read back
        payload = await sync._read(c.session_id, [c.field])
    else:
        stamp, kind, value = reply[3:6]
        payload = [SyncField(c.field, stored, _text(stamp), "", _text(kind),
                             value.encode() if isinstance(value, str) else value)]
    if journaled is not None:
        await sync._run(*journaled, payload)
    return c
