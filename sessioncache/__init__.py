"""sessioncache: a Redis-backed session cache shared by fleets of chat-bot and agent workers."""

from .codec import Limits
from .errors import (
    BackendUnavailable,
    IntegrityError,
    InvalidTransition,
    SessionCacheError,
    SessionExists,
    SessionNotFound,
    ValidationError,
    VersionConflict,
)
from .keys import Identity, KeySchema
from .models import Platform, Session, SessionState
from .store import SessionStore
from .system import (
    SessionSystem,
    SessionSystemConfig,
    create_session,
    current_system,
    delete_session,
    get_or_create_session,
    get_session,
    initialize_sessions,
    list_user_sessions,
    shutdown_sessions,
    touch_session,
    update_session,
)

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable",
    "Identity",
    "IntegrityError",
    "InvalidTransition",
    "KeySchema",
    "Limits",
    "Platform",
    "Session",
    "SessionCacheError",
    "SessionExists",
    "SessionNotFound",
    "SessionState",
    "SessionStore",
    "SessionSystem",
    "SessionSystemConfig",
    "ValidationError",
    "VersionConflict",
    "create_session",
    "current_system",
    "delete_session",
    "get_or_create_session",
    "get_session",
    "initialize_sessions",
    "list_user_sessions",
    "shutdown_sessions",
    "touch_session",
    "update_session",
]
