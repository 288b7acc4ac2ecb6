"""Sweeping processes for tests/test_expiry_faults.py, on short socket timeouts so that a
stopped server times their calls out and redis-py retries them (importable by spawn)."""

from __future__ import annotations

import asyncio
from typing import Any

from sessioncache.system import SessionSystem

from .expiry_workers import IDLE_RULES

STALL_CONNECTION: dict[str, Any] = {
    "socket_timeout": 0.5,
    "socket_connect_timeout": 0.5,
    "retries": 10,
    "backoff_cap": 0.2,
}


async def start_stalling(
    url: str, namespace: str, interval: float, **options: Any
) -> SessionSystem:
    options.setdefault("expiry_rules", IDLE_RULES)
    return await SessionSystem.start(
        "REDIS",
        {"url": url, **STALL_CONNECTION},
        namespace=namespace,
        expiry_interval=interval,
        **options,
    )


def stalled_sweeper(url: str, namespace: str, stop: Any, barrier: Any) -> None:
    """Run the expiry scheduler (every 0.3 s) until ``stop`` is set, on short timeouts."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        system = await start_stalling(url, namespace, 0.3)
        try:
            await loop.run_in_executor(None, barrier.wait)
            await loop.run_in_executor(None, stop.wait)
        finally:
            await system.shutdown()

    asyncio.run(main())
