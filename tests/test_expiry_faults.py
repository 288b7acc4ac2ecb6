"""Expiry under the faults a fleet meets: the server stopped (SIGSTOP) past every socket
timeout mid-sweep while four processes sweep, and an acting call delivered late, after its
retry and a fresh session that took the old one's id, or after its caller gave up."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import time
from collections import Counter

import pytest

from sessioncache.embedded import EmbeddedRedis
from sessioncache.errors import BackendUnavailable
from sessioncache.expiry.archive import split_archive_id
from sessioncache.system import SessionSystem

from .support.expiry_fault_workers import STALL_CONNECTION, stalled_sweeper, start_stalling
from .support.expiry_workers import bulk_create
from .support.namespaces import unique_namespace
from .support.proxy import HoldingProxy

IDLE_1S = [{"name": "idle", "policy": "idle", "after": 1, "action": "archive"}]



async def _archive_events(system: SessionSystem) -> list[list[bytes]]:
    keys = system.store.keys
    out = []
    for a in await system.list_archived():
        entries = await system.store.client.xrange(
            keys.archive_events(*split_archive_id(a.archive_id))
        )
        out.append([e[b"action"] for _, e in entries if e.get(b"t") == b"expired"])
    return out


@pytest.mark.timeout(180)
async def test_four_sweepers_through_a_server_stopped_past_the_socket_timeout_act_once(
    private_server: EmbeddedRedis,
) -> None:
    """SIGSTOP the server for 1.6 s (over three socket timeouts) while four processes sweep
    10,000 sessions: calls in flight time out and are retried while their first attempts
    still sit in the server's socket buffer. Each session is archived exactly once."""
    assert private_server.process is not None
    url, ns, count = private_server.url, unique_namespace(), 10_000
    system = await start_stalling(url, ns, 3600.0)
    ctx = multiprocessing.get_context("spawn")
    barrier, stop = ctx.Barrier(5), ctx.Event()
    procs = [ctx.Process(target=stalled_sweeper, args=(url, ns, stop, barrier)) for _ in range(4)]
    try:
        for p in procs:
            p.start()
        await asyncio.to_thread(barrier.wait)
        # Deadlines (last activity + 1.5 s) spread over the seconds the creation takes.
        await bulk_create(system, [("web", f"c{i}", f"u{i % 97}") for i in range(count)])
        deadline = time.monotonic() + 60
        archived = 0
        while archived < count // 5 and time.monotonic() < deadline:
            archived = (await system.get_statistics()).expiry_actions.get("archive", 0)
            await asyncio.sleep(0.05)
        assert 0 < archived < count  # mid-sweep
        info = await system.store.client.info("stats")
        connections = info["total_connections_received"]
        os.kill(private_server.process.pid, signal.SIGSTOP)
        try:
            time.sleep(1.6)  # the fault itself: every client blocks, times out, retries
        finally:
            os.kill(private_server.process.pid, signal.SIGCONT)
        deadline = time.monotonic() + 90
        while archived < count and time.monotonic() < deadline:
            archived = (await system.get_statistics()).expiry_actions.get("archive", 0)
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # late first attempts have long arrived; nothing more may act
        stop.set()
        for p in procs:
            await asyncio.to_thread(p.join, 60)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0]
        stats = await system.get_statistics()
        assert stats.expiry_actions == {"archive": count}
        listed = await system.list_archived()
        assert len(listed) == count
        assert Counter(a.session_id for a in listed).most_common(1)[0][1] == 1
        assert all(e == [b"archive"] for e in await _archive_events(system))
        assert await system.count_sessions() == 0
        info = await system.store.client.info("stats")
        # The fault did bite: calls timed out and were retried on new connections.
        assert info["total_connections_received"] > connections
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(private_server.process.pid, signal.SIGCONT)
        stop.set()
        for p in procs:
            if p.is_alive():
                p.kill()
        await system.shutdown()


async def _held_act(
    private_server: EmbeddedRedis, retries: int
) -> tuple[SessionSystem, HoldingProxy, str, asyncio.Task[object]]:
    """A system whose connection goes through a proxy that holds back the first expiry_act
    call of a sweep over one session past its idle deadline."""
    proxy = await HoldingProxy(private_server.port).start()
    system = await SessionSystem.start(
        "REDIS",
        {"url": f"redis://127.0.0.1:{proxy.port}", **STALL_CONNECTION, "retries": retries},
        namespace=unique_namespace(),
        expiry_rules=IDLE_1S,
        expiry_interval=3600.0,
    )
    proxy.trigger = system.store.scripts.expiry_act.sha.encode()
    s = await system.create_session("late", "u", "web")
    await asyncio.sleep(1.1)
    proxy.armed = True
    sweep = asyncio.create_task(system.cleanup_expired_sessions())
    return system, proxy, s.session_id, sweep


async def test_an_act_delivered_after_its_retry_and_a_fresh_session_leaves_the_fresh_one(
    private_server: EmbeddedRedis,
) -> None:
    system, proxy, sid, sweep = await _held_act(private_server, retries=10)
    try:
        report = await sweep  # the retry archived the session
        assert report.actions == {"archive": 1}
        fresh = await system.get_or_create_session("late", "u", "web", data={"new": 1})
        assert fresh.data == {"new": 1}
        reply = await proxy.release()  # the first attempt, late: the session is not its own
        assert reply.startswith(b"*1\r\n:-1\r\n")
        got = await system.get_session(sid)
        assert got is not None and got.data == {"new": 1}
        assert (await system.get_statistics()).expiry_actions == {"archive": 1}
        assert await _archive_events(system) == [[b"archive"]]
    finally:
        await system.shutdown()
        await proxy.stop()


async def test_an_act_given_up_by_its_caller_and_delivered_late_applies_once(
    private_server: EmbeddedRedis,
) -> None:
    system, proxy, _, sweep = await _held_act(private_server, retries=0)
    try:
        with pytest.raises(BackendUnavailable):
            await sweep  # no retry: the call timed out, its only attempt still held
        key = system.store.keys.session(system.store.identity("late", "u", "web"))
        assert await system.store.client.exists(key) == 1  # nothing applied yet
        reply = await proxy.release()  # it reaches the server after all: applied, once
        assert reply.startswith(b"*4\r\n:1\r\n")
        assert (await system.cleanup_expired_sessions()).actions == {}  # nothing left to do
        assert await system.store.client.exists(key) == 0
        assert (await system.get_statistics()).expiry_actions == {"archive": 1}
        assert await _archive_events(system) == [[b"archive"]]
    finally:
        await system.shutdown()
        await proxy.stop()
