"""Expiry: sweep throughput, the longest script call of a sweep, expiry-index memory per session,
and touch on a session with an idle rule (the on-access check) against the raw call.

The private server runs pinned to its own core at a real-time priority, with a witness of that
core's stalls beside it (bench/stalls.py): a call over the target that ran while the core ran
nothing for the excess is told apart from one whose own work took that long."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis.asyncio as aioredis

from sessioncache.embedded import EmbeddedRedis
from sessioncache.expiry.rules import first_match
from sessioncache.models import session_from_hash
from sessioncache.system import SessionSystem

from .common import Row, compare, print_table
from .core import RAW_TOUCH
from .stalls import TICK_S, Placement, Stall, place_server, start_witness, stop_witness

RULES = [
    {"name": "armed", "policy": "idle", "after": 3600, "action": "archive", "platform": "hot"},
    {"name": "sweep", "policy": "idle", "after": 1, "action": "archive"},
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", type=int, default=100_000, help="expired sessions to sweep")
    parser.add_argument("--ops", type=int, default=2000, help="touch operations per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--target", type=float, default=1.25, help="max ours/raw touch ratio")
    parser.add_argument("--max-call-ms", type=float, default=2.0, help="longest script call")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="leave the private server unpinned at normal priority, with no stall witness",
    )


async def _create(system: SessionSystem, n: int) -> None:
    """create_session's two scripts (create, then arming the rule) for n sessions, sent in
    pipelines of 1,000: the setup is not what this bench measures."""
    store, engine = system.store, system.expiry
    for start in range(0, n, 1000):
        idents = [
            store.identity(f"c{i}", f"u{i % 5000}") for i in range(start, min(n, start + 1000))
        ]
        calls = [store._create_args(i, "create", None, None, "new", 0, None) for i in idents]
        async with store.client.pipeline(transaction=False) as pipe:
            for keys, argv in calls:
                pipe.evalsha(store.scripts.create.sha, len(keys), *keys, *argv)
            replies = await pipe.execute()
        now = await engine._now()
        async with store.client.pipeline(transaction=False) as pipe:
            for ident, (keys, _), reply in zip(idents, calls, replies, strict=True):
                session = session_from_hash(ident, keys[0], reply[1])
                spec = engine.spec(first_match(engine.rules, ident, 0), session, now)
                assert spec is not None
                created = str(round(session.created_at.timestamp() * 1000))
                pipe.evalsha(
                    store.scripts.expiry_arm.sha,
                    2,
                    keys[0],
                    engine.index_of(ident),
                    "",
                    spec.field_y(),
                    created,
                )
            await pipe.execute()


@contextmanager
def _server(url: str | None, pin: bool) -> Iterator[tuple[str, Placement]]:
    """The given URL, or a private redis-server pinned to its own core (bench/stalls.py)."""
    if url:
        yield url, Placement(why_not="--url: a server this bench does not own")
        return
    with EmbeddedRedis() as embedded:
        assert embedded.process is not None
        if not pin:
            yield embedded.url, Placement(why_not="--no-pin")
            return
        yield embedded.url, place_server(embedded.process.pid)


async def run(args: argparse.Namespace) -> bool:
    with _server(args.url, not args.no_pin) as (url, placement):
        raw = aioredis.Redis.from_url(url, protocol=3, socket_timeout=30.0)
        system = await SessionSystem.start(
            "REDIS",
            {"url": url, "socket_timeout": 30.0},
            namespace="benchexp",
            expiry_rules=RULES,
            expiry_interval=86400.0,
        )
        try:
            return await _run(system, raw, args, placement)
        finally:
            keys = [k async for k in raw.scan_iter(match="benchexp:*", count=5000)]
            for i in range(0, len(keys), 5000):
                await raw.delete(*keys[i : i + 5000])
            await raw.config_set("slowlog-log-slower-than", 10000)
            await system.shutdown()
            await raw.aclose()


async def _run(
    system: SessionSystem, raw: Any, args: argparse.Namespace, placement: Placement
) -> bool:
    began = time.perf_counter()
    await _create(system, args.n)
    created = time.perf_counter() - began
    buckets = [system.store.keys.expiry_index(i) for i in range(system.expiry.buckets)]
    index_bytes = sum([int(await raw.memory_usage(b) or 0) for b in buckets])
    entries = sum([int(await raw.zcard(b)) for b in buckets])
    # What the two expiry fields add to one session hash.
    key = system.store.keys.session(system.store.identity("c0", "u0", "web"))
    with_fields = int(await raw.memory_usage(key, samples=0))
    _, y = await raw.hmget(key, "x", "y")
    await raw.hdel(key, "y")
    without = int(await raw.memory_usage(key, samples=0))
    await raw.hset(key, "y", y)
    info = await system.get_expiry_info(f"web:c{args.n - 1}:u{(args.n - 1) % 5000}")
    assert info is not None and info.deadline_ms is not None
    while await system.expiry._now() < info.deadline_ms + 1000 + 1:
        await asyncio.sleep(0.1)
    await raw.config_set("slowlog-log-slower-than", 200)
    await raw.config_set("slowlog-max-len", 1024)
    await raw.slowlog_reset()
    await raw.config_resetstat()
    start_witness(placement)
    await asyncio.sleep(0.2)  # the witness is running before the sweep starts
    try:
        report = await system.cleanup_expired_sessions()
    finally:
        stalls = stop_witness(placement)
    evalsha = (await raw.info("commandstats")).get("cmdstat_evalsha", {})
    slow = await raw.slowlog_get(1024)
    calls = sorted(((int(e["duration"]), _name(e.get("command", b""))) for e in slow), reverse=True)
    max_us = int(args.max_call_ms * 1000)
    scripts = [e for e in slow if _name(e.get("command", b"")).startswith("evalsha")]
    longest_us = max((int(e["duration"]) for e in scripts), default=0)
    over = [e for e in scripts if int(e["duration"]) > max_us]
    explained = [e for e in over if await _during_stall(raw, e, stalls, max_us)]
    # A check of the witness itself: calls over half the target, and how many of them ran
    # while the core stalled for at least half their time.
    half = [e for e in scripts if int(e["duration"]) > max_us // 2]
    half_seen = [e for e in half if await _during_stall(raw, e, stalls, int(e["duration"]))]
    clean_us = max(
        (int(e["duration"]) for e in scripts if not any(e is x for x in explained)), default=0
    )
    if calls:
        print("  slowest calls (us):", ", ".join(f"{d} {n[:40]}" for d, n in calls[:5]))
    acted = report.actions.get("archive", 0)
    rate = acted / report.duration_s if report.duration_s else 0.0
    print(f"\nexpiry sweep over {args.n} expired sessions (created in {created:.1f}s)")
    print(f"  {placement.describe()}")
    print(f"  archived                         {acted}  (examined {report.examined})")
    print(f"  sweep                            {report.duration_s:.2f}s = {rate:,.0f} sessions/s")
    limit = f"<= {args.max_call_ms:.1f} ms"
    shown = f"{longest_us / 1000:.3f} ms" if longest_us else "< 0.2 ms (none in SLOWLOG)"
    print(f"  longest script call              {shown} (target {limit})")
    print(f"  script calls over the target     {len(over)} of {report.examined}")
    if placement.cpu is not None:
        print(
            f"    of which the server's core ran nothing for the excess and half the call: "
            f"{len(explained)}"
        )
        print(f"  longest script call without such a stall  {clean_us / 1000:.3f} ms")
        print(f"  stalls of the server's core      {_stall_summary(stalls)}")
        print(
            f"  (witness check: {len(half_seen)} of the {len(half)} script calls over "
            f"{max_us / 2000:.1f} ms ran while the core stalled for half their time)"
        )
    print(f"  mean script call (server)        {evalsha.get('usec_per_call', 0)} us")
    per = index_bytes / entries if entries else 0.0
    print(f"  expiry index                     {per:.1f} bytes/session ({entries} entries)")
    print(f"  fields x, y in the session hash  {with_fields - without} bytes/session")
    ok = acted == args.n and clean_us <= max_us
    placement.release()
    return await _touch_rows(system, raw, args) and ok


async def _during_stall(raw: Any, entry: dict[str, Any], stalls: list[Stall], max_us: int) -> bool:
    """Whether a script call that took longer than max_us ran while the witness saw the
    server's core run nothing for at least the excess (without the stall it was in time) and
    for at least half the call (less the witness's tick, by which it may under-count a stall):
    a short stall merely near a slow call does not excuse it.

    SLOWLOG times a call only to the second; the archive it wrote says when to the ms: its
    "expired" event's stream id is the server's clock inside the call (KEYS[7])."""
    args = _name(entry.get("command", b"")).split(" ")
    if len(args) < 10:
        return False
    last = await raw.xrevrange(args[9], count=1)
    if not last:
        return False
    at = int(last[0][0].split(b"-")[0]) / 1000
    took_us = int(entry["duration"])
    # The event's id is truncated to the ms and may be written anywhere inside the call.
    start, stop = at - took_us / 1e6, at + 0.001 + took_us / 1e6
    # The witness sees a stall that began while it slept only from its next tick on.
    needed_ms = max(took_us - max_us, took_us / 2) / 1000 - TICK_S * 1000
    return any(s.ms >= needed_ms and s.overlaps(start, stop) for s in stalls)


def _stall_summary(stalls: list[Stall]) -> str:
    def over(ms: float) -> int:
        return sum(s.ms >= ms for s in stalls)

    longest = max((s.ms for s in stalls), default=0.0)
    return (
        f"{len(stalls)} over 0.2 ms, {over(1)} over 1 ms, {over(2)} over 2 ms, "
        f"longest {longest:.2f} ms"
    )


def _name(command: object) -> str:
    text = command.decode(errors="replace") if isinstance(command, bytes) else str(command)
    return text.lower()


async def _touch_rows(system: SessionSystem, raw: Any, args: argparse.Namespace) -> bool:
    hot = await system.create_session("h", "u", "hot")  # armed with a one-hour idle rule
    raw_touch = raw.register_script(RAW_TOUCH)
    key = system.store.keys.session(system.store.identity("h", "u", "hot"))
    await raw.hset("benchexp:raw", mapping={"v": 1, "m": 0})

    async def ours(i: int) -> object:
        return await system.touch_session(hot.session_id, messages=1)

    async def raw_call(i: int) -> object:
        return await raw_touch(keys=["benchexp:raw"], args=[1])

    assert key
    mine, base = await compare(ours, raw_call, n=args.ops, rounds=args.rounds)
    rows = [Row("touch, idle rule armed (on access)", mine, base, args.target)]
    return print_table("touch with the on-access expiry check vs raw touch", rows)
