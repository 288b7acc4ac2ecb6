"""8 OS processes move 50 sessions at random: streams obey the table, versions add up."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
from collections import Counter

import pytest

from sessioncache import InvalidTransition, SessionState, TransitionTable
from sessioncache.store import SessionStore
from sessioncache.tracker import StateTracker, TrackerConfig

from .support.namespaces import drop_namespace, unique_namespace

CHATS, USERS = 10, 5  # 50 sessions, spread over 5 users (5 hash tags)
WORKERS = 8
MOVES = 120
STATES = [s.value for s in SessionState]


async def _work(url: str, namespace: str, seed: int, moves: int) -> dict[str, int]:
    store = await SessionStore.connect(
        url, namespace=namespace, socket_timeout=10.0, extras=[TrackerConfig().store_extras()]
    )
    tracker = StateTracker(store)
    await tracker.start()
    rng = random.Random(seed)
    applied: Counter[str] = Counter()
    try:
        for _ in range(moves):
            sid = f"web:c{rng.randrange(CHATS)}:u{rng.randrange(USERS)}"
            try:
                await tracker.transition(sid, rng.choice(STATES))
                applied[sid] += 1
            except InvalidTransition:
                pass
    finally:
        await store.close()
    return dict(applied)


def _worker(url: str, namespace: str, seed: int, moves: int) -> dict[str, int]:
    return asyncio.run(_work(url, namespace, seed, moves))


async def _check(store: SessionStore, applied: Counter[str]) -> None:
    tracker = StateTracker(store, TrackerConfig())
    table = await tracker.load_table()
    assert table is not None
    total = 0
    for c in range(CHATS):
        for u in range(USERS):
            sid = f"web:c{c}:u{u}"
            session = await store.get(sid)
            events = await tracker.get_events(sid, limit=100_000)
            assert events[0].type == "created" and events[0].state == "new"
            state = "new"
            for event in events[1:]:
                assert event.type == "state_changed"
                assert event.from_state == state, (sid, event)
                assert table.allows("web", state, event.state or ""), (sid, event)
                state = event.state or ""
            assert state == session.state
            assert session.version - 1 == applied[sid] == len(events) - 1
            total += applied[sid]
    report = await tracker.get_statistics()
    assert sum(report.transitions.values()) == total
    assert sum(report.sessions_by_state.values()) == CHATS * USERS
    assert all(table.allows("web", *move.split(">")) for move in report.transitions)


async def _setup(url: str) -> tuple[SessionStore, str]:
    namespace = unique_namespace()
    store = await SessionStore.connect(
        url, namespace=namespace, extras=[TrackerConfig().store_extras()]
    )
    tracker = StateTracker(store, None)
    await tracker.start()
    for c in range(CHATS):
        for u in range(USERS):
            await store.create(f"c{c}", f"u{u}", "web")
    return store, namespace


@pytest.mark.slow
@pytest.mark.parametrize(
    "which", ["redis_url", pytest.param("cluster_url", marks=pytest.mark.cluster)]
)
async def test_processes_obey_the_table(which: str, request: pytest.FixtureRequest) -> None:
    url = str(request.getfixturevalue(which))
    store, namespace = await _setup(url)
    try:
        ctx = multiprocessing.get_context("spawn")
        loop = asyncio.get_running_loop()
        with ctx.Pool(WORKERS) as pool:
            results = await loop.run_in_executor(
                None,
                pool.starmap,
                _worker,
                [(url, namespace, seed, MOVES) for seed in range(WORKERS)],
            )
        applied: Counter[str] = Counter()
        for result in results:
            applied.update(result)
        assert sum(applied.values()) > WORKERS * MOVES // 4
        await _check(store, applied)
    finally:
        await drop_namespace(store.client, namespace)
        await store.close()


async def test_concurrent_tasks_on_memory(memory_url: str) -> None:
    store, namespace = await _setup(memory_url)
    try:
        results = await asyncio.gather(
            *(_work(memory_url, namespace, seed, MOVES) for seed in range(WORKERS))
        )
        applied: Counter[str] = Counter()
        for result in results:
            applied.update(result)
        await _check(store, applied)
    finally:
        await store.close()


def test_default_table_reaches_every_state() -> None:
    table = TransitionTable()
    assert table.states == frozenset(STATES)
