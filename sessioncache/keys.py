"""The key schema: the only module that builds Redis key names.

Layout (namespace ``sc`` by default; ``<u>`` is the encoded user id and doubles as the hash tag,
so every key of one user's sessions lives in one cluster slot)::

    sc:s:{<u>}:<platform>:<chat>[:<thread>]   session hash
    sc:u:{<u>}                                 index of the user's sessions (hash: suffix -> 1)
    sc:ev:{<u>}:<platform>:<chat>[:<thread>]  event stream of a session (state tracker)
    sc:st:{<shard>}                            statistics counters of one shard (hash)
    sc:su:{<shard>}                            last activity per user of one shard (zset)
    sc:cfg:transitions                         the fleet's transition table (string, versioned)
    sc:lease:{<name>}  sc:fleet:{<name>}       a fleet lease and its fleet job's state (fleet.py)
    sc:x:{<slot tag>}                          expiry index of one slot (zset: key -> due ms)
    sc:ar:{<u>}:<suffix>#<c>  sc:are:...       an archived session and its event stream
    sc:aru:{<u>}                               a user's archived sessions (hash)
    sc:cx:{<u>}:<platform>:<chat>[:<thread>]  context of a session (variables, slots; hash)
    sc:hx:{<u>}:<platform>:<chat>[:<thread>]  conversation history of a session (list)
    sc:tn|tq|tw:{<u>}:<platform>:<chat>[...]  turn lease, waiter queue and waiter liveness
    sc:up:{<platform>:<update id>}             an inbound update already seen (string, with TTL)

User-supplied parts are percent-encoded, so none of them can contain ``:``, ``{``, ``}``, a glob
character or whitespace: distinct identities never share a key and no input can pick a slot.
"""

from __future__ import annotations

import re
from binascii import crc_hqx
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from urllib.parse import quote, unquote

from .errors import ValidationError

MAX_ID_LENGTH = 256
"""Longest accepted chat, user or thread id, in characters before encoding."""

_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_PLATFORM_RE = re.compile(r"^[a-z][a-z0-9_\-]{0,31}$")
_ENCODED_RE = re.compile(r"^(?:[A-Za-z0-9_.\-~@]|%[0-9A-F]{2})+$")
_SAFE = "@"  # besides quote()'s always-safe letters, digits and "_.-~"
# Text made only of characters quote() keeps is its own encoding: most ids (numbers, usernames)
# skip quote() and unquote(), whose cost shows when a restore parses 100k session ids.
_PLAIN_RE = re.compile(rf"[A-Za-z0-9_.\-~@]{{1,{MAX_ID_LENGTH}}}")  # use fullmatch()


def encode_part(text: str) -> str:
    """Percent-encode one id part (the form used in keys and session ids)."""
    return text if _PLAIN_RE.fullmatch(text) else quote(text, safe=_SAFE)


def normalize_id(value: object, what: str) -> str:
    """Validate one user-supplied id (str or int) and return it as text."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValidationError(f"{what} must be a str or an int, not {type(value).__name__}")
    text = str(value)
    if not text:
        raise ValidationError(f"{what} must not be empty")
    if len(text) > MAX_ID_LENGTH:
        raise ValidationError(
            f"{what} is {len(text)} characters long; the limit is {MAX_ID_LENGTH}"
        )
    try:
        text.encode("utf-8", errors="strict")
    except UnicodeEncodeError as exc:
        raise ValidationError(f"{what} is not valid Unicode text") from exc
    return text


def _decode_part(encoded: str, what: str) -> str:
    if _PLAIN_RE.fullmatch(encoded):
        return encoded
    if not _ENCODED_RE.match(encoded):
        raise ValidationError(f"malformed {what} in session id: {encoded[:80]!r}")
    text = unquote(encoded, errors="strict")
    if quote(text, safe=_SAFE) != encoded or len(text) > MAX_ID_LENGTH:
        raise ValidationError(f"non-canonical {what} in session id: {encoded[:80]!r}")
    return text


def check_platform(name: object) -> str:
    """Validate a platform name (enum value or custom name)."""
    text = str(name.value) if hasattr(name, "value") else name
    if not isinstance(text, str) or not _PLATFORM_RE.match(text):
        raise ValidationError(
            f"platform must match {_PLATFORM_RE.pattern} (lowercase letters, digits, '_' and '-', "
            f"at most 32 characters); got {str(name)[:80]!r}"
        )
    return text


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


_cached_identity = lru_cache(maxsize=65536)(_make_identity)


def parse_session_id(session_id: object, *, cache: bool = True) -> Identity:
    """Turn a public session id back into its identity; anything malformed is refused.

    ``cache=False`` for one-off bulk work (validating every record of a backup): a hundred
    thousand distinct ids would only evict the hot path's entries and pin memory.
    """
    if not isinstance(session_id, str):
        raise ValidationError(f"session_id must be a str, not {type(session_id).__name__}")
    if len(session_id) > 4 * 3 * MAX_ID_LENGTH:
        raise ValidationError("session_id is too long")
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
    if len(value) > MAX_ID_LENGTH:
        raise ValidationError(f"{what} is {len(value)} characters; the limit is {MAX_ID_LENGTH}")
    return "=" + quote(_valid_text(value, what), safe=_SAFE)


def _valid_text(value: str, what: str) -> str:
    try:
        value.encode("utf-8", errors="strict")
    except UnicodeEncodeError as exc:
        raise ValidationError(f"{what} is not valid Unicode text") from exc
    return value


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


class KeySchema:
    """Builds every key under one namespace."""

    __slots__ = ("_prefix", "change_buckets", "namespace")

    def __init__(self, namespace: str = "sc") -> None:
        if not isinstance(namespace, str) or not _NAMESPACE_RE.match(namespace):
            raise ValidationError(
                "namespace must be 1-64 characters of letters, digits, '_', '.' or '-'; "
                f"got {namespace!r}"
            )
        self.namespace = namespace
        self._prefix = namespace + ":"
        self.change_buckets = SLOTS

    def session(self, ident: Identity) -> str:
        return f"{self._prefix}s:{{{ident.user_tag}}}:{ident.suffix}"

    def user_index(self, user_tag: str) -> str:
        return f"{self._prefix}u:{{{user_tag}}}"

    def session_in_index(self, user_tag: str, suffix: str) -> str:
        """The session key for one entry of a user index (entries were written by us)."""
        return f"{self._prefix}s:{{{user_tag}}}:{suffix}"

    def session_pattern(self) -> str:
        """SCAN pattern matching every session hash of this namespace."""
        return f"{self._prefix}s:*"

    def all_pattern(self) -> str:
        """SCAN pattern matching every key of this namespace."""
        return f"{self._prefix}*"

    def session_id_of_key(self, key: str) -> str:
        """Inverse of session(): the public id of a session hash key."""
        head = f"{self._prefix}s:{{"
        if not key.startswith(head):
            raise ValidationError(f"{key!r} is not a session key of namespace {self.namespace!r}")
        return _session_id_after(key[len(head) :])

    # -- persistence (docs/persistence.md) ------------------------------------------------

    def change_bucket(self, index: int) -> str:
        """Change index bucket ``index``: zset of session keys -> change sequence.

        Bucket i is in cluster slot i, so in a cluster each session's bucket shares its slot.
        """
        return f"{self._prefix}c:{{{slot_tag(index)}}}"

    def change_bucket_index(self, user_tag: str) -> int:
        """Which bucket records changes of this user's sessions (its slot, folded when the
        server has no slots and fewer buckets suffice: see docs/persistence.md)."""
        return tag_slot(user_tag) % self.change_buckets

    def change_bucket_of(self, ident: Identity) -> str:
        return self.change_bucket(self.change_bucket_index(ident.user_tag))

    def restore_keys(self, session_id: str) -> tuple[str, str, str, str]:
        """(session key, user index, change bucket, index entry) of a session id that already
        passed parse_session_id (every record of a backup is checked before a restore writes):
        its parts are in their encoded form, so the keys are cut from it, not re-encoded."""
        platform, chat, user, *thread = session_id.split(":")
        suffix = f"{platform}:{chat}:{thread[0]}" if thread else f"{platform}:{chat}"
        return (
            self.session_in_index(user, suffix),
            self.user_index(user),
            self.change_bucket(self.change_bucket_index(user)),
            suffix,
        )

    def events_of_session_key(self, key: str) -> str:
        """The event stream of the session whose hash is ``key`` (a key built by session() or
        restore_keys()): ``ns:s:{<u>}:<suffix>`` -> ``ns:ev:{<u>}:<suffix>``, the key
        TrackerKeys.events() builds for that session, in the same slot."""
        head = f"{self._prefix}s:{{"
        if not key.startswith(head):
            raise ValidationError(f"{key!r} is not a session key of namespace {self.namespace!r}")
        return f"{self._prefix}ev:{{{key[len(head) :]}"

    def change_bucket_pattern(self) -> str:
        return f"{self._prefix}c:*"

    def backup_head(self) -> str:
        """The id of the backup that last consumed the change index."""
        return f"{self._prefix}bk:head"

    def lease(self, name: str) -> str:
        """A fleet-wide lease (one holder at a time), e.g. for scheduled backups."""
        if not _PLATFORM_RE.match(name):
            raise ValidationError(f"lease name must match {_PLATFORM_RE.pattern}; got {name!r}")
        return f"{self._prefix}lease:{{{name}}}"

    def fleet_job(self, name: str) -> str:
        """State of a fleet job (hash: claimed/completed interval, holder, runs); it shares its
        hash tag with ``lease(name)``, so fleet_claim.lua touches one slot."""
        if not _PLATFORM_RE.match(name):
            raise ValidationError(f"fleet job name must match {_PLATFORM_RE.pattern}; got {name!r}")
        return f"{self._prefix}fleet:{{{name}}}"

    # -- expiry (docs/expiry.md) -----------------------------------------------------------

    def expiry_index(self, index: int) -> str:
        """Expiry index bucket ``index``: zset of session keys -> next action time (ms).

        Bucket i is in cluster slot i (like the change buckets), so a session's scripts
        reach its bucket in the session's slot.
        """
        return f"{self._prefix}x:{{{slot_tag(index)}}}"

    def expiry_index_pattern(self) -> str:
        """SCAN pattern matching every expiry index bucket of this namespace."""
        return f"{self._prefix}x:*"

    def expiry_bucket_index(self, user_tag: str, buckets: int) -> int:
        """Which of ``buckets`` expiry buckets holds this user's sessions."""
        return tag_slot(user_tag) % buckets

    def archive(self, ident: Identity, created_ms: int) -> str:
        """An archived session (hash, as it was), kept for the archive retention."""
        return f"{self._prefix}ar:{{{ident.user_tag}}}:{ident.suffix}#{created_ms}"

    def archive_events(self, ident: Identity, created_ms: int) -> str:
        """The event stream of an archived session."""
        return f"{self._prefix}are:{{{ident.user_tag}}}:{ident.suffix}#{created_ms}"

    def archive_index(self, user_tag: str) -> str:
        """A user's archived sessions (hash: ``<suffix>#<created ms>`` -> archived at, ms)."""
        return f"{self._prefix}aru:{{{user_tag}}}"

    def archive_index_pattern(self) -> str:
        """SCAN pattern matching every user's archive index."""
        return f"{self._prefix}aru:*"

    def user_tag_of_archive_index(self, key: str) -> str:
        """Inverse of archive_index()."""
        head = f"{self._prefix}aru:{{"
        if not key.startswith(head) or not key.endswith("}"):
            raise ValidationError(f"{key!r} is not an archive index of {self.namespace!r}")
        return key[len(head) : -1]

    def expiry_channel(self, name: str = "expiry") -> str:
        """The pub/sub channel of expiry warnings and notify actions."""
        if not _PLATFORM_RE.match(name):
            raise ValidationError(f"channel name must match {_PLATFORM_RE.pattern}; got {name!r}")
        return f"{self._prefix}{name}"
    # -- context, turns and inbound updates (docs/context.md) -----------------------------

    def context(self, ident: Identity) -> str:
        """A session's context (hash: variables, dialogue slots, history counters)."""
        return f"{self._prefix}cx:{{{ident.user_tag}}}:{ident.suffix}"

    def history(self, ident: Identity) -> str:
        """A session's conversation history (list, oldest first), in the session's slot."""
        return f"{self._prefix}hx:{{{ident.user_tag}}}:{ident.suffix}"

    def turn(self, ident: Identity) -> str:
        """The turn lease of a conversation (string holding the holder's token)."""
        return f"{self._prefix}tn:{{{ident.user_tag}}}:{ident.suffix}"

    def turn_queue(self, ident: Identity) -> str:
        """Waiters for a conversation's turn (zset: token -> arrival number)."""
        return f"{self._prefix}tq:{{{ident.user_tag}}}:{ident.suffix}"

    def turn_waiters(self, ident: Identity) -> str:
        """Liveness of the waiters (hash: token -> deadline in ms; "#" the arrival counter)."""
        return f"{self._prefix}tw:{{{ident.user_tag}}}:{ident.suffix}"

    def seen_update(self, platform: object, update_id: object) -> str:
        """Marker of one inbound platform update (string), each in its own slot."""
        plat = check_platform(platform)
        return f"{self._prefix}up:{{{plat}:{encode_part(normalize_id(update_id, 'update_id'))}}}"

    def cached_prefixes(self) -> tuple[str, str, str]:
        """Key prefixes whose values a near cache holds (session, context, history)."""
        return (f"{self._prefix}s:", f"{self._prefix}cx:", f"{self._prefix}hx:")

    # -- integrations (aiogram FSM storage, python-telegram-bot persistence) ---------------

    def fsm_state(self, fid: FsmIdentity) -> str:
        """aiogram FSM state of one StorageKey (string)."""
        return f"{self._prefix}fsm:{{{fid.tag}}}:{fid.rest}:state"

    def fsm_data(self, fid: FsmIdentity) -> str:
        """aiogram FSM data of one StorageKey (hash: top-level data key -> encoded value)."""
        return f"{self._prefix}fsm:{{{fid.tag}}}:{fid.rest}:data"

    def fsm_lock(self, fid: FsmIdentity) -> str:
        """aiogram event-isolation lock of one StorageKey (string holding the owner's token)."""
        return f"{self._prefix}fsm:{{{fid.tag}}}:{fid.rest}:lock"

    def fsm_pattern(self) -> str:
        """SCAN pattern matching every FSM key of this namespace."""
        return f"{self._prefix}fsm:*"

    def lock(self, name: str) -> str:
        """A named fleet-wide lock (string holding the owner's token)."""
        return f"{self._prefix}lock:{{{quote(_valid_text(name, 'lock name'), safe=_SAFE)}}}"

    def ptb_user(self, user_id: object) -> str:
        """python-telegram-bot user_data of one user (hash: top-level key -> encoded value)."""
        return f"{self._prefix}ptb:u:{{{ptb_id(user_id, 'user_id')}}}"

    def ptb_chat(self, chat_id: object) -> str:
        """python-telegram-bot chat_data of one chat (hash)."""
        return f"{self._prefix}ptb:c:{{{ptb_id(chat_id, 'chat_id')}}}"

    def ptb_users_pattern(self) -> str:
        """SCAN pattern matching every python-telegram-bot user_data key of this namespace."""
        return f"{self._prefix}ptb:u:{{*}}"

    def ptb_chats_pattern(self) -> str:
        """SCAN pattern matching every python-telegram-bot chat_data key of this namespace."""
        return f"{self._prefix}ptb:c:{{*}}"

    def ptb_id_of_key(self, key: str | bytes) -> int:
        """The user or chat id of a ``ptb_user``/``ptb_chat`` key (the inverse of both)."""
        text = key.decode("utf-8") if isinstance(key, bytes) else key
        head, _, rest = text.partition("{")
        if head not in (f"{self._prefix}ptb:u:", f"{self._prefix}ptb:c:") or rest[-1:] != "}":
            raise ValidationError(f"{text[:80]!r} is not a PTB user or chat key")
        try:
            return int(rest[:-1])
        except ValueError as exc:
            raise ValidationError(f"{text[:80]!r} is not a PTB user or chat key") from exc

    def ptb_bot(self) -> str:
        """python-telegram-bot bot_data (hash)."""
        return f"{self._prefix}ptb:b"

    def ptb_callback_keyboards(self) -> str:
        """python-telegram-bot callback data: keyboard uuid -> [time, {button uuid: data}]."""
        return f"{self._prefix}ptb:cb:{{cb}}:k"

    def ptb_callback_queries(self) -> str:
        """python-telegram-bot callback data: callback query id -> keyboard uuid."""
        return f"{self._prefix}ptb:cb:{{cb}}:q"

    def ptb_conversation(self, name: str) -> str:
        """python-telegram-bot ConversationHandler states (hash: encoded key -> state)."""
        encoded = quote(_valid_text(name, "conversation name"), safe=_SAFE)
        return f"{self._prefix}ptb:conv:{{{encoded}}}"

    def ptb_pattern(self) -> str:
        """SCAN pattern matching every python-telegram-bot key of this namespace."""
        return f"{self._prefix}ptb:*"


def _session_id_after(rest: str) -> str:
    """The public id from the part of a per-session key after ``{``: ``<u>}:<suffix>``."""
    tag, _, suffix = rest.partition("}:")
    platform, _, rest = suffix.partition(":")
    chat, _, thread = rest.partition(":")
    return ":".join([platform, chat, tag] + ([thread] if thread else []))


SLOTS = 16384


def tag_slot(tag: str) -> int:
    """The Redis Cluster slot of a hash tag (CRC16-XMODEM, as the server computes it)."""
    return crc_hqx(tag.encode("utf-8"), 0) % SLOTS


@lru_cache(maxsize=1)
def _slot_tags() -> tuple[str, ...]:
    # slot_tags.txt line n is the shortest hex counter whose CRC16 lands in slot n (generated
    # once: computing it costs ~0.3 s). Checked on load, so a damaged file cannot misroute.
    text = resources.files("sessioncache").joinpath("slot_tags.txt").read_text("ascii")
    tags = tuple(text.split())
    if len(tags) != SLOTS or any(tag_slot(t) != i for i, t in enumerate(tags)):
        raise RuntimeError("sessioncache/slot_tags.txt is damaged; reinstall sessioncache")
    return tags


def slot_tag(slot: int) -> str:
    """A short hash tag that lands in the given slot, so per-slot keys share a slot with users."""
    return _slot_tags()[slot]


def all_slot_tags() -> list[str]:
    """The tag of every cluster slot, in slot order (the statistics shard tags)."""
    return list(_slot_tags())


class TrackerKeys:
    """Keys of the state tracker: event streams, statistics shards and the transition table.

    On a standalone server (or memory://) every session shares the one shard ``{0}``; on a
    cluster the shard is the session's slot, so the session's scripts can update it atomically.
    """

    __slots__ = ("_prefix", "cluster")

    def __init__(self, schema: KeySchema, cluster: bool) -> None:
        self._prefix = schema.namespace + ":"
        self.cluster = cluster

    def events(self, ident: Identity) -> str:
        return f"{self._prefix}ev:{{{ident.user_tag}}}:{ident.suffix}"

    def events_in_index(self, user_tag: str, suffix: str) -> str:
        return f"{self._prefix}ev:{{{user_tag}}}:{suffix}"

    def events_pattern(self) -> str:
        return f"{self._prefix}ev:*"

    def shard_tag(self, ident: Identity) -> str:
        return self.shard_of_user(ident.user_tag)

    def shard_of_user(self, user_tag: str) -> str:
        return slot_tag(tag_slot(user_tag)) if self.cluster else "0"

    def stats(self, shard: str) -> str:
        return f"{self._prefix}st:{{{shard}}}"

    def users(self, shard: str) -> str:
        return f"{self._prefix}su:{{{shard}}}"

    def stats_pattern(self) -> str:
        return f"{self._prefix}st:*"

    def shard_of_stats_key(self, key: str) -> str:
        return key[len(self._prefix) + 4 : -1]

    def transitions(self) -> str:
        return f"{self._prefix}cfg:transitions"

    def session_id_of_events_key(self, key: str) -> str:
        head = f"{self._prefix}ev:{{"
        if not key.startswith(head):
            raise ValidationError(f"{key!r} is not an event stream key")
        return _session_id_after(key[len(head) :])
