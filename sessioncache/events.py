"""Session events: EventType, what each type does to the session, and the stream entry codec."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .codec import Limits, data_field, decode_value, encode_value
from .errors import ValidationError


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
        return _ms_of_id(self.event_id)

    def to_dict(self) -> dict[str, Any]:
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
