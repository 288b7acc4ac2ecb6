"""Turns (one holder per conversation fleet-wide, arrival order, takeover) and seen_update."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import AsyncIterator

import pytest

from sessioncache import ValidationError
from sessioncache.errors import TurnBusy, TurnLost
from sessioncache.system import SessionSystem

from .support.context_workers import (
    dying_holder,
    mark_seen,
    run_fleet,
    seen_worker,
    start,
    take_turns,
    turn_worker,
)
from .support.namespaces import drop_namespace, unique_namespace

SIDS = [f"telegram:{chat}:7" for chat in range(5)]
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def system(any_backend_url: str) -> AsyncIterator[SessionSystem]:
    s = await start(any_backend_url, unique_namespace())
    s.url = any_backend_url  # type: ignore[attr-defined]
    yield s
    await drop_namespace(s.store.client, s.store.keys.namespace)
    await s.shutdown()


async def test_second_worker_waits_then_gets_busy(system: SessionSystem) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with system.turn(SIDS[0], timeout=5):
            entered.set()
            await release.wait()

    task = asyncio.create_task(holder())
    await entered.wait()
    with pytest.raises(TurnBusy) as busy:
        async with system.turn(SIDS[0], timeout=0.05):
            pytest.fail("two holders")
    assert "busy" in str(busy.value) and busy.value.session_id == SIDS[0]
    async with system.turn(SIDS[1], timeout=0.05):  # another conversation is not blocked
        pass
    release.set()
    await task
    async with system.turn(SIDS[0], timeout=1):
        pass
    # Nothing is left behind: no lease, no waiter.
    keys = [k async for k in system.store.client.scan_iter(match="*:t[nqw]:*")]
    assert [k for k in keys if k.decode().startswith(system.store.keys.namespace)] == []


async def test_waiters_enter_in_arrival_order(system: SessionSystem) -> None:
    order: list[int] = []
    release = asyncio.Event()
    entered = asyncio.Event()

    async def first() -> None:
        async with system.turn(SIDS[0], timeout=5):
            entered.set()
            await release.wait()

    async def waiter(i: int) -> None:
        async with system.turn(SIDS[0], timeout=30):
            order.append(i)

    holder = asyncio.create_task(first())
    await entered.wait()
    waiters = []
    queue = system.store.keys.turn_queue(system.store.identity(0, 7, "telegram"))
    for i in range(5):
        waiters.append(asyncio.create_task(waiter(i)))
        # Each one is in line before the next arrives.
        while await system.store.client.zcard(queue) < i + 1:
            await asyncio.sleep(0)
    release.set()
    await asyncio.gather(holder, *waiters)
    assert order == [0, 1, 2, 3, 4]


async def test_lease_is_renewed_while_held(system: SessionSystem) -> None:
    async with system.turn(SIDS[0], timeout=1, lease=0.3) as turn:
        while turn.renewals < 5:  # five renewals: held well past the 0.3 s lease
            assert await system.turns.holder(SIDS[0]) == turn.token
            await asyncio.sleep(0.02)
        assert not turn.lost
    assert await system.turns.holder(SIDS[0]) is None


async def test_a_turn_whose_lease_was_lost_says_so(system: SessionSystem) -> None:
    key = system.store.keys.turn(system.store.identity(0, 7, "telegram"))
    with pytest.raises(TurnLost):
        async with system.turn(SIDS[0], timeout=1, lease=0.3) as turn:
            await system.store.client.set(key, "someone else", px=60_000)
            while not turn.lost:  # until the next renewal finds another holder
                await asyncio.sleep(0.01)
    assert await system.store.client.get(key) == b"someone else"  # the exit left it alone


async def test_bad_arguments(system: SessionSystem) -> None:
    with pytest.raises(ValidationError):
        async with system.turn("not an id", timeout=1):
            pass
    with pytest.raises(ValidationError):
        async with system.turn(SIDS[0], timeout=0):
            pass
    with pytest.raises(ValidationError):
        await system.seen_update("Telegram!", 1, ttl=10)
    with pytest.raises(ValidationError):
        await system.seen_update("telegram", 1, ttl=-1)


async def test_seen_update_is_true_once(system: SessionSystem) -> None:
    assert await system.seen_update("telegram", 1, ttl=10)
    assert not await system.seen_update("telegram", 1, ttl=10)
    assert await system.seen_update("discord", 1, ttl=10)
    key = system.store.keys.seen_update("telegram", 2)
    script = system.store.scripts.seen_update
    first = await script.run(system.store.client, [key], ["op-a", "10000"])
    retry = await script.run(system.store.client, [key], ["op-a", "10000"])
    other = await script.run(system.store.client, [key], ["op-b", "10000"])
    assert (first, retry, other) == (1, 1, 0)


@pytest.mark.slow
async def test_eight_processes_take_turns_one_at_a_time(system: SessionSystem) -> None:
    url, ns, client = system.url, system.store.keys.namespace, system.store.client  # type: ignore[attr-defined]
    if url.startswith("memory://"):
        await asyncio.gather(*(take_turns(url, ns, SIDS, 100, seed) for seed in range(8)))
    else:
        args = [(url, ns, SIDS, 100, seed) for seed in range(8)]
        await asyncio.get_running_loop().run_in_executor(None, run_fleet, turn_worker, args)
    turns = [int(await client.get(f"{ns}:test:turns:{sid}") or 0) for sid in SIDS]
    assert sum(turns) == 800  # no turn lost
    assert await client.get(f"{ns}:test:violations") is None  # never two holders


@pytest.mark.slow
# memory://: 80,000 script runs in the test's own process (fakeredis, ~0.7 ms each) take 50-60 s.
@pytest.mark.timeout(300)
async def test_eight_processes_see_each_update_once(system: SessionSystem) -> None:
    url, ns, client = system.url, system.store.keys.namespace, system.store.client  # type: ignore[attr-defined]
    ids = 10_000
    if url.startswith("memory://"):
        # One process: the 8 callers are concurrent tasks, each with its own client.
        await asyncio.gather(*(mark_seen(url, ns, ids, seed) for seed in range(8)))
    else:
        args = [(url, ns, ids, seed) for seed in range(8)]
        await asyncio.get_running_loop().run_in_executor(None, run_fleet, seen_worker, args)
    assert int(await client.get(f"{ns}:test:firsts")) == ids


async def test_a_killed_holder_is_taken_over_after_its_lease(system: SessionSystem) -> None:
    url = system.url  # type: ignore[attr-defined]
    if url.startswith("memory://"):
        # No second process can share memory://: the holder "dies" by never leaving.
        token = "dead-holder"
        key = system.store.keys.turn(system.store.identity(0, 7, "telegram"))
        await system.store.client.set(key, token, px=300)
    else:
        ctx = multiprocessing.get_context("spawn")
        ready = ctx.Event()
        proc = ctx.Process(
            target=dying_holder, args=(url, system.store.keys.namespace, SIDS[0], 0.5, ready)
        )
        proc.start()
        await asyncio.get_running_loop().run_in_executor(None, proc.join, 60)
        assert ready.is_set() and proc.exitcode == -9
        token = await system.turns.holder(SIDS[0])
        assert token is not None  # the dead process still holds the lease
    async with system.turn(SIDS[0], timeout=30) as turn:
        assert turn.token != token
        assert await system.turns.holder(SIDS[0]) == turn.token
