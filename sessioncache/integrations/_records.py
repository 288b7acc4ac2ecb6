"""Record hashes shared by the integrations: one field per top-level key, merged in Lua."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import msgpack
from redis.exceptions import RedisError

from ..arguments import DEFAULT_RETRY_HORIZON_MS, op_args
from ..backends import RedisSettings, connect, is_cluster
from ..codec import VALUE_TAG, Limits, data_field, decode_value, encode_value
from ..errors import BackendUnavailable, IntegrityError, ValidationError
from ..keys import KeySchema
from ..scripts import Script, registry
from ..slots import tag_slot

_unpackb = msgpack.unpackb
_CLUSTER_MOVE_ATTEMPTS = 5

Encoded = dict[bytes, bytes]


def ttl_ms(value: object, what: str) -> int:
    """Seconds (int, float) or a timedelta as milliseconds; None is 0 (no expiry)."""
    if value is None:
        return 0
    seconds = value.total_seconds() if isinstance(value, dt.timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ValidationError(f"{what} must be seconds or a timedelta, got {value!r}")
    if not 0 < seconds <= 10 * 365 * 86400:
        raise ValidationError(f"{what} must be in (0 s, 10 years], got {value!r}")
    return max(1, round(seconds * 1000))


def client_from_url(url: str, options: Mapping[str, Any]) -> Any:
    """A client for the URL without any round trip (the frameworks build storage synchronously)."""
    return connect(RedisSettings.from_options(url, **options))


def encode_str_fields(data: Mapping[str, Any], limits: Limits, what: str) -> list[bytes | str]:
    """[field, value, ...] for a mapping with str keys."""
    if len(data) > limits.max_fields:
        raise ValidationError(f"{what} has {len(data)} keys; the limit is {limits.max_fields}")
    out: list[bytes | str] = []
    for name, value in data.items():
        out.append(data_field(name, limits))
        out.append(encode_value(value, limits, f"{what}[{name!r}]"[:120]))
    return out


def pairs_of(flat: Any) -> Iterable[tuple[bytes, bytes]]:
    """HGETALL's reply as (field, value) pairs: a dict under RESP3, a flat list from Lua."""
    if isinstance(flat, dict):
        return flat.items()
    return zip(flat[0::2], flat[1::2], strict=True)


def decode_str_record(flat: Any) -> dict[str, Any]:
    """A record hash as a dict with str keys (the hot path of get_data and update_data)."""
    out: dict[str, Any] = {}
    # Inlined field_name() and decode_value(): this loop runs for every key on every read.
    try:
        for raw_name, raw_value in pairs_of(flat):
            if len(raw_name) == 1:
                continue
            name = raw_name.decode("utf-8")
            if name[0] == "~":
                name = name[1:]
            if raw_value[:1] == VALUE_TAG:
                out[name] = _unpackb(
                    raw_value[1:], raw=False, timestamp=3, strict_map_key=True
                )
            else:
                out[name] = raw_value.decode("utf-8")
    except (ValueError, msgpack.UnpackException) as exc:
        raise IntegrityError(f"stored record is not valid: {exc}") from exc
    return out


class RecordWriter:
    """Runs record_merge.lua / record_replace.lua with op ids and error wrapping."""

    def __init__(
        self,
        client: Any,
        limits: Limits,
        keys: KeySchema,
        retry_horizon_ms: int = DEFAULT_RETRY_HORIZON_MS,
    ) -> None:
        self.client = client
        self.limits = limits
        self.keys = keys
        self._horizon_ms = str(retry_horizon_ms).encode()
        self._merge: Script = registry().record_merge
        self._replace: Script = registry().record_replace
        self._max_fields = str(limits.max_fields).encode()

    async def merge(
        self,
        key: str,
        pairs: list[bytes | str],
        deletes: Iterable[bytes | str] = (),
        *,
        ttl: str,
        full: bool,
    ) -> Any:
        """Set pairs and delete fields in one atomic step; the new hash (full) or its size."""
        args: list[Any] = [
            ttl,
            self._max_fields,
            b"full" if full else b"size",
            str(len(pairs) // 2),
            *pairs,
            *deletes,
        ]
        reply = await self._merge.run(
            self.client, [key, self.keys.op_log(key)], op_args(self._horizon_ms, args)
        )
        if reply[0] == -3:
            raise ValidationError(
                f"the record would hold {reply[1]} keys; the limit is {self.limits.max_fields}"
            )
        return reply[1]

    async def migrate(
        self,
        old_key: str,
        new_key: str,
        pairs: list[bytes | str],
        deletes: list[bytes],
        *,
        ttl: str,
    ) -> Any:
        """Move the record at old_key to new_key (replacing it), then set pairs and delete
        fields; the new record's HGETALL. Nothing stored at old_key: new_key keeps what it holds."""
        script = registry().ptb_migrate
        if not is_cluster(self.client) or _slot_of(old_key) == _slot_of(new_key):
            args = op_args(self._horizon_ms, [ttl, str(len(pairs) // 2), *pairs, *deletes])
            keys = [old_key, new_key, self.keys.op_log(new_key)]
            return (await script.run(self.client, keys, args))[1]
        # A cluster whose two chat keys live in different slots: no script may touch both.
        # Copy, then delete the old record only if its content is still what was copied, else
        # copy again. Never loses data; see docs/integrations.md.
        for _ in range(_CLUSTER_MOVE_ATTEMPTS):
            try:
                stored = dict(pairs_of(await self.client.hgetall(old_key)))
            except RedisError as exc:
                raise BackendUnavailable(f"Redis unavailable reading {old_key!r}: {exc}") from exc
            if not stored:
                return await self.merge(new_key, pairs, deletes, ttl=ttl, full=True)
            mark = content_mark(stored)
            stored.pop(b"o", None)  # op ids of a record written before the op log
            stored.update(zip(pairs[0::2], pairs[1::2], strict=True))  # type: ignore[arg-type]
            for field in deletes:
                stored.pop(field, None)
            flat: list[bytes | str] = [x for pair in stored.items() for x in pair]
            await self.replace(new_key, flat, ttl=ttl or "0")
            if await script.run(self.client, [old_key], [mark]) == 1:
                return flat
        raise BackendUnavailable(
            f"chat record {old_key!r} kept changing during its migration; it was copied to "
            f"{new_key!r} and kept (nothing lost): migrate again"
        )

    async def replace(self, key: str, pairs: list[bytes | str], *, ttl: str) -> None:
        await self._replace.run(
            self.client, [key, self.keys.op_log(key)], op_args(self._horizon_ms, [ttl, *pairs])
        )


def _freeze(value: Any) -> Any:
    """msgpack hands lists back; keys (and conversation keys) must be hashable tuples."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def encode_key(key: Any, limits: Limits) -> bytes:
    """A dict key as a hash field: str keys as the core codec's data fields, others msgpack'd."""
    if isinstance(key, str):
        return data_field(key, limits).encode("utf-8")
    raw = encode_value(key, limits, "key")
    if raw[:1] != VALUE_TAG:  # pragma: no cover - encode_value tags every non-str value
        raise ValidationError(f"cannot use {key!r} as a key")
    return raw


def decode_key(raw: bytes) -> Any:
    if raw[:1] == VALUE_TAG:
        return _freeze(decode_value(raw))
    text = raw.decode("utf-8")
    return text[1:] if text[0] == "~" else text


def remote_fields(flat: Any) -> Encoded:
    """A stored record without its own one-character fields (op ids)."""
    return {bytes(f): bytes(v) for f, v in pairs_of(flat) if len(f) > 1}


def _slot_of(key: str) -> int:
    return tag_slot(key.partition("{")[2].partition("}")[0])


def content_mark(stored: Encoded) -> str:
    """What ptb_migrate.lua compares to tell a record is unchanged: the field count and the sum
    of each row's 32-bit SHA1 prefix (order-free: neither side sorts; exact in Lua's doubles
    up to two million rows)."""
    total = 0
    for field, value in stored.items():
        row = b"%d:%s%d:%s" % (len(field), field, len(value), value)
        total += int(hashlib.sha1(row).hexdigest()[:8], 16)
    return f"{len(stored)}:{total}"
