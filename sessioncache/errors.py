"""The error hierarchy: every exception sessioncache raises derives from SessionCacheError."""

from __future__ import annotations

from collections.abc import Iterable

from redis.exceptions import ConnectionError as RedisConnectionError


class SessionCacheError(Exception):
    """Base class of every sessioncache error."""


class ValidationError(SessionCacheError, ValueError):
    """Input was refused before anything reached Redis."""


class SessionNotFound(SessionCacheError, KeyError):
    """No session exists under the given id (never created, deleted or expired)."""

    def __init__(self, session_id: str) -> None:
        super().__init__(session_id)
        self.session_id = session_id

    def __str__(self) -> str:
        return f"session {self.session_id!r} does not exist (never created, deleted or expired)"


class SessionExists(SessionCacheError):
    """create() was asked for a session that already exists; use get_or_create() instead."""

    def __init__(self, session_id: str) -> None:
        super().__init__(session_id)
        self.session_id = session_id

    def __str__(self) -> str:
        return (
            f"session {self.session_id!r} already exists; use get_or_create_session() to reuse it"
        )


class SessionExpired(SessionNotFound):
    """The session's expiry rule fired before this call could record activity on it.

    Raised by a bare SessionStore; SessionSystem applies the rule and retries the call on the
    session that follows (docs/expiry.md), so its callers never see it.
    """

    def __str__(self) -> str:
        return f"session {self.session_id!r} passed its expiry deadline; its rule applies first"


class VersionConflict(SessionCacheError):
    """An update carried an expected_version that no longer matches the stored one."""

    def __init__(self, session_id: str, expected: int, actual: int) -> None:
        super().__init__(session_id, expected, actual)
        self.session_id = session_id
        self.expected = expected
        self.actual = actual

    def __str__(self) -> str:
        return (
            f"session {self.session_id!r} is at version {self.actual}, not {self.expected}: "
            "another writer changed it; re-read the session and retry"
        )


class InvalidTransition(SessionCacheError):
    """A state change that the transition table does not allow."""

    def __init__(self, session_id: str, current: str, target: str, allowed: Iterable[str]) -> None:
        self.session_id = session_id
        self.current = current
        self.target = target
        self.allowed = sorted(allowed)
        super().__init__(session_id, current, target, self.allowed)

    def __str__(self) -> str:
        targets = ", ".join(self.allowed) or "none"
        return (
            f"session {self.session_id!r} cannot move from {self.current!r} to {self.target!r}; "
            f"allowed targets: {targets}"
        )


class OpIdReused(SessionCacheError):
    """A write arrived with the op id of an earlier write but other arguments: it was refused
    (nothing written) rather than taken for a retry of that write. A bug, or a collision of 96
    random bits."""


class BackendUnavailable(SessionCacheError, ConnectionError):
    """Redis could not be reached, or refused the command in its current state (out of memory,
    read-only replica, loading, busy, cluster down): retrying later may succeed."""


class ScriptError(SessionCacheError):
    """A Lua script raised an error: a bug in sessioncache (or a key changed by something
    else), not an outage. Retrying will not help; please report it with the message."""

    def __init__(self, script: str, message: str) -> None:
        super().__init__(script, message)
        self.script = script
        self.message = message

    def __str__(self) -> str:
        return f"script {self.script} failed: {self.message}"


class TableConflict(SessionCacheError):
    """publish_table() lost the compare-and-set on the fleet's transition table every time:
    other processes kept publishing new versions."""

    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(expected, actual)
        self.expected = expected
        self.actual = actual

    def __str__(self) -> str:
        return (
            f"the fleet's transition table moved to version {self.actual} while this process "
            f"published on version {self.expected}; load_table() and publish again"
        )


class IntegrityError(SessionCacheError):
    """Stored or restored data failed a checksum, signature or structure check."""


class GuardRejected(InvalidTransition):
    """The table allows the move but a guard refused it for this session."""

    def __str__(self) -> str:
        return (
            f"session {self.session_id!r}: a guard refused the move from {self.current!r} to "
            f"{self.target!r}"
        )


class LockNotAcquired(SessionCacheError, TimeoutError):
    """The lock was still held by someone else when the blocking timeout ran out."""

    def __init__(self, key: str, waited: float) -> None:
        super().__init__(key, waited)
        self.key = key
        self.waited = waited

    def __str__(self) -> str:
        return f"lock {self.key!r} is held by another owner; gave up after {self.waited:.3f}s"


class LeaseBusy(LockNotAcquired):
    """A fleet lease (e.g. the backup lease) is held by another process: the work it guards is
    running elsewhere; retry later."""

    def __str__(self) -> str:
        return (
            f"lease {self.key!r} is held by another process (its work is running there); "
            f"gave up after {self.waited:.3f}s; retry later"
        )


class ChangeIndexUnarmed(SessionCacheError):
    """A change-index bucket lost its '#' counter (eviction, FLUSHDB, a replace restore):
    changes there went unrecorded, so an incremental backup would be inexact (persistence
    turns it into an IntegrityError that asks for a full backup)."""

    def __init__(self, slot: int) -> None:
        super().__init__(slot)
        self.slot = slot

    def __str__(self) -> str:
        return f"change-index bucket {self.slot} lost its counter; a full backup is needed"


class TurnBusy(SessionCacheError):
    """Another worker kept a conversation's turn past the caller's timeout: answer "busy"."""

    def __init__(self, session_id: str, timeout: float) -> None:
        super().__init__(session_id, timeout)
        self.session_id = session_id
        self.timeout = timeout

    def __str__(self) -> str:
        return (
            f"conversation {self.session_id!r} is busy: another worker held its turn for "
            f"the whole {self.timeout:g} s wait; answer 'busy' or retry later"
        )


class TurnLost(SessionCacheError):
    """A turn's lease expired while its holder still ran (it could not be renewed in time)."""

    def __init__(self, session_id: str) -> None:
        super().__init__(session_id)
        self.session_id = session_id

    def __str__(self) -> str:
        return (
            f"the turn of conversation {self.session_id!r} expired before the holder left it; "
            "another worker may have run a turn at the same time: raise the lease"
        )


class PoolExhausted(SessionCacheError, RedisConnectionError):
    """Every connection stayed in use for the whole pool_timeout (a redis-py ConnectionError
    too, so redis-py's retry and our BackendUnavailable wrapping treat it as one)."""

    def __init__(self, size: int, timeout: float) -> None:
        super().__init__(
            f"no free Redis connection within pool_timeout={timeout:g} s: all {size} "
            "(max_connections) stayed in use; raise max_connections or pool_timeout, "
            "or bound the number of concurrent calls"
        )
        self.size = size
        self.timeout = timeout


class LinkError(SessionCacheError):
    """A link code was refused: wrong, expired, already used, or typed by its own identity.

    Nothing was linked; the message says which case (never the code's secret).
    """


class LinkRateLimited(LinkError):
    """Too many link codes started, or wrong codes typed, by one identity in a rate window."""

    def __init__(self, who: str, retry_after: float) -> None:
        super().__init__(f"{who} is rate limited; try again in {retry_after:.0f} s")
        self.retry_after = retry_after


class IdentityOwned(LinkError):
    """The identity is already linked to another person: unlink it there first."""


class ScopeError(ValidationError):
    """A session scope that would put two different people's direct messages in one session."""
