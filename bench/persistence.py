"""Backup and restore of many sessions against a raw SCAN + pipelined HGETALL dump loop."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sessioncache.persistence import Persistence
from sessioncache.store import SessionStore

from .common import server

KEY = "bench-key-0123456789abcdef"
HERE = Path(__file__).resolve().parent.parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", type=int, default=100_000, help="sessions")
    parser.add_argument("--fields", type=int, default=20, help="data fields per session")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--format", default="msgpack.gz")


async def load(store: SessionStore, n: int, fields: int) -> None:
    """n sessions laid out as the scripts write them, with pipelined raw HSET (fast)."""
    client, keys = store.client, store.keys
    expire = int(time.time() * 1000) + 7 * 86400 * 1000
    for start in range(0, n, 2000):
        async with client.pipeline(transaction=False) as pipe:
            for i in range(start, min(n, start + 2000)):
                ident = store.identity(i, f"user{i // 3}", "telegram")
                mapping: dict[str, Any] = {
                    "v": "3",
                    "s": "active",
                    "c": "1700000000000",
                    "u": "1700000000500",
                    "a": "1700000000900",
                    "e": str(expire),
                    "m": str(i % 50),
                    "o": "abcde",
                    "@lang": "en",
                }
                for f in range(fields):
                    mapping[f"field_{f}"] = f"value {i} {f} " + "x" * (f % 7)
                key = keys.session(ident)
                pipe.hset(key, mapping=mapping)
                pipe.pexpireat(key, expire)
                pipe.hset(keys.user_index(ident.user_tag), ident.suffix, "1")
            await pipe.execute()


async def raw_dump(
    store: SessionStore, batch: int = 1000
) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The baseline: SCAN + pipelined HGETALL, keeping what it read (as a dump would)."""
    client = store.client
    out: list[tuple[bytes, dict[bytes, bytes]]] = []
    chunk: list[bytes] = []

    async def read(keys: list[bytes]) -> None:
        async with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(key)
            out.extend(zip(keys, await pipe.execute(), strict=True))

    async for key in client.scan_iter(match=store.keys.session_pattern(), count=batch):
        chunk.append(key)
        if len(chunk) >= batch:
            await read(chunk)
            chunk = []
    if chunk:
        await read(chunk)
    return out


async def raw_load(store: SessionStore, dump: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
    """The restore baseline: pipelined HSET + PEXPIREAT of what raw_dump read."""
    client = store.client
    for start in range(0, len(dump), 1000):
        async with client.pipeline(transaction=False) as pipe:
            for key, fields in dump[start : start + 1000]:
                pipe.hset(key, mapping=fields)
                pipe.pexpireat(key, int(fields[b"e"]))
            await pipe.execute()


async def _timed(coro: Any) -> tuple[float, Any]:
    began = time.perf_counter()
    result = await coro
    return time.perf_counter() - began, result


def _child_peak(url: str, action: str, directory: str, backup_id: str, fmt: str) -> dict[str, int]:
    """Run one backup or restore in a fresh process; its baseline and peak RSS (KiB).

    ru_maxrss survives exec (it would report the forking parent), so the child resets its
    high-water mark through /proc/self/clear_refs and reads VmHWM.
    """
    code = f"""
import asyncio, json, sys
def status(name):
    for line in open("/proc/self/status"):
        if line.startswith(name + ":"):
            return int(line.split()[1])
sys.path.insert(0, {str(HERE)!r})
from sessioncache.store import SessionStore
from sessioncache.persistence import Persistence
async def main():
    store = await SessionStore.connect({url!r}, namespace="bench", socket_timeout=60)
    p = Persistence(store, backup_dir={directory!r}, key={KEY!r})
    base = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    if {action!r} == "backup":
        await p.create_backup(format={fmt!r})
    else:
        await p.restore_backup({backup_id!r}, "merge")
    peak = status("VmHWM")
    await store.close()
    print(json.dumps({{"baseline_kb": base, "peak_kb": peak}}))
asyncio.run(main())
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


async def run(args: argparse.Namespace) -> bool:
    n = args.n
    with server(args.url) as url, tempfile.TemporaryDirectory(prefix="sc-bench-") as tmp:
        source = await SessionStore.connect(url + "/0", namespace="bench", socket_timeout=60)
        target = await SessionStore.connect(url + "/1", namespace="bench", socket_timeout=60)
        p = Persistence(source, backup_dir=tmp, key=KEY)
        restorer = Persistence(target, backup_dir=tmp, key=KEY)
        try:
            print(f"loading {n} sessions of {args.fields} fields ...", flush=True)
            await load(source, n, args.fields)
            await p.create_backup(format=args.format)  # arms the change index (one-time)
            times: dict[str, list[float]] = {k: [] for k in ("dump", "backup", "load", "restore")}
            backup_id = ""
            for _ in range(args.rounds):
                t, dump = await _timed(raw_dump(source))
                times["dump"].append(t)
                assert len(dump) == n
                t, backup_id = await _timed(p.create_backup(format=args.format))
                times["backup"].append(t)
                await target.client.flushdb()
                t, _ = await _timed(raw_load(target, dump))
                times["load"].append(t)
                del dump
                await target.client.flushdb()
                t, report = await _timed(restorer.restore_backup(backup_id, "merge"))
                times["restore"].append(t)
                assert report.written == n
                await target.client.flushdb()
                for old in p.list_backups()[:-1]:
                    old.path.unlink()
            size = os.path.getsize(p.find(backup_id))
            backup_mem = _child_peak(url + "/0", "backup", tmp, "", args.format)
            restore_mem = _child_peak(url + "/1", "restore", tmp, backup_id, args.format)
            await target.client.flushdb()
        finally:
            await p.changes.disarm()
            await source.close()
            await target.close()

    med = {k: statistics.median(v) for k, v in times.items()}
    spread = {k: (min(v), max(v)) for k, v in times.items()}
    print(
        f"\npersistence: {n} sessions x {args.fields} fields, {args.format}, "
        f"{args.rounds} alternating rounds (median; min-max)"
    )
    print(f"{'operation':<34}{'seconds':>9}{'sessions/s':>12}{'  min-max s':>16}")
    for name, label in (
        ("dump", "raw SCAN+HGETALL dump"),
        ("backup", "create_backup"),
        ("load", "raw HSET+PEXPIREAT load"),
        ("restore", "restore_backup (merge)"),
    ):
        lo, hi = spread[name]
        print(f"{label:<34}{med[name]:>9.2f}{n / med[name]:>12,.0f}{lo:>8.2f}-{hi:<7.2f}")
    rows = [
        ("backup / raw dump", med["backup"] / med["dump"], 2.0),
        ("restore / raw dump", med["restore"] / med["dump"], 2.0),
        ("restore / raw load", med["restore"] / med["load"], 2.0),
    ]
    ok = True
    print(f"\n{'ratio':<34}{'value':>9}{'target':>8}  ok")
    for label, ratio, target_ratio in rows:
        ok_row = ratio <= target_ratio
        ok &= ok_row
        print(f"{label:<34}{ratio:>9.2f}{target_ratio:>8.2f}  {'yes' if ok_row else 'NO'}")
    print(f"\nbackup file: {size / 1e6:.1f} MB")
    for label, mem in (("backup", backup_mem), ("restore", restore_mem)):
        print(
            f"peak RSS {label:<8} {mem['peak_kb'] / 1024:8.1f} MiB "
            f"(process baseline {mem['baseline_kb'] / 1024:.1f} MiB, "
            f"+{(mem['peak_kb'] - mem['baseline_kb']) / 1024:.1f} MiB)"
        )
    return ok
