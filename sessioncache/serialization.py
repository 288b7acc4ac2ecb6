"""Codecs of stored context values: msgpack with extension types, or JSON with tagged objects.

Every stored value starts with one byte naming its codec (``M`` msgpack, ``J`` JSON), so a
context written with one codec stays readable after the configuration switches to the other.
Both round-trip the same types: None, bool, int, float, str, bytes, list, tuple (as list), dict
with str keys, datetime (naive or aware, offset kept), date, time, timedelta, Decimal, UUID and
set/frozenset (as set). Nothing is ever unpickled.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Any, Protocol

import msgpack

from .errors import IntegrityError, ValidationError

SCHEMA_VERSION = 1
"""Version of the stored context layout (the ``#v`` field of a context hash)."""

# msgpack extension type numbers (0..127 are the application's); never reuse a number.
_EXT_DATETIME = 1
_EXT_DATE = 2
_EXT_TIME = 3
_EXT_TIMEDELTA = 4
_EXT_DECIMAL = 5
_EXT_UUID = 6
_EXT_SET = 7


class ContextCodec(Protocol):
    """Turns a context value into stored bytes and back."""

    name: str

    def encode(self, value: Any) -> bytes:
        """The stored form of ``value`` (ValidationError for an unsupported type)."""

    def decode(self, raw: bytes) -> Any:
        """The value of a stored form (IntegrityError if it is damaged)."""


def _unsupported(value: Any) -> ValidationError:
    return ValidationError(
        f"context values cannot hold a {type(value).__name__}; allowed: None, bool, int, float, "
        "str, bytes, list, tuple, dict with str keys, datetime, date, time, timedelta, "
        "Decimal, UUID, set, frozenset"
    )


def _ext_default(value: Any) -> msgpack.ExtType:
    # datetime before date: a datetime is also a date.
    if isinstance(value, dt.datetime):
        return msgpack.ExtType(_EXT_DATETIME, value.isoformat().encode())
    if isinstance(value, dt.date):
        return msgpack.ExtType(_EXT_DATE, value.isoformat().encode())
    if isinstance(value, dt.time):
        return msgpack.ExtType(_EXT_TIME, value.isoformat().encode())
    if isinstance(value, dt.timedelta):
        packed = msgpack.packb([value.days, value.seconds, value.microseconds])
        return msgpack.ExtType(_EXT_TIMEDELTA, packed)
    if isinstance(value, Decimal):
        return msgpack.ExtType(_EXT_DECIMAL, str(value).encode())
    if isinstance(value, uuid.UUID):
        return msgpack.ExtType(_EXT_UUID, value.bytes)
    if isinstance(value, (set, frozenset)):
        return msgpack.ExtType(_EXT_SET, _pack(sorted(value, key=repr)))
    raise _unsupported(value)


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _EXT_DATETIME:
        return dt.datetime.fromisoformat(data.decode())
    if code == _EXT_DATE:
        return dt.date.fromisoformat(data.decode())
    if code == _EXT_TIME:
        return dt.time.fromisoformat(data.decode())
    if code == _EXT_TIMEDELTA:
        days, seconds, micros = msgpack.unpackb(data)
        return dt.timedelta(days=days, seconds=seconds, microseconds=micros)
    if code == _EXT_DECIMAL:
        return Decimal(data.decode())
    if code == _EXT_UUID:
        return uuid.UUID(bytes=data)
    if code == _EXT_SET:
        return set(_unpack(data))
    raise IntegrityError(f"unknown msgpack extension type {code} in stored context")


def _pack(value: Any) -> bytes:
    try:
        return msgpack.packb(value, use_bin_type=True, default=_ext_default, datetime=False)  # type: ignore[no-any-return]
    except (TypeError, OverflowError, ValueError) as exc:
        raise ValidationError(f"context value cannot be encoded: {exc}") from exc


def _unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False, ext_hook=_ext_hook, strict_map_key=True)


class MsgpackCodec:
    """msgpack, with extension types for datetimes and the other non-native types."""

    name = "msgpack"
    _tag = b"M"

    def encode(self, value: Any) -> bytes:
        """The stored form: ``M`` + msgpack."""
        return self._tag + _pack(value)

    def decode(self, raw: bytes) -> Any:
        """Decode any stored form (either codec)."""
        return decode(raw)


_JSON_TAG = "$t"


def _to_json(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(f"context dict keys must be str, not {type(key).__name__}")
            out[key] = _to_json(item)
        # A user dict holding our tag key is wrapped, so it never reads back as a tagged value.
        return {_JSON_TAG: "map", "v": out} if _JSON_TAG in out else out
    if isinstance(value, bytes):
        return {_JSON_TAG: "b", "v": base64.b64encode(value).decode()}
    if isinstance(value, (set, frozenset)):
        return {_JSON_TAG: "set", "v": [_to_json(v) for v in sorted(value, key=repr)]}
    ext = _ext_default(value)  # the same type table as msgpack: one list of supported types
    return {_JSON_TAG: str(ext.code), "v": ext.data.decode("latin-1")}


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if not isinstance(value, dict):
        return value
    tag = value.get(_JSON_TAG)
    if tag is None:
        return {k: _from_json(v) for k, v in value.items()}
    inner: Any = value.get("v")
    if tag == "map":
        return {k: _from_json(v) for k, v in inner.items()}
    if tag == "b":
        return base64.b64decode(inner)
    if tag == "set":
        return {_from_json(v) for v in inner}
    return _ext_hook(int(tag), inner.encode("latin-1"))


class JsonCodec:
    """JSON (readable with redis-cli); non-JSON types become ``{"$t": tag, "v": ...}``."""

    name = "json"
    _tag = b"J"

    def encode(self, value: Any) -> bytes:
        """The stored form: ``J`` + compact JSON."""
        try:
            text = json.dumps(_to_json(value), separators=(",", ":"), allow_nan=False)
        except ValueError as exc:
            raise ValidationError(f"context value cannot be encoded as JSON: {exc}") from exc
        return self._tag + text.encode()

    def decode(self, raw: bytes) -> Any:
        """Decode any stored form (either codec)."""
        return decode(raw)


def decode(raw: bytes) -> Any:
    """Decode a stored context value, whichever codec wrote it."""
    tag, body = raw[:1], raw[1:]
    try:
        if tag == b"M":
            return _unpack(body)
        if tag == b"J":
            return _from_json(json.loads(body))
    except IntegrityError:
        raise
    except Exception as exc:
        raise IntegrityError(f"stored context value is damaged: {exc}") from exc
    raise IntegrityError(f"stored context value has an unknown codec tag {tag!r}")


CODECS: dict[str, ContextCodec] = {"msgpack": MsgpackCodec(), "json": JsonCodec()}


def codec_named(name: str) -> ContextCodec:
    """The codec called ``name`` ("msgpack" or "json")."""
    try:
        return CODECS[name]
    except KeyError:
        raise ValidationError(
            f"context codec must be one of {sorted(CODECS)}, got {name!r}"
        ) from None
