"""How the shared Lua helpers are delivered: prelude per script vs a Functions library."""

from __future__ import annotations

import argparse
import statistics
import subprocess
from typing import Any

import redis.asyncio as aioredis

from sessioncache import SessionStore
from sessioncache.scripts import prelude, registry

from .common import Row, compare, print_table, server


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", type=int, default=2000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per operation")
    parser.add_argument(
        "--baseline",
        default="4aaaff1",
        help="git revision whose lua/touch.lua has its helpers copied in (before the shared "
        "helpers and the op log: so that row also shows the op log's cost)",
    )


def _library(name: str, body: str) -> str:
    """The prelude and one script's body as a Redis Functions library with one function."""
    # Functions get no KEYS/ARGV globals: library-level locals the function sets on entry, so
    # helpers that read ARGV (lib/ops.lua) run unchanged.
    return (
        f"#!lua name={name}\nlocal KEYS, ARGV\n{prelude()}"
        f"redis.register_function('touch_{name}', function(k, a)\nKEYS, ARGV = k, a\n{body}\nend)\n"
    )


async def _server_usec(client: Any, command: str) -> float:
    stats = await client.info("commandstats")
    return float(stats.get(f"cmdstat_{command}", {}).get("usec_per_call", 0.0))


async def run(args: argparse.Namespace) -> bool:
    old = subprocess.run(
        ["git", "show", f"{args.baseline}:lua/touch.lua"], capture_output=True, text=True
    )
    with server(args.url) as url:
        store = await SessionStore.connect(url, namespace="benchlua")
        client = aioredis.Redis.from_url(url, protocol=3, socket_timeout=5.0)
        try:
            return await _run(store, client, old.stdout, args)
        finally:
            keys = [k async for k in client.scan_iter(match="benchlua:*", count=1000)]
            if keys:
                await client.delete(*keys)
            if await client.function_list(library="sc_bench"):
                await client.function_delete("sc_bench")
            await store.close()
            await client.aclose()


async def _run(store: SessionStore, client: Any, old_source: str, args: argparse.Namespace) -> bool:
    await store.create("chat", "user", "telegram")
    keys = list(store._session_keys(store.identity("chat", "user", "telegram")))
    touch = registry().touch
    body = "".join(touch.source.splitlines(keepends=True)[touch.offset :])
    await client.function_load(_library("sc_bench", body), replace=True)
    old_sha = await client.script_load(old_source) if old_source else None
    ttl = store.default_ttl_ms

    async def prelude_call(i: int) -> object:
        return await client.evalsha(touch.sha, len(keys), *keys, *store.op_args([ttl, "1", ""]))

    async def fcall(i: int) -> object:
        argv = store.op_args([ttl, "1", ""])
        return await client.fcall("touch_sc_bench", len(keys), *keys, *argv)

    async def copied(i: int) -> object:
        # The baseline's touch.lua: 5-character op ids in the hash, three keys.
        return await client.evalsha(old_sha, 3, *keys[:3], f"{i:05d}"[-5:], ttl, "1", "")

    rows = []
    variants = [("prelude (EVALSHA)", prelude_call, "evalsha"), ("library (FCALL)", fcall, "fcall")]
    if old_sha:
        variants.append(("helpers copied in (old)", copied, "evalsha"))
    samples: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    for r in range(9):  # rotated order, median of 9: other processes' load falls on all alike
        for name, op, command in variants[r % 3 :] + variants[: r % 3]:
            await client.config_resetstat()
            for i in range(args.n // 9):
                await op(i)
            samples[name].append(await _server_usec(client, command))
    usec = {name: statistics.median(values) for name, values in samples.items()}
    base = prelude_call
    for name, op, _ in variants[1:]:
        o, r = await compare(op, base, args.n, rounds=args.rounds)
        rows.append(Row(f"{name} vs prelude", o, r, 1.25))
    print_table("touch.lua delivered three ways (client round trip)", rows)
    print("\nserver time per call (INFO commandstats usec_per_call):")
    for name, value in usec.items():
        print(f"  {name:<28} {value:8.2f} us")
    return True
