"""What the demo's steps share: the simulated users, the report, the run (demo.py runs them)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .models import Platform
from .system import SessionSystem

PLATFORMS = (Platform.TELEGRAM, Platform.DISCORD, Platform.SLACK, Platform.WEB)


def user_session(user: int) -> tuple[str, str, Platform]:
    """The chat, user and platform of simulated user number ``user``."""
    return f"chat-{user}", f"user-{user}", PLATFORMS[user % len(PLATFORMS)]


def session_id(user: int) -> str:
    """The session id of simulated user number ``user``'s first conversation."""
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
    features: list[str] = field(default_factory=list)
    """The features the steps showed, in order (printed as "features shown")."""

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
                    {
                        **self.figures,
                        "ok": self.ok,
                        "features": self.features,
                        "lines": self.lines,
                        "checks": checks,
                    },
                    indent=2,
                    default=str,
                )
            )
            return
        print(f"sessioncache demo: {self.workers} worker processes, {self.users} users, "
              f"{self.messages} messages each, on {self.backend}")  # fmt: skip
        for line in self.lines:
            print(f"  {line}")
        print("features shown: " + ", ".join(self.features))
        print("checks (exact counts):")
        for what, expected, actual in self.checks:
            mark = "ok  " if expected == actual else "FAIL"
            print(
                f"  {mark} {what}: {actual}"
                + ("" if expected == actual else f" (expected {expected})")
            )
        print("result: " + ("nothing lost" if self.ok else "MISMATCH (see FAIL above)"))


@dataclass
class DemoRun:
    """What the steps share: the parent's system, the URL workers use, the report."""

    system: SessionSystem
    url: str
    namespace: str
    report: DemoReport
    workdir: Path
    added_sessions: int = 0
    """Sessions a step created besides the users' first ones (later counts include them)."""

    @property
    def sessions(self) -> int:
        """How many sessions the store should hold now."""
        return self.report.users + self.added_sessions


Step = Callable[[DemoRun], Awaitable[None]]


async def drop_namespace(system: SessionSystem) -> None:
    """Delete every key of the system's namespace (the demo leaves nothing behind)."""
    store = system.store
    keys = [k async for k in store.client.scan_iter(match=store.keys.all_pattern(), count=1000)]
    for key in keys:
        await store.client.delete(key)
