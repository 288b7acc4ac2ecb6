"""The session state machine: the transition table (enforced in Lua), guards and hooks."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ValidationError
from .identity import PLATFORM_RE
from .models import Session, SessionState

_STATE_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")  # use fullmatch()

S = SessionState
DEFAULT_ALLOWED: dict[str, frozenset[str]] = {
    S.NEW: frozenset({S.ACTIVE, S.WAITING_INPUT, S.IDLE, S.SUSPENDED, S.CLOSED, S.EXPIRED}),
    S.ACTIVE: frozenset({S.IDLE, S.WAITING_INPUT, S.SUSPENDED, S.ARCHIVED, S.CLOSED, S.EXPIRED}),
    S.IDLE: frozenset({S.ACTIVE, S.WAITING_INPUT, S.SUSPENDED, S.ARCHIVED, S.CLOSED, S.EXPIRED}),
    S.WAITING_INPUT: frozenset({S.ACTIVE, S.IDLE, S.SUSPENDED, S.CLOSED, S.EXPIRED}),
    S.SUSPENDED: frozenset({S.ACTIVE, S.IDLE, S.ARCHIVED, S.CLOSED, S.EXPIRED}),
    S.ARCHIVED: frozenset({S.ACTIVE, S.CLOSED}),
    S.EXPIRED: frozenset({S.ARCHIVED, S.CLOSED}),
    S.CLOSED: frozenset({S.ARCHIVED}),
}
"""The default lifecycle: archived sessions can be restored to active; closed is final but for
archiving."""

DEFAULT_TERMINAL = frozenset({S.ARCHIVED, S.EXPIRED, S.CLOSED})
"""Entering one of these from a live state ends the session for the duration statistics."""


def check_state(name: object, what: str = "state") -> str:
    """Validate a state name (a SessionState or a custom lowercase name)."""
    text = name.value if isinstance(name, SessionState) else name
    if not isinstance(text, str) or not _STATE_RE.fullmatch(text):
        raise ValidationError(
            f"{what} must match {_STATE_RE.pattern} (lowercase letters, digits and '_'); "
            f"got {str(name)[:80]!r}"
        )
    return text


def _targets(raw: Mapping[Any, Iterable[Any]], where: str) -> dict[str, frozenset[str]]:
    if not isinstance(raw, Mapping):
        raise ValidationError(f"{where} must map a state to its allowed targets")
    out: dict[str, frozenset[str]] = {}
    for source, targets in raw.items():
        if isinstance(targets, str) or not isinstance(targets, Iterable):
            raise ValidationError(f"{where}[{source!r}] must be a list of states, not a str")
        out[check_state(source, f"{where} state")] = frozenset(
            check_state(t, f"{where}[{source!r}] target") for t in targets
        )
    return out


@dataclass(frozen=True)
class TransitionTable:
    """Which state may follow which, globally and per platform (a platform entry replaces the
    global targets of that source state for sessions of that platform)."""

    allowed: Mapping[str, frozenset[str]] = field(default_factory=lambda: dict(DEFAULT_ALLOWED))
    platforms: Mapping[str, Mapping[str, frozenset[str]]] = field(default_factory=dict)
    terminal: frozenset[str] = DEFAULT_TERMINAL
    version: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed", _targets(self.allowed, "allowed"))
        plats = {}
        for platform, table in dict(self.platforms).items():
            if not isinstance(platform, str) or not PLATFORM_RE.fullmatch(platform):
                raise ValidationError(f"platform override name {platform!r} is not a platform")
            plats[platform] = _targets(table, f"platforms[{platform!r}]")
        object.__setattr__(self, "platforms", plats)
        object.__setattr__(
            self, "terminal", frozenset(check_state(t, "terminal state") for t in self.terminal)
        )
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 0:
            raise ValidationError(f"table version must be an int >= 0, got {self.version!r}")
        object.__setattr__(self, "_states", self._all_states())
        terminal = ("," + ",".join(sorted(self.terminal)) + ",").encode()
        object.__setattr__(self, "_encoded_terminal", terminal)
        object.__setattr__(self, "_script_args", {})

    @property
    def states(self) -> frozenset[str]:
        """The SessionState names plus every custom state the table mentions."""
        return self._states  # type: ignore[attr-defined,no-any-return]

    def _all_states(self) -> frozenset[str]:
        names = {state.value for state in SessionState} | set(self.allowed) | self.terminal
        for targets in self.allowed.values():
            names |= targets
        for table in self.platforms.values():
            names |= set(table)
            for targets in table.values():
                names |= targets
        return frozenset(names)

    def targets(self, platform: str, state: str) -> frozenset[str]:
        """The states a session of this platform may move to from ``state``."""
        override = self.platforms.get(platform)
        if override is not None and state in override:
            return override[state]
        return self.allowed.get(state, frozenset())

    def allows(self, platform: str, source: str, target: str) -> bool:
        """Whether the table lets a session of ``platform`` move from source to target."""
        return target in self.targets(platform, source)

    def encoded_terminal(self) -> bytes:
        """The terminal states as transition.lua takes them."""
        return self._encoded_terminal  # type: ignore[attr-defined,no-any-return]

    def sources(self, platform: str, target: str) -> frozenset[str]:
        """The states a session of this platform may leave for ``target``."""
        override = self.platforms.get(platform, {})
        names = set(self.allowed) | set(override)
        return frozenset(s for s in names if target in self.targets(platform, s))

    def script_arg(self, platform: str, target: str, max_len: int, max_age_ms: int) -> bytes:
        """transition.lua's ARGV[5]: platform, version, stream caps, terminal states and the
        states allowed to move to ``target`` (the script checks the current state against it,
        which is the table's rule for this one target: smaller to send and parse)."""
        cache: dict[tuple[str, str, int, int], bytes] = self._script_args  # type: ignore[attr-defined]
        key = (platform, target, max_len, max_age_ms)
        arg = cache.get(key)
        if arg is None:
            sources = ("," + ",".join(sorted(self.sources(platform, target))) + ",").encode()
            head = f"{platform} {self.version} {max_len} {max_age_ms} ".encode()
            arg = cache[key] = head + self.encoded_terminal() + b" " + sources
        return arg

    def to_json(self) -> str:
        """The table as stored in Redis (JSON text)."""
        return json.dumps(
            {
                "version": self.version,
                "allowed": {k: sorted(v) for k, v in sorted(self.allowed.items())},
                "platforms": {
                    p: {k: sorted(v) for k, v in sorted(t.items())}
                    for p, t in sorted(self.platforms.items())
                },
                "terminal": sorted(self.terminal),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> TransitionTable:
        """Parse a stored table; ValidationError if it is malformed."""
        try:
            raw = json.loads(text)
            return cls(
                allowed=raw["allowed"],
                platforms=raw.get("platforms", {}),
                terminal=frozenset(raw.get("terminal", ())),
                version=int(raw.get("version", 0)),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValidationError(f"stored transition table is malformed: {exc}") from exc

    def with_version(self, version: int) -> TransitionTable:
        """The same rules under another version number."""
        return TransitionTable(self.allowed, self.platforms, self.terminal, version)

    def same_rules(self, other: TransitionTable) -> bool:
        """Whether both tables allow exactly the same moves (versions aside)."""
        return self.with_version(0).to_json() == other.with_version(0).to_json()


Guard = Callable[[Session, str, str], "bool | Awaitable[bool]"]
"""guard(session, from_state, to_state) -> allowed?"""
Hook = Callable[[Session, str, str], "Awaitable[None] | None"]
"""hook(session_after, from_state, to_state), run after the transition committed."""


class StateHooks:
    """Python-side guards (checked before the write) and on_enter/on_exit hooks (run after)."""

    def __init__(self) -> None:
        self._guards: dict[tuple[str, str], list[Guard]] = {}
        self._enter: dict[str, list[Hook]] = {}
        self._exit: dict[str, list[Hook]] = {}
        self._guarded: set[str] = set()

    def add_guard(self, guard: Guard, *, to_state: str, from_state: str = "*") -> None:
        """A guard for moves into ``to_state`` (from ``from_state``, or any with ``"*"``)."""
        source = from_state if from_state == "*" else check_state(from_state)
        target = check_state(to_state)
        self._guards.setdefault((source, target), []).append(guard)
        self._guarded.add(target)

    def on_enter(self, state: str, hook: Hook) -> None:
        """Run ``hook`` after a session enters ``state``."""
        self._enter.setdefault(check_state(state), []).append(hook)

    def on_exit(self, state: str, hook: Hook) -> None:
        """Run ``hook`` after a session leaves ``state``."""
        self._exit.setdefault(check_state(state), []).append(hook)

    @property
    def active(self) -> bool:
        """Whether any on_enter/on_exit hook is registered."""
        return bool(self._enter or self._exit)

    def has_guards(self, to_state: str) -> bool:
        """Whether any guard watches moves into ``to_state``."""
        return to_state in self._guarded

    async def check(self, session: Session, source: str, target: str) -> bool:
        """Whether every guard of this move allows it for this session."""
        for key in ((source, target), ("*", target)):
            for guard in self._guards.get(key, ()):
                verdict = guard(session, source, target)
                if inspect.isawaitable(verdict):
                    verdict = await verdict
                if not verdict:
                    return False
        return True

    def hooks_for(self, source: str, target: str) -> list[Hook]:
        """The hooks to run after a move from source to target."""
        return [*self._exit.get(source, ()), *self._enter.get(target, ())]
