"""Worker processes for the expiry fleet tests: sweepers (one killed mid-sweep) and senders."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

IDLE_RULES: list[dict[str, Any]] = [
    {"name": "keep", "policy": "idle", "after": 30, "action": "archive", "platform": "keep"},
    {"name": "idle", "policy": "idle", "after": 1.5, "action": "archive"},
]


def _kind(url: str) -> str:
    if url.startswith("memory://"):
        return "MEMORY"
    return "CLUSTER" if "+cluster" in url else "REDIS"


async def _pipelined(client: Any, calls: list[tuple[Any, list[str], list[Any]]]) -> list[Any]:
    async with client.pipeline(transaction=False) as pipe:
        for script, keys, args in calls:
            # execute_command: redis-py blocks evalsha on cluster pipelines (see batch.py).
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        return list(await pipe.execute())


async def bulk_create(system: Any, ids: list[tuple[str, str, str]], chunk: int = 1000) -> None:
    """Create sessions (platform, chat, user) and arm their rule as create_session does, the
    same scripts sent in pipelines of ``chunk``: the setup of 20,000 sessions in seconds."""
    from sessioncache.expiry.rules import first_match
    from sessioncache.models import session_from_hash

    store, engine = system.store, system.expiry
    for start in range(0, len(ids), chunk):
        idents = [store.identity(c, u, p) for p, c, u in ids[start : start + chunk]]
        calls = [
            (store.scripts.create, *store._create_args(i, "create", None, None, "new", 0, None))
            for i in idents
        ]
        replies = await _pipelined(store.client, calls)
        now = await engine._now()
        arms = []
        for ident, (_, keys, _), reply in zip(idents, calls, replies, strict=True):
            assert reply[0] == 1, reply
            session = session_from_hash(ident, keys[0], reply[1])
            spec = engine.spec(first_match(engine.rules, ident, 0), session, now)
            x = "" if spec.fixed is None else str(spec.fixed)
            created = str(round(session.created_at.timestamp() * 1000))
            arms.append(
                (
                    store.scripts.expiry_arm,
                    [keys[0], engine.index_of(ident)],
                    [x, spec.field_y(), created],
                )
            )
        for reply in await _pipelined(store.client, arms):
            assert reply[0] == 1, reply


async def _start(url: str, namespace: str, interval: float, **options: Any) -> Any:
    from sessioncache.system import SessionSystem

    options.setdefault("expiry_rules", IDLE_RULES)
    return await SessionSystem.start(
        _kind(url),
        {"url": url, "socket_timeout": 10.0},
        namespace=namespace,
        expiry_interval=interval,
        **options,
    )


async def sweeping(
    url: str,
    namespace: str,
    interval: float,
    kill_after: int,
    stopped: Callable[[], Awaitable[Any]],
) -> bool:
    """Run SessionSystem's expiry scheduler until ``stopped()`` returns. With kill_after > 0,
    also sweep at once by hand and die after that many actions: SIGKILL in a process of its
    own; on memory:// (one process) the sweep is cancelled where it stands and the scheduler
    stopped, nothing more of it runs. Returns whether it was killed."""
    system = await _start(url, namespace, interval)
    if not kill_after:
        await stopped()
        await system.shutdown()
        return False
    me = asyncio.current_task()
    assert me is not None
    acts = 0
    act = system.expiry.act

    async def dying(*args: Any) -> list[str]:
        nonlocal acts
        if acts >= kill_after:  # dead: nothing more runs (the scheduled job's calls too)
            raise asyncio.CancelledError
        done = await act(*args)
        acts += len(done)
        if acts >= kill_after:
            if not url.startswith("memory://"):
                os.kill(os.getpid(), signal.SIGKILL)
            system.expiry_scheduler.pause()
            me.cancel()
            raise asyncio.CancelledError
        return done

    system.expiry.act = dying
    try:
        while True:
            await system.cleanup_expired_sessions()
            await asyncio.sleep(0.05)
    except asyncio.CancelledError:
        await system.shutdown()
        return True


def sweeper(
    url: str, namespace: str, interval: float, kill_after: int, stop: Any, barrier: Any
) -> None:
    """sweeping() in a process of its own, started at a barrier, stopped by an Event."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, barrier.wait)
        await sweeping(
            url, namespace, interval, kill_after, lambda: loop.run_in_executor(None, stop.wait)
        )

    asyncio.run(main())


def effect_killer(url: str, namespace: str, archive_dir: str, calls_file: str) -> None:
    """Sweep with a notify callback and an archive_dir, and SIGKILL this process right after
    the first acting script returned, before any effect it recorded is delivered."""

    async def main() -> None:
        system = await _start(url, namespace, 3600.0, **effect_options(archive_dir, calls_file))

        async def die(*args: Any) -> int:
            os.kill(os.getpid(), signal.SIGKILL)
            return 0

        system.expiry.effects.deliver = die
        await system.cleanup_expired_sessions()

    asyncio.run(main())


def effect_options(archive_dir: str, calls_file: str) -> dict[str, Any]:
    """A notify callback that appends each notice id to ``calls_file`` (one line each; a
    file, so calls from several processes add up), and the archive directory."""

    def notify(notice: Any) -> None:
        with open(calls_file, "a", encoding="utf-8") as out:
            out.write(notice.notice_id + "\n")

    return {
        "archive_dir": archive_dir,
        "expiry_notify": notify,
        "expiry_effect_lease": 0.5,
        "expiry_rules": EFFECT_RULES,
    }


EFFECT_RULES: list[dict[str, Any]] = [
    {"name": "tell", "policy": "idle", "after": 0.3, "action": "notify", "platform": "tell"},
    {"name": "idle", "policy": "idle", "after": 0.3, "action": "archive"},
]


SLOW_RULES: list[dict[str, Any]] = [
    {"name": "tell", "policy": "idle", "after": 0.3, "action": "notify"},
]


def slow_notify_options(calls_file: str, slow: float, lease: float) -> dict[str, Any]:
    """A notify callback that appends "<pid> <notice id>" to ``calls_file`` as it starts, then
    takes ``slow`` seconds (longer than the effect lease ``lease``)."""

    async def notify(notice: Any) -> None:
        with open(calls_file, "a", encoding="utf-8") as out:
            out.write(f"{os.getpid()} {notice.notice_id}\n")
        await asyncio.sleep(slow)

    return {
        "expiry_notify": notify,
        "expiry_effect_lease": lease,
        "expiry_rules": SLOW_RULES,
    }


async def slow_sweeping(
    url: str,
    namespace: str,
    calls_file: str,
    slow: float,
    lease: float,
    stopped: Callable[[], Awaitable[Any]],
) -> None:
    """Sweep by hand in a loop, with slow_notify_options(), until ``stopped()`` returns (the
    sweep under way finishes first)."""
    system = await _start(url, namespace, 3600.0, **slow_notify_options(calls_file, slow, lease))
    stop = asyncio.ensure_future(stopped())
    while not stop.done():
        await system.cleanup_expired_sessions()
        await asyncio.sleep(0.05)
    await system.shutdown()


def slow_sweeper(
    url: str, namespace: str, calls_file: str, slow: float, lease: float, stop: Any, barrier: Any
) -> None:
    """slow_sweeping() in a process of its own, started at a barrier, stopped by an Event."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, barrier.wait)
        await slow_sweeping(
            url, namespace, calls_file, slow, lease, lambda: loop.run_in_executor(None, stop.wait)
        )

    asyncio.run(main())


async def sending(url: str, namespace: str, session_ids: list[str], rounds: int) -> None:
    """Send `rounds` messages to each session (touch with messages=1)."""
    system = await _start(url, namespace, 3600.0)
    for _ in range(rounds):
        await asyncio.gather(*(system.touch_session(s, messages=1) for s in session_ids))
    await system.shutdown()


def sender(url: str, namespace: str, session_ids: list[str], rounds: int, barrier: Any) -> None:
    """sending() in a process of its own, started at a barrier."""

    async def main() -> None:
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
        await sending(url, namespace, session_ids, rounds)

    asyncio.run(main())
