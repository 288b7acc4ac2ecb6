"""One API shape: the same argument order on SessionStore, SessionSystem and the module-level
functions, a docstring on every public method, and initialize_sessions() called twice."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import sessioncache
from sessioncache import (
    Platform,
    SessionStore,
    SessionSystem,
    StateTracker,
    create_session,
    get_or_create_session,
    initialize_sessions,
    shutdown_sessions,
    update_session,
)
from sessioncache.backends import forget_memory_server
from sessioncache.keys import KeySchema

SAME_OPERATION = [
    (SessionStore.create, SessionSystem.create_session, sessioncache.create_session),
    (
        SessionStore.get_or_create,
        SessionSystem.get_or_create_session,
        sessioncache.get_or_create_session,
    ),
    (SessionStore.update, SessionSystem.update_session, sessioncache.update_session),
    (SessionStore.touch, SessionSystem.touch_session, sessioncache.touch_session),
    (SessionStore.delete, SessionSystem.delete_session, sessioncache.delete_session),
    (
        SessionStore.list_user_sessions,
        SessionSystem.list_user_sessions,
        sessioncache.list_user_sessions,
    ),
    (SessionStore.find_by_id, SessionSystem.get_session, sessioncache.get_session),
]


def _positional(fn: Callable[..., Any]) -> list[str]:
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [
        p.name for p in inspect.signature(fn).parameters.values() if p.kind in kinds
    ][1 if "self" in inspect.signature(fn).parameters else 0 :]


@pytest.mark.parametrize("surfaces", SAME_OPERATION, ids=lambda s: s[0].__name__)
def test_same_operation_same_argument_order(surfaces: tuple[Callable[..., Any], ...]) -> None:
    store, system, module = (_positional(f) for f in surfaces)
    assert store == system == module, (store, system, module)


def test_identity_order_is_chat_user_platform_thread() -> None:
    for fn in (SessionStore.create, SessionStore.get_or_create, SessionStore.find):
        assert _positional(fn) == ["chat_id", "user_id", "platform", "thread_id"]
    assert _positional(SessionStore.identity) == ["chat_id", "user_id", "platform", "thread_id"]


@pytest.mark.parametrize("cls", [SessionStore, SessionSystem, StateTracker, KeySchema])
def test_every_public_method_has_a_docstring(cls: type) -> None:
    undocumented = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        fn = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
        if inspect.isfunction(fn) and not (fn.__doc__ or "").strip():
            undocumented.append(name)
    assert undocumented == []


def test_every_module_level_function_has_a_docstring() -> None:
    for name in sessioncache.__all__:
        obj = getattr(sessioncache, name)
        assert (obj.__doc__ or "").strip(), name


@pytest.fixture
async def no_system() -> AsyncIterator[None]:
    await shutdown_sessions()
    forget_memory_server("api-shape")
    yield
    await shutdown_sessions()
    forget_memory_server("api-shape")


async def test_origin_keyword_calls_and_positional_calls_agree(no_system: None) -> None:
    await initialize_sessions("MEMORY", {"name": "api-shape"})
    by_keyword = await create_session(chat_id="c1", user_id="u1", platform=Platform.TELEGRAM)
    by_position = await get_or_create_session("c1", "u1", Platform.TELEGRAM)
    assert by_keyword.session_id == by_position.session_id == "telegram:c1:u1"
    updated = await update_session(by_keyword.session_id, {"a": 1}, {"m": 2})
    assert (updated.data, updated.metadata) == ({"a": 1}, {"m": 2})


async def test_initialize_twice_with_the_same_arguments_returns_the_running_system(
    no_system: None,
) -> None:
    first = await initialize_sessions("MEMORY", {"name": "api-shape"}, namespace="a")
    again = await initialize_sessions("MEMORY", {"name": "api-shape"}, namespace="a")
    assert again is first and not first.closed
    s = await create_session("c", "u")
    assert await first.get_session(s.session_id) is not None


async def test_initialize_twice_with_other_arguments_keeps_both_running(
    no_system: None, caplog: pytest.LogCaptureFixture
) -> None:
    first = await initialize_sessions("MEMORY", {"name": "api-shape"}, namespace="a")
    s = await create_session("c", "u")
    with caplog.at_level(logging.WARNING, logger="sessioncache.origin"):
        second = await initialize_sessions("MEMORY", {"name": "api-shape"}, namespace="b")
    warnings = [r for r in caplog.records if r.name == "sessioncache.origin"]
    assert len(warnings) == 1 and "keeps running" in warnings[0].getMessage()
    # The new system is current; the first was not shut down: its holder still uses it.
    assert second is not first and not first.closed and not second.closed
    assert sessioncache.current_system() is second
    assert await sessioncache.get_session(s.session_id) is None  # namespace b
    assert await first.get_session(s.session_id) is not None
    # The first one's arguments again: the running first system, current again; no warning.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sessioncache.origin"):
        assert await initialize_sessions("MEMORY", {"name": "api-shape"}, namespace="a") is first
    assert sessioncache.current_system() is first and not caplog.records
    await shutdown_sessions()  # shuts down every system initialize_sessions() started
    assert first.closed and second.closed
    with pytest.raises(sessioncache.SessionCacheError, match="initialize_sessions"):
        sessioncache.current_system()


async def test_initialize_with_replace_shuts_the_previous_system_down(no_system: None) -> None:
    first = await initialize_sessions("MEMORY", {"name": "api-shape"}, namespace="a")
    second = await initialize_sessions(
        "MEMORY", {"name": "api-shape"}, namespace="b", replace=True
    )
    assert first.closed and not second.closed
    assert sessioncache.current_system() is second
    # The same arguments with replace=True: a fresh system, the running one shut down.
    third = await initialize_sessions(
        "MEMORY", {"name": "api-shape"}, namespace="b", replace=True
    )
    assert third is not second and second.closed and sessioncache.current_system() is third


async def test_replace_shuts_down_the_system_with_the_same_arguments_not_the_current_one(
    no_system: None, caplog: pytest.LogCaptureFixture
) -> None:
    # a is current again, b (other arguments) runs for its holder: replacing b shuts b down,
    # and a, whose holder still uses it, keeps running (with the usual warning).
    a = await initialize_sessions("MEMORY", {"name": "api-shape"}, namespace="a")
    b = await initialize_sessions("MEMORY", {"name": "api-shape"}, namespace="b")
    assert await initialize_sessions("MEMORY", {"name": "api-shape"}, namespace="a") is a
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sessioncache.origin"):
        c = await initialize_sessions(
            "MEMORY", {"name": "api-shape"}, namespace="b", replace=True
        )
    assert sessioncache.current_system() is c and c is not b
    assert b.closed and not a.closed and not c.closed
    warnings = [r for r in caplog.records if r.name == "sessioncache.origin"]
    assert len(warnings) == 1 and "keeps running" in warnings[0].getMessage()
    # a's arguments return a (still running); shutdown_sessions() still shuts it down.
    assert await initialize_sessions("MEMORY", {"name": "api-shape"}, namespace="a") is a
    await shutdown_sessions()
    assert a.closed and c.closed


async def test_a_system_its_holder_shut_down_is_started_again(no_system: None) -> None:
    first = await initialize_sessions("MEMORY", {"name": "api-shape"}, namespace="a")
    await first.shutdown()
    again = await initialize_sessions("MEMORY", {"name": "api-shape"}, namespace="a")
    assert again is not first and not again.closed
    await shutdown_sessions()  # skips the one already shut down
    assert again.closed
