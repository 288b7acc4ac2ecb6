"""sessioncache: a Redis-backed session cache shared by fleets of chat-bot and agent workers."""

from .codec import Limits
from .config import (
    ConfigManager,
    create_default_session_system,
    get_development_config,
    get_production_config,
)
from .errors import (
    BackendUnavailable,
    ChangeIndexUnarmed,
    GuardRejected,
    IdentityOwned,
    IntegrityError,
    InvalidTransition,
    LeaseBusy,
    LinkError,
    LinkRateLimited,
    LockNotAcquired,
    OpIdReused,
    PoolExhausted,
    ScopeError,
    ScriptError,
    SessionCacheError,
    SessionExists,
    SessionExpired,
    SessionNotFound,
    TableConflict,
    TurnBusy,
    TurnLost,
    ValidationError,
    VersionConflict,
)
from .events import Event, EventType
from .identity import Identity
from .keys import KeySchema
from .metrics import Metrics
from .models import Platform, Session, SessionState
from .patterns import PatternReport
from .prediction import LifecyclePrediction
from .states import TransitionTable
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
    "ChangeIndexUnarmed",
    "ConfigManager",
    "Event",
    "EventType",
    "GuardRejected",
    "Identity",
    "IdentityOwned",
    "IntegrityError",
    "InvalidTransition",
    "KeySchema",
    "LeaseBusy",
    "LifecyclePrediction",
    "Limits",
    "LinkError",
    "LinkRateLimited",
    "LockNotAcquired",
    "Metrics",
    "OpIdReused",
    "PatternReport",
    "Platform",
    "PoolExhausted",
    "ScopeError",
    "ScriptError",
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
    "TableConflict",
    "TrackerConfig",
    "TransitionTable",
    "TurnBusy",
    "TurnLost",
    "ValidationError",
    "VersionConflict",
    "create_default_session_system",
    "create_session",
    "current_system",
    "delete_session",
    "get_development_config",
    "get_or_create_session",
    "get_production_config",
    "get_session",
    "initialize_sessions",
    "list_user_sessions",
    "shutdown_sessions",
    "touch_session",
    "update_session",
]
