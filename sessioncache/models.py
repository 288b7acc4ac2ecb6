"""The session model: Session, Platform and the mapping from a stored hash to a Session."""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
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


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


def _from_ms(value: bytes | int) -> dt.datetime:
    return _EPOCH + dt.timedelta(milliseconds=int(value))


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


_TAG = 0xC1  # see codec.py: a value starting with it is msgpack, anything else is UTF-8 text
_TILDE, _AT = 0x7E, 0x40


def session_from_hash(
    ident: Identity, key: str, flat: Sequence[bytes] | dict[bytes, bytes]
) -> Session:
    """Build a Session from HGETALL output (a dict, or a flat list from a script)."""
    items = flat.items() if isinstance(flat, dict) else zip(flat[::2], flat[1::2], strict=True)
    core: dict[bytes, bytes] = {}
    data: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    # This loop runs for every field of every session read: kept flat on purpose.
    for name, raw in items:
        if len(name) == 1:
            core[name] = raw
            continue
        value = decode_value(raw) if raw and raw[0] == _TAG else raw.decode()
        first = name[0]
        if first == _TILDE:
            data[name[1:].decode()] = value
        elif first == _AT:
            metadata[name[1:].decode()] = value
        else:
            data[name.decode()] = value
    try:
        return Session(
            session_id=ident.session_id,
            session_key=key,
            platform=Platform(ident.platform),
            chat_id=ident.chat_id,
            user_id=ident.user_id,
            thread_id=ident.thread_id,
            state=core[b"s"].decode(),
            created_at=_from_ms(core[b"c"]),
            updated_at=_from_ms(core[b"u"]),
            last_activity=_from_ms(core[b"a"]),
            expires_at=_from_ms(core[b"e"]),
            version=int(core[b"v"]),
            message_count=int(core[b"m"]),
            priority=int(core.get(b"p", 0)),
            metadata=metadata,
            data=data,
        )
    except KeyError as exc:
        raise IntegrityError(f"session hash {key!r} lacks core field {exc.args[0]!r}") from exc
