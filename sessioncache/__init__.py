"""sessioncache: a Redis-backed session cache shared by fleets of chat-bot and agent workers."""

from .codec import Limits
from .errors import (
    BackendUnavailable,
    IntegrityError,
    InvalidTransition,
    SessionCacheError,
    SessionExists,
    SessionExpired,
    SessionNotFound,
    ValidationError,
    VersionConflict,
)
from .events import Event, EventType
from .keys import Identity, KeySchema
from .metrics import Metrics
from .models import Platform, Session, SessionState
from .patterns import LifecyclePrediction, PatternReport
from .states import GuardRejected, TransitionTable
from .statistics import StatisticsReport
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
from .tracker import StateTracker, TrackerConfig

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable",
    "Event",
    "EventType",
    "GuardRejected",
    "Identity",
    "IntegrityError",
    "InvalidTransition",
    "KeySchema",
    "LifecyclePrediction",
    "Limits",
    "Metrics",
    "PatternReport",
    "Platform",
    "Session",
    "SessionCacheError",
    "SessionExists",
    "SessionExpired",
    "SessionNotFound",
    "SessionState",
    "SessionStore",
    "SessionSystem",
    "SessionSystemConfig",
    "StateTracker",
    "StatisticsReport",
    "TrackerConfig",
    "TransitionTable",
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
