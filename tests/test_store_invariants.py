"""Invariants that realistic bugs break, each with a fast direct test (issue #10 point 8):
one creator in a get_or_create race on a warm pool and across processes, every write pushing
the user index's expiry and refreshing the session's, the field limit exact with a ttl and a
priority."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from sessioncache import EventType, Limits, Session, SessionStore, ValidationError

from .support.namespaces import drop_namespace, unique_namespace
from .support.race_workers import CHATS, race_get_or_create
from .support.tracker_helpers import tracked

RACERS = 40


async def test_get_or_create_race_on_a_warm_pool_has_one_creator(store: SessionStore) -> None:
    sid = store.identity("c1", "u1", "discord").session_id
    # Open a connection per racer first: with a cold pool the connects stagger the calls and
    # a find-then-create implementation can pass by timing.
    await asyncio.gather(*(store.exists(sid) for _ in range(RACERS)))
    results = await asyncio.gather(
        *(store.get_or_create("c1", "u1", "discord", data={"n": i}) for i in range(RACERS))
    )
    assert {s.session_id for s in results} == {sid}
    assert {s.version for s in results} == {1}
    assert len({s.data["n"] for s in results}) == 1  # every caller got the one creator's data
    assert await store.count() == 1


async def test_get_or_create_across_processes_at_a_barrier(redis_url: str) -> None:
    namespace = unique_namespace()
    ctx = multiprocessing.get_context("spawn")
    procs_n = 4
    barrier, out = ctx.Barrier(procs_n), ctx.Queue()
    procs = [
        ctx.Process(target=race_get_or_create, args=(redis_url, namespace, n, barrier, out))
        for n in range(procs_n)
    ]
    store = await SessionStore.connect(redis_url, namespace=namespace)
    try:
        for p in procs:
            p.start()
        for p in procs:
            await asyncio.to_thread(p.join, 60)
        assert [p.exitcode for p in procs] == [0] * procs_n
        results = [out.get(timeout=5) for _ in procs]
        for chat in range(CHATS):
            seen = {r[chat] for r in results}
            # Every process got the same session: version 1, one creator's data.
            assert len(seen) == 1 and next(iter(seen))[:2] == (f"web:c{chat}:u", 1)
        assert await store.count() == CHATS
    finally:
        await drop_namespace(store.client, namespace)
        await store.close()


async def _expiries(store: SessionStore, s: Session) -> tuple[int, int]:
    """PTTL of the session and of its user index, read at one instant (one transaction)."""
    index = store.keys.user_index(store.identity(s.chat_id, s.user_id).user_tag)
    async with store.client.pipeline(transaction=True) as pipe:
        pipe.pttl(s.session_key)
        pipe.pttl(index)
        session_ttl, index_ttl = await pipe.execute()
    return int(session_ttl), int(index_ttl)


WRITES: dict[str, Callable[[Any, str], Awaitable[Any]]] = {
    "update": lambda t, sid: t.store.update(sid, {"a": 1}),
    "set_field": lambda t, sid: t.store.set_field(sid, "a", 1),
    "delete_field": lambda t, sid: t.store.delete_field(sid, "a"),
    "touch": lambda t, sid: t.store.touch(sid, messages=1),
    "track_event": lambda t, sid: t.track_event(sid, EventType.MESSAGE_RECEIVED, text="hi"),
}


@pytest.fixture
async def tracker(store: SessionStore) -> AsyncIterator[Any]:
    from sessioncache.tracker import StateTracker, TrackerConfig

    tracker = StateTracker(tracked(store), TrackerConfig())
    await tracker.start()
    yield tracker


@pytest.mark.parametrize("write", list(WRITES))
async def test_every_write_keeps_the_user_index_alive_as_long_as_its_session(
    tracker: Any, write: str
) -> None:
    store = tracker.store
    s = await store.create("c", "u", "web", ttl=3600)
    index = store.keys.user_index(store.identity("c", "u").user_tag)
    # The index about to expire long before its session (as after a shorter-lived session).
    assert await store.client.pexpire(index, 60_000)
    await WRITES[write](tracker, s.session_id)
    session_ttl, index_ttl = await _expiries(store, s)
    assert session_ttl > 3_000_000
    assert index_ttl >= session_ttl
    assert [x.session_id for x in await store.list_user_sessions("u")] == [s.session_id]


@pytest.mark.parametrize("write", list(WRITES))
async def test_every_write_refreshes_the_sessions_ttl(tracker: Any, write: str) -> None:
    store = tracker.store
    s = await store.create("c", "u", "web", ttl=3600)
    assert await store.client.pexpire(s.session_key, 60_000)  # as if an hour went by
    await WRITES[write](tracker, s.session_id)
    session_ttl, _ = await _expiries(store, s)
    assert 3_000_000 < session_ttl <= 3_600_000


@pytest.fixture
async def limited(backend_url: str) -> AsyncIterator[SessionStore]:
    store = await SessionStore.connect(
        backend_url, namespace=unique_namespace(), limits=Limits(max_fields=5)
    )
    yield store
    await drop_namespace(store.client, store.keys.namespace)
    await store.close()


@pytest.mark.parametrize(
    "extra", [{}, {"ttl": 60.0}, {"priority": 3}, {"ttl": 60.0, "priority": 3}], ids=str
)
async def test_field_limit_is_exact_whatever_core_fields_a_session_has(
    limited: SessionStore, extra: dict[str, Any]
) -> None:
    store = limited
    # create: exactly the limit is accepted, one more refused.
    full = await store.create("full", "u", "web", data={f"f{i}": i for i in range(5)}, **extra)
    assert len(full.data) == 5
    with pytest.raises(ValidationError):
        await store.create("over", "u", "web", data={f"f{i}": i for i in range(6)}, **extra)
    # update: filled one field at a time to exactly the limit, then one more is refused.
    s = await store.create("c", "u", "web", data={"f0": 0}, **extra)
    for i in range(1, 5):
        await store.set_field(s.session_id, f"f{i}", i)
    assert len((await store.get(s.session_id)).data) == 5
    with pytest.raises(ValidationError, match="limit is 5"):
        await store.set_field(s.session_id, "f5", 5)
    with pytest.raises(ValidationError, match="limit is 5"):
        await store.update(s.session_id, metadata={"m": 1})
    # Replacing a field at the limit is no growth.
    assert await store.set_field(s.session_id, "f4", "again") == 6
    # An update that sets the priority (adding the 'p' core field) at the limit still fits.
    await store.update(s.session_id, {"f0": 1}, priority=7)
    assert len((await store.get(s.session_id)).data) == 5
