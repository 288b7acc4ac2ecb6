"""The demo's cross-channel step: users link a second platform with a one-time code and go on
there, and the shared profile follows them both ways (identity links and sync, docs/sync.md)."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from .demo_base import PLATFORMS, DemoRun, session_id, user_session
from .errors import SessionCacheError
from .events import EventType
from .models import Platform
from .storage import storage_from_url
from .system import SessionSystem

SHARED = ("profile",)
"""The data field linked sessions share (sync_shared_fields)."""
LANGUAGES = ("en", "de", "fr", "es")


def second_identity(user: int) -> tuple[str, str, Platform]:
    """The chat, user and platform of user ``user``'s account on its second platform."""
    platform = PLATFORMS[(user + 1) % len(PLATFORMS)]
    return f"chat-{user}-2", f"{platform.value}-user-{user}", platform


def profile(user: int) -> dict[str, str]:
    """What user ``user`` tells the bot on the first platform (a shared field)."""
    return {"name": f"User {user}", "language": LANGUAGES[user % len(LANGUAGES)]}


def _link_worker(url: str, namespace: str, conn: Connection) -> None:
    """Entry point of one worker process (spawned): serves the parent's batches until None."""
    asyncio.run(_link_serve(url, namespace, conn))


async def _link_serve(url: str, namespace: str, conn: Connection) -> None:
    system = await SessionSystem.open(
        *storage_from_url(url),
        namespace=namespace,
        sync_shared_fields=SHARED,
        sync_mode="auto",
        health_interval=None,
    )
    try:
        conn.send(os.getpid())
        while (batch := await asyncio.to_thread(conn.recv)) is not None:
            conn.send(await _handle(system, batch))
    finally:
        await system.shutdown()
        conn.close()


async def _handle(system: SessionSystem, batch: list[tuple[int, str]]) -> dict[str, Any]:
    """With no code, a user tells the bot a profile on the first platform and asks for a code;
    with a code, the user confirms it on the second platform and goes on there."""
    out: dict[str, Any] = {"codes": {}, "confirmed": [], "arrived": 0}
    for user, code in batch:
        if not code:
            _, uid, platform = user_session(user)
            await system.update_session(session_id(user), data={"profile": profile(user)})
            out["codes"][user] = await system.start_link(platform, uid)
            continue
        chat, uid, platform = second_identity(user)
        await system.confirm_link(platform, uid, code)
        out["confirmed"].append(user)
        # The first message there: a new session, which takes the person's shared fields.
        session = await system.scoped_session(chat, uid, platform)
        out["arrived"] += session.data.get("profile") == profile(user)
        await system.track_event(session.session_id, EventType.MESSAGE_RECEIVED, text="hi")
        changed = {**profile(user), "channel": platform.value}
        await system.update_session(session.session_id, data={"profile": changed})
    return out


class _Workers:
    """Worker processes the parent hands batches to, each by number (so a code made by one is
    confirmed by the next)."""

    def __init__(self, run: DemoRun, n: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.processes: list[BaseProcess] = []
        for _ in range(n):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_link_worker, args=(run.url, run.namespace, theirs), daemon=True
            )
            process.start()
            theirs.close()
            self.conns.append(ours)
            self.processes.append(process)

    async def _recv(self, conn: Connection) -> Any:
        try:
            return await asyncio.to_thread(conn.recv)
        except EOFError:
            raise SessionCacheError("a demo worker process exited early") from None

    async def ready(self) -> list[int]:
        """The workers' pids, once each has connected."""
        return list(await asyncio.gather(*(self._recv(c) for c in self.conns)))

    async def each(self, batches: list[list[tuple[int, str]]]) -> list[dict[str, Any]]:
        """Batch i to worker i; their results in order."""
        for conn, batch in zip(self.conns, batches, strict=True):
            conn.send(batch)
        return list(await asyncio.gather(*(self._recv(c) for c in self.conns)))

    async def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        for process in self.processes:
            await asyncio.to_thread(process.join, 60)
            if process.is_alive():
                process.kill()
        for conn in self.conns:
            conn.close()


async def cross_channel_link(run: DemoRun) -> None:
    """Some users link a second platform: a worker process gives each a one-time code on the
    first platform, another confirms it on the second, where the user's new session arrives
    with the shared profile; a change made there reaches the first platform's session."""
    r, system = run.report, run.system
    users = list(range(r.users))[5::10] or [0]
    n = max(1, min(r.workers, len(users)))
    workers = _Workers(run, n)
    try:
        pids = await workers.ready()
        began = time.perf_counter()
        asked = await workers.each([[(u, "") for u in users[i::n]] for i in range(n)])
        # Worker i's codes go to worker i + 1: each is typed in by the user on another channel,
        # where another process serves it.
        codes = [asked[(i - 1) % n]["codes"] for i in range(n)]
        confirmed = await workers.each([sorted(c.items()) for c in codes])
        elapsed = time.perf_counter() - began
    finally:
        await workers.close()
    made_by = {u: pids[i] for i, out in enumerate(asked) for u in out["codes"]}
    by_other = sum(made_by[u] != pids[i] for i, out in enumerate(confirmed)
                   for u in out["confirmed"])  # fmt: skip
    run.added_sessions += len(users)
    came_back = persons = 0
    for u in users:
        _, uid, platform = user_session(u)
        home = await system.get_session(session_id(u), fresh=True)
        shared = home.data.get("profile") if home is not None else None
        came_back += shared == {**profile(u), "channel": second_identity(u)[2].value}
        persons += len(await system.linked_identities(platform, uid)) == 2
    arrived = sum(out["arrived"] for out in confirmed)
    r.features.append("a cross-channel link")
    r.lines.append(
        f"cross-channel: {len(users)} users linked a second platform with a one-time code "
        + ("(made by one worker process, confirmed by another); " if n > 1 else "; ")
        + f"{arrived} new sessions there "
        f"started with the shared profile, and {came_back} profile changes made there reached "
        f"the first platform ({elapsed:.2f}s, sync_mode auto)"
    )
    r.check("identities linked by a one-time code", len(users),
            sum(len(out["confirmed"]) for out in confirmed))  # fmt: skip
    r.check("persons with two linked identities", len(users), persons)
    r.check("codes confirmed by another worker process", len(users) if n > 1 else 0, by_other)
    r.check("second-platform sessions that arrived with the shared profile", len(users), arrived)
    r.check("changes on the second platform that reached the first", len(users), came_back)
