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
    sc:xo:{<slot tag>}                         expiry effect outbox of one slot (zset)
    sc:xq:{<slot tag>}                         its notice queues (hash: session -> notices)
    sc:ar:{<u>}:<suffix>#<c>  sc:are:...       an archived session and its event stream
    sc:aru:{<u>}                               a user's archived sessions (hash)
    sc:cx:{<u>}:<platform>:<chat>[:<thread>]  context of a session (variables, slots; hash)
    sc:hx:{<u>}:<platform>:<chat>[:<thread>]  conversation history of a session (list)
    sc:tn|tq|tw:{<u>}:<platform>:<chat>[...]  turn lease, waiter queue and waiter liveness
    sc:up:{<platform>:<update id>}             an inbound update already seen (string, with TTL)

Ids are validated and encoded by identity.py; slots.py gives the per-slot hash tags.
"""

from __future__ import annotations

import re

from .errors import ValidationError
from .identity import (
    FsmIdentity,
    Identity,
    check_name,
    check_platform,
    encode_part,
    encode_text,
    normalize_id,
    ptb_id,
    session_id_after,
)
from .slots import SLOTS, slot_tag, tag_slot

_NAMESPACE_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")  # use fullmatch()

STANDALONE_CHANGE_BUCKETS = 256
"""Change-index buckets on a standalone server (a cluster needs one per slot: 16384)."""

STANDALONE_EXPIRY_BUCKETS = 16
"""Expiry index buckets on a standalone server (a cluster needs one per slot)."""


class KeySchema:
    """Builds every key under one namespace.

    ``cluster`` picks the statistics shards (one per slot on a cluster, so a session's scripts
    update its shard atomically; the single shard ``{0}`` otherwise) and the change buckets.
    """

    __slots__ = ("_prefix", "change_buckets", "cluster", "namespace")

    def __init__(self, namespace: str = "sc", *, cluster: bool = False) -> None:
        if not isinstance(namespace, str) or not _NAMESPACE_RE.fullmatch(namespace):
            raise ValidationError(
                "namespace must be 1-64 characters of letters, digits, '_', '.' or '-'; "
                f"got {namespace!r}"
            )
        self.namespace = namespace
        self._prefix = namespace + ":"
        self.cluster = cluster
        # No slots to share on one server: fewer change buckets keep backups cheap.
        self.change_buckets = SLOTS if cluster else STANDALONE_CHANGE_BUCKETS

    def session(self, ident: Identity) -> str:
        """The session's hash."""
        return f"{self._prefix}s:{{{ident.user_tag}}}:{ident.suffix}"

    def user_index(self, user_tag: str) -> str:
        """The index of a user's sessions (hash: suffix -> 1)."""
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
        return session_id_after(key[len(head) :])

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
        """The change-index bucket that records a session's changes."""
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
        events() builds for that session, in the same slot."""
        head = f"{self._prefix}s:{{"
        if not key.startswith(head):
            raise ValidationError(f"{key!r} is not a session key of namespace {self.namespace!r}")
        return f"{self._prefix}ev:{{{key[len(head) :]}"

    def op_log(self, key: str) -> str:
        """The op log of a session or record ``key`` of this namespace (lua/lib/ops.lua), in
        the key's slot: ``ns:s:{u}:x`` -> ``ns:o:s:{u}:x``; a key without a hash tag becomes
        the tag itself (``ns:ptb:b`` -> ``ns:o:{ns:ptb:b}``), which hashes alike."""
        rest = key[len(self._prefix) :] if key.startswith(self._prefix) else ""
        if not rest:
            raise ValidationError(f"{key!r} is not a key of namespace {self.namespace!r}")
        if "{" in rest and "}" in rest[rest.index("{") + 2 :]:
            return f"{self._prefix}o:{rest}"
        return f"{self._prefix}o:{{{key}}}"

    def op_log_pattern(self) -> str:
        """SCAN pattern matching every op log of this namespace (never a session: ``o:``)."""
        return f"{self._prefix}o:*"

    def change_bucket_pattern(self) -> str:
        """SCAN pattern matching every change-index bucket."""
        return f"{self._prefix}c:*"

    def backup_head(self) -> str:
        """The id of the backup that last consumed the change index."""
        return f"{self._prefix}bk:head"

    def lease(self, name: str) -> str:
        """A fleet-wide lease (one holder at a time), e.g. for scheduled backups."""
        return f"{self._prefix}lease:{{{check_name(name, 'lease name')}}}"

    # -- state tracker (docs/state.md) ----------------------------------------------------

    def events(self, ident: Identity) -> str:
        """The event stream of a session."""
        return f"{self._prefix}ev:{{{ident.user_tag}}}:{ident.suffix}"

    def events_in_index(self, user_tag: str, suffix: str) -> str:
        """The event stream for one entry of a user index."""
        return f"{self._prefix}ev:{{{user_tag}}}:{suffix}"

    def events_pattern(self) -> str:
        """SCAN pattern matching every event stream of this namespace."""
        return f"{self._prefix}ev:*"

    def session_id_of_events_key(self, key: str) -> str:
        """Inverse of events(): the public id of the session an event stream belongs to."""
        head = f"{self._prefix}ev:{{"
        if not key.startswith(head):
            raise ValidationError(f"{key!r} is not an event stream key")
        return session_id_after(key[len(head) :])

    def shard_tag(self, ident: Identity) -> str:
        """The statistics shard of a session."""
        return self.shard_of_user(ident.user_tag)

    def shard_of_user(self, user_tag: str) -> str:
        """The statistics shard of a user: its slot's tag on a cluster, ``0`` otherwise."""
        return slot_tag(tag_slot(user_tag)) if self.cluster else "0"

    def stats(self, shard: str) -> str:
        """Statistics counters of one shard (hash)."""
        return f"{self._prefix}st:{{{shard}}}"

    def users(self, shard: str) -> str:
        """Last activity per user of one shard (zset)."""
        return f"{self._prefix}su:{{{shard}}}"

    def stats_pattern(self) -> str:
        """SCAN pattern matching every statistics shard."""
        return f"{self._prefix}st:*"

    def shard_of_stats_key(self, key: str) -> str:
        """The shard tag inside a key built by stats()."""
        return key[len(self._prefix) + 4 : -1]

    def transitions(self) -> str:
        """The fleet's transition table (string, versioned)."""
        return f"{self._prefix}cfg:transitions"

    def fleet_job(self, name: str) -> str:
        """State of a fleet job (hash: claimed/completed interval, holder, runs); it shares its
        hash tag with ``lease(name)``, so fleet_claim.lua touches one slot."""
        return f"{self._prefix}fleet:{{{check_name(name, 'fleet job name')}}}"

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

    def expiry_keys_pattern(self) -> str:
        """SCAN pattern matching every expiry index bucket and effect outbox (one SCAN)."""
        return f"{self._prefix}x*"

    def expiry_outbox(self, index: int) -> str:
        """The effect outbox of expiry bucket ``index`` (zset: effect -> when it may be
        claimed, ms): effects outside Redis (notify callback, archive file) recorded by
        expiry_act.lua and delivered from here. Same slot as the bucket."""
        return f"{self._prefix}xo:{{{slot_tag(index)}}}"

    def expiry_outbox_of(self, index_key: str) -> str:
        """The outbox beside an expiry index bucket key (``ns:x:{t}`` -> ``ns:xo:{t}``)."""
        head = f"{self._prefix}x:"
        if not index_key.startswith(head):
            raise ValidationError(f"{index_key!r} is not an expiry index of {self.namespace!r}")
        return f"{self._prefix}xo:{index_key[len(head) :]}"

    def expiry_queues_of(self, outbox_key: str) -> str:
        """The notice queues beside an effect outbox (``ns:xo:{t}`` -> ``ns:xq:{t}``; hash:
        ``<created ms>|<session id>`` -> that session's notices still in the outbox, in the
        order written, so each is delivered only after the one before it). Same slot."""
        head = f"{self._prefix}xo:"
        if not outbox_key.startswith(head):
            raise ValidationError(f"{outbox_key!r} is not an expiry outbox of {self.namespace!r}")
        return f"{self._prefix}xq:{outbox_key[len(head) :]}"

    def expiry_buckets(self) -> int:
        """How many expiry index buckets: 16 on a standalone server, one per slot on a
        cluster (a session's bucket must be in its slot there)."""
        return SLOTS if self.cluster else STANDALONE_EXPIRY_BUCKETS

    def expiry_index_of_tag(self, user_tag: str) -> str:
        """The expiry index bucket of a user's sessions."""
        return self.expiry_index(self.expiry_bucket_index(user_tag, self.expiry_buckets()))

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
        return f"{self._prefix}{check_name(name, 'channel name')}"

    # -- cross-channel sync (docs/sync.md) -------------------------------------------------
    # The identity map's keys share one hash tag ({idm}), so a link is decided in one slot;
    # a session's sync meta and conflicts share the session's slot.

    def link_code(self, public: str) -> str:
        """A pending link code (hash: who, secret, tries), by the code's public part."""
        return f"{self._prefix}idm:{{idm}}:code:{public}"

    def link_starts(self, who: str) -> str:
        """Codes an identity started in the current rate window (counter)."""
        return f"{self._prefix}idm:{{idm}}:start:{who}"

    def link_fails(self, who: str) -> str:
        """Wrong codes an identity typed in the current rate window (counter)."""
        return f"{self._prefix}idm:{{idm}}:fail:{who}"

    def link_owners(self) -> str:
        """Identity -> person (hash: ``platform:user`` -> person id)."""
        return f"{self._prefix}idm:{{idm}}:owner"

    def link_members(self) -> str:
        """Person -> identities (hash: person id -> identities joined by spaces)."""
        return f"{self._prefix}idm:{{idm}}:members"

    def sync_history(self) -> str:
        """Capped list of sync operations (JSON records, newest first)."""
        return f"{self._prefix}idm:{{idm}}:history"

    def sync_journal(self) -> str:
        """Sync operations under way across slots (hash: op id -> JSON plan)."""
        return f"{self._prefix}idm:{{idm}}:journal"

    def sync_pending(self) -> str:
        """Sessions waiting for a delayed or batch sync (zset: session id -> due ms)."""
        return f"{self._prefix}idm:{{idm}}:pending"

    def sync_meta(self, ident: Identity) -> str:
        """A session's per-field stamps and merge states (hash, the session's slot)."""
        return f"{self._prefix}sm:{{{ident.user_tag}}}:{ident.suffix}"

    def sync_conflicts(self, ident: Identity) -> str:
        """A session's conflicts kept for review (hash, the session's slot)."""
        return f"{self._prefix}cf:{{{ident.user_tag}}}:{ident.suffix}"

    def sync_conflicts_pattern(self) -> str:
        """SCAN pattern of every session's conflicts."""
        return f"{self._prefix}cf:*"

    def session_id_of_conflicts_key(self, key: str) -> str:
        """Inverse of sync_conflicts()."""
        head = f"{self._prefix}cf:{{"
        if not key.startswith(head):
            raise ValidationError(f"{key!r} is not a conflicts key of {self.namespace!r}")
        return session_id_after(key[len(head) :])

    def sync_channel(self) -> str:
        """The pub/sub channel where every synced write announces itself."""
        return f"{self._prefix}sync"

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

    def fsm_turn(self, fid: FsmIdentity) -> tuple[str, str, str]:
        """aiogram event isolation by turns (turns.TurnLock) of one StorageKey: the lease, the
        waiter queue and the waiter liveness."""
        base = f"{self._prefix}fsm:{{{fid.tag}}}:{fid.rest}"
        return f"{base}:tn", f"{base}:tq", f"{base}:tw"

    def fsm_pattern(self) -> str:
        """SCAN pattern matching every FSM key of this namespace."""
        return f"{self._prefix}fsm:*"

    def lock(self, name: str) -> str:
        """A named fleet-wide lock (string holding the owner's token)."""
        return f"{self._prefix}lock:{{{encode_text(name, 'lock name')}}}"

    def ptb_user(self, user_id: object) -> str:
        """python-telegram-bot user_data of one user (hash: top-level key -> encoded value)."""
        return f"{self._prefix}ptb:u:{{{ptb_id(user_id, 'user_id')}}}"

    def ptb_chat(self, chat_id: object) -> str:
        """python-telegram-bot chat_data of one chat (hash)."""
        return f"{self._prefix}ptb:c:{{{ptb_id(chat_id, 'chat_id')}}}"

    def ptb_turn(self, chat_id: object) -> tuple[str, str, str]:
        """python-telegram-bot: the turn (turns.TurnLock) of one chat's updates, in the slot of
        its chat_data: the lease, the waiter queue and the waiter liveness."""
        tag = ptb_id(chat_id, "chat_id")
        head = f"{self._prefix}ptb:"
        return f"{head}tn:{{{tag}}}", f"{head}tq:{{{tag}}}", f"{head}tw:{{{tag}}}"

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
        return f"{self._prefix}ptb:conv:{{{encode_text(name, 'conversation name')}}}"

    def ptb_pattern(self) -> str:
        """SCAN pattern matching every python-telegram-bot key of this namespace."""
        return f"{self._prefix}ptb:*"
