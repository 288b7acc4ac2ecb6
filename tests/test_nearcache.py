"""The near cache: bounds, the miss/fill race, coherence across processes, connection loss."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from sessioncache.nearcache import MISS, NearCache, NearCacheConfig
from sessioncache.system import SessionSystem
from sessioncache.tracking import TrackingInvalidator

from .support.context_workers import (
    read_versions,
    reader_worker,
    start,
    write_versions,
    writer_worker,
)
from .support.namespaces import drop_namespace, unique_namespace

pytestmark = pytest.mark.timeout(120)


def live_cache(**options: Any) -> NearCache:
    cache = NearCache(NearCacheConfig(**options))
    cache.confirm(float("inf"))
    return cache


def test_lru_bounded_by_entries_and_bytes() -> None:
    cache = live_cache(max_entries=3, max_bytes=100)
    for i in range(5):
        cache.fill(cache.begin((f"k{i}",)), f"k{i}", i, 10)
    assert len(cache) == 3 and [cache.get(f"k{i}") for i in (0, 1)] == [MISS, MISS]
    assert cache.get("k2") == 2  # k2 is now the most recent
    cache.fill(cache.begin(("big",)), "big", "x", 80)
    assert cache.size_bytes <= 100 and cache.get("k3") is MISS and cache.get("k2") == 2


def test_invalidation_between_miss_and_fill_wins() -> None:
    cache = live_cache()
    ticket = cache.begin(("a", "b"))
    cache.invalidate([b"b"])  # the write lands while the read is in flight
    cache.fill(ticket, "a", "old", 1)
    assert cache.get("a") is MISS and cache.stats.refused_fills == 1
    ticket = cache.begin(("a",))
    cache.invalidate(None)  # a nil invalidation (FLUSHALL) voids every read in flight
    cache.fill(ticket, "a", "old", 1)
    assert cache.get("a") is MISS


def test_nothing_served_when_the_source_is_not_confirmed() -> None:
    cache = NearCache(NearCacheConfig(max_staleness=0.5))
    assert cache.begin(("a",)) is None  # never confirmed: no fill either
    cache.confirm(float("inf"))
    cache.fill(cache.begin(("a",)), "a", 1, 1)
    assert cache.get("a") == 1
    cache.unconfirm()  # connection lost
    assert len(cache) == 0 and cache.get("a") is MISS
    cache.confirm(-10.0)  # a heartbeat answered, but from long ago
    cache.fill(cache.begin(("a",)), "a", 1, 1)
    assert cache.get("a") is MISS


def test_entries_expire_after_ttl() -> None:
    cache = live_cache(ttl=0.001)
    cache.fill(cache.begin(("a",)), "a", 1, 1)
    while cache.get("a") is not MISS:
        pass
    assert len(cache) == 0


@pytest.fixture
async def pair(any_backend_url: str) -> AsyncIterator[tuple[SessionSystem, SessionSystem]]:
    """A reader with the near cache and a writer without, on one namespace."""
    namespace = unique_namespace()
    reader = await start(any_backend_url, namespace, near_cache=True)
    writer = await start(any_backend_url, namespace)
    reader.url = any_backend_url  # type: ignore[attr-defined]
    yield reader, writer
    await drop_namespace(writer.store.client, namespace)
    await reader.shutdown()
    await writer.shutdown()


async def until(predicate: Any) -> None:
    """Await a condition that another process or connection makes true."""
    while not await predicate():
        await asyncio.sleep(0.001)


async def test_reads_follow_writes_of_another_client(pair: Any) -> None:
    reader, writer = pair
    sid = (await writer.create_session(1, 2, "telegram", data={"v": 0})).session_id
    cache = reader.near_cache.cache

    async def served_from_cache() -> bool:
        # A fill is refused while the create's invalidations are still arriving: read again.
        before = cache.stats.hits
        assert (await reader.get_session(sid)).data == {"v": 0}
        return cache.stats.hits > before

    await until(served_from_cache)
    assert reader.get_performance_metrics()["near_cache"]["entries"] == 1
    await writer.update_session(sid, {"v": 1})

    async def updated() -> bool:
        return (await reader.get_session(sid)).data == {"v": 1}

    await until(updated)
    assert reader.get_performance_metrics()["near_cache"]["invalidations"] >= 1
    await writer.set_variable(sid, "x", 1)
    assert await reader.get_variables(sid) == {"x": 1}
    await writer.set_variable(sid, "x", 2)

    async def var_updated() -> bool:
        return await reader.get_variables(sid) == {"x": 2}

    await until(var_updated)
    await writer.append_message(sid, "user", "hi")

    async def history_updated() -> bool:
        return [m.content for m in await reader.get_history(sid)] == ["hi"]

    await until(history_updated)
    await writer.delete_session(sid)

    async def gone() -> bool:
        return await reader.get_session(sid) is None

    await until(gone)


async def test_own_writes_are_read_back_at_once(pair: Any) -> None:
    reader, _ = pair
    sid = (await reader.create_session(1, 2, "telegram", data={"v": 0})).session_id
    for v in range(1, 20):
        assert (await reader.get_session(sid)).data == {"v": v - 1}
        await reader.update_session(sid, {"v": v})
        assert (await reader.get_session(sid)).data == {"v": v}
        await reader.set_variable(sid, "v", v)
        assert await reader.get_variable(sid, "v") == v
    assert (await reader.get_session(sid, fresh=True)).data == {"v": 19}


async def test_each_hit_is_a_session_of_its_own(pair: Any) -> None:
    """The cache keeps a decoded session and builds a new Session per hit: changing one
    returned object (its data, nested values) never shows in the next read."""
    reader, writer = pair
    sid = (await writer.create_session(1, 2, "telegram", data={"v": {"x": 1}})).session_id
    cache = reader.near_cache.cache

    async def hit() -> bool:
        before = cache.stats.hits
        first = await reader.get_session(sid)
        first.data["v"]["x"] = 2
        first.data["w"] = 1
        first.state = "changed"
        return cache.stats.hits > before

    await until(hit)
    again = await reader.get_session(sid)
    assert again.data == {"v": {"x": 1}} and again.state != "changed"


async def test_killing_the_tracking_connection_empties_the_cache(pair: Any) -> None:
    reader, writer = pair
    sid = (await writer.create_session(1, 2, "telegram", data={"v": 0})).session_id
    cache = reader.near_cache.cache

    async def both_cached() -> bool:
        # A fill is refused while the create's invalidations are still arriving: read again.
        await reader.get_session(sid)
        await reader.get_variables(sid)
        return len(cache) == 2

    await until(both_cached)
    source = reader.near_cache.source
    if isinstance(source, TrackingInvalidator):
        nodes = list(source.nodes.values())
        lost = [asyncio.create_task(node.lost.wait()) for node in nodes]
        for node in nodes:
            host, port = node.address  # type: ignore[misc]
            async with redis.asyncio.Redis(host=host, port=port, socket_timeout=5) as killer:
                await killer.client_kill_filter(_id=node.client_id)
        await asyncio.gather(*lost)
    else:
        await source.stop()  # memory://: the in-process subscription is the connection
    assert len(cache) == 0
    await writer.update_session(sid, {"v": 1})
    assert (await reader.get_session(sid)).data == {"v": 1}  # reads stay correct
    if isinstance(source, TrackingInvalidator):
        await asyncio.gather(*(n.confirmed_event.wait() for n in source.nodes.values()))

        async def hit_again() -> bool:
            before = cache.stats.hits
            await reader.get_session(sid)
            return cache.stats.hits > before

        await until(hit_again)  # the cache serves again once the new connection is confirmed


@pytest.mark.slow
async def test_a_reader_process_never_sees_an_old_value_past_the_bound(pair: Any) -> None:
    reader, writer = pair
    url, namespace = reader.url, writer.store.keys.namespace
    sid = (await writer.create_session(1, 2, "telegram", data={"v": 0})).session_id
    n, bound = 300, 0.5
    if url.startswith("memory://"):
        started = asyncio.Event()

        async def ready() -> None:
            started.set()

        async def go() -> None:
            await started.wait()

        result, acks = await asyncio.gather(
            read_versions(url, namespace, sid, n, bound, ready),
            write_versions(url, namespace, sid, n, go),
        )
        result = json.loads(json.dumps(result))
    else:
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(2)
        with tempfile.TemporaryDirectory() as tmp:
            r_out, w_out = str(Path(tmp) / "r.json"), str(Path(tmp) / "w.json")
            procs = [
                ctx.Process(
                    target=reader_worker, args=(url, namespace, sid, n, bound, r_out, barrier)
                ),
                ctx.Process(target=writer_worker, args=(url, namespace, sid, n, w_out, barrier)),
            ]
            for p in procs:
                p.start()
            for p in procs:
                await asyncio.get_running_loop().run_in_executor(None, p.join, 100)
            assert [p.exitcode for p in procs] == [0, 0]
            result = json.loads(Path(r_out).read_text())
            acks = json.loads(Path(w_out).read_text())
    last_begin = {int(v): t for v, t in result["last_begin"].items()}
    first_end = {int(v): t for v, t in result["first_end"].items()}
    # Version v was replaced when v + 1 was acknowledged (acks[v]); no read that began more
    # than `bound` after that may still return v.
    stale = [v for v, began in last_begin.items() if v < n and began > acks[v] + bound]
    assert stale == []
    assert result["stats"]["hits"] > 0
    delays = sorted(max(0.0, first_end[v] - acks[v - 1]) for v in first_end if v >= 1)
    p50, p99 = delays[len(delays) // 2] * 1e3, delays[int(len(delays) * 0.99)] * 1e3
    print(f"\ninvalidation delay, {len(delays)} writes: p50 {p50:.3f} ms, p99 {p99:.3f} ms")
