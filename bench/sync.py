"""Cross-channel sync: a synced update across two linked sessions against two plain updates."""

from __future__ import annotations

import argparse

from bench.common import Row, compare, print_table, server
from sessioncache.identity_links import IdentityLinks
from sessioncache.store import SessionStore
from sessioncache.sync import SyncConfig, SyncManager


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", type=int, default=1000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=3)


async def run(args: argparse.Namespace) -> bool:
    with server(args.url) as url:
        store = await SessionStore.connect(url, namespace="benchsync")
        try:
            return await _run(store, args)
        finally:
            keys = [k async for k in store.client.scan_iter(match="benchsync:*", count=1000)]
            for key in keys:
                await store.client.delete(key)
            await store.close()


async def _run(store: SessionStore, args: argparse.Namespace) -> bool:
    sync = SyncManager(store, IdentityLinks(store.client, store.keys),
                       SyncConfig(shared_fields=["topic"], mode="auto"))
    code = await sync.links.start_link("telegram", 1)
    await sync.links.confirm_link("discord", 2, code)
    tg = (await store.create(1, 1, "telegram")).session_id
    dc = (await store.create(2, 2, "discord")).session_id
    p1 = (await store.create(3, 3, "telegram")).session_id
    p2 = (await store.create(4, 4, "discord")).session_id

    async def synced(i: int) -> object:
        return await sync.write(tg, {"topic": f"t{i}"})

    async def plain(i: int) -> object:
        await store.set_field(p1, "topic", f"t{i}")
        return await store.set_field(p2, "topic", f"t{i}")

    ours, base = await compare(synced, plain, args.n, rounds=args.rounds)
    if (await store.get(dc)).data != (await store.get(tg)).data:
        raise SystemExit("the linked session did not receive the synced field")
    manual = SyncManager(store, sync.links, SyncConfig(shared_fields=["topic"], mode="manual"))

    async def stamped(i: int) -> object:
        return await manual.write(tg, {"topic": f"m{i}"})

    async def one_plain(i: int) -> object:
        return await store.set_field(p1, "topic", f"m{i}")

    m_ours, m_base = await compare(stamped, one_plain, args.n, rounds=args.rounds)
    # No ratio target yet: the rows show what a synced write costs (see docs/sync.md).
    return print_table("sync (sequential)", [
        Row("auto: synced update vs 2 plain updates", ours, base, 100.0),
        Row("manual: stamped write vs 1 plain update", m_ours, m_base, 100.0),
    ])
