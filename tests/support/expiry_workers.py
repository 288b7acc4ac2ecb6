"""Worker processes for the expiry fleet tests: sweepers (one killed mid-sweep) and senders."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

IDLE_RULES: list[dict[str, Any]] = [
    {"name": "keep", "policy": "idle", "after": 30, "action": "archive", "platform": "keep"},
    {"name": "idle", "policy": "idle", "after": 1.5, "action": "archive"},
]


def _kind(url: str) -> str:
    return "CLUSTER" if "+cluster" in url else "REDIS"


async def _start(url: str, namespace: str, interval: float) -> Any:
    from sessioncache.system import SessionSystem

    return await SessionSystem.start(
        _kind(url),
        {"url": url, "socket_timeout": 10.0},
        namespace=namespace,
        expiry_rules=IDLE_RULES,
        expiry_interval=interval,
    )


def sweeper(
    url: str, namespace: str, interval: float, kill_after: int, stop: Any, barrier: Any
) -> None:
    """Run SessionSystem's expiry scheduler until `stop` is set. With kill_after > 0, also
    sweep at once by hand and SIGKILL this process after that many acting script calls."""

    async def main() -> None:
        system = await _start(url, namespace, interval)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, barrier.wait)
        if kill_after:
            acts = 0
            act = system.expiry.act

            async def dying(*args: Any) -> list[str]:
                nonlocal acts
                done = await act(*args)
                acts += len(done)
                if acts >= kill_after:
                    os.kill(os.getpid(), signal.SIGKILL)
                return done

            system.expiry.act = dying  # type: ignore[method-assign]
            while True:
                await system.cleanup_expired_sessions()
                await asyncio.sleep(0.05)
        await loop.run_in_executor(None, stop.wait)
        await system.shutdown()

    asyncio.run(main())


def sender(url: str, namespace: str, session_ids: list[str], rounds: int, barrier: Any) -> None:
    """Send `rounds` messages to each session (touch with messages=1, then an event)."""

    async def main() -> None:
        system = await _start(url, namespace, 3600.0)
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
        for _ in range(rounds):
            await asyncio.gather(*(system.touch_session(s, messages=1) for s in session_ids))
        await system.shutdown()

    asyncio.run(main())
