"""The demo: worker processes serve simulated users on one shared server, then a checked report.

Each message of a user goes to a different worker (as behind a load balancer), so every
session is written by several processes at once. The demo is a list of small steps (STEPS);
each feature adds one, and each step adds its lines and checks to the report.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import secrets
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidTransition, ValidationError, VersionConflict
from .events import EventType
from .models import Platform, SessionState
from .redaction import redact_url
from .storage import EMBEDDED_SCHEME, resolve_storage, storage_from_url
from .system import SessionSystem

PLATFORMS = (Platform.TELEGRAM, Platform.DISCORD, Platform.SLACK, Platform.WEB)
_CONCURRENCY = 32  # messages in flight per worker


def user_session(user: int) -> tuple[str, str, Platform]:
    """The chat, user and platform of simulated user number ``user``."""
    return f"chat-{user}", f"user-{user}", PLATFORMS[user % len(PLATFORMS)]


def session_id(user: int) -> str:
    chat, uid, platform = user_session(user)
    return f"{platform.value}:{chat}:{uid}"


@dataclass
class DemoReport:
    """What the demo did and measured, and the checks that show nothing was lost."""

    backend: str
    workers: int
    users: int
    messages: int
    lines: list[str] = field(default_factory=list)
    checks: list[tuple[str, Any, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def check(self, what: str, expected: Any, actual: Any) -> None:
        """Record an exact count: the report passes only when every one matches."""
        self.checks.append((what, expected, actual))

    @property
    def ok(self) -> bool:
        return all(expected == actual for _, expected, actual in self.checks)

    def print(self, as_json: bool = False) -> None:
        """The report for people, or as JSON."""
        if as_json:
            checks = [{"check": w, "expected": e, "actual": a} for w, e, a in self.checks]
            print(
                json.dumps(
                    {**self.figures, "ok": self.ok, "lines": self.lines, "checks": checks},
                    indent=2,
                    default=str,
                )
            )
            return
        print(f"sessioncache demo: {self.workers} worker processes, {self.users} users, "
              f"{self.messages} messages each, on {self.backend}")  # fmt: skip
        for line in self.lines:
            print(f"  {line}")
        print("checks (exact counts):")
        for what, expected, actual in self.checks:
            mark = "ok  " if expected == actual else "FAIL"
            print(
                f"  {mark} {what}: {actual}"
                + ("" if expected == actual else f" (expected {expected})")
            )
        print("result: " + ("nothing lost" if self.ok else "MISMATCH (see FAIL above)"))


# -- the worker processes ------------------------------------------------------------------


def _worker(
    url: str, namespace: str, items: list[tuple[int, int]]
) -> tuple[dict[str, int], float, float]:
    """Entry point of one worker process (spawned): serve its (user, message) items.

    Returns the counts and the wall-clock start and end of the serving (process start-up and
    connecting are left out of the throughput)."""
    return asyncio.run(_serve(url, namespace, items))


async def _serve(
    url: str, namespace: str, items: list[tuple[int, int]]
) -> tuple[dict[str, int], float, float]:
    counts: Counter[str] = Counter()
    system = await SessionSystem.open(
        *storage_from_url(url), namespace=namespace, health_interval=None
    )
    try:
        semaphore = asyncio.Semaphore(_CONCURRENCY)

        async def one(user: int, message: int) -> None:
            async with semaphore:
                await _handle_message(system, user, message, counts)

        began = time.time()
        await asyncio.gather(*(one(u, m) for u, m in items))
        ended = time.time()
    finally:
        await system.shutdown()
    return dict(counts), began, ended


async def _handle_message(
    system: SessionSystem, user: int, message: int, counts: Counter[str]
) -> None:
    """What a bot does per incoming message: find the session, take the conversation's turn
    (one worker at a time per conversation, fleet-wide), activate it, log, remember, count."""
    chat, uid, platform = user_session(user)
    session = await system.get_or_create_session(chat, uid, platform, data={"turns": 0})
    sid = session.session_id
    await system.track_event(sid, EventType.MESSAGE_RECEIVED, text=f"message {message}")
    async with system.turn(sid, timeout=120):
        current = await system.get_session(sid)
        assert current is not None
        if current.state == SessionState.NEW:
            try:
                current = await system.transition(sid, SessionState.ACTIVE, reason="first message")
                counts["activated"] += 1
            except (InvalidTransition, VersionConflict):
                counts["activation_races_lost"] += 1  # cannot happen inside the turn
        await system.append_message(sid, "user", f"message {message}")
        while True:  # read-modify-write with optimistic concurrency as the safety net
            try:
                await system.update_session(
                    sid, data={"turns": current.data["turns"] + 1}, expected_version=current.version
                )
                break
            except VersionConflict:
                counts["version_conflicts_retried"] += 1  # cannot happen inside the turn
                current = await system.get_session(sid)
                assert current is not None
    counts["messages"] += 1


# -- the steps -------------------------------------------------------------------------------


@dataclass
class DemoRun:
    """What the steps share: the parent's system, the URL workers use, the report."""

    system: SessionSystem
    url: str
    namespace: str
    report: DemoReport
    workdir: Path


Step = Callable[[DemoRun], Awaitable[None]]


async def serve_users(run: DemoRun) -> None:
    """Worker processes handle every message; message m of user u goes to worker (u+m) % W."""
    r = run.report
    plan: list[list[tuple[int, int]]] = [[] for _ in range(r.workers)]
    for message in range(r.messages):  # users' messages arrive in turn, as in a real chat
        for user in range(r.users):
            plan[(user + message) % r.workers].append((user, message))
    loop = asyncio.get_running_loop()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=r.workers, mp_context=context) as pool:
        outcomes = await asyncio.gather(
            *(loop.run_in_executor(pool, _worker, run.url, run.namespace, p) for p in plan)
        )
    results = [counts for counts, _, _ in outcomes]
    elapsed = max(end for _, _, end in outcomes) - min(start for _, start, _ in outcomes)
    total: Counter[str] = Counter()
    for result in results:
        total.update(result)
    rate = total["messages"] / elapsed
    r.figures.update(elapsed_s=round(elapsed, 3), messages_per_s=round(rate, 1), **total)
    r.lines.append(
        f"served {total['messages']} messages in {elapsed:.2f}s: {rate:,.0f} messages/s "
        f"across {r.workers} processes (each: get-or-create, event, turn, history, "
        "read-modify-write)"
    )
    r.lines.append(
        f"per worker: {', '.join(str(res.get('messages', 0)) for res in results)} messages; "
        "each conversation's messages went to several workers, one at a time (turn lock)"
    )
    r.check("messages handled by the workers", r.users * r.messages, total["messages"])
    r.check("sessions activated exactly once", r.users, total["activated"])
    r.check("version conflicts inside a turn", 0, total["version_conflicts_retried"])


async def verify_sessions(run: DemoRun) -> None:
    """Every session holds every message: turns, message count and events, exactly."""
    r, system = run.report, run.system
    sessions = [await system.get_session(session_id(u)) for u in range(r.users)]
    present = [s for s in sessions if s is not None]
    received = remembered = 0
    for s in present:
        events = await system.get_events(
            s.session_id, types=[EventType.MESSAGE_RECEIVED], limit=r.messages + 10
        )
        received += len(events)
        remembered += len(await system.get_history(s.session_id))
    by_platform = Counter(s.platform.value for s in present)
    r.lines.append(
        "sessions by platform: " + ", ".join(f"{p} {n}" for p, n in sorted(by_platform.items()))
    )
    r.check("sessions in the store", r.users, await system.count_sessions())
    r.check("sessions active", r.users, sum(s.state == SessionState.ACTIVE for s in present))
    r.check("turns counted (no lost update)", r.users * r.messages,
            sum(s.data.get("turns", 0) for s in present))  # fmt: skip
    r.check("messages counted on the sessions", r.users * r.messages,
            sum(s.message_count for s in present))  # fmt: skip
    r.check("message events recorded", r.users * r.messages, received)
    kept = min(r.messages, system.config.context.history.max_messages or r.messages)
    r.check("messages in the conversation histories", r.users * kept, remembered)


async def backup_and_restore(run: DemoRun) -> None:
    """A backup, verified; then a tenth of the sessions lost and restored from it."""
    r, system = run.report, run.system
    backup_id = await system.create_backup(description="demo", events=True)
    verified = await system.verify_backup(backup_id)
    lost = list(range(0, r.users, 10))
    for user in lost:
        await system.delete_session(session_id(user))
    began = time.perf_counter()
    restored = await system.restore_backup(backup_id, strategy="merge")
    elapsed = time.perf_counter() - began
    r.lines.append(
        f"backup {backup_id}: verified {verified.sessions} sessions; deleted {len(lost)}, "
        f"restored {restored.written} in {elapsed * 1000:.0f} ms"
    )
    r.check("backup verified", True, verified.ok)
    r.check("sessions in the backup", r.users, verified.sessions)
    r.check("sessions after restore", r.users, await system.count_sessions())
    back = [await system.get_session(session_id(u)) for u in lost]
    r.check("restored sessions with every turn", len(lost) * r.messages,
            sum(s.data.get("turns", 0) for s in back if s is not None))  # fmt: skip


STEPS: list[Step] = [serve_users, verify_sessions, backup_and_restore]


async def run_demo(
    url: str | None = None, *, workers: int = 4, users: int = 200, messages: int = 5
) -> DemoReport:
    """Run every step on ``url`` (default: an EMBEDDED server in a temporary directory)."""
    workdir = Path(tempfile.mkdtemp(prefix="sessioncache-demo-"))
    url = url or f"{EMBEDDED_SCHEME}{workdir / 'data'}"
    kind, config = storage_from_url(url)
    if kind == "MEMORY":
        raise ValidationError("the demo runs worker processes: memory:// lives in one process")
    storage = resolve_storage(kind, config)
    shown = f"{kind} {storage.server.data_dir}" if storage.server else redact_url(storage.url)
    report = DemoReport(shown, workers, users, messages)
    namespace = f"demo{secrets.token_hex(3)}"
    system = await SessionSystem.open(
        kind, config, namespace=namespace, backup_dir=workdir / "backups", health_interval=None
    )
    try:
        run = DemoRun(system, url, namespace, report, workdir)
        for step in STEPS:
            await step(run)
        health = await system.health_check(restart=False)
        report.lines.append(f"health: {health['status']}")
    finally:
        await _drop_namespace(system)
        await system.shutdown()
        left = storage.server.running_pid() if storage.server is not None else None
        shutil.rmtree(workdir, ignore_errors=True)
    if storage.server is not None:
        state = "stopped" if left is None else f"running (pid {left})"
        report.check("embedded server after the last process left", "stopped", state)
    return report


async def _drop_namespace(system: SessionSystem) -> None:
    store = system.store
    keys = [k async for k in store.client.scan_iter(match=store.keys.all_pattern(), count=1000)]
    for key in keys:
        await store.client.delete(key)


def main() -> None:
    """``python -m sessioncache.demo``: the demo with its defaults."""
    report = asyncio.run(run_demo())
    report.print()


if __name__ == "__main__":
    main()
