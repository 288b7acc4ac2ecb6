"""Script arguments from user input: validated, then formatted as the Lua scripts take them."""

from __future__ import annotations

import os
from base64 import urlsafe_b64encode

from .errors import ValidationError


def new_op_id() -> str:
    """Five random characters naming one call, so a retried script can tell it already ran."""
    return urlsafe_b64encode(os.urandom(6)).decode()[:5]


def ttl_ms(ttl: float | None, what: str = "ttl") -> int:
    """A TTL in seconds as the scripts take it (ms; 0 for None); ValidationError if bad."""
    if ttl is None:
        return 0
    if (
        isinstance(ttl, bool)
        or not isinstance(ttl, (int, float))
        or not 0 < ttl <= 10 * 365 * 86400
    ):
        raise ValidationError(f"{what} must be a number of seconds in (0, 10 years], got {ttl!r}")
    return max(1, round(ttl * 1000))


def check_version(expected_version: int | None) -> str:
    """An expected_version as a script argument (empty: unconditional); ValidationError if bad."""
    if expected_version is None:
        return ""
    if isinstance(expected_version, bool) or not isinstance(expected_version, int):
        raise ValidationError(f"expected_version must be an int, got {expected_version!r}")
    return str(expected_version)


def check_priority(priority: int | None) -> str:
    """A priority as a script argument (empty: keep it); ValidationError if bad."""
    if priority is None:
        return ""
    if isinstance(priority, bool) or not isinstance(priority, int) or not -1000 <= priority <= 1000:
        raise ValidationError(f"priority must be an int in [-1000, 1000], got {priority!r}")
    return str(priority)
