"""Worker processes for the cross-process lock test (no framework imports: they start fast)."""

from __future__ import annotations

import asyncio
from typing import Any

from .workers import run_fleet


def locked_increments(url: str, lock_key: str, counter_key: str, n: int, barrier: Any) -> None:
    """n read-modify-write increments of a plain counter, each under the shared lock."""

    async def main() -> None:
        from sessioncache.backends import RedisSettings, connect
        from sessioncache.locks import RedisLock

        client = connect(RedisSettings(url=url, socket_timeout=10.0))
        await client.ping()
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
        for _ in range(n):
            async with RedisLock(client, lock_key, timeout=10, blocking_timeout=60):
                value = int(await client.get(counter_key) or 0)
                await asyncio.sleep(0)  # widen the window a lost update would need
                await client.set(counter_key, value + 1)
        await client.aclose()

    asyncio.run(main())


def run_locked_fleet(url: str, lock_key: str, counter_key: str, workers: int, n: int) -> None:
    run_fleet(locked_increments, [(url, lock_key, counter_key, n)] * workers)
