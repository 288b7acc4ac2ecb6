"""Writer processes for tests/test_retries.py (importable by multiprocessing's spawn)."""

from __future__ import annotations

import asyncio
from typing import Any

from sessioncache import SessionStore

# Short socket timeout so a stopped server times every in-flight call out and redis-py retries
# it on a new connection while the first attempt still sits in the server's socket buffer.
STALL_OPTIONS: dict[str, Any] = {
    "socket_timeout": 0.5,
    "socket_connect_timeout": 0.5,
    "retries": 10,
    "backoff_cap": 0.2,
}


async def _write(url: str, namespace: str, session_id: str, worker: int, n: int, gate: Any) -> None:
    store = await SessionStore.connect(url, namespace=namespace, **STALL_OPTIONS)
    try:
        for phase in range(2):
            for i in range(n):
                await store.touch(session_id, messages=1)
                await store.set_field(session_id, f"w{worker}", i)
            if phase == 0:
                gate.wait()  # every writer is warm: the test stops the server now
    finally:
        await store.close()


def write(url: str, namespace: str, session_id: str, worker: int, n: int, gate: Any) -> None:
    """2n touch(messages=1) and 2n set_field calls; waits at ``gate`` after the first half."""
    asyncio.run(_write(url, namespace, session_id, worker, n, gate))
