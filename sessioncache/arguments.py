"""Script arguments: op ids and the retry horizon, and the checks that turn a caller's input
into a script's ARGV (ValidationError before anything is sent)."""

from __future__ import annotations

import os
import random
from base64 import urlsafe_b64encode
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from .backends import RedisSettings
from .codec import Limits, data_field, encode_mapping, metadata_field
from .errors import ValidationError
from .identity import Identity
from .keys import KeySchema
from .models import SessionState

RETRY_MARGIN_S = 30.0
"""Seconds added to the computed retry horizon: for a request that a proxy or a kernel buffer
delivers after its sender gave up (see docs/guarantees.md, "Retries")."""


def retry_horizon_ms(settings: RedisSettings) -> int:
    """How long after a write its op id is remembered, from the client's retry settings.

    Every attempt of a call may take a connect, a full socket timeout and a backoff pause:
    attempts x (connect timeout + socket timeout + backoff cap), plus RETRY_MARGIN_S.
    """
    attempts = settings.retries + 1
    per_attempt = settings.socket_connect_timeout + settings.socket_timeout + settings.backoff_cap
    return round((attempts * per_attempt + RETRY_MARGIN_S) * 1000)


DEFAULT_RETRY_HORIZON_MS = retry_horizon_ms(RedisSettings())


# Op ids need to be unique, not secret: a generator of our own, seeded from os.urandom (a
# syscall per call cost a microsecond on the hot path) and reseeded in a forked child, so two
# processes never share a sequence; random.seed() in user code does not touch it.
_op_random = random.Random()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_op_random.seed)


def new_op_id() -> str:
    """16 random characters (96 bits) naming one call; every retry of the call repeats it."""
    return urlsafe_b64encode(_op_random.getrandbits(96).to_bytes(12, "little")).decode()


def op_args(horizon_ms: str | bytes, args: Sequence[Any]) -> list[Any]:
    """A mutating script's ARGV: op id, call digest, retry horizon, then the call's own args.

    The digest binds the op id to these arguments: the op log records the pair, so an op id
    reused with other arguments is another call, never "already applied" (lib/ops.lua). Retries
    happen inside the process that made the call, so the process-salted built-in hash is
    enough, and cheap: str and bytes cache theirs. Op id and digest are bytes, which stock
    redis-py's packer passes through without encoding.
    """
    opid = urlsafe_b64encode(_op_random.getrandbits(96).to_bytes(12, "little"))
    return [opid, b"%x" % (hash(tuple(args)) & 0xFFFFFFFFFFFFFFFF), horizon_ms, *args]


def ttl_ms(ttl: float | None, what: str = "ttl") -> int:
    """Seconds as script milliseconds (0 for None); ValidationError outside (0, 10 years]."""
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
    """A priority as a script argument (empty: unchanged); ValidationError if bad."""
    if priority is None:
        return ""
    if isinstance(priority, bool) or not isinstance(priority, int) or not -1000 <= priority <= 1000:
        raise ValidationError(f"priority must be an int in [-1000, 1000], got {priority!r}")
    return str(priority)


def check_state(state: str) -> str:
    """A state name as a script argument; ValidationError unless a str of 1 to 64 chars."""
    state_name = state.value if isinstance(state, SessionState) else state
    if not isinstance(state_name, str) or not state_name or len(state_name) > 64:
        raise ValidationError(f"state must be a non-empty str of at most 64 chars: {state!r}")
    return state_name


def check_messages(messages: int) -> str:
    """A message count for touch.lua; ValidationError unless an int in [0, 1000000]."""
    if isinstance(messages, bool) or not isinstance(messages, int) or not 0 <= messages <= 10**6:
        raise ValidationError(f"messages must be an int in [0, 1000000], got {messages!r}")
    return str(messages)


def create_fields(
    data: Mapping[str, Any] | None, metadata: Mapping[str, Any] | None, limits: Limits
) -> list[Any]:
    """create.lua's field/value pairs for a new session's data and metadata, checked."""
    pairs = encode_mapping(data, data_field, limits, "data")
    pairs += encode_mapping(metadata, metadata_field, limits, "metadata")
    if len(pairs) // 2 > limits.max_fields:
        raise ValidationError(
            f"data and metadata hold {len(pairs) // 2} fields; "
            f"a session holds at most {limits.max_fields}"
        )
    return pairs


def update_fields(
    data: Mapping[str, Any] | None,
    metadata: Mapping[str, Any] | None,
    delete: Iterable[str],
    delete_metadata: Iterable[str],
    limits: Limits,
) -> tuple[int, list[Any]]:
    """update.lua's field/value pairs, then the fields to delete: (number of pairs, list)."""
    pairs = encode_mapping(data, data_field, limits, "data") if data is not None else []
    if metadata is not None:
        pairs += encode_mapping(metadata, metadata_field, limits, "metadata")
    npairs = len(pairs) // 2
    if delete or delete_metadata:
        if isinstance(delete, str) or isinstance(delete_metadata, str):
            raise ValidationError("delete and delete_metadata take a list of names, not a str")
        dels = [data_field(name, limits) for name in delete]
        dels += [metadata_field(name, limits) for name in delete_metadata]
        if npairs + len(dels) > limits.max_fields:
            raise ValidationError(f"one update may touch at most {limits.max_fields} fields")
        pairs += dels
    elif npairs > limits.max_fields:
        raise ValidationError(f"one update may touch at most {limits.max_fields} fields")
    return npairs, pairs


class StoreExtras(Protocol):
    """Extra KEYS/ARGV a feature adds to create.lua and delete.lua (see their headers).

    Given to the store's constructor (``extras=``), so every create and delete of that store
    writes the feature's keys too; the state tracker's are ``TrackerConfig.store_extras()``.
    """

    def create_extras(self, keys: KeySchema, ident: Identity) -> tuple[list[str], list[Any]]:
        """KEYS appended after create.lua's four, and ARGV appended after its field pairs."""

    def delete_extras(self, keys: KeySchema, ident: Identity) -> list[str]:
        """KEYS appended after delete.lua's four."""
