"""Context suite: near-cache hits, batch gets, history appends and turns against raw baselines."""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from typing import Any

import redis.asyncio as aioredis

from sessioncache.history import encode_payload
from sessioncache.nearcache import NearCacheConfig
from sessioncache.serialization import MsgpackCodec
from sessioncache.system import SessionSystem

from .common import Row, compare, print_table, server

# What one would write by hand for the same append (a numbered, timestamped item, trimmed to a
# count, both keys' expiry refreshed), as in bench/core.py without our checks: no session or
# generation check, no op id, no byte or token accounting.
RAW_APPEND = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
local len = redis.call('RPUSH', KEYS[2], n .. '|' .. ARGV[2] .. '|' .. now .. '|' .. ARGV[1])
if len > tonumber(ARGV[3]) then redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1) end
redis.call('PEXPIRE', KEYS[1], 604800000)
redis.call('PEXPIRE', KEYS[2], 604800000)
return {n, now}
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", type=int, default=1000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per operation")


async def _start(url: str, **options: Any) -> SessionSystem:
    return await SessionSystem.start("REDIS", {"url": url}, namespace="benchcx", **options)


async def run(args: argparse.Namespace) -> bool:
    with server(args.url) as url:
        cached = await _start(url, near_cache=NearCacheConfig(max_staleness=1.0))
        plain = await _start(url)
        raw = aioredis.Redis.from_url(url, protocol=3, socket_timeout=5.0)
        try:
            rows = await _rows(cached, plain, raw, args)
            delays = await _invalidation_delays(url, cached, plain)
        finally:
            keys = [k async for k in raw.scan_iter(match="benchcx:*", count=1000)]
            if keys:
                await raw.delete(*keys)
            await cached.shutdown()
            await plain.shutdown()
            await raw.aclose()
    ok = print_table("context (ratio = our time / baseline time)", rows)

    def p(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(len(values) * q))] * 1e6

    ack, sent, trip = delays["ack"], delays["sent"], delays["round trip"]
    print(
        f"\ninvalidation delay (write acknowledged in another process -> entry dropped from "
        f"this process's near cache by the tracking push), {len(ack)} writes: "
        f"p50 {p(ack, 0.5):.0f} us, p99 {p(ack, 0.99):.0f} us ({ack.count(0.0)} dropped before "
        f"the writer had its reply); write sent -> dropped p50 {p(sent, 0.5):.0f} us, "
        f"p99 {p(sent, 0.99):.0f} us; the writer's round trip p50 {p(trip, 0.5):.0f} us, "
        f"p99 {p(trip, 0.99):.0f} us"
    )
    return ok


async def _rows(
    cached: SessionSystem, plain: SessionSystem, raw: Any, args: argparse.Namespace
) -> list[Row]:
    n, rounds = args.n, args.rounds
    sid = (await plain.get_or_create_session("chat", "user", "telegram", data={"a": 1})).session_id
    await cached.get_session(sid)

    async def hit(i: int) -> object:
        return await cached.get_session(sid)

    async def uncached(i: int) -> object:
        return await plain.get_session(sid)

    near = await compare(hit, uncached, n * 10, rounds=rounds)

    many = [
        (await plain.get_or_create_session(f"c{i}", "many", "telegram")).session_id
        for i in range(1000)
    ]

    async def batch_get(i: int) -> object:
        return await plain.get_many(many)

    async def sequential_gets(i: int) -> object:
        for one in many:
            await plain.store.get(one)
        return None

    batch = await compare(batch_get, sequential_gets, 3, rounds=rounds, warmup=2, batch=1)

    # Under the context prefixes the near cache tracks (`cached` is running on this server):
    # the server pushes an invalidation for these writes as for ours, so both sides pay it.
    raw_keys = ["benchcx:cx:{user}:raw", "benchcx:hx:{user}:raw"]
    raw_sha = await raw.script_load(RAW_APPEND)
    payload = encode_payload(MsgpackCodec(), "user", "hello there, how are you?", {})

    async def append(i: int) -> object:
        return await plain.append_message(sid, "user", "hello there, how are you?", tokens=7)

    async def raw_append(i: int) -> object:
        return await raw.evalsha(raw_sha, 2, *raw_keys, payload, 7, 200)

    appends = await compare(append, raw_append, n, rounds=rounds)

    async def turn(i: int) -> object:
        async with plain.turn(sid, timeout=5):
            pass
        return None

    async def raw_lock(i: int) -> object:
        await raw.set("benchcx:rawlock:{user}", "token", nx=True, px=30000)
        return await raw.delete("benchcx:rawlock:{user}")

    turns = await compare(turn, raw_lock, n, rounds=rounds)
    return [
        Row("near-cache hit vs uncached get", *near, 0.05),
        Row("get_many(1000) vs 1000 gets", *batch, 0.2),
        Row("append_message vs hand-written script", *appends, 1.25),
        Row("turn enter+exit vs SET NX PX + DEL", *turns, 1.5),
    ]


def _writer_process(url: str, sid: str, writes: int, conn: Any) -> None:
    """The other process: on each "go" from the reader, one update; sends back the monotonic
    times it was sent and its acknowledgement arrived (CLOCK_MONOTONIC: one clock for every
    process)."""

    async def main() -> None:
        writer = await _start(url)
        wait = asyncio.get_running_loop().run_in_executor
        try:
            await writer.get_session(sid)  # connected and scripts loaded before the first go
            conn.send("ready")
            for v in range(writes):
                await wait(None, conn.recv)
                sent = time.monotonic()
                await writer.update_session(sid, {"v": v})
                conn.send((sent, time.monotonic()))
        finally:
            await writer.shutdown()

    asyncio.run(main())


async def _invalidation_delays(
    url: str, cached: SessionSystem, plain: SessionSystem
) -> dict[str, list[float]]:
    """Per write of another OS process, sorted seconds: "ack" its acknowledgement -> the entry
    dropped from this process's near cache by the server's tracking push (0 when the push came
    first); "sent" the write sent -> dropped; "round trip" sent -> acknowledged."""
    assert cached.near_cache is not None
    cache = cached.near_cache.cache
    session = await plain.get_or_create_session("delay", "user", "telegram")
    sid, key, writes = session.session_id, session.session_key, 500
    ctx = multiprocessing.get_context("spawn")
    here, there = ctx.Pipe()
    proc = ctx.Process(target=_writer_process, args=(url, sid, writes, there))
    proc.start()
    wait = asyncio.get_running_loop().run_in_executor
    delays: dict[str, list[float]] = {"ack": [], "sent": [], "round trip": []}
    try:
        assert await wait(None, here.recv) == "ready"
        for _ in range(writes):
            while key not in cache:
                await cached.get_session(sid)  # cached again (a fill may lose to a late push)
            here.send("go")
            while key in cache:
                await asyncio.sleep(0)
            dropped = time.monotonic()
            sent, acked = await wait(None, here.recv)
            delays["ack"].append(max(0.0, dropped - acked))
            delays["sent"].append(dropped - sent)
            delays["round trip"].append(acked - sent)
    finally:
        await wait(None, proc.join, 60)
    return {name: sorted(values) for name, values in delays.items()}
