"""Conversation history: the message model, its stored form, caps and the summarize hook.

A history is a Redis list, oldest first. Each item is ``<n>|<tokens>|<ms>|<payload>``: the
message number (per session, never reused), its token count ("" if unknown), the server time it
was appended and the encoded role, content and metadata. Scripts read the first two parts to
keep byte and token totals without decoding anything.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import IntegrityError, ValidationError
from .serialization import ContextCodec, decode

SUMMARY_ROLE = "summary"
"""Role of the message a summarize hook's result is stored as."""


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a conversation history (treat ``metadata`` as read-only)."""

    number: int
    """Position in the session's history, from 1; a summary gets the next free number."""
    role: str
    content: Any
    timestamp: dt.datetime
    """When the server appended it (UTC)."""
    tokens: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def is_summary(self) -> bool:
        """True for a message that replaced older ones through the summarize hook."""
        return self.role == SUMMARY_ROLE


Summarize = Callable[[list[Message]], Awaitable["str | tuple[Any, int | None]"]]
"""The summarize hook: given the oldest messages, returns the summary's content (with its token
count as a ``(content, tokens)`` pair when known)."""


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    """Caps of a conversation history ("None": no cap on that measure).

    Past a cap the oldest messages are dropped, or, with ``summarize``, handed to the hook and
    replaced by its summary so the history shrinks to ``summarize_to`` of each cap. While the
    hook runs the history may grow to ``hard_factor`` times the caps; past that the oldest are
    dropped whatever the hook does (a failing hook cannot let a history grow without bound).
    """

    max_messages: int | None = 200
    max_bytes: int | None = 1024 * 1024
    max_tokens: int | None = None
    summarize: Summarize | None = None
    summarize_to: float = 0.5
    hard_factor: float = 2.0
    claim_lease: float = 60.0
    """Seconds one process may take to summarize before another may claim the same messages."""

    def __post_init__(self) -> None:
        for name in ("max_messages", "max_bytes", "max_tokens"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValidationError(f"history {name} must be a positive int or None: {value!r}")
        if not 0 < self.summarize_to < 1:
            raise ValidationError(f"summarize_to must be in (0, 1), got {self.summarize_to!r}")
        if not self.hard_factor >= 1:
            raise ValidationError(f"hard_factor must be >= 1, got {self.hard_factor!r}")
        if not self.claim_lease > 0:
            raise ValidationError(f"claim_lease must be > 0 seconds, got {self.claim_lease!r}")

    def caps(self, factor: float = 1.0) -> list[str]:
        """Messages, bytes and tokens caps scaled by ``factor``, as script arguments."""
        return [
            "0" if cap is None else str(max(1, int(cap * factor)))
            for cap in (self.max_messages, self.max_bytes, self.max_tokens)
        ]

    def append_caps(self) -> list[str]:
        """Soft then hard caps for context_append.lua."""
        if self.summarize is None:
            return self.caps() * 2
        return self.caps() + self.caps(self.hard_factor)


def check_message(role: object, tokens: object, max_role: int) -> tuple[str, str]:
    """The role and the token count as script arguments, validated."""
    if not isinstance(role, str) or not role or len(role) > max_role:
        raise ValidationError(f"role must be a non-empty str of at most {max_role} chars: {role!r}")
    if role == SUMMARY_ROLE:
        raise ValidationError(f"role {SUMMARY_ROLE!r} is reserved for summaries")
    if tokens is None:
        return role, ""
    if isinstance(tokens, bool) or not isinstance(tokens, int) or not 0 <= tokens < 2**31:
        raise ValidationError(f"tokens must be an int in [0, 2**31) or None, got {tokens!r}")
    return role, str(tokens)


def encode_payload(codec: ContextCodec, role: str, content: Any, metadata: dict[str, Any]) -> bytes:
    """The stored payload of a message: role, content and metadata (only when there is some)."""
    body: list[Any] = [role, content, metadata] if metadata else [role, content]
    return codec.encode(body)


def decode_item(raw: bytes) -> Message:
    """The Message of a stored history item."""
    try:
        number, tokens, ms, payload = raw.split(b"|", 3)
        body = decode(payload)
        role, content = body[0], body[1]
        metadata = body[2] if len(body) > 2 else {}
        return Message(
            int(number),
            role,
            content,
            dt.datetime.fromtimestamp(int(ms) / 1000, tz=dt.UTC),
            int(tokens) if tokens else None,
            metadata,
        )
    except IntegrityError:
        raise
    except (ValueError, IndexError, TypeError) as exc:
        raise IntegrityError(f"stored history item is damaged: {raw[:60]!r}") from exc


def last_within(messages: Sequence[Message], max_tokens: int | None) -> list[Message]:
    """The newest messages whose token counts add up to at most ``max_tokens`` (unknown = 0)."""
    if max_tokens is None:
        return list(messages)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
        raise ValidationError(f"max_tokens must be an int >= 0 or None, got {max_tokens!r}")
    total, start = 0, len(messages)
    for index in range(len(messages) - 1, -1, -1):
        total += messages[index].tokens or 0
        if total > max_tokens:
            break
        start = index
    return list(messages[start:])


def check_limit(limit: object) -> int:
    """``limit`` of get_history as the script argument ("0" = everything)."""
    if limit is None:
        return 0
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValidationError(f"limit must be a positive int or None, got {limit!r}")
    return limit
