"""The origin document's module-level API: initialize_sessions(), create_session(), ...,
shutdown_sessions() over one current SessionSystem per process."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import AlreadyInitialized, SessionCacheError
from .models import Platform, Session

if TYPE_CHECKING:
    from .system import SessionSystem

_current: SessionSystem | None = None
_current_args: tuple[Any, ...] = ()


def _same_args(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    try:
        return bool(a == b)
    except Exception:  # a value whose == raises (an odd storage_config entry): not the same
        return False


async def initialize_sessions(
    storage_type: str | None = None,
    storage_config: Mapping[str, Any] | None = None,
    enable_all_features: bool = False,
    *,
    replace: bool = False,
    **options: Any,
) -> SessionSystem:
    """Build the session system and make it the one the module-level functions use.

    Takes exactly the fields of SessionSystemConfig (so ``initialize_sessions(**c.__dict__)``),
    plus ``replace``; no ``storage_type``: $SESSIONCACHE_URL, else MEMORY.

    Called again while a system is running: with the same arguments it returns the running
    system (two modules may both initialise); with different ones it raises
    AlreadyInitialized, unless ``replace=True``: then the new system is started and made
    current first, and the old one is shut down after (calls still running on the old one
    may fail). ``shutdown_sessions()`` ends the running system.
    """
    # Imported here: system.py re-exports this module's names, so it imports this one first.
    from .system import SessionSystem

    global _current, _current_args
    args = (str(storage_type).upper(), dict(storage_config or {}), enable_all_features, options)
    running = _current if _current is not None and not _current.closed else None
    if running is not None and not replace:
        if _same_args(args, _current_args):
            return running
        raise AlreadyInitialized()
    system = await SessionSystem.open(
        storage_type, storage_config, enable_all_features=enable_all_features, **options
    )
    racing = _current if _current is not None and not _current.closed else None
    if racing is not None and racing is not running and not replace:
        # Another initialize_sessions() finished while this one was connecting.
        await system.shutdown()
        if _same_args(args, _current_args):
            return racing
        raise AlreadyInitialized()
    previous, _current, _current_args = racing, system, args
    if previous is not None:
        await previous.shutdown()
    return system


def current_system() -> SessionSystem:
    """The system initialize_sessions() made; SessionCacheError if there is none."""
    if _current is None:
        raise SessionCacheError("call 'await initialize_sessions()' before using sessions")
    return _current


async def create_session(
    chat_id: str | int,
    user_id: str | int,
    platform: Platform | str = Platform.WEB,
    thread_id: str | int | None = None,
    **options: Any,
) -> Session:
    """SessionSystem.create_session() on the current system (SessionExists if it exists)."""
    return await current_system().create_session(chat_id, user_id, platform, thread_id, **options)


async def get_or_create_session(
    chat_id: str | int,
    user_id: str | int,
    platform: Platform | str = Platform.WEB,
    thread_id: str | int | None = None,
    **options: Any,
) -> Session:
    """SessionSystem.get_or_create_session() on the current system."""
    return await current_system().get_or_create_session(
        chat_id, user_id, platform, thread_id, **options
    )


async def get_session(session_id: str) -> Session | None:
    """The session, or None if it does not exist."""
    return await current_system().get_session(session_id)


async def update_session(
    session_id: str,
    data: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    **options: Any,
) -> Session:
    """SessionSystem.update_session() on the current system (SessionNotFound if missing)."""
    return await current_system().update_session(session_id, data, metadata, **options)


async def delete_session(session_id: str) -> bool:
    """Remove a session; True if it existed, False if it did not."""
    return await current_system().delete_session(session_id)


async def touch_session(
    session_id: str, *, messages: int = 0, ttl: float | None = None
) -> dt.datetime:
    """Record activity and refresh the TTL; SessionNotFound if the session does not exist."""
    return await current_system().touch_session(session_id, messages=messages, ttl=ttl)


async def list_user_sessions(user_id: str | int) -> list[Session]:
    """Every live session of a user (an empty list for an unknown user)."""
    return await current_system().list_user_sessions(user_id)


async def shutdown_sessions() -> None:
    """Close the system made by initialize_sessions() (a no-op if there is none)."""
    global _current, _current_args
    if _current is not None:
        system, _current, _current_args = _current, None, ()
        await system.shutdown()
