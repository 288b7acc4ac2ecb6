"""State tracker: transition and track_event against raw redis-py doing the same writes."""

from __future__ import annotations

import argparse

import redis.asyncio as aioredis

from bench.common import Row, compare, print_table, server
from bench.evaluation import evaluate_next_activity, synthetic_gaps
from sessioncache import EventType
from sessioncache.store import SessionStore
from sessioncache.tracker import StateTracker, TrackerConfig

# The same writes as transition.lua without its checks: state, version, event, counters.
RAW_TRANSITION = """
local cur = redis.call('HMGET', KEYS[1], 'v', 'o', 's', 'c', 'm')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = string.format('%d', tonumber(cur[1]) + 1)
redis.call('HSET', KEYS[1], 's', ARGV[1], 'v', v, 'u', string.format('%d', now),
           'o', string.sub(ARGV[2] .. (cur[2] or ''), 1, 20))
redis.call('XADD', KEYS[2], 'MAXLEN', '~', '10000', '*', 't', 'state_changed', 'f', cur[3],
           's', ARGV[1], 'v', v, 'x', '1')
redis.call('XTRIM', KEYS[2], 'MINID', '~', string.format('%d', now - 2592000000))
redis.call('PEXPIRE', KEYS[2], '2592000000')
redis.call('HINCRBY', KEYS[3], 'n:web:' .. cur[3], -1)
redis.call('HINCRBY', KEYS[3], 'n:web:' .. ARGV[1], 1)
redis.call('HINCRBY', KEYS[3], 'tr:' .. cur[3] .. '>' .. ARGV[1], 1)
redis.call('HINCRBY', KEYS[3], 'e:state_changed', 1)
redis.call('HINCRBY', KEYS[3], 'h:' .. string.format('%d', math.floor(now / 3600000)), 1)
return {1, redis.call('HGETALL', KEYS[1]), cur[3]}
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", type=int, default=2000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=100)


async def run(args: argparse.Namespace) -> bool:
    with server(args.url) as url:
        store = await SessionStore.connect(
            url, namespace="benchstate", extras=[TrackerConfig().store_extras()]
        )
        # The baseline is stock redis-py, as a bot would use it: same server, protocol, timeouts.
        client = aioredis.Redis.from_url(
            url, protocol=3, socket_timeout=5.0, socket_connect_timeout=2.0
        )
        try:
            return await _run(store, client, args)
        finally:
            keys = [k async for k in store.client.scan_iter(match="benchstate:*", count=1000)]
            for key in keys:
                await store.client.delete(key)
            await store.close()
            await client.aclose()


async def _run(store: SessionStore, client: aioredis.Redis, args: argparse.Namespace) -> bool:
    tracker = StateTracker(store)
    await tracker.start()
    ids = []
    for i in range(args.sessions):
        s = await store.create(f"c{i}", f"u{i}", "web", state="active")
        ids.append(s.session_id)
    raw_ids = []
    for i in range(args.sessions):
        s = await store.create(f"r{i}", f"u{i}", "web", state="active")
        raw_ids.append(s.session_id)
    state = dict.fromkeys(ids, "active")
    raw_state = dict.fromkeys(raw_ids, "active")
    raw_sha = await client.script_load(RAW_TRANSITION)

    async def ours_transition(i: int) -> object:
        sid = ids[i % len(ids)]
        target = "idle" if state[sid] == "active" else "active"
        state[sid] = target
        return await tracker.transition(sid, target)

    async def raw_transition(i: int) -> object:
        sid = raw_ids[i % len(raw_ids)]
        target = "idle" if raw_state[sid] == "active" else "active"
        raw_state[sid] = target
        _, keys, _ = tracker.events.locate(sid)
        return await client.evalsha(raw_sha, 3, keys[0], keys[2], keys[3], target, "opxyz")

    async def ours_event(i: int) -> object:
        return await tracker.track_event(ids[i % len(ids)], EventType.MESSAGE_RECEIVED, text="hi")

    async def raw_event(i: int) -> object:
        _, keys, _ = tracker.events.locate(raw_ids[i % len(raw_ids)])
        async with client.pipeline(transaction=False) as pipe:
            pipe.xadd(keys[2], {"t": "message_received", "text": "hi"}, maxlen=10000)
            pipe.hincrby(keys[0], "m", 1)
            return await pipe.execute()

    rows = []
    for name, ours, raw in (
        ("transition vs raw EVALSHA", ours_transition, raw_transition),
        ("track_event vs XADD+HINCRBY pipe", ours_event, raw_event),
    ):
        ours_stats, raw_stats = await compare(ours, raw, args.n, rounds=args.rounds)
        rows.append(Row(name, ours_stats, raw_stats, 1.25))
    ok = print_table("state tracker (sequential, one connection each)", rows)

    evaluation = evaluate_next_activity(synthetic_gaps())
    print("\nnext-activity prediction on a synthetic workload (200 users x 40 gaps)")
    print(f"predictions         {evaluation.predictions}")
    print(f"MAE model           {evaluation.mae_model_s:10.0f} s")
    print(f"MAE population mean {evaluation.mae_population_s:10.0f} s")
    print(f"MAE last gap        {evaluation.mae_last_gap_s:10.0f} s")
    print(f"model / population  {evaluation.improvement:10.3f}")
    metrics = tracker.get_performance_metrics()
    print("\nin-process metrics (ms):")
    for op, m in metrics.items():
        print(f"  {op:<12} n={m['count']:<7} p50={m['p50_ms']:.3f} p95={m['p95_ms']:.3f} "
              f"p99={m['p99_ms']:.3f}")
    return ok
