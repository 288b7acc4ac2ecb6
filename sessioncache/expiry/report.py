"""What the expiry engine reports: a sweep's counts, a session's expiry, a notice to the bot."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any


def _when(ms: int | None) -> str | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat()


@dataclass
class ExpiryReport:
    """One sweep (cleanup_expired_sessions): actions taken (or, dry run, that would be)."""

    dry_run: bool = False
    examined: int = 0
    """Index entries looked at (each a session whose next stage was due, or a stale entry)."""
    actions: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    duration_s: float = 0.0
    effects: int = 0
    """Outbox effects (notify callbacks, archive files) this sweep claimed and delivered: left
    by an earlier call that did not deliver them (its process died between script and effect,
    or the effect failed), and the notices that waited behind those of their session."""

    def count(self, action: str) -> None:
        """One more ``action``."""
        self.actions[action] = self.actions.get(action, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "dry_run": self.dry_run,
            "examined": self.examined,
            "actions": dict(sorted(self.actions.items())),
            "batches": self.batches,
            "duration_s": self.duration_s,
            "effects": self.effects,
        }


@dataclass(frozen=True)
class ExpiryInfo:
    """Which rule governs a session, when it fires and what it does (get_expiry_info)."""

    session_id: str
    rule: str | None
    policy: str | None
    action: str | None
    deadline_ms: int | None
    """The deadline (ms, server clock) from the stored fields; None: none yet (usage not
    reached, or a rule decided in Python)."""
    plan: str | None
    """The stages, "offset_ms:action,...", relative to the deadline."""
    armed: bool = True
    spent: bool = False
    """The deadline has passed and every stage of it ran, leaving the session in place
    (notify, suspend, a merge with no target): nothing more happens before the rule's next
    deadline (new activity for an idle rule, N more messages for a message limit, the next
    boundary for a daily rule)."""

    @property
    def deadline(self) -> dt.datetime | None:
        """The deadline as a UTC datetime."""
        if self.deadline_ms is None:
            return None
        return dt.datetime.fromtimestamp(self.deadline_ms / 1000, tz=dt.UTC)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "session_id": self.session_id,
            "rule": self.rule,
            "policy": self.policy,
            "action": self.action,
            "deadline": _when(self.deadline_ms),
            "plan": self.plan,
            "armed": self.armed,
            "spent": self.spent,
        }


@dataclass(frozen=True)
class ExpiryNotice:
    """Given to the notify callback: a warning before an action, or a notify action."""

    kind: str
    """"warn" or "notify"."""
    session_id: str
    rule: str
    deadline_ms: int
    notice_id: str = ""
    """The same for every delivery of one notice: a notice whose delivery was cut short (the
    process died, or stalled for most of a lease, before its acknowledgement) is delivered
    again with the same id."""
