"""Session events: EventType, what each type does to the session, the stream entry codec, and
EventLog, which appends to and reads a session's event stream."""

from __future__ import annotations

import datetime as dt
import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from .codec import Limits, data_field, decode_value, encode_value
from .errors import BackendUnavailable, SessionExpired, SessionNotFound, ValidationError
from .identity import Identity, parse_session_id, user_tag
from .metrics import Metrics
from .store import SessionStore


class EventType(enum.StrEnum):
    """What happened in a session."""

    MESSAGE_RECEIVED = "message_received"
    MESSAGE_SENT = "message_sent"
    COMMAND = "command"
    STATE_CHANGED = "state_changed"
    ERROR = "error"
    CREATED = "created"
    EXPIRED = "expired"
    ARCHIVED = "archived"
    RESTORED = "restored"
    SYNCED = "synced"
    MERGED = "merged"
    CUSTOM = "custom"


INBOUND = frozenset({EventType.MESSAGE_RECEIVED, EventType.COMMAND})
"""Events the user sent: they count as arrivals for active users and the prediction."""
ACTIVITY = INBOUND | {EventType.MESSAGE_SENT}
"""Events that refresh last_activity and the session's TTL."""
MESSAGES = frozenset({EventType.MESSAGE_RECEIVED, EventType.MESSAGE_SENT})
"""Events that add one to message_count."""
SCRIPT_ONLY = frozenset({EventType.STATE_CHANGED, EventType.CREATED})
"""Written by transition.lua and create.lua only, so the stream's state path stays truthful."""


@dataclass(frozen=True, slots=True)
class EventLimits:
    """Bounds on one event's user fields, checked before anything reaches Redis."""

    max_fields: int = 32
    max_bytes: int = 16 * 1024


@dataclass(frozen=True, slots=True)
class EventFlags:
    """The script's flags for one event type: ARGV strings, computed once."""

    name: str
    arg: bytes
    """track_event.lua's ARGV[2]: ``<type> <activity> <message> <inbound>``."""


FLAGS: dict[str, EventFlags] = {
    t.value: EventFlags(
        t.value,
        " ".join(
            [t.value, *("1" if t in kind else "0" for kind in (ACTIVITY, MESSAGES, INBOUND))]
        ).encode(),
    )
    for t in EventType
}


def event_flags(event_type: object) -> EventFlags:
    """The flags of a user-recordable event type; ValidationError for anything else."""
    name = event_type.value if isinstance(event_type, EventType) else event_type
    flags = FLAGS.get(name) if isinstance(name, str) else None
    if flags is None:
        known = ", ".join(t.value for t in EventType)
        raise ValidationError(f"unknown event type {str(event_type)[:80]!r}; known: {known}")
    if name in SCRIPT_ONLY:
        raise ValidationError(
            f"{name} events are recorded by transition() and session creation only"
        )
    return flags


def encode_fields(
    fields: Mapping[str, Any], limits: Limits, event_limits: EventLimits
) -> list[bytes | str]:
    """Flatten an event's user fields for XADD (names escaped like session data fields)."""
    if not fields:
        return []
    if len(fields) > event_limits.max_fields:
        raise ValidationError(
            f"an event holds at most {event_limits.max_fields} fields, got {len(fields)}"
        )
    out: list[bytes | str] = []
    total = 0
    for name, value in fields.items():
        stored = data_field(name, limits)
        raw = encode_value(value, limits, f"event field {name!r}"[:120])
        total += len(stored) + len(raw)
        out += (stored, raw)
    if total > event_limits.max_bytes:
        raise ValidationError(
            f"event fields encode to {total} bytes; the limit is {event_limits.max_bytes}"
        )
    return out


def _ms_of_id(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


@dataclass(frozen=True, slots=True)
class Event:
    """One stream entry of a session.

    ``state`` is the session's state when the event was recorded (for STATE_CHANGED: the new
    state, with ``from_state`` the old one and ``version`` the session version it produced).
    """

    event_id: str
    session_id: str
    type: str
    at: dt.datetime
    state: str | None = None
    from_state: str | None = None
    version: int | None = None
    reason: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def ms(self) -> int:
        """The event's time in epoch milliseconds (from its stream id)."""
        return _ms_of_id(self.event_id)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the time as ISO 8601 text."""
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["at"] = self.at.isoformat()
        return out


def decode_event(session_id: str, entry_id: bytes, raw: Mapping[bytes, bytes]) -> Event:
    """Inverse of what the scripts write: 1-char names are ours, the rest user fields."""
    core: dict[bytes, bytes] = {}
    user: dict[str, Any] = {}
    for name, value in raw.items():
        if len(name) == 1:
            core[name] = value
        elif name[:1] == b"~":
            user[name[1:].decode()] = decode_value(value)
        else:
            user[name.decode()] = decode_value(value)
    eid = entry_id.decode()
    return Event(
        event_id=eid,
        session_id=session_id,
        type=core.get(b"t", b"custom").decode(),
        at=dt.datetime.fromtimestamp(_ms_of_id(eid) / 1000, tz=dt.UTC),
        state=core[b"s"].decode() if b"s" in core else None,
        from_state=core[b"f"].decode() if b"f" in core else None,
        version=int(core[b"v"]) if b"v" in core else None,
        reason=decode_value(core[b"r"]) if b"r" in core else None,
        fields=user,
    )


def epoch_ms(value: dt.datetime | float | int | None, what: str) -> int | None:
    """A query bound (aware datetime or epoch seconds) in epoch milliseconds; None stays None."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValidationError(f"{what} must be a timezone-aware datetime")
        value = value.timestamp()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValidationError(f"{what} must be a datetime or epoch seconds, got {value!r}")
    if value < 0:
        raise ValidationError(f"{what} must not be before 1970, got {value!r}")
    return int(value * 1000)


Located = tuple[Identity, list[str], bytes]
"""A session's identity, its [session, index, stream, stats, users, change bucket, op log] keys
and track_event.lua's per-session ARGV[5]."""


class EventLog:
    """Appends events to each session's stream (one script) and reads them back."""

    def __init__(
        self,
        store: SessionStore,
        metrics: Metrics,
        *,
        max_len: int,
        max_age_ms: int,
        event_limits: EventLimits,
    ) -> None:
        self.store = store
        self.keys = store.keys
        self.metrics = metrics
        self.max_len = max_len
        self.max_age_ms = max_age_ms
        self.event_limits = event_limits
        self._located: dict[str, Located] = {}

    def locate(self, session_id: str) -> Located:
        """The keys and fixed script argument of a session (cached per id: the hot path)."""
        found = self._located.get(session_id)
        if found is None:
            ident = parse_session_id(session_id)
            keys = self.keys
            shard = keys.shard_tag(ident)
            key = keys.session(ident)
            found_keys = [
                key,
                keys.user_index(ident.user_tag),
                keys.events(ident),
                keys.stats(shard),
                keys.users(shard),
                keys.change_bucket_of(ident),
                keys.op_log(key),
                keys.context(ident),  # its context follows the session's expiry
                keys.history(ident),
            ]
            if self.store.expiry_index_of is not None:
                found_keys.append(self.store.expiry_index_of(ident))
            found_keys += self.store.sync_pair(ident)  # it follows the expiry too, if synced
            fixed = (
                f"{self.store.default_ttl_ms} {self.max_len} {self.max_age_ms} "
                f"{ident.user_tag} {ident.platform}"
            ).encode()
            if len(self._located) >= 65536:
                self._located.clear()
            found = self._located[session_id] = (ident, found_keys, fixed)
        return found

    async def track_event(
        self, session_id: str, event_type: EventType | str, **fields: Any
    ) -> str | None:
        """Append an event; returns its stream id (None if a retry found it already applied).

        SessionNotFound if the session does not exist.
        """
        with self.metrics.measure("track_event"):
            flags = event_flags(event_type)
            pairs = encode_fields(fields, self.store.limits, self.event_limits)
            _, keys, fixed = self.locate(session_id)
            args = self.store.op_args([flags.arg, fixed, *pairs])
            reply = await self.store.scripts.track_event.run(self.store.client, keys, args)
            if reply[0] == -1:
                raise SessionNotFound(session_id)
            if reply[0] == -4:
                raise SessionExpired(session_id)
        return reply[1].decode() if reply[0] == 1 else None

    async def get_events(
        self,
        session_id: str,
        since: dt.datetime | float | None = None,
        until: dt.datetime | float | None = None,
        types: Iterable[EventType | str] | None = None,
        limit: int = 100,
    ) -> list[Event]:
        """Events of a session, oldest first; since/until inclusive (datetime or epoch s).

        A session that does not exist (or has no events) gives an empty list.
        """
        with self.metrics.measure("get_events"):
            events = await self._get_events(session_id, since, until, types, limit)
        return events

    async def _get_events(
        self,
        session_id: str,
        since: dt.datetime | float | None,
        until: dt.datetime | float | None,
        types: Iterable[EventType | str] | None,
        limit: int,
    ) -> list[Event]:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100_000:
            raise ValidationError(f"limit must be an int in [1, 100000], got {limit!r}")
        wanted: set[str] | None = None
        if types is not None:
            if isinstance(types, (str, EventType)):
                types = [types]
            wanted = set()
            for t in types:
                try:
                    wanted.add(EventType(t).value)
                except ValueError as exc:
                    raise ValidationError(f"unknown event type {t!r}") from exc
        low, high = epoch_ms(since, "since"), epoch_ms(until, "until")
        _, keys, _ = self.locate(session_id)
        start = "-" if low is None else str(low)
        stop = "+" if high is None else str(high)
        out: list[Event] = []
        page = limit if wanted is None else max(limit, 200)
        try:
            while len(out) < limit:
                entries = await self.store.client.xrange(keys[2], start, stop, count=page)
                for entry_id, raw in entries:
                    event = decode_event(session_id, entry_id, raw)
                    if wanted is None or event.type in wanted:
                        out.append(event)
                        if len(out) == limit:
                            break
                if len(entries) < page:
                    break
                start = "(" + entries[-1][0].decode()
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable during get_events: {exc}") from exc
        return out

    async def events_of(
        self, stream_keys: list[tuple[str, str]], since_ms: int | None, per_session: int
    ) -> list[Event]:
        """The newest ``per_session`` events (since ``since_ms``) of each stream, one pipeline."""
        start = "-" if since_ms is None else str(since_ms)
        try:
            async with self.store.client.pipeline(transaction=False) as pipe:
                for _, key in stream_keys:
                    pipe.xrevrange(key, "+", start, count=per_session)
                replies = await pipe.execute()
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable reading events: {exc}") from exc
        events: list[Event] = []
        for (sid, _), entries in zip(stream_keys, replies, strict=True):
            events += [decode_event(sid, eid, raw) for eid, raw in reversed(entries)]
        return events

    async def user_streams(self, user_id: object) -> list[tuple[str, str]]:
        """(session id, stream key) of every session in the user's index."""
        tag = user_tag(user_id)
        try:
            suffixes = await self.store.client.hkeys(self.keys.user_index(tag))
        except RedisError as exc:
            raise BackendUnavailable(f"Redis unavailable listing sessions: {exc}") from exc
        out = []
        for suffix in sorted(s.decode() for s in suffixes):
            key = self.keys.events_in_index(tag, suffix)
            out.append((self.keys.session_id_of_events_key(key), key))
        return out
