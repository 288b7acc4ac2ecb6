"""Expiry policies and the deadline they give a session (the Python twin of lib/expiry.lua).

A policy becomes an ``ExpirySpec`` when it is armed on a session: a fixed deadline ``x`` (ms,
server clock; absolute age, a daily boundary, or the next re-check of a Python-only policy)
and the activity-driven parts the scripts recompute on every write (idle ms, message limit,
daily grace ms). ``due_at`` gives the deadline from a spec, the last activity and the message
count; lib/expiry.lua computes the same thing inside the scripts, and a test checks both agree.
The spec counts from the start of the session's ``Period`` (its creation, or its latest
restore): ``x`` is absolute, the message limit is the message count at the start plus the
rule's own (lib/period.lua moves it at a restore; a test checks both agree).
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from ..models import Session

CustomCheck = Callable[[Session], bool | Awaitable[bool]]
"""A custom policy: given the session, whether it has expired (sync or async)."""


@dataclass(frozen=True, slots=True)
class ExpirySpec:
    """What the scripts need to decide a session's expiry (fields ``x`` and ``y``)."""

    rule: str
    mode: str = "any"
    """"any", "all", or "py" (decided in Python only: custom callables, token budgets)."""
    fixed: int | None = None
    idle: int | None = None
    limit: int | None = None
    grace: int | None = None
    lead: int = 0
    """ms before the deadline of the rule's first stage (its warning), for the index."""

    def field_y(self) -> str:
        """The ``y`` field: ``mode|idle|limit|grace|rule|lead``."""

        def s(v: int | None) -> str:
            return "" if v is None else str(v)

        parts = (self.mode, s(self.idle), s(self.limit), s(self.grace), self.rule, str(self.lead))
        return "|".join(parts)

    @classmethod
    def parse(cls, x: bytes | str | None, y: bytes | str) -> ExpirySpec:
        """Inverse of (fixed, field_y())."""
        text = y.decode() if isinstance(y, bytes) else y
        mode, idle, limit, grace, rule, lead = text.split("|")

        def n(v: str) -> int | None:
            return int(v) if v else None

        fixed = None if x is None or x in (b"", "") else int(x)
        return cls(rule, mode, fixed, n(idle), n(limit), n(grace), int(lead or 0))


def due_at(spec: ExpirySpec, activity_ms: int, messages: int) -> int | None:
    """The deadline (ms) of a session with this spec, last activity and message count.

    any: the earliest part; all: the latest time part once every usage part is reached
    (None while one is not); py: the fixed re-check time. Daily grace: a session active within
    ``grace`` before the boundary ``fixed`` is due at its next idle gap of ``grace`` instead.
    """
    if spec.mode == "py":
        return spec.fixed
    parts: list[int] = []
    if spec.fixed is not None:
        fixed = spec.fixed
        if spec.grace and activity_ms >= fixed - spec.grace:
            fixed = max(fixed, activity_ms + spec.grace)
        parts.append(fixed)
    if spec.idle is not None:
        parts.append(activity_ms + spec.idle)
    if spec.limit is not None:
        if messages >= spec.limit:
            parts.append(activity_ms)
        elif spec.mode == "all":
            return None
    if not parts:
        return None
    return min(parts) if spec.mode == "any" else max(parts)


def stages_done(w: bytes | str | None, due: int) -> int | None:
    """How many stages of the deadline ``due`` field ``w`` records as done (lib/expiry.lua):
    ``"<due>:<k>"`` k; ``"<due>:*"`` None, all of them, and they left the session in place
    (the deadline is spent); another deadline's progress (or none), 0."""
    if not w:
        return 0
    text = w.decode() if isinstance(w, bytes) else w
    wdue, _, k = text.partition(":")
    if wdue != str(due):
        return 0
    return None if k == "*" else int(k)


def past_due(
    spec: ExpirySpec, activity_ms: int, messages: int, w: bytes | str | None, now_ms: int
) -> bool:
    """Whether a session is past its deadline at ``now_ms`` (lib/expiry.lua expiry_passed, for
    any mode): a deadline its field ``w`` marks spent is not passed again."""
    due = due_at(spec, activity_ms, messages)
    return due is not None and now_ms >= due and stages_done(w, due) is not None


@dataclass(frozen=True, slots=True)
class Context:
    """What a policy may look at when it is armed on a session."""

    created_ms: int
    """When the rule's period starts (ms): the session's creation, or its restore."""
    now_ms: int
    priority: int
    messages: int = 0
    """The session's message count at the start of the period (0 at creation): a message
    limit counts from it."""


@dataclass(frozen=True, slots=True)
class Period:
    """Where a session's expiry period began: at its creation, or at its latest restore from
    the archive (field ``b``, lib/period.lua: ``"<start ms>|<messages>|<tokens JSON>"``).

    A restore starts a new period, so nothing the archived session had used counts again:
    the absolute age and the daily boundary count from the start, a message limit from the
    messages then, a token budget from the token counts then; a custom callable is not asked
    before the session is active after it. A message limit reached with the session left in
    place counts anew from the messages then (lib/period.lua ``period_spent``): ``b`` records
    them, its start empty when the period began at creation.
    """

    start_ms: int
    messages: int = 0
    tokens: Mapping[str, float] = field(default_factory=dict)
    """Token counts (by metadata name) at the start."""
    restored: bool = False
    """Whether the period began at a restore (else: at the session's creation)."""

    @classmethod
    def of(cls, session: Session) -> Period:
        """The period a session read from Redis is in (its field ``b``, else its creation)."""
        stored = session._expiry[3] if session._expiry is not None else None
        created = _ms(session.created_at)
        if not stored:
            return cls(created)
        text = stored.decode() if isinstance(stored, bytes) else str(stored)
        start, _, rest = text.partition("|")
        messages, _, tokens = rest.partition("|")
        try:
            counts = json.loads(tokens) if tokens else {}
        except ValueError:
            counts = {}
        if not isinstance(counts, dict):
            counts = {}
        return cls(
            int(start) if start.isdigit() else created,
            int(messages) if messages.isdigit() else 0,
            {str(k): v for k, v in counts.items() if _is_count(v)},
            restored=start.isdigit(),
        )

    @classmethod
    def restart(cls, session: Session, start_ms: int, policy: Policy | None) -> Period:
        """A new period starting at ``start_ms`` (a restore) with the session as it is."""
        keys = token_keys(policy) if policy is not None else []
        tokens = {k: used for k in keys if _is_count(used := session.metadata.get(k, 0))}
        return cls(start_ms, session.message_count, tokens, restored=True)

    def field_b(self) -> str:
        """Field ``b`` (as lib/period.lua writes it, with the token counts)."""
        tokens = json.dumps(dict(self.tokens), sort_keys=True, separators=(",", ":"))
        return f"{self.start_ms}|{self.messages}|{tokens if self.tokens else ''}"

    def context(self, now_ms: int, priority: int) -> Context:
        """The Context a policy is armed with in this period."""
        return Context(self.start_ms, now_ms, priority, self.messages)


def _is_count(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def token_keys(policy: Policy) -> list[str]:
    """The metadata names of every token budget of a policy (hybrid parts included)."""
    if isinstance(policy, Usage) and policy.tokens is not None:
        return [policy.tokens_key]
    if isinstance(policy, Hybrid):
        return [k for p in policy.parts for k in token_keys(p)]
    return []


def _grace(seconds: float, priority: int) -> int:
    # Priority lengthens grace: each priority level above 0 adds one more grace period.
    return round(seconds * 1000 * (1 + max(0, priority)))


class Policy:
    """Base class: turns into a spec for a session (None: the policy never expires it)."""

    kind = "none"

    def spec(self, rule: str, ctx: Context) -> ExpirySpec | None:
        """The spec armed on a session matched by ``rule``."""
        return None

    def describe(self) -> str:
        """One line for get_expiry_info and the CLI."""
        return self.kind


@dataclass(frozen=True, slots=True)
class NonePolicy(Policy):
    """Never expires (beyond the key TTL)."""

    kind = "none"


@dataclass(frozen=True, slots=True)
class Absolute(Policy):
    """Age since creation."""

    after: float
    grace: float = 0.0
    kind = "absolute"

    def spec(self, rule: str, ctx: Context) -> ExpirySpec | None:
        at = ctx.created_ms + round(self.after * 1000) + _grace(self.grace, ctx.priority)
        return ExpirySpec(rule, fixed=at)

    def describe(self) -> str:
        return f"absolute after {self.after:g}s"


@dataclass(frozen=True, slots=True)
class Idle(Policy):
    """Time since the last activity."""

    after: float
    grace: float = 0.0
    kind = "idle"

    def spec(self, rule: str, ctx: Context) -> ExpirySpec | None:
        return ExpirySpec(rule, idle=round(self.after * 1000) + _grace(self.grace, ctx.priority))

    def describe(self) -> str:
        return f"idle for {self.after:g}s"


@dataclass(frozen=True, slots=True)
class Usage(Policy):
    """A message count, or a token budget kept in metadata (``tokens_key``, default "tokens")."""

    messages: int | None = None
    tokens: int | None = None
    tokens_key: str = "tokens"
    recheck: float = 60.0
    kind = "usage"

    def spec(self, rule: str, ctx: Context) -> ExpirySpec | None:
        if self.tokens is not None:
            # Tokens live in metadata, which the scripts cannot decode: decided in Python.
            return ExpirySpec(rule, mode="py", fixed=ctx.now_ms + round(self.recheck * 1000))
        # The limit as the scripts compare it with the message count: from the period's start.
        limit = None if self.messages is None else ctx.messages + self.messages
        return ExpirySpec(rule, limit=limit)

    def tokens_spent(self, session: Session, since: float = 0) -> bool:
        """Whether the session's token budget is used up (counting from ``since`` tokens)."""
        used = session.metadata.get(self.tokens_key, 0)
        return _is_count(used) and self.tokens is not None and used - since >= self.tokens

    def describe(self) -> str:
        if self.tokens is not None:
            return f"usage of {self.tokens} tokens (metadata {self.tokens_key!r})"
        return f"usage of {self.messages} messages"


@dataclass(frozen=True, slots=True)
class Daily(Policy):
    """A reset at a local time of day in an IANA time zone, with a grace window."""

    hour: int
    minute: int
    tz: str
    grace: float = 0.0
    kind = "daily"

    def next_boundary(self, after_ms: int) -> int:
        """The first boundary strictly after ``after_ms`` (ms), DST-aware."""
        zone = ZoneInfo(self.tz)
        local = dt.datetime.fromtimestamp(after_ms / 1000, tz=zone)
        day = local.date()
        for offset in range(3):
            wall = dt.datetime.combine(
                day + dt.timedelta(days=offset), dt.time(self.hour, self.minute), tzinfo=zone
            )
            # A wall time skipped by DST resolves forward (fold=0); a repeated one, first.
            at = round(wall.astimezone(dt.UTC).timestamp() * 1000)
            if at > after_ms:
                return at
        raise AssertionError("no daily boundary within three days")  # pragma: no cover

    def spec(self, rule: str, ctx: Context) -> ExpirySpec | None:
        grace = _grace(self.grace, ctx.priority) or None
        return ExpirySpec(rule, fixed=self.next_boundary(ctx.created_ms), grace=grace)

    def describe(self) -> str:
        return f"daily at {self.hour:02d}:{self.minute:02d} {self.tz} (grace {self.grace:g}s)"


@dataclass(frozen=True, slots=True)
class Hybrid(Policy):
    """Any (the first part that fires) or all (every part) of several policies."""

    mode: str
    parts: tuple[Policy, ...]
    kind = "hybrid"

    def spec(self, rule: str, ctx: Context) -> ExpirySpec | None:
        specs = [s for p in self.parts if (s := p.spec(rule, ctx)) is not None]
        if not specs:
            return None
        if any(s.mode == "py" for s in specs):
            recheck = min(s.fixed for s in specs if s.mode == "py" and s.fixed is not None)
            return ExpirySpec(rule, mode="py", fixed=recheck)
        pick = min if self.mode == "any" else max

        def merged(values: list[int | None]) -> int | None:
            present = [v for v in values if v is not None]
            return pick(present) if present else None

        return ExpirySpec(
            rule,
            mode=self.mode,
            fixed=merged([s.fixed for s in specs]),
            idle=merged([s.idle for s in specs]),
            limit=merged([s.limit for s in specs]),
            grace=merged([s.grace for s in specs]),
        )

    def describe(self) -> str:
        return f"{self.mode} of (" + ", ".join(p.describe() for p in self.parts) + ")"


@dataclass(frozen=True, slots=True)
class Custom(Policy):
    """A Python callable, sync or async, given the session: True when it has expired."""

    func: CustomCheck
    recheck: float = 60.0
    kind = "custom"

    def spec(self, rule: str, ctx: Context) -> ExpirySpec | None:
        return ExpirySpec(rule, mode="py", fixed=ctx.now_ms + round(self.recheck * 1000))

    async def expired(self, session: Session) -> bool:
        """Run the callable (awaiting it when it is async)."""
        result: Any = self.func(session)
        if inspect.isawaitable(result):
            result = await result
        return bool(result)

    def describe(self) -> str:
        return f"custom {getattr(self.func, '__name__', 'callable')}"


def _ms(value: dt.datetime) -> int:
    return round(value.timestamp() * 1000)


async def fired(
    policy: Policy, session: Session, now_ms: int, period: Period | None = None
) -> bool:
    """Whether the policy has fired for this session now (Python-decided specs included),
    counting from the start of its ``period`` (default: the one the session is in).

    A custom callable is not asked about a restored session before it is active after the
    restore (its last activity later than the restore): until then it is the session that was
    archived, and the callable would only say so again."""
    if period is None:
        period = Period.of(session)
    if isinstance(policy, Custom):
        if period.restored and _ms(session.last_activity) <= period.start_ms:
            return False
        return await policy.expired(session)
    if isinstance(policy, Usage) and policy.tokens is not None:
        return policy.tokens_spent(session, period.tokens.get(policy.tokens_key, 0))
    if isinstance(policy, Hybrid):
        results = [await fired(p, session, now_ms, period) for p in policy.parts]
        return any(results) if policy.mode == "any" else all(results)
    spec = policy.spec("", period.context(now_ms, session.priority))
    if spec is None:
        return False
    due = due_at(spec, _ms(session.last_activity), session.message_count)
    return due is not None and now_ms >= due
