"""Session identities: validating, normalising and percent-encoding user-supplied ids.

User-supplied parts are percent-encoded, so none of them can contain ``:``, ``{``, ``}``, a glob
character or whitespace: distinct identities never share a key and no input can pick a slot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import quote, unquote

from .errors import ValidationError

MAX_ID_BYTES = 256
"""Longest accepted chat, user or thread id: its UTF-8 encoding, in bytes. The one bound, checked
where an id comes in (create, get_or_create, find, list_user_sessions) and where a session id
is parsed (every call by id), so every id create accepts, every later call can reach."""

MAX_SESSION_ID_LENGTH = 32 + 3 * (3 * MAX_ID_BYTES) + 3
"""Longest well-formed session id: a platform and three parts of at most MAX_ID_BYTES bytes,
each byte at most three characters once percent-encoded, and three separators."""

PLATFORM_RE = re.compile(r"[a-z][a-z0-9_\-]{0,31}")
"""What a platform name (and a lease name) looks like; always used with fullmatch()."""

_ENCODED_RE = re.compile(r"(?:[A-Za-z0-9_.\-~@]|%[0-9A-F]{2})+")  # use fullmatch()
_SAFE = "@"  # besides quote()'s always-safe letters, digits and "_.-~"
# Text made only of characters quote() keeps is its own encoding: most ids (numbers, usernames)
# skip quote() and unquote(), whose cost shows when a restore parses 100k session ids.
_PLAIN_RE = re.compile(rf"[A-Za-z0-9_.\-~@]{{1,{MAX_ID_BYTES}}}")  # use fullmatch()


def encode_part(text: str) -> str:
    """Percent-encode one id part (the form used in keys and session ids)."""
    return text if _PLAIN_RE.fullmatch(text) else quote(text, safe=_SAFE)


def _check_size(text: str, what: str) -> str:
    try:
        size = len(text.encode("utf-8", errors="strict"))
    except UnicodeEncodeError as exc:
        raise ValidationError(f"{what} is not valid Unicode text") from exc
    if size > MAX_ID_BYTES:
        raise ValidationError(
            f"{what} is {size} bytes long in UTF-8; the limit is {MAX_ID_BYTES} bytes"
        )
    return text


def normalize_id(value: object, what: str) -> str:
    """Validate one user-supplied id (str or int) and return it as text."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValidationError(f"{what} must be a str or an int, not {type(value).__name__}")
    if isinstance(value, str):
        # str.__str__, not str(): a subclass's __str__ must not pick the id.
        text = str.__str__(value)
    else:
        try:
            text = int.__repr__(value)  # decimal digits, whatever an int subclass prints
        except ValueError as exc:  # more digits than Python converts (sys.int_info)
            raise ValidationError(f"{what} is too large an int") from exc
    if not text:
        raise ValidationError(f"{what} must not be empty")
    return _check_size(text, what)


def _decode_part(encoded: str, what: str) -> str:
    if _PLAIN_RE.fullmatch(encoded):
        return encoded
    if not _ENCODED_RE.fullmatch(encoded):
        raise ValidationError(f"malformed {what} in session id: {encoded[:80]!r}")
    try:
        text = unquote(encoded, errors="strict")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{what} in session id is not UTF-8: {encoded[:80]!r}") from exc
    if quote(text, safe=_SAFE) != encoded:
        raise ValidationError(f"non-canonical {what} in session id: {encoded[:80]!r}")
    return _check_size(text, what)


def check_name(name: object, what: str) -> str:
    """Validate a short name (a platform, a lease): lowercase letters, digits, '_' and '-'."""
    if not isinstance(name, str) or not PLATFORM_RE.fullmatch(name):
        raise ValidationError(
            f"{what} must match {PLATFORM_RE.pattern} (lowercase letters, digits, '_' and '-', "
            f"at most 32 characters); got {str(name)[:80]!r}"
        )
    return name


def check_platform(name: object) -> str:
    """Validate a platform name (enum value or custom name)."""
    return check_name(str(name.value) if hasattr(name, "value") else name, "platform")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a session belongs to; normalised (ids as str) and validated."""

    platform: str
    chat_id: str
    user_id: str
    thread_id: str | None = None
    # Encoded forms, computed once: the hot path builds keys from them on every call.
    user_tag: str = field(init=False, repr=False, compare=False)
    suffix: str = field(init=False, repr=False, compare=False)
    session_id: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        chat, user = encode_part(self.chat_id), encode_part(self.user_id)
        suffix = f"{self.platform}:{chat}"
        session_id = f"{self.platform}:{chat}:{user}"
        if self.thread_id is not None:
            thread = encode_part(self.thread_id)
            suffix, session_id = f"{suffix}:{thread}", f"{session_id}:{thread}"
        # user_tag: the hash tag; suffix: the name inside the user index;
        # session_id: the public id, platform:chat:user[:thread].
        object.__setattr__(self, "user_tag", user)
        object.__setattr__(self, "suffix", suffix)
        object.__setattr__(self, "session_id", session_id)


def make_identity(
    platform: object, chat_id: object, user_id: object, thread_id: object = None
) -> Identity:
    """Validate and normalise the four parts of a session's identity."""
    try:
        return _cached_identity(platform, chat_id, user_id, thread_id)
    except TypeError:  # unhashable input: validate without the cache (it will be refused)
        return _make_identity(platform, chat_id, user_id, thread_id)


def _make_identity(
    platform: object, chat_id: object, user_id: object, thread_id: object
) -> Identity:
    plat = check_platform(platform)
    chat = normalize_id(chat_id, "chat_id")
    user = normalize_id(user_id, "user_id")
    thread = None if thread_id is None else normalize_id(thread_id, "thread_id")
    return Identity(plat, chat, user, thread)


def user_tag(user_id: object) -> str:
    """The encoded user id: the hash tag shared by all keys of that user's sessions."""
    return encode_part(normalize_id(user_id, "user_id"))


# typed: 1, 1.0 and True are equal dict keys, but only 1 is a valid id.
_cached_identity = lru_cache(maxsize=65536, typed=True)(_make_identity)


def parse_session_id(session_id: object, *, cache: bool = True) -> Identity:
    """Turn a public session id back into its identity; anything malformed is refused.

    ``cache=False`` for one-off bulk work (validating every record of a backup): a hundred
    thousand distinct ids would only evict the hot path's entries and pin memory.
    """
    if not isinstance(session_id, str):
        raise ValidationError(f"session_id must be a str, not {type(session_id).__name__}")
    if len(session_id) > MAX_SESSION_ID_LENGTH:
        raise ValidationError(
            f"session_id is {len(session_id)} characters long; no session id is longer than "
            f"{MAX_SESSION_ID_LENGTH}"
        )
    return _parse_session_id(session_id) if cache else _parse_uncached(session_id)


def _parse_uncached(session_id: str) -> Identity:
    parts = session_id.split(":")
    if len(parts) not in (3, 4):
        raise ValidationError(
            f"session_id must look like 'platform:chat:user[:thread]'; got {session_id[:80]!r}"
        )
    plat = check_platform(parts[0])
    chat = _decode_part(parts[1], "chat_id")
    user = _decode_part(parts[2], "user_id")
    thread = _decode_part(parts[3], "thread_id") if len(parts) == 4 else None
    return Identity(plat, chat, user, thread)


# Cached: the hot path (get, update, touch) parses the same few ids over and over.
_parse_session_id = lru_cache(maxsize=65536)(_parse_uncached)


def _int_part(value: object, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{what} must be an int, not {type(value).__name__}")
    return str(value)


def _opt_text_part(value: object, what: str) -> str:
    # None and "" must not meet: None is the empty segment, any str gets a leading "=".
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a str or None, not {type(value).__name__}")
    return "=" + encode_text(_check_size(value, what), what)


def encode_text(value: str, what: str) -> str:
    """Percent-encode any valid text (a lock or conversation name) for use inside a key."""
    try:
        value.encode("utf-8", errors="strict")
    except UnicodeEncodeError as exc:
        raise ValidationError(f"{what} is not valid Unicode text") from exc
    return quote(value, safe=_SAFE)


@dataclass(frozen=True, slots=True)
class FsmIdentity:
    """An FSM record (aiogram's StorageKey), every field encoded; see KeySchema.fsm_state()."""

    tag: str
    """``<bot>:<chat>``: every FSM key of one chat of one bot shares this hash tag."""
    rest: str
    """``<user>:<thread>:<business connection>:<destiny>``, each part encoded."""


def make_fsm_identity(
    bot_id: object,
    chat_id: object,
    user_id: object,
    thread_id: object = None,
    business_connection_id: object = None,
    destiny: object = "default",
) -> FsmIdentity:
    """Validate and encode the six fields of an aiogram StorageKey.

    Ints are written in decimal, an absent thread or business connection as an empty segment
    and text percent-encoded behind "=", so distinct keys never share a name and no field can
    carry ``{``, ``}`` or ``:`` into the key.
    """
    tag = f"{_int_part(bot_id, 'bot_id')}:{_int_part(chat_id, 'chat_id')}"
    thread = "" if thread_id is None else _int_part(thread_id, "thread_id")
    if not isinstance(destiny, str):
        raise ValidationError(f"destiny must be a str, not {type(destiny).__name__}")
    parts = [
        _int_part(user_id, "user_id"),
        thread,
        _opt_text_part(business_connection_id, "business_connection_id"),
        _opt_text_part(destiny, "destiny"),
    ]
    return FsmIdentity(tag, ":".join(parts))


def ptb_id(value: object, what: str) -> str:
    """A python-telegram-bot user or chat id (an int) as a key part."""
    return _int_part(value, what)


def session_id_after(rest: str) -> str:
    """The public id from the part of a per-session key after ``{``: ``<u>}:<suffix>``."""
    tag, _, suffix = rest.partition("}:")
    platform, _, rest = suffix.partition(":")
    chat, _, thread = rest.partition(":")
    return ":".join([platform, chat, tag] + ([thread] if thread else []))
