"""Expiry across OS processes: a sweeping fleet with a worker killed mid-sweep acts exactly once;
writers racing on sessions just past their deadline archive each once and lose no message; a
process killed between the acting script and its effects only delays them.

Scale: 20,000 expiring sessions on a real Redis and on the local Cluster, created in pipelines.
memory:// lives in one process: its "processes" are tasks on separate clients of the shared
server (the killed one cancelled where it stands), and its fleet test has 2,000 sessions
(fakeredis runs every script in the test's own process: 2,000 take ~10 s, 20,000 about 100 s).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sessioncache.system import SessionSystem

from .support.expiry_workers import (
    IDLE_RULES,
    SLOW_RULES,
    _kind,
    bulk_create,
    effect_killer,
    effect_options,
    sender,
    sending,
    slow_sweeper,
    slow_sweeping,
    sweeper,
    sweeping,
)
from .support.namespaces import drop_namespace, unique_namespace

URLS = {"redis": "redis_url", "memory": "memory_url", "cluster": "cluster_url"}


async def _system(url: str, ns: str, **options: Any) -> SessionSystem:
    options.setdefault("expiry_rules", IDLE_RULES)
    return await SessionSystem.start(
        _kind(url), {"url": url}, namespace=ns, expiry_interval=3600.0, **options
    )


async def _pipelined(client: Any, calls: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
    out: list[Any] = []
    for start in range(0, len(calls), 2000):
        async with client.pipeline(transaction=False) as pipe:
            for name, args in calls[start : start + 2000]:
                getattr(pipe, name)(*args)
            out += await pipe.execute()
    return out


async def _create(system: SessionSystem, ids: list[tuple[str, str, str]]) -> None:
    gate = asyncio.Semaphore(64)

    async def one(platform: str, chat: str, user: str) -> None:
        async with gate:
            await system.create_session(chat, user, platform)

    await asyncio.gather(*(one(*i) for i in ids))


async def _processes(target: Any, args: list[tuple[Any, ...]]) -> tuple[list[Any], Any]:
    """One process per ``args``, running ``target(*args, stop, barrier)``, released together
    at a barrier once all are up; returns them and the Event that stops them."""
    ctx = multiprocessing.get_context("spawn")
    barrier, stop = ctx.Barrier(len(args) + 1), ctx.Event()
    procs = [ctx.Process(target=target, args=(*a, stop, barrier)) for a in args]
    for p in procs:
        p.start()
    await asyncio.to_thread(barrier.wait)
    return procs, stop


def _created(a: Any) -> int:
    return int(a.archive_id.rpartition("#")[2])


async def _archives(system: SessionSystem) -> list[Any]:
    return await system.list_archived()


async def _archive_events(system: SessionSystem, archived: list[Any]) -> list[list[bytes]]:
    from sessioncache.expiry.archive import split_archive_id

    keys = system.store.keys
    calls = [("xrange", (keys.archive_events(*split_archive_id(a.archive_id)),)) for a in archived]
    return [
        [e[b"action"] for _, e in entries if e.get(b"t") == b"expired"]
        for entries in await _pipelined(system.store.client, calls)
    ]


@pytest.mark.timeout(150)  # ~30-40 s on a quiet machine: the margin is for a loaded one
@pytest.mark.parametrize(
    ("kind", "count"),
    [
        ("redis", 20_000),
        ("memory", 2_000),
        pytest.param("cluster", 20_000, marks=pytest.mark.cluster),
    ],
)
async def test_four_sweeping_processes_one_killed_act_exactly_once(
    kind: str, count: int, request: pytest.FixtureRequest
) -> None:
    url = str(request.getfixturevalue(URLS[kind]))
    ns = unique_namespace()
    system = await _system(url, ns)
    try:
        # Deadlines (last activity + 1.5 s) spread over the seconds the creation takes.
        await bulk_create(system, [("web", f"c{i}", f"u{i % 97}") for i in range(count)])
        keep = [("keep", f"k{i}", f"u{i}") for i in range(20)]
        await bulk_create(system, keep)
        kill_after = count // 10
        if kind == "memory":
            stop = asyncio.Event()
            tasks = [
                asyncio.create_task(sweeping(url, ns, 0.3, kill_after if i == 0 else 0, stop.wait))
                for i in range(4)
            ]
        else:
            procs, stop_p = await _processes(
                sweeper, [(url, ns, 0.3, kill_after if i == 0 else 0) for i in range(4)]
            )
        keep_ids = [f"keep:{c}:{u}" for _, c, u in keep]
        deadline = time.monotonic() + 120
        archived = 0
        while archived < count and time.monotonic() < deadline:
            # Sessions touched during the sweep: their deadline moves, so they survive it.
            await asyncio.gather(*(system.touch_session(s) for s in keep_ids))
            archived = (await system.get_statistics()).expiry_actions.get("archive", 0)
            await asyncio.sleep(0.1)
        if kind == "memory":
            stop.set()
            assert await asyncio.gather(*tasks) == [True, False, False, False]
        else:
            stop_p.set()
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

        keys = system.store.keys
        calls = [
            ("hmget", (keys.archive(*split_archive_id(a.archive_id)), "X", "a")) for a in listed
        ]
        for x_at, last in await _pipelined(system.store.client, calls):
            assert int(x_at) >= int(last) + 1500
        for sid in keep_ids:
            assert (await system.get_session(sid)) is not None
        assert await system.count_sessions() == len(keep)
    finally:
        await drop_namespace(system.store.client, ns)
        await system.shutdown()


@pytest.mark.parametrize(
    "kind", ["redis", "memory", pytest.param("cluster", marks=pytest.mark.cluster)]
)
async def test_a_process_killed_between_script_and_effect_only_delays_the_effect(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = str(request.getfixturevalue(URLS[kind]))
    ns = unique_namespace()
    calls, archive_dir = tmp_path / "calls.txt", tmp_path / "archive"
    calls.touch()
    options = effect_options(str(archive_dir), str(calls))
    system = await _system(url, ns, **options)
    try:
        told = [(await system.create_session(f"t{i}", "u", "tell")).session_id for i in range(8)]
        gone = [(await system.create_session(f"a{i}", "u")).session_id for i in range(8)]
        for sid in told + gone:
            info = await system.get_expiry_info(sid)
            assert info is not None and info.deadline_ms is not None
            while await system.expiry._now() < info.deadline_ms:
                await asyncio.sleep(0.02)
        if kind == "memory":
            killer = await _system(url, ns, **options)
            me: list[asyncio.Task[Any]] = []

            async def die(*args: Any) -> int:
                me[0].cancel()  # the "process" stops right after its acting script
                raise asyncio.CancelledError

            killer.expiry.effects.deliver = die  # type: ignore[method-assign]
            me.append(asyncio.create_task(killer.cleanup_expired_sessions()))
            with pytest.raises(asyncio.CancelledError):
                await me[0]
            await killer.shutdown()
        else:
            ctx = multiprocessing.get_context("spawn")
            proc = ctx.Process(target=effect_killer, args=(url, ns, str(archive_dir), str(calls)))
            proc.start()
            await asyncio.to_thread(proc.join, 60)
            assert proc.exitcode == -9
        # Actions applied by the killed process, none of their effects delivered yet: they
        # wait in the outbox.
        applied = sum((await system.get_statistics()).expiry_actions.values())
        assert applied >= 1
        assert calls.read_text() == "" and not list(archive_dir.glob("sessions/*"))
        buckets = await system.expiry._buckets()
        waiting = sum([int(await system.store.client.zcard(b)) for b in buckets[1]])
        assert waiting >= 1
        # The next sweeps (after the dead process's claim lapsed) deliver them, once.
        first = await system.cleanup_expired_sessions()
        await asyncio.sleep(0.6)  # the claim (0.5 s) of entries left by the dead process
        later = await system.cleanup_expired_sessions()
        assert first.effects + later.effects >= 1  # left by the dead process, delivered now
        stats = await system.get_statistics()
        assert stats.expiry_actions == {"notify": 8, "archive": 8}
        lines = calls.read_text().splitlines()
        assert sorted(n.rpartition("|")[2] for n in lines) == sorted(told)  # once each
        files = sorted(p.name for p in (archive_dir / "sessions").iterdir())
        assert len(files) == 8 and not [f for f in files if f.endswith(".tmp")]
        assert {a.session_id for a in await system.list_archived("u")} == set(gone)
        assert all(a.file for a in await system.list_archived("u"))
        assert sum([int(await system.store.client.zcard(b)) for b in buckets[1]]) == 0
    finally:
        await drop_namespace(system.store.client, ns)
        await system.shutdown()


@pytest.mark.parametrize(
    "kind", ["redis", "memory", pytest.param("cluster", marks=pytest.mark.cluster)]
)
async def test_a_callback_longer_than_the_lease_runs_once_across_two_processes(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Two sweeping processes, an effect lease of 1 s and a notify callback that takes 3 s:
    the process delivering a notice keeps its claim alive while the callback runs, so the
    other process never claims it meanwhile. Each notice: one call, in one process."""
    url = str(request.getfixturevalue(URLS[kind]))
    ns = unique_namespace()
    calls = tmp_path / "calls.txt"
    calls.touch()
    lease, slow = 1.0, 3.0
    system = await _system(url, ns, expiry_rules=SLOW_RULES)  # no callback: it never delivers
    try:
        sids = [(await system.create_session(f"s{i}", f"u{i % 3}")).session_id for i in range(6)]
        _, outboxes = await system.expiry._buckets()
        if kind == "memory":
            stop = asyncio.Event()
            tasks = [
                asyncio.create_task(slow_sweeping(url, ns, str(calls), slow, lease, stop.wait))
                for _ in range(2)
            ]
        else:
            procs, stop_p = await _processes(
                slow_sweeper, [(url, ns, str(calls), slow, lease) for _ in range(2)]
            )
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            if kind == "cluster":
                _, outboxes = await system.expiry._buckets()
            waiting = sum([int(await system.store.client.zcard(b)) for b in outboxes])
            if len(calls.read_text().splitlines()) >= len(sids) and waiting == 0:
                break  # every notice acknowledged: nothing is left to deliver again
        if kind == "memory":
            stop.set()
            await asyncio.gather(*tasks)
        else:
            stop_p.set()
            for p in procs:
                await asyncio.to_thread(p.join, 60)
            assert [p.exitcode for p in procs] == [0, 0]
        stats = await system.get_statistics()
        assert stats.expiry_actions == {"notify": len(sids)}
        lines = [line.split(" ", 1) for line in calls.read_text().splitlines()]
        by_notice = Counter(notice for _, notice in lines)
        assert sorted(n.rpartition("|")[2] for n in by_notice) == sorted(sids)
        assert by_notice.most_common(1)[0][1] == 1, by_notice  # exactly once each
    finally:
        await drop_namespace(system.store.client, ns)
        await system.shutdown()


@pytest.mark.parametrize(
    "kind", ["redis", "memory", pytest.param("cluster", marks=pytest.mark.cluster)]
)
async def test_eight_processes_writing_past_the_idle_deadline_lose_nothing(
    kind: str, request: pytest.FixtureRequest
) -> None:
    url = str(request.getfixturevalue(URLS[kind]))
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
        if kind == "memory":
            await asyncio.gather(*(sending(url, ns, sids, rounds) for _ in range(workers)))
        else:
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
