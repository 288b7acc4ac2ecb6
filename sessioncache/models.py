"""The session model: Session, Platform and the mapping from a stored hash to a Session."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from .codec import VALUE_TAG, decode_value
from .errors import IntegrityError
from .identity import PLATFORM_RE, Identity

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
        if isinstance(value, str) and PLATFORM_RE.fullmatch(value):
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
def _from_ms(value: bytes | str) -> dt.datetime:
    # Cached: created_at never changes and reads between writes repeat the other three.
    return dt.datetime.fromtimestamp(int(value) / 1000, tz=UTC)


ExpiryFields = tuple[bytes | None, bytes | None, bytes | None, bytes | None]
"""A session's expiry fields as stored: x (fixed deadline), y (the rule's spec), w (stages
done), b (where the rule's period began; lua/lib/period.lua)."""


def platform_of(name: str) -> Platform:
    """Platform(name), without Enum's slow call path for the common (known) names."""
    member = Platform._value2member_map_.get(name)
    return member if isinstance(member, Platform) else Platform(name)


_CORE_FIELDS = (
    "session_id",
    "session_key",
    "platform",
    "chat_id",
    "user_id",
    "thread_id",
    "state",
    "created_at",
    "updated_at",
    "last_activity",
    "expires_at",
    "version",
    "message_count",
    "priority",
)


class Session:
    """One conversation session as stored in Redis.

    ``data`` and ``metadata`` are decoded from the stored fields on first access, not when the
    reply arrives: most callers of an update or a read look at the version or a field or two,
    and decoding every field of every reply would cost as much as the round trip's own parsing.
    A stored value that is not valid msgpack raises IntegrityError at that first access.
    """

    __slots__ = (*_CORE_FIELDS, "_data", "_metadata", "_stored", "_expiry")

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
    priority: int

    def __init__(
        self,
        session_id: str,
        session_key: str,
        platform: Platform,
        chat_id: str,
        user_id: str,
        thread_id: str | None,
        state: str,
        created_at: dt.datetime,
        updated_at: dt.datetime,
        last_activity: dt.datetime,
        expires_at: dt.datetime,
        version: int,
        message_count: int,
        priority: int = 0,
        metadata: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        self.session_id = session_id
        self.session_key = session_key
        self.platform = platform
        self.chat_id = chat_id
        self.user_id = user_id
        self.thread_id = thread_id
        self.state = state
        self.created_at = created_at
        self.updated_at = updated_at
        self.last_activity = last_activity
        self.expires_at = expires_at
        self.version = version
        self.message_count = message_count
        self.priority = priority
        self._metadata: dict[str, Any] = {} if metadata is None else metadata
        self._data: dict[str, Any] = {} if data is None else data
        self._stored: dict[bytes, bytes] | None = None
        # Expiry fields x, y, w, b as stored (sessioncache/expiry), None when the hash had no
        # rule (no y).
        self._expiry: ExpiryFields | None = None

    @property
    def data(self) -> dict[str, Any]:
        """The session's data fields."""
        if self._stored is not None:
            self._decode()
        return self._data

    @data.setter
    def data(self, value: dict[str, Any]) -> None:
        if self._stored is not None:
            self._decode()
        self._data = value

    @property
    def metadata(self) -> dict[str, Any]:
        """The session's metadata entries."""
        if self._stored is not None:
            self._decode()
        return self._metadata

    @metadata.setter
    def metadata(self, value: dict[str, Any]) -> None:
        if self._stored is not None:
            self._decode()
        self._metadata = value

    def _decode(self) -> None:
        stored = self._stored
        assert stored is not None
        # The common session: plain data names and text values, decoded in one comprehension.
        # The tag byte (0xC1) never occurs in UTF-8, so a value blob without it holds only
        # text; names starting with "~" or "@" (escaped data, metadata) take the loop below.
        if VALUE_TAG not in b"".join(stored.values()):
            names = b"\n" + b"\n".join(stored)
            if b"\n~" not in names and b"\n@" not in names:
                self._data = {name.decode(): raw.decode() for name, raw in stored.items()}
                self._metadata, self._stored = {}, None
                return
        data: dict[str, Any] = {}
        metadata: dict[str, Any] = {}
        for raw_name, raw in stored.items():
            name = raw_name.decode()
            value = decode_value(raw) if raw[:1] == VALUE_TAG else raw.decode()
            if name[0] == "~":
                data[name[1:]] = value
            elif name[0] == "@":
                metadata[name[1:]] = value
            else:
                data[name] = value
        # Set only once every value decoded: a corrupt one leaves the session undecoded.
        self._data, self._metadata, self._stored = data, metadata, None

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (datetimes stay datetime objects)."""
        out = {name: getattr(self, name) for name in _CORE_FIELDS}
        out["metadata"] = self.metadata
        out["data"] = self.data
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Session):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it replaced

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={value!r}" for name, value in self.to_dict().items())
        return f"Session({inner})"


SessionParts = tuple[tuple[Any, ...], dict[bytes, bytes] | None, ExpiryFields | None]
"""A session decoded but not built: Session's arguments, its undecoded fields, its expiry rule
(the near cache keeps these, so a hit builds a new Session with one call)."""


def session_from_hash(
    ident: Identity, key: str, flat: Sequence[bytes] | dict[bytes, bytes]
) -> Session:
    """Build a Session from HGETALL output (a dict, or a flat list from a script)."""
    return session_from_parts(session_parts(ident, key, flat))


def session_from_parts(parts: SessionParts) -> Session:
    """A new Session from session_parts(); the parts are only read (shared by every copy)."""
    args, stored, expiry = parts
    session = Session(*args)
    if stored:
        session._stored = stored
    if expiry is not None:
        session._expiry = expiry
    return session


def session_parts(
    ident: Identity, key: str, flat: Sequence[bytes] | dict[bytes, bytes]
) -> SessionParts:
    """HGETALL output (a dict, or a flat list from a script) checked and decoded."""
    if isinstance(flat, dict):
        fields = dict(flat)  # a copy: the fields are popped below
    else:
        if len(flat) % 2:
            raise IntegrityError(f"session hash {key!r} came back with an odd number of items")
        it = iter(flat)
        fields = dict(zip(it, it, strict=True))
    pop = fields.pop
    try:
        version, state, created, updated = pop(b"v"), pop(b"s"), pop(b"c"), pop(b"u")
        activity, expires, messages = pop(b"a"), pop(b"e"), pop(b"m")
    except KeyError as exc:
        name = exc.args[0].decode()
        raise IntegrityError(f"session hash {key!r} lacks core field {name!r}") from exc
    priority = pop(b"p", b"0")
    pop(b"t", None)
    pop(b"o", None)
    expiry = (pop(b"x", None), pop(b"y", None), pop(b"w", None), pop(b"b", None))
    args = (
        ident.session_id,
        key,
        platform_of(ident.platform),
        ident.chat_id,
        ident.user_id,
        ident.thread_id,
        state.decode(),
        _from_ms(created),
        _from_ms(updated),
        _from_ms(activity),
        _from_ms(expires),
        int(version),
        int(messages),
        int(priority),
    )
    return args, fields or None, expiry if expiry[1] is not None else None
