"""Encoding of stored values and field names, and the write limits checked before Redis.

Values: a ``str`` is stored as its UTF-8 bytes; anything else as ``0xC1`` + msgpack. 0xC1 never
starts valid UTF-8 (and msgpack never emits it), so the two cannot be confused, and plain text
costs no extra byte in the hash.

Field names inside a session hash: single characters are reserved for the session's own fields
(version, state, timestamps...), ``@name`` holds metadata, and a data field whose name is one
character long or starts with ``~`` or ``@`` is stored as ``~name``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from .errors import IntegrityError, ValidationError

VALUE_TAG = b"\xc1"
"""First byte of every non-text value (msgpack never emits 0xC1, so text and msgpack never
meet): the one definition, used by every reader of stored values."""
_MAX_INT = 2**63 - 1
_MIN_INT = -(2**63)
MAX_HASH_FIELDS = 3000
"""Most fields one session hash may hold, core fields included: restore_session.lua writes a
session with one unpack() (Lua caps it near 8000 values), and backups refuse anything larger."""
MAX_DATA_FIELDS = MAX_HASH_FIELDS - 40
"""Highest Limits.max_fields: the data and metadata fields, leaving room for the core ones."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What a single session may hold; checked before anything is sent to Redis."""

    max_value_bytes: int = 512 * 1024
    max_fields: int = 1024
    max_nesting: int = 16
    max_field_name: int = 256

    def __post_init__(self) -> None:
        for name in ("max_value_bytes", "max_fields", "max_nesting", "max_field_name"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(f"limit {name} must be a positive int, got {value!r}")
        if self.max_fields > MAX_DATA_FIELDS:
            raise ValidationError(
                f"limit max_fields must be at most {MAX_DATA_FIELDS}, got {self.max_fields}: "
                f"a session of more than {MAX_HASH_FIELDS} fields could not be restored from a "
                "backup"
            )


DEFAULT_LIMITS = Limits()


def _check_tree(value: Any, depth: int, limits: Limits, where: str) -> None:
    if depth > limits.max_nesting:
        raise ValidationError(f"{where} nests deeper than {limits.max_nesting} levels")
    if value is None or isinstance(value, (bool, str, bytes)):
        return
    if isinstance(value, int):
        if not _MIN_INT <= value <= _MAX_INT:
            raise ValidationError(f"{where} holds an int outside the 64-bit range")
        return
    if isinstance(value, float):
        if math.isnan(value):
            raise ValidationError(f"{where} holds NaN, which never compares equal to itself")
        return
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValidationError(f"{where} holds a naive datetime; attach a timezone")
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_tree(item, depth + 1, limits, where)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(f"{where} has a dict key of type {type(key).__name__}")
            _check_tree(item, depth + 1, limits, where)
        return
    raise ValidationError(
        f"{where} holds a {type(value).__name__}; allowed: None, bool, int, float, str, bytes, "
        "tz-aware datetime, list, tuple and dict with str keys"
    )


def encode_value(value: Any, limits: Limits = DEFAULT_LIMITS, where: str = "value") -> bytes:
    """Validate and encode one stored value."""
    if isinstance(value, str):
        raw = value.encode("utf-8", errors="strict") if value.isascii() else _utf8(value, where)
    else:
        _check_tree(value, 1, limits, where)
        raw = VALUE_TAG + msgpack.packb(value, use_bin_type=True, datetime=True)
    if len(raw) > limits.max_value_bytes:
        raise ValidationError(
            f"{where} encodes to {len(raw)} bytes; the limit is {limits.max_value_bytes}"
        )
    return raw


def _utf8(value: str, where: str) -> bytes:
    try:
        return value.encode("utf-8", errors="strict")
    except UnicodeEncodeError as exc:
        raise ValidationError(f"{where} is not valid Unicode text (lone surrogate?)") from exc


def decode_value(raw: bytes) -> Any:
    """Inverse of encode_value."""
    if raw[:1] == VALUE_TAG:
        try:
            return msgpack.unpackb(raw[1:], raw=False, timestamp=3, strict_map_key=True)
        except Exception as exc:
            raise IntegrityError(f"stored value is not valid msgpack: {exc}") from exc
    return raw.decode("utf-8")


def _checked_name(name: object, what: str, limits: Limits) -> str:
    if not isinstance(name, str) or not name:
        raise ValidationError(f"{what} must be a non-empty str, got {name!r}"[:200])
    if len(name) > limits.max_field_name:
        raise ValidationError(
            f"{what} is {len(name)} characters; the limit is {limits.max_field_name}"
        )
    _utf8(name, what)
    return name


def data_field(name: object, limits: Limits = DEFAULT_LIMITS) -> str:
    """Hash field name of a data entry."""
    text = _checked_name(name, "data field name", limits)
    return "~" + text if len(text) == 1 or text[0] in "~@" else text


def metadata_field(name: object, limits: Limits = DEFAULT_LIMITS) -> str:
    """Hash field name of a metadata entry."""
    return "@" + _checked_name(name, "metadata key", limits)


def encode_mapping(
    mapping: Mapping[str, Any] | None,
    field: Any,
    limits: Limits,
    what: str,
) -> list[bytes | str]:
    """Flatten a mapping into [field, value, field, value, ...] for a script's ARGV."""
    if mapping is None:
        return []
    if not isinstance(mapping, Mapping):
        raise ValidationError(f"{what} must be a mapping, not {type(mapping).__name__}")
    if len(mapping) > limits.max_fields:
        raise ValidationError(
            f"{what} has {len(mapping)} entries; a session holds at most {limits.max_fields}"
        )
    out: list[bytes | str] = []
    for name, value in mapping.items():
        out.append(field(name, limits))
        # The common case (short ASCII text) inline, without building encode_value's label.
        if type(value) is str and value.isascii() and len(value) <= limits.max_value_bytes:
            out.append(value.encode())
        else:
            out.append(encode_value(value, limits, f"{what}[{name!r}]"[:120]))
    return out
