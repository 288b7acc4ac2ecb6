"""Expiry across OS processes: a sweeping fleet with a worker killed mid-sweep acts exactly once;
writers racing on sessions just past their deadline archive each once and lose no message.

Scale (2-core test machine, well under a minute each): 3,000 expiring sessions on a real Redis,
1,500 on the local Cluster (the issue's 20,000 is the bench's territory: bench/expiry.py).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections import Counter
from typing import Any

import pytest

from sessioncache.system import SessionSystem

from .support.expiry_workers import IDLE_RULES, sender, sweeper
from .support.namespaces import drop_namespace, unique_namespace


async def _system(url: str, ns: str) -> SessionSystem:
    kind = "CLUSTER" if "+cluster" in url else "REDIS"
    return await SessionSystem.start(
        kind, {"url": url}, namespace=ns, expiry_rules=IDLE_RULES, expiry_interval=3600.0
    )


async def _create(system: SessionSystem, ids: list[tuple[str, str, str]]) -> None:
    gate = asyncio.Semaphore(64)

    async def one(platform: str, chat: str, user: str) -> None:
        async with gate:
            await system.create_session(chat, user, platform)

    await asyncio.gather(*(one(*i) for i in ids))


def _created(a: Any) -> int:
    return int(a.archive_id.rpartition("#")[2])


async def _archives(system: SessionSystem) -> list[Any]:
    return await system.list_archived()


async def _archive_events(system: SessionSystem, archived: list[Any]) -> list[list[bytes]]:
    from sessioncache.expiry.archive import split_archive_id

    client = system.store.client
    out = []
    for a in archived:
        ident, created = split_archive_id(a.archive_id)
        entries = await client.xrange(system.store.keys.archive_events(ident, created))
        out.append([e[b"action"] for _, e in entries if e.get(b"t") == b"expired"])
    return out


@pytest.mark.parametrize(
    ("kind", "count"), [("redis", 3000), pytest.param("cluster", 1500, marks=pytest.mark.cluster)]
)
async def test_four_sweeping_processes_one_killed_act_exactly_once(
    kind: str, count: int, request: pytest.FixtureRequest
) -> None:
    url = str(request.getfixturevalue(f"{kind}_url"))
    ns = unique_namespace()
    system = await _system(url, ns)
    try:
        await _create(system, [("web", f"c{i}", f"u{i % 97}") for i in range(count)])
        keep = [("keep", f"k{i}", f"u{i}") for i in range(20)]
        await _create(system, keep)
        ctx = multiprocessing.get_context("spawn")
        barrier, stop = ctx.Barrier(5), ctx.Event()
        procs = [
            ctx.Process(target=sweeper, args=(url, ns, 0.3, 200 if i == 0 else 0, stop, barrier))
            for i in range(4)
        ]
        for p in procs:
            p.start()
        await asyncio.to_thread(barrier.wait)
        keep_ids = [f"keep:{c}:{u}" for _, c, u in keep]
        deadline = time.monotonic() + 120
        archived = 0
        while archived < count and time.monotonic() < deadline:
            # Sessions touched during the sweep: their deadline moves, so they survive it.
            await asyncio.gather(*(system.touch_session(s) for s in keep_ids))
            archived = (await system.get_statistics()).expiry_actions.get("archive", 0)
            await asyncio.sleep(0.1)
        stop.set()
        for p in procs:
            await asyncio.to_thread(p.join, 60)
        assert [p.exitcode for p in procs] == [-9, 0, 0, 0]
        stats = await system.get_statistics()
        assert stats.expiry_actions == {"archive": count}  # exactly once, one process killed
        listed = await _archives(system)
        assert (
            len(listed) == count and Counter(a.session_id for a in listed).most_common(1)[0][1] == 1
        )
        assert all(e == [b"archive"] for e in await _archive_events(system, listed))
        # None before its deadline: archived at >= last activity + 1.5 s (server clock).
        from sessioncache.expiry.archive import split_archive_id

        for a in listed[:: max(1, count // 300)]:
            ident, created = split_archive_id(a.archive_id)
            x_at, last = await system.store.client.hmget(
                system.store.keys.archive(ident, created), "X", "a"
            )
            assert int(x_at) >= int(last) + 1500
        for sid in keep_ids:
            assert (await system.get_session(sid)) is not None
        assert await system.count_sessions() == len(keep)
    finally:
        await drop_namespace(system.store.client, ns)
        await system.shutdown()


@pytest.mark.parametrize("kind", ["redis", pytest.param("cluster", marks=pytest.mark.cluster)])
async def test_eight_processes_writing_past_the_idle_deadline_lose_nothing(
    kind: str, request: pytest.FixtureRequest
) -> None:
    url = str(request.getfixturevalue(f"{kind}_url"))
    ns = unique_namespace()
    system = await _system(url, ns)
    sessions, rounds, workers = 40, 5, 8
    try:
        ids = [("web", f"c{i}", f"u{i % 7}") for i in range(sessions)]
        await _create(system, ids)
        sids = [f"web:{c}:{u}" for _, c, u in ids]
        originals = {s: (await system.get_session(s)).created_at for s in sids}  # type: ignore[union-attr]
        # Wait for the deadline itself (server clock), not a guess of it.
        info = await system.get_expiry_info(sids[-1])
        assert info is not None and info.deadline_ms is not None
        while await system.expiry._now() < info.deadline_ms + 50:
            await asyncio.sleep(0.05)
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(workers)
        procs = [
            ctx.Process(target=sender, args=(url, ns, sids, rounds, barrier))
            for _ in range(workers)
        ]
        for p in procs:
            p.start()
        for p in procs:
            await asyncio.to_thread(p.join, 120)
        assert [p.exitcode for p in procs] == [0] * workers
        listed = await _archives(system)
        by_session = Counter(a.session_id for a in listed)
        stats = await system.get_statistics()
        # Each old session archived exactly once, never revived: it had no message.
        first = [
            a
            for a in listed
            if a.archive_id.endswith(f"#{round(originals[a.session_id].timestamp() * 1000)}")
        ]
        assert len(first) == sessions and all(by_session[s] >= 1 for s in sids)
        assert stats.expiry_actions.get("archive", 0) == len(listed)
        # Every generation after the first follows its predecessor; count its messages.
        # (Raw reads: get_session would itself end a successor that has gone idle since.)
        from sessioncache.expiry.archive import split_archive_id

        total = 0
        first_ids = {a.archive_id for a in first}
        for sid in sids:
            chain: list[tuple[str, int, str | None]] = []
            for a in sorted((a for a in listed if a.session_id == sid), key=_created):
                ident, created = split_archive_id(a.archive_id)
                m, prev = await system.store.client.hmget(
                    system.store.keys.archive(ident, created), "m", "@previous_session"
                )
                chain.append((a.archive_id, int(m), prev and prev.decode()))
            live = await system.store.find_by_id(sid)
            if live is not None:
                chain.append(("live", live.message_count, live.metadata["previous_session"]))
            assert chain[0][0] in first_ids and chain[0][1] == 0  # never revived
            assert len(chain) >= 2
            ids = [g[0] for g in chain]
            for i, after in enumerate(chain[1:], 1):
                # Each generation names an earlier one (its predecessor, unless a writer stalled
                # past a whole idle period between reading the archive index and creating it).
                assert after[2] in ids[:i]
            total += sum(g[1] for g in chain[1:])
        assert total == sessions * rounds * workers  # every message counted, none lost
    finally:
        await drop_namespace(system.store.client, ns)
        await system.shutdown()
