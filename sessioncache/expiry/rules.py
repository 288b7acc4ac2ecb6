"""Expiry rules: parsed from dicts or a TOML file, validated with the rule and field named.

The dict form is the public contract (``initialize_sessions(..., expiry_rules=[...])``)::

    {"policy": "idle", "after": 1800, "action": "archive"}
    {"policy": "absolute", "after": 86400, "action": "delete"}
    {"policy": "usage", "messages": 500, "action": "suspend"}
    {"policy": "daily", "at": "04:00", "tz": "Europe/Berlin", "grace": 600, "action": "archive"}
    {"policy": "idle", "after": 3600, "action": "archive", "warn_before": 300}
    {"policy": "hybrid", "any": [...], "action": "delete"}

Rules are ordered: a session gets the first rule whose filters (``platform``, ``chat_type``,
``min_priority``, ``max_priority``) match it; no rule, no expiry beyond the key TTL.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import ValidationError
from ..identity import Identity
from .policies import Absolute, Custom, Daily, Hybrid, Idle, NonePolicy, Policy, Usage

ACTIONS = ("archive", "delete", "merge", "suspend", "notify", "progressive")
STAGE_ACTIONS = ("warn", "suspend", "archive", "delete")
CHAT_TYPES = ("direct", "group", "thread")
POLICIES = ("absolute", "idle", "usage", "daily", "hybrid", "custom", "none")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_\-]{0,39}$")
_AT_RE = re.compile(r"^(\d{1,2}):(\d{2})$")
_MAX_SECONDS = 10 * 365 * 86400

_RULE_KEYS = {
    "name",
    "policy",
    "action",
    "warn_before",
    "platform",
    "chat_type",
    "min_priority",
    "max_priority",
    "stages",
    "channel",
}
_POLICY_KEYS = {
    "absolute": {"after", "grace"},
    "idle": {"after", "grace"},
    "usage": {"messages", "tokens", "tokens_key", "recheck"},
    "daily": {"at", "tz", "grace"},
    "hybrid": {"any", "all"},
    "custom": {"func", "recheck"},
    "none": set(),
}


@dataclass(frozen=True, slots=True)
class Stage:
    """One step of a progressive rule: ``action`` once ``after`` seconds past the deadline."""

    after: float
    action: str


@dataclass(frozen=True, slots=True)
class Rule:
    """One ordered expiry rule."""

    name: str
    policy: Policy
    action: str
    warn_before: float | None = None
    platforms: frozenset[str] | None = None
    chat_types: frozenset[str] | None = None
    min_priority: int | None = None
    max_priority: int | None = None
    stages: tuple[Stage, ...] = ()
    channel: str | None = None

    def matches(self, ident: Identity, priority: int, chat_type: str) -> bool:
        """Whether this rule applies to a session of this identity, priority and chat type."""
        if self.platforms is not None and ident.platform not in self.platforms:
            return False
        if self.chat_types is not None and chat_type not in self.chat_types:
            return False
        if self.min_priority is not None and priority < self.min_priority:
            return False
        return self.max_priority is None or priority <= self.max_priority


def chat_type_of(ident: Identity) -> str:
    """thread when the session has a thread, direct when the chat is the user's own, else group."""
    if ident.thread_id is not None:
        return "thread"
    return "direct" if ident.chat_id == ident.user_id else "group"


class _Field:
    """Reads one rule's fields, raising ValidationError that names the rule and the field."""

    def __init__(self, where: str, raw: Mapping[str, Any]) -> None:
        self.where = where
        self.raw = raw

    def fail(self, field: str, problem: str) -> ValidationError:
        return ValidationError(f"expiry {self.where}, field {field!r}: {problem}")

    def seconds(self, field: str, *, required: bool, low: float = 0.0) -> float | None:
        if field not in self.raw:
            if required:
                raise self.fail(field, "is required (a number of seconds)")
            return None
        v = self.raw[field]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
            raise self.fail(field, f"must be a number of seconds, got {v!r}")
        if v < low or v > _MAX_SECONDS or (low > 0 and v == 0):
            raise self.fail(field, f"must be in [{low:g}, {_MAX_SECONDS}] seconds, got {v!r}")
        return float(v)

    def integer(self, field: str, low: int, high: int) -> int | None:
        if field not in self.raw:
            return None
        v = self.raw[field]
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise self.fail(field, f"must be an int in [{low}, {high}], got {v!r}")
        return v

    def names(self, field: str, allowed: Sequence[str] | None) -> frozenset[str] | None:
        if field not in self.raw:
            return None
        v = self.raw[field]
        items = [v] if isinstance(v, str) else v
        if not isinstance(items, (list, tuple)) or not items:
            raise self.fail(field, f"must be a name or a non-empty list of names, got {v!r}")
        out = set()
        for item in items:
            text = getattr(item, "value", item)
            if not isinstance(text, str) or (allowed is not None and text not in allowed):
                hint = f"; one of {', '.join(allowed)}" if allowed else ""
                raise self.fail(field, f"unknown value {item!r}{hint}")
            out.add(text)
        return frozenset(out)


def _policy(f: _Field, raw: Mapping[str, Any], other_keys: set[str]) -> Policy:
    kind = raw.get("policy")
    if kind not in POLICIES:
        raise f.fail("policy", f"unknown policy {kind!r}; one of {', '.join(POLICIES)}")
    assert isinstance(kind, str)
    _unknown(f, raw, _POLICY_KEYS[kind] | other_keys)
    if kind == "absolute":
        after = _req(f.seconds("after", required=True, low=0.001))
        return Absolute(after, f.seconds("grace", required=False) or 0.0)
    if kind == "idle":
        after = _req(f.seconds("after", required=True, low=0.001))
        return Idle(after, f.seconds("grace", required=False) or 0.0)
    if kind == "usage":
        messages = f.integer("messages", 1, 10**12)
        tokens = f.integer("tokens", 1, 10**15)
        if (messages is None) == (tokens is None):
            raise f.fail("messages", "a usage policy needs exactly one of messages or tokens")
        key = raw.get("tokens_key", "tokens")
        if not isinstance(key, str) or not key:
            raise f.fail("tokens_key", f"must be a metadata name, got {key!r}")
        recheck = f.seconds("recheck", required=False, low=0.1) or 60.0
        return Usage(messages, tokens, key, recheck)
    if kind == "daily":
        return _daily(f, raw)
    if kind == "hybrid":
        modes = [m for m in ("any", "all") if m in raw]
        if len(modes) != 1:
            raise f.fail("any", "a hybrid policy needs exactly one of 'any' or 'all'")
        parts = raw[modes[0]]
        if not isinstance(parts, (list, tuple)) or not parts:
            raise f.fail(modes[0], "must be a non-empty list of policies")
        sub = []
        for i, part in enumerate(parts):
            if not isinstance(part, Mapping):
                raise f.fail(modes[0], f"part {i} must be a dict, got {type(part).__name__}")
            pf = _Field(f"{f.where}, {modes[0]}[{i}]", part)
            sub.append(_policy(pf, part, {"policy"}))
        return Hybrid(modes[0], tuple(sub))
    if kind == "custom":
        func = raw.get("func")
        if not callable(func):
            raise f.fail(
                "func", "a custom policy needs a callable (sync or async) given the session"
            )
        return Custom(func, f.seconds("recheck", required=False, low=0.1) or 60.0)
    return NonePolicy()


def _req(value: float | None) -> float:
    assert value is not None
    return value


def _daily(f: _Field, raw: Mapping[str, Any]) -> Daily:
    at = raw.get("at")
    match = _AT_RE.match(at) if isinstance(at, str) else None
    if match is None:
        raise f.fail("at", f"must be a local time 'HH:MM', got {at!r}")
    hour, minute = int(match.group(1)), int(match.group(2))
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        raise f.fail("at", f"hour must be 0-23 and minute 0-59, got {at!r}")
    tz = raw.get("tz", "UTC")
    try:
        if not isinstance(tz, str) or not tz or tz.startswith(("/", ".")) or ".." in tz:
            raise ValueError(tz)
        ZoneInfo(tz)
    except (ValueError, ZoneInfoNotFoundError, OSError):
        raise f.fail("tz", f"unknown IANA time zone {tz!r}") from None
    return Daily(hour, minute, tz, f.seconds("grace", required=False) or 0.0)


def _unknown(f: _Field, raw: Mapping[str, Any], known: set[str]) -> None:
    extra = sorted(set(raw) - known)
    if extra:
        raise f.fail(extra[0], f"unknown field; known: {', '.join(sorted(known))}")


def _stages(f: _Field, raw: Mapping[str, Any]) -> tuple[Stage, ...]:
    stages = raw.get("stages")
    if not isinstance(stages, (list, tuple)) or not stages:
        raise f.fail("stages", "a progressive rule needs a non-empty list of stages")
    out: list[Stage] = []
    for i, stage in enumerate(stages):
        if not isinstance(stage, Mapping):
            raise f.fail("stages", f"stage {i} must be a dict")
        sf = _Field(f"{f.where}, stages[{i}]", stage)
        _unknown(sf, stage, {"after", "action"})
        after = _req(sf.seconds("after", required=True))
        action = stage.get("action")
        if action not in STAGE_ACTIONS:
            raise sf.fail(
                "action", f"unknown stage action {action!r}; one of {', '.join(STAGE_ACTIONS)}"
            )
        if out and after <= out[-1].after:
            raise sf.fail("after", "stages must come in increasing 'after' order")
        out.append(Stage(after, str(action)))
    if any(s.action in ("archive", "delete") for s in out[:-1]):
        raise f.fail("stages", "archive or delete ends a session: it can only be the last stage")
    return tuple(out)


def parse_rule(raw: object, index: int) -> Rule:
    """One rule from its dict form; ValidationError names the rule and the field."""
    label = raw.get("name") if isinstance(raw, Mapping) else None
    where = f"rule {index}" + (f" ({label!r})" if isinstance(label, str) else "")
    if not isinstance(raw, Mapping):
        raise ValidationError(f"expiry {where}: must be a dict, got {type(raw).__name__}")
    f = _Field(where, raw)
    name = raw.get("name", f"rule{index}")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise f.fail("name", f"must match {_NAME_RE.pattern}, got {name!r}")
    policy = _policy(f, raw, _RULE_KEYS)
    action = raw.get("action")
    if action not in ACTIONS:
        raise f.fail("action", f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    assert isinstance(action, str)
    stages = _stages(f, raw) if action == "progressive" else ()
    if action != "progressive" and "stages" in raw:
        raise f.fail("stages", "only a progressive rule has stages")
    low, high = f.integer("min_priority", -1000, 1000), f.integer("max_priority", -1000, 1000)
    if low is not None and high is not None and low > high:
        raise f.fail("min_priority", f"is above max_priority ({low} > {high})")
    channel = raw.get("channel")
    if channel is not None and (not isinstance(channel, str) or not _NAME_RE.match(channel)):
        raise f.fail("channel", f"must match {_NAME_RE.pattern}, got {channel!r}")
    return Rule(
        name=name,
        policy=policy,
        action=action,
        warn_before=f.seconds("warn_before", required=False, low=0.001),
        platforms=f.names("platform", None),
        chat_types=f.names("chat_type", CHAT_TYPES),
        min_priority=low,
        max_priority=high,
        stages=stages,
        channel=channel,
    )


def parse_rules(raw: Iterable[object] | None) -> tuple[Rule, ...]:
    """Every rule, validated; the first bad one raises (nothing is applied or written)."""
    if raw is None:
        return ()
    if isinstance(raw, (str, bytes, Mapping)) or not isinstance(raw, Iterable):
        raise ValidationError("expiry_rules must be a list of rule dicts")
    rules = tuple(r if isinstance(r, Rule) else parse_rule(r, i) for i, r in enumerate(raw))
    names = [r.name for r in rules]
    for name in names:
        if names.count(name) > 1:
            raise ValidationError(f"expiry rule name {name!r} is used twice; names must differ")
    return rules


def load_rules_toml(
    path: str | Path, funcs: Mapping[str, Callable[..., Any]] | None = None
) -> tuple[Rule, ...]:
    """Rules from a TOML file: an array of tables ``[[rule]]`` in the dict form.

    A custom policy names its callable (``func = "name"``), looked up in ``funcs``.
    """
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValidationError(f"cannot read expiry rules from {str(path)!r}: {exc}") from exc
    rules = doc.get("rule", [])
    if not isinstance(rules, list):
        raise ValidationError(f"{str(path)!r}: 'rule' must be an array of tables ([[rule]])")
    resolved = []
    for i, rule in enumerate(rules):
        if isinstance(rule, dict) and isinstance(rule.get("func"), str):
            name = rule["func"]
            if not funcs or name not in funcs:
                raise ValidationError(f"expiry rule {i}, field 'func': no callable named {name!r}")
            rule = {**rule, "func": funcs[name]}
        resolved.append(rule)
    return parse_rules(resolved)


def first_match(rules: Sequence[Rule], ident: Identity, priority: int) -> Rule | None:
    """The rule that governs a session, or None."""
    chat_type = chat_type_of(ident)
    for rule in rules:
        if rule.matches(ident, priority, chat_type):
            return rule
    return None
