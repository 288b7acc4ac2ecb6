"""The demo: worker processes serve simulated users on one shared server, then a checked report.

Each message of a user goes to a different worker (as behind a load balancer), so every
session is written by several processes at once. The demo is a list of small steps (STEPS);
each feature adds one, and each step adds its lines and checks to the report.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import secrets
import shutil
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TextIO

from .demo_base import (
    PLATFORMS,
    DemoReport,
    DemoRun,
    Step,
    drop_namespace,
    session_id,
    user_session,
)
from .demo_link import cross_channel_link
from .errors import InvalidTransition, ValidationError, VersionConflict
from .events import EventType
from .models import SessionState
from .redaction import redact_url
from .storage import EMBEDDED_SCHEME, resolve_storage, storage_from_url
from .system import SessionSystem

_CONCURRENCY = 32  # messages in flight per worker


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
    r.features += ["worker processes sharing sessions", "state transitions", "events",
                   "turn lock", "conversation history"]  # fmt: skip
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
    r.features.append("backup and verified restore")
    r.check("backup verified", True, verified.ok)
    r.check("sessions in the backup", run.sessions, verified.sessions)
    r.check("sessions after restore", run.sessions, await system.count_sessions())
    back = [await system.get_session(session_id(u)) for u in lost]
    r.check("restored sessions with every turn", len(lost) * r.messages,
            sum(s.data.get("turns", 0) for s in back if s is not None))  # fmt: skip


async def near_cache_reads(run: DemoRun) -> None:
    """A reader with the near cache on: repeated reads served from its memory, each one
    equal to a fresh read from Redis, and another process's writes invalidating it."""
    r, system = run.report, run.system
    reader = await SessionSystem.open(
        *storage_from_url(run.url), namespace=run.namespace, near_cache=True, health_interval=None
    )
    try:
        assert reader.near_cache is not None
        cache = reader.near_cache.cache
        rounds, equal, reads = 5, 0, 0
        began = time.perf_counter()
        for _ in range(rounds):
            for user in range(r.users):
                cached = await reader.get_session(session_id(user))
                fresh = await system.get_session(session_id(user), fresh=True)
                reads += 1
                equal += cached is not None and fresh is not None and _same(cached, fresh)
        elapsed = time.perf_counter() - began
        stats = reader.get_performance_metrics()["near_cache"]
        # Another process (the parent's system, no near cache) writes a tenth of the sessions:
        # the reader's cache drops exactly those entries when the invalidations arrive.
        changed = list(range(0, r.users, 10))
        held = len(cache)
        wrote = time.perf_counter()
        for user in changed:
            await system.update_session(session_id(user), metadata={"near_cache": "checked"})
        delay = await _until_dropped(cache, held - len(changed), reader.near_cache.cache.config)
        after = 0
        for user in changed:
            cached = await reader.get_session(session_id(user))
            fresh = await system.get_session(session_id(user), fresh=True)
            after += cached is not None and fresh is not None and _same(cached, fresh)
    finally:
        await reader.shutdown()
    r.features.append("near-cache reads")
    r.figures.update(near_cache_hits=stats["hits"], near_cache_misses=stats["misses"])
    r.lines.append(
        f"near cache: {reads} reads ({rounds} rounds over every session), {stats['hits']} hits "
        f"and {stats['misses']} misses (metrics); {len(changed)} sessions written by another "
        f"process were invalidated {(delay - wrote) * 1000:.0f} ms after the writes began"
        + f" ({reads / elapsed:,.0f} cached+fresh read pairs/s)"
    )
    r.check("near-cache reads equal to a fresh read", reads, equal)
    r.check("reads after another process's write equal to a fresh read", len(changed), after)


def _same(a: Any, b: Any) -> bool:
    return bool(
        (a.version, a.state, a.data, a.metadata) == (b.version, b.state, b.data, b.metadata)
    )


async def _until_dropped(cache: Any, entries: int, config: Any) -> float:
    """When the cache holds at most ``entries`` (the invalidations arrived); bounded wait."""
    limit = time.perf_counter() + 10 * config.max_staleness
    while len(cache) > entries and time.perf_counter() < limit:
        await asyncio.sleep(0.001)
    return time.perf_counter()


async def expire_idle_sessions(run: DemoRun) -> None:
    """An idle rule with a warning: every session is warned first; those left idle are then
    archived by a sweep, exactly once, and those that kept talking survive."""
    r = run.report
    notices: list[tuple[str, str]] = []

    def notify(notice: Any) -> None:
        notices.append((notice.kind, notice.session_id))

    after, warn = 1.5, 0.5
    system = await SessionSystem.open(
        *storage_from_url(run.url),
        namespace=f"{run.namespace}x",
        expiry_rules=[{"policy": "idle", "after": after, "action": "archive", "warn_before": warn}],
        expiry_notify=notify,
        archive_dir=run.workdir / "archive",
        health_interval=None,
    )
    try:
        n = max(2, min(r.users, 100))
        users = [(f"chat-{u}", f"user-{u}", PLATFORMS[u % len(PLATFORMS)]) for u in range(n)]
        created = await asyncio.gather(*(system.create_session(*u) for u in users))
        deadlines = [
            info.deadline_ms
            for info in [await system.get_expiry_info(s.session_id) for s in created]
            if info is not None and info.deadline_ms is not None
        ]
        # Every session inside its warning window, none past its deadline yet.
        await _until_server_ms(system, max(deadlines) - round(warn * 1000) + 20)
        warned = await system.cleanup_expired_sessions()
        kept = created[::2]
        for s in kept:  # these users keep talking: their deadline moves on
            await system.touch_session(s.session_id, messages=1)
        idle = created[1::2]
        await _until_server_ms(system, max(deadlines) + 20)
        swept = await system.cleanup_expired_sessions()
        # Read at once: the kept sessions' own deadlines come 1.5s after their touch, and the
        # statistics and archive listing below can take a while on a cluster.
        alive = [await system.get_session(s.session_id, fresh=True) for s in kept]
        warnings = sum(kind == "warn" for kind, _ in notices)
        stats = await system.get_statistics()
        archived = await system.list_archived()
    finally:
        await drop_namespace(system)
        await system.shutdown()
    order_ok = sum([k for k, sid in notices if sid == s.session_id] == ["warn"] for s in idle)
    r.features.append("expiry with a warning")
    r.lines.append(
        f"expiry: idle rule ({after}s, warn {warn}s before, archive) on {n} sessions: "
        f"{warned.actions.get('warn', 0)} warned, then {len(kept)} kept talking and "
        f"{swept.actions.get('archive', 0)} left idle were archived by a sweep "
        f"({swept.examined} examined in {swept.duration_s * 1000:.0f} ms)"
    )
    r.check("expiry warnings sent (one per session)", n, warnings)
    r.check("idle sessions archived exactly once", len(idle), stats.expiry_actions.get("archive"))
    r.check("archived sessions listed", len(idle), len(archived))
    r.check("archived sessions warned before", len(idle), order_ok)
    r.check("sessions that kept talking still live", len(kept), sum(s is not None for s in alive))


async def _until_server_ms(system: SessionSystem, ms: int) -> None:
    """Wait until the server's clock (deadlines are on it) reaches ``ms``."""
    while True:
        seconds, micros = await system.store.client.time()
        now = int(seconds) * 1000 + int(micros) // 1000
        if now >= ms:
            return
        await asyncio.sleep((ms - now) / 1000)


STEPS: list[Step] = [
    serve_users,
    verify_sessions,
    near_cache_reads,
    expire_idle_sessions,
    cross_channel_link,
    backup_and_restore,
]


async def run_demo(
    url: str | None = None,
    *,
    workers: int = 4,
    users: int = 200,
    messages: int = 5,
    progress: TextIO | None = None,
) -> DemoReport:
    """Run every step on ``url`` (default: an EMBEDDED server in a temporary directory);
    with ``progress``, a line per step is written there (the CLI passes stderr)."""
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
        for number, step in enumerate(STEPS, 1):
            if progress is not None:
                progress.write(f"\rdemo: step {number}/{len(STEPS)} {step.__name__:<24}")
                progress.flush()
            await step(run)
        if progress is not None:
            progress.write(f"\rdemo: {len(STEPS)} steps done{' ' * 30}\n")
            progress.flush()
        health = await system.health_check(restart=False)
        report.lines.append(f"health: {health['status']}")
    finally:
        await drop_namespace(system)
        await system.shutdown()
        left = storage.server.running_pid() if storage.server is not None else None
        shutil.rmtree(workdir, ignore_errors=True)
    if storage.server is not None:
        state = "stopped" if left is None else f"running (pid {left})"
        report.check("embedded server after the last process left", "stopped", state)
    return report


def main() -> None:
    """``python -m sessioncache.demo``: the demo with its defaults."""
    report = asyncio.run(run_demo())
    report.print()


if __name__ == "__main__":
    main()
