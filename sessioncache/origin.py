"""The origin document's module-level API: initialize_sessions(), create_session(), ...,
shutdown_sessions() over the current SessionSystem of the process."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import SessionCacheError
from .models import Platform, Session

if TYPE_CHECKING:
    from .system import SessionSystem

log = logging.getLogger(__name__)

_current: SessionSystem | None = None
# Every system initialize_sessions() started and shutdown_sessions() has not shut down yet,
# oldest first, with the arguments it was started with.
_started: list[tuple[SessionSystem, tuple[Any, ...]]] = []


def _same_args(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    try:
        return bool(a == b)
    except Exception:  # a value whose == raises (an odd storage_config entry): not the same
        return False


def _running(args: tuple[Any, ...]) -> SessionSystem | None:
    """A running system started with these arguments (the current one first)."""
    candidates = sorted(_started, key=lambda item: item[0] is not _current)
    for system, started_with in candidates:
        if not system.closed and _same_args(args, started_with):
            return system
    return None


async def initialize_sessions(
    storage_type: str | None = None,
    storage_config: Mapping[str, Any] | None = None,
    enable_all_features: bool = False,
    *,
    replace: bool = False,
    **options: Any,
) -> SessionSystem:
    """Start a session system and make it the one the module-level functions use.

    Takes exactly the fields of SessionSystemConfig (so ``initialize_sessions(**c.__dict__)``),
    plus ``replace``; no ``storage_type``: $SESSIONCACHE_URL, else MEMORY.

    Called again in the same process:

    - with the same arguments as a system it started that is still running, that system is
      returned (and made current again): two modules may both initialise;
    - with other arguments, a new system is started and made current. The earlier one is not
      shut down: whoever holds it keeps using it, and one warning is logged saying both run.

    ``replace=True`` always starts a fresh system and makes it current. Once it has started,
    it shuts down the running system started with the same arguments, if there is one (any
    other system, the previous current one included, keeps running, with the warning above);
    if there is none, it shuts down the previous current system. Calls still running on the
    system shut down may fail.

    ``shutdown_sessions()`` shuts down every system initialize_sessions() started.
    """
    # Imported here: system.py re-exports this module's names, so it imports this one first.
    from .system import SessionSystem

    global _current
    args = (str(storage_type).upper(), dict(storage_config or {}), enable_all_features, options)
    if not replace and (found := _running(args)) is not None:
        _current = found
        return found
    system = await SessionSystem.open(
        storage_type, storage_config, enable_all_features=enable_all_features, **options
    )
    found = None if replace else _running(args)
    if found is not None:
        # Another initialize_sessions() with these arguments finished while this one connected.
        await system.shutdown()
        _current = found
        return found
    previous = _current if _current is not None and not _current.closed else None
    doomed: list[SessionSystem] = []
    if replace:
        # The running system(s) with these arguments (the new one is not listed yet), else
        # the previous current one: never a system started with other arguments that is
        # merely current, whose holder still uses it.
        doomed = [item[0] for item in _started if not item[0].closed and _same_args(args, item[1])]
        if not doomed and previous is not None:
            doomed = [previous]
    _started[:] = [
        item for item in _started if not item[0].closed and all(item[0] is not d for d in doomed)
    ]
    _started.append((system, args))
    _current = system
    for old in doomed:
        await old.shutdown()
    if previous is not None and all(previous is not d for d in doomed):
        log.warning(
            "initialize_sessions() was called again with other arguments: the new system is "
            "now current; the one started before keeps running for whoever holds it "
            "(shutdown_sessions() shuts down every system it started%s)",
            "" if replace else "; replace=True would have shut the old one down",
        )
    return system


def current_system() -> SessionSystem:
    """The system initialize_sessions() made current; SessionCacheError if there is none."""
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


async def list_user_sessions(
    user_id: str | int, *, platform: Platform | str | None = None
) -> list[Session]:
    """Every live session of a user (an empty list for an unknown user); in session_scope
    "person", the person's unified session too (SessionSystem.list_user_sessions)."""
    return await current_system().list_user_sessions(user_id, platform=platform)


async def shutdown_sessions() -> None:
    """Shut down every system initialize_sessions() started (newest first; those their
    holders already shut down are skipped); a no-op if there is none."""
    global _current
    systems = [system for system, _ in reversed(_started)]
    _started.clear()
    _current = None
    failure: BaseException | None = None
    for system in systems:
        try:
            await system.shutdown()
        except Exception as exc:  # shut the others down too, then report the first failure
            failure = failure or exc
    if failure is not None:
        raise failure
