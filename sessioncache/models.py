"""The session model: Session, Platform and the mapping from a stored hash to a Session."""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .codec import decode_value
from .errors import IntegrityError
from .keys import Identity

_CUSTOM_PLATFORM = re.compile(r"^[a-z][a-z0-9_\-]{0,31}$")
UTC = dt.UTC


class Platform(enum.StrEnum):
    """Messaging platform of a session; unknown names become custom members."""

    TELEGRAM = "telegram"
    DISCORD = "discord"
    SLACK = "slack"
    WHATSAPP = "whatsapp"
    WECHAT = "wechat"
    SIGNAL = "signal"
    LINE = "line"
    MATRIX = "matrix"
    TEAMS = "teams"
    MESSENGER = "messenger"
    SMS = "sms"
    EMAIL = "email"
    WEB = "web"
    API = "api"
    CLI = "cli"

    @classmethod
    def _missing_(cls, value: object) -> Platform | None:
        if isinstance(value, str) and _CUSTOM_PLATFORM.match(value):
            member = str.__new__(cls, value)
            member._name_ = value.upper()
            member._value_ = value
            return member
        return None


class SessionState(enum.StrEnum):
    """Lifecycle states of a session (the transition table lives in the state tracker)."""

    NEW = "new"
    ACTIVE = "active"
    IDLE = "idle"
    WAITING_INPUT = "waiting_input"
    SUSPENDED = "suspended"
    ARCHIVED = "archived"
    EXPIRED = "expired"
    CLOSED = "closed"


@lru_cache(maxsize=4096)
def _from_ms(value: str) -> dt.datetime:
    # Cached: created_at never changes and reads between writes repeat the other three.
    return dt.datetime.fromtimestamp(int(value) / 1000, tz=UTC)


def platform_of(name: str) -> Platform:
    """Platform(name), without Enum's slow call path for the common (known) names."""
    member = Platform._value2member_map_.get(name)
    return member if isinstance(member, Platform) else Platform(name)


@dataclass(slots=True)
class Session:
    """One conversation session as stored in Redis."""

    session_id: str
    session_key: str
    platform: Platform
    chat_id: str
    user_id: str
    thread_id: str | None
    state: str
    created_at: dt.datetime
    updated_at: dt.datetime
    last_activity: dt.datetime
    expires_at: dt.datetime
    version: int
    message_count: int
    priority: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (datetimes stay datetime objects)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


_TAG = b"\xc1"  # see codec.py: a value starting with it is msgpack, anything else is UTF-8 text


def session_from_hash(
    ident: Identity, key: str, flat: Sequence[bytes] | dict[bytes, bytes]
) -> Session:
    """Build a Session from HGETALL output (a dict, or a flat list from a script)."""
    if isinstance(flat, dict):
        pairs: Any = flat.items()
    else:
        it = iter(flat)
        pairs = zip(it, it, strict=True)
    # Runs for every field of every session read: one comprehension, no per-field branching
    # beyond the value's type tag.
    fields = {
        name.decode(): (decode_value(raw) if raw[:1] == _TAG else raw.decode())
        for name, raw in pairs
    }
    pop = fields.pop
    try:
        # One-character names are the session's own fields.
        version, state, created, updated = pop("v"), pop("s"), pop("c"), pop("u")
        activity, expires, messages = pop("a"), pop("e"), pop("m")
    except KeyError as exc:
        raise IntegrityError(f"session hash {key!r} lacks core field {exc.args[0]!r}") from exc
    priority = pop("p", 0)
    pop("t", None)
    pop("o", None)
    metadata: dict[str, Any] = {}
    for name in [n for n in fields if n[0] in "~@"]:
        value = pop(name)
        if name[0] == "@":
            metadata[name[1:]] = value
        else:
            fields[name[1:]] = value
    return Session(
        session_id=ident.session_id,
        session_key=key,
        platform=platform_of(ident.platform),
        chat_id=ident.chat_id,
        user_id=ident.user_id,
        thread_id=ident.thread_id,
        state=state,
        created_at=_from_ms(created),
        updated_at=_from_ms(updated),
        last_activity=_from_ms(activity),
        expires_at=_from_ms(expires),
        version=int(version),
        message_count=int(messages),
        priority=int(priority),
        metadata=metadata,
        data=fields,
    )
