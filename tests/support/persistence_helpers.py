"""Shared helpers of the persistence tests: state digests and bulk loading."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from sessioncache.persistence import Persistence
from sessioncache.store import SessionStore


async def state(store: SessionStore) -> dict[bytes, tuple[dict[bytes, bytes], int]]:
    """Every session hash of the namespace with its absolute expiry (ms)."""
    client = store.client
    keys = [k async for k in client.scan_iter(match=store.keys.session_pattern(), count=1000)]
    out = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        async with client.pipeline(transaction=False) as pipe:
            for key in chunk:
                pipe.hgetall(key)
                pipe.pexpiretime(key)
            replies = await pipe.execute()
        for i, key in enumerate(chunk):
            out[key] = (replies[2 * i], replies[2 * i + 1])
    return out


async def digest(store: SessionStore) -> tuple[int, str]:
    """Count and one SHA-256 over every session hash and expiry, order-independent."""
    snapshot = await state(store)
    h = hashlib.sha256()
    for key in sorted(snapshot):
        fields, expiry = snapshot[key]
        h.update(key + b"\0" + str(expiry).encode())
        for name in sorted(fields):
            h.update(b"\1" + name + b"\2" + fields[name])
    return len(snapshot), h.hexdigest()


async def streams(store: SessionStore) -> dict[bytes, tuple[list[Any], int]]:
    """Every event stream of the namespace: its entries (ids and fields) and expiry (ms)."""
    client = store.client
    pattern = f"{store.keys.namespace}:ev:*"
    keys = sorted([k async for k in client.scan_iter(match=pattern, count=1000)])
    out = {}
    for key in keys:
        out[key] = (await client.xrange(key), await client.pexpiretime(key))
    return out


async def all_keys(store: SessionStore) -> dict[bytes, Any]:
    """Every key of the namespace with its content and expiry (for 'Redis unchanged' checks)."""
    client = store.client
    pattern = store.keys.all_pattern()
    # SCAN ... TYPE per kind instead of one TYPE call per key: a cluster namespace holds 16384
    # change buckets once armed, and every round trip there costs.
    # Op logs are left out: the store's writes add to them and they expire on their own (a
    # minute), which a slow test would see as a change; a restore never writes them.
    op_logs = store.keys.op_log_pattern()[:-1].encode()
    kinds: dict[bytes, str] = {}
    for kind in ("hash", "zset", "stream", "string", "set", "list"):
        async for key in client.scan_iter(match=pattern, count=1000, _type=kind):
            if not key.startswith(op_logs):
                kinds[key] = kind
    keys = list(kinds)
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            kind = kinds[key]
            if kind == "hash":
                pipe.hgetall(key)
            elif kind == "zset":
                pipe.zrange(key, 0, -1, withscores=True)
            elif kind == "stream":
                pipe.xrange(key)
            elif kind == "set":
                pipe.smembers(key)
            elif kind == "list":
                pipe.lrange(key, 0, -1)
            else:
                pipe.get(key)
            pipe.pexpiretime(key)
        replies = await pipe.execute()
    return {k: (kinds[k], replies[2 * i], replies[2 * i + 1]) for i, k in enumerate(keys)}


async def bulk_load(store: SessionStore, n: int, fields: int = 20, *, user_groups: int = 0) -> None:
    """n sessions written with pipelined raw HSET (same layout the scripts write), fast."""
    client = store.client
    keys = store.keys
    now = 1_900_000_000_000  # far future expiry, fixed so digests are reproducible
    batch = 2000
    for start in range(0, n, batch):
        async with client.pipeline(transaction=False) as pipe:
            for i in range(start, min(n, start + batch)):
                user = f"u{i % user_groups}" if user_groups else f"u{i}"
                ident = store.identity(f"c{i}", user, "telegram")
                key = keys.session(ident)
                mapping: dict[str, Any] = {
                    "v": str(1 + i % 7),
                    "s": "active",
                    "c": "1700000000000",
                    "u": "1700000000500",
                    "a": "1700000000900",
                    "e": str(now + i),
                    "m": str(i % 13),
                    "o": "abcde",
                }
                for f in range(fields):
                    mapping[f"field{f}"] = (
                        f"value-{i}-{f}" if f % 2 else b"\xc1" + bytes([f, i % 256])
                    )
                pipe.hset(key, mapping=mapping)
                pipe.pexpireat(key, now + i)
                pipe.hset(keys.user_index(ident.user_tag), ident.suffix, "1")
            await pipe.execute()


def merge_writer(
    url: str, namespace: str, session_ids: list[str], rounds: int, started: Any
) -> None:
    """Child process: `rounds` updates of data field w (1..rounds) on each of its sessions."""
    import asyncio

    async def main() -> None:
        store = await SessionStore.connect(url, namespace=namespace, socket_timeout=10.0)
        try:
            for i in range(1, rounds + 1):
                for sid in session_ids:
                    await store.update(sid, data={"w": i})
                if i == 1:
                    started.set()
        finally:
            await store.close()

    asyncio.run(main())


def scheduled_fleet_member(
    url: str, namespace: str, directory: str, key: str, seconds: float
) -> None:
    """Child process: run APScheduler backups every 0.2 s for `seconds`, writing meanwhile."""
    import asyncio

    from sessioncache.persistence.scheduler import BackupScheduler

    async def main() -> None:
        store = await SessionStore.connect(url, namespace=namespace, socket_timeout=10.0)
        scheduler = BackupScheduler(
            Persistence(store, backup_dir=directory, key=key, lease_ttl=5.0),
            backup_interval=0.2,
            full_every=4,
        ).start()
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + seconds
            i = 0
            while loop.time() < deadline:
                await store.get_or_create(f"p{os.getpid()}-{i % 20}", "fleet", "web")
                await store.update(f"web:p{os.getpid()}-{i % 20}:fleet", data={"i": i})
                i += 1
                await asyncio.sleep(0.005)
        finally:
            await scheduler.stop()  # after a running job, before the store closes
            await store.close()

    asyncio.run(main())


def forge_records(monkeypatch: Any) -> None:
    """Let BackupWriter write records it would refuse (as a forger's or an old version's
    writer would), so the tests can check that every reader refuses them."""
    from sessioncache.persistence.container import BackupWriter

    monkeypatch.setattr(BackupWriter, "check_records", staticmethod(lambda records: records))
