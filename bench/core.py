"""Core operations vs the raw redis-py call of the same round trip, and memory per session."""

from __future__ import annotations

import argparse
from typing import Any

import redis.asyncio as aioredis

from sessioncache import SessionStore
from sessioncache.backends import RedisSettings, connect
from sessioncache.codec import data_field, encode_value
from sessioncache.leanclient import lean_supported

from .common import Row, compare, print_table, server

# Minimal scripts doing the same writes as ours, without our checks (op ids, limits, index TTL).
RAW_UPDATE = """
local v = tonumber(redis.call('HGET', KEYS[1], 'v'))
if v ~= tonumber(ARGV[1]) then return {-2, v} end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3], 'v', v + 1, 'u', now, 'a', now, 'e', now + 604800000)
redis.call('PEXPIREAT', KEYS[1], now + 604800000)
return {1, redis.call('HGETALL', KEYS[1])}
"""
RAW_SET_FIELD = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local v = redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], 'u', now, 'a', now, 'e', now + 604800000)
redis.call('PEXPIREAT', KEYS[1], now + 604800000)
return {1, v}
"""
RAW_TOUCH = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local m = redis.call('HINCRBY', KEYS[1], 'm', ARGV[1])
redis.call('HSET', KEYS[1], 'a', now, 'e', now + 604800000)
redis.call('PEXPIREAT', KEYS[1], now + 604800000)
return {1, now + 604800000, m}
"""
RAW_GET_OR_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, redis.call('HGETALL', KEYS[1])} end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('HSET', KEYS[1], 'v', 1, 's', 'new', 'c', now, 'u', now, 'a', now, 'm', 0)
redis.call('PEXPIREAT', KEYS[1], now + 604800000)
return {1, redis.call('HGETALL', KEYS[1])}
"""

SMALL_FIELDS = {f"field{i}": f"value{i}" for i in range(1, 21)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", type=int, default=2000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per operation")
    parser.add_argument("--target", type=float, default=1.25, help="max ours/raw time ratio")


async def _memory(store: SessionStore) -> tuple[int, int]:
    """MEMORY USAGE of a session with 20 small fields, and of a bare hash of the same fields."""
    s = await store.create("chat_1", "user_1", "telegram", data=SMALL_FIELDS)
    bare = s.session_key.replace(f"{store.keys.namespace}:s:", f"{store.keys.namespace}:b:")
    await store.client.hset(bare, mapping=SMALL_FIELDS)  # same key length, same fields
    ours = int(await store.client.memory_usage(s.session_key))
    raw = int(await store.client.memory_usage(bare))
    encoding = await store.client.object("encoding", s.session_key)
    print(f"session hash encoding: {encoding!r}")
    await store.client.delete(bare)
    await store.delete(s.session_id)
    return ours, raw


async def run(args: argparse.Namespace) -> bool:
    with server(args.url) as url:
        store = await SessionStore.connect(url, namespace="bench")
        # The same store on stock redis-py (what runs on a redis-py the lean client was not
        # tested on): its rows show what the lean client saves, and that the fallback holds.
        stock = SessionStore(connect(RedisSettings(url), lean=False), namespace="bench")
        await stock.scripts.load(stock.client)
        print(
            f"client: {type(store.client).__name__} (lean path "
            f"{'on' if lean_supported() else 'off'}), stock rows: {type(stock.client).__name__}"
        )
        # The baseline is stock redis-py, as a bot would use it: same server, protocol, timeouts.
        raw_client = aioredis.Redis.from_url(
            url, protocol=3, socket_timeout=5.0, socket_connect_timeout=2.0
        )
        try:
            await _drop(raw_client)
            ours_mem, raw_mem = await _memory(store)
            ok = await _timings(store, stock, raw_client, args)
        finally:
            await _drop(raw_client)
            await store.close()
            await stock.close()
            await raw_client.aclose()
    mem_ratio = ours_mem / raw_mem
    print(
        f"\nmemory per session (20 small fields): ours {ours_mem} B, bare hash {raw_mem} B, "
        f"ratio {mem_ratio:.2f} (target 1.20) {'yes' if mem_ratio <= 1.2 else 'NO'}"
    )
    return ok and mem_ratio <= 1.2


async def _drop(client: Any) -> None:
    keys = [k async for k in client.scan_iter(match="bench:*", count=1000)]
    if keys:
        await client.delete(*keys)


async def _timings(
    store: SessionStore, stock: SessionStore, client: Any, args: argparse.Namespace
) -> bool:
    """`client` is the raw redis-py client of the baseline; `stock` our store on stock redis-py."""
    s = await store.create("chat", "user", "telegram", data=SMALL_FIELDS)
    sid, key = s.session_id, s.session_key
    stock_s = await stock.create("chat_stock", "user", "telegram", data=SMALL_FIELDS)
    index = store.keys.user_index(store.identity(1, "user", "x").user_tag)
    raw_key = key.replace("bench:s:", "bench:r:")
    # The baseline hash holds exactly the fields our session holds, so both replies are alike.
    await client.hset(raw_key, mapping=await client.hgetall(key))
    shas = {
        name: await client.script_load(src)
        for name, src in {
            "update": RAW_UPDATE,
            "set": RAW_SET_FIELD,
            "touch": RAW_TOUCH,
            "goc": RAW_GET_OR_CREATE,
        }.items()
    }
    value = encode_value("new-value")
    fname = data_field("field1")
    version = {"ours": s.version, "raw": s.version, "stock": stock_s.version}

    async def ours_get(i: int) -> object:
        return await store.get(sid)

    async def raw_get(i: int) -> object:
        return await client.hgetall(raw_key)

    async def ours_update(i: int) -> object:
        # expected_version is the one we last saw: no conflict, as in a single writer's loop
        out = await store.update(
            sid, data={"field1": "new-value"}, expected_version=version["ours"]
        )
        version["ours"] = out.version
        return out

    async def stock_get(i: int) -> object:
        return await stock.get(stock_s.session_id)

    async def stock_update(i: int) -> object:
        out = await stock.update(
            stock_s.session_id, data={"field1": "new-value"}, expected_version=version["stock"]
        )
        version["stock"] = out.version
        return out

    async def ours_update_read(i: int) -> object:
        # Session.data decodes on first access: this row pays for decoding all 20 fields.
        out = await store.update(
            sid, data={"field1": "new-value"}, expected_version=version["ours"]
        )
        version["ours"] = out.version
        return out.data

    async def raw_update(i: int) -> object:
        out = await client.evalsha(shas["update"], 1, raw_key, version["raw"], fname, value)
        version["raw"] += 1
        return out

    async def ours_touch(i: int) -> object:
        return await store.touch(sid, messages=1)

    async def raw_touch(i: int) -> object:
        return await client.evalsha(shas["touch"], 1, raw_key, 1)

    async def ours_goc(i: int) -> object:
        return await store.get_or_create("chat", "user", "telegram")

    async def raw_goc(i: int) -> object:
        return await client.evalsha(shas["goc"], 1, raw_key)

    async def ours_set(i: int) -> object:
        return await store.set_field(sid, "field2", "new-value")

    async def raw_set(i: int) -> object:
        return await client.evalsha(shas["set"], 1, raw_key, "field2", value)

    ops = [
        ("get", ours_get, raw_get),
        ("get (stock client)", stock_get, raw_get),
        ("update (expected_version)", ours_update, raw_update),
        ("update (stock client)", stock_update, raw_update),
        ("update + read all of .data", ours_update_read, raw_update),
        ("touch", ours_touch, raw_touch),
        ("get_or_create (existing)", ours_goc, raw_goc),
        ("set_field", ours_set, raw_set),
    ]
    ok = True
    for label, concurrent in (("sequential", 0), ("50 concurrent tasks", 50)):
        rows = []
        for name, ours, raw in ops:
            if name.startswith("update") and concurrent:
                continue  # a single expected_version chain cannot run 50-wide without conflicts
            o, r = await compare(ours, raw, args.n, rounds=args.rounds, concurrent=concurrent)
            rows.append(Row(name, o, r, args.target))
        ok &= print_table(f"core operations, {label} (n={args.n} x {args.rounds} rounds)", rows)
        _stock_note(rows, args.target)
    del index
    return ok


def _stock_note(rows: list[Row], target: float) -> None:
    """Why a stock-client row may miss the target while its lean row holds it."""
    by_name = {row.name: row for row in rows}
    for lean_name, stock_name in (
        ("get", "get (stock client)"),
        ("update (expected_version)", "update (stock client)"),
    ):
        lean, stock = by_name.get(lean_name), by_name.get(stock_name)
        if lean is None or stock is None or stock.ratio <= target:
            continue
        print(
            f"note: {stock_name!r} ({stock.ratio:.2f}, lean row {lean.ratio:.2f}) is the fallback "
            f"used only on redis-py versions the lean client is not gated to "
            f"(leanclient.LEAN_REDIS_VERSIONS): stock redis-py runs a pure-Python packer over "
            f"every argument (this script call has three times as many as the raw one), a Task "
            f"per send and its OpenTelemetry steps on every command."
        )
