"""The error hierarchy: every exception sessioncache raises derives from SessionCacheError."""

from __future__ import annotations

from collections.abc import Iterable


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


class BackendUnavailable(SessionCacheError, ConnectionError):
    """Redis could not be reached or answered with an error we cannot act on."""


class IntegrityError(SessionCacheError):
    """Stored or restored data failed a checksum, signature or structure check."""


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
