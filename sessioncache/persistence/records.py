"""Record validation: the one set of bounds the backup writer and every reader apply."""

from __future__ import annotations

import re
from typing import Any

from ..codec import MAX_HASH_FIELDS
from ..errors import IntegrityError, ValidationError
from ..identity import parse_session_id
from .formats import Record

MAX_RECORD_FIELDS = MAX_HASH_FIELDS
"""The bound Limits itself keeps every session under (codec.MAX_HASH_FIELDS), and few enough
for restore_session.lua to unpack in one HSET; the writer refuses a session beyond it."""
MAX_INT = 2**53 - 1
"""Largest integer field a record may carry (version, timestamps, counts): the scripts do
arithmetic on them in Lua doubles, exact up to 2**53, and format them with %d."""
MAX_COUNTER = 2**50
"""Largest version or message count a record may carry: 2**53 - 2**50 increments of headroom."""
_INT_FIELDS = (
    (b"v", MAX_COUNTER),
    (b"m", MAX_COUNTER),
    (b"c", MAX_INT),
    (b"u", MAX_INT),
    (b"a", MAX_INT),
    (b"e", MAX_INT),
    (b"t", MAX_INT),
)
_NAMES = {
    b"v": "version",
    b"m": "message count",
    b"c": "creation time",
    b"u": "update time",
    b"a": "activity time",
    b"e": "expiry",
    b"t": "ttl",
}
MAX_EVENT_ENTRIES = 10_000
"""Most entries of one event stream a backup holds (the newest; the tracker's default cap is
10,000, approximately) and a restore accepts: restore_events.lua writes them in one call."""
MAX_EVENT_ENTRY_VALUES = 7900
"""Most fields + values of one stream entry: restore_events.lua XADDs an entry with one
unpack(), which Lua caps at ~8000 values (track_event.lua's own XADD has the same bound)."""
MAX_EVENT_VALUES = 1_000_000
"""Most fields + values of one stream record in all (10,000 entries of the default 32 user
fields take 680,000): bounds the arguments and the time of one restore_events.lua call."""
_CORE = (b"v", b"s", b"c", b"u", b"a", b"e", b"m")
_ENTRY_ID = re.compile(rb"(\d{1,20})-(\d{1,20})")
_MAX_ID_PART = 2**64 - 1

def _bad(message: str) -> IntegrityError:
    return IntegrityError(message)


_BYTES = {bytes}


def check_part(records: list[Any]) -> list[Record]:
    """Every record of a part checked; each event record must follow its session's record."""
    checked = [check_record(r) for r in records]
    for index, record in enumerate(checked):
        if record[0] == "e":
            before = checked[index - 1] if index else None
            if before is None or before[0] != "s" or before[1] != record[1]:
                raise _bad(
                    f"event stream of {record[1]!r} does not follow that session's record"
                )
    return checked


def _check_sid_expire(sid: Any, expire: Any) -> None:
    # Expiries past MAX_INT are refused for sessions (check_integers); streams need only >= 0.
    if not isinstance(sid, str):
        raise _bad("record session id is not a str")
    try:
        parse_session_id(sid, cache=False)
    except ValidationError as exc:
        raise _bad(f"record carries an invalid session id: {exc}") from exc
    if isinstance(expire, bool) or not isinstance(expire, int) or expire < 0:
        raise _bad("record expiry is not a non-negative int")


def check_events(record: list[Any]) -> Record:
    """An event stream record: ["e", sid, expire, [[entry_id, [field, value, ...]], ...]].

    Ids canonical ``<ms>-<seq>``, strictly increasing and above 0-0 (restore_events.lua XADDs
    them in order and must never fail half-way); values bytes, in pairs; counts bounded.
    """
    if len(record) != 4:
        raise _bad("event record does not have 4 items")
    _, sid, expire, entries = record
    _check_sid_expire(sid, expire)
    if type(entries) is not list:
        raise _bad("event record entries are not a list")
    if len(entries) > MAX_EVENT_ENTRIES:
        raise _bad(f"stream of {sid!r} has {len(entries)} entries; at most {MAX_EVENT_ENTRIES}")
    last = (0, 0)
    total = 0
    for entry in entries:
        if type(entry) is not list or len(entry) != 2:
            raise _bad(f"stream of {sid!r} has an entry that is not [id, values]")
        entry_id, values = entry
        match = _ENTRY_ID.fullmatch(entry_id) if type(entry_id) is bytes else None
        if match is None:
            raise _bad(f"stream of {sid!r} has a malformed entry id {str(entry_id)[:40]}")
        current = (int(match[1]), int(match[2]))
        if (
            b"%d-%d" % current != entry_id
            or current[0] > _MAX_ID_PART
            or current[1] > _MAX_ID_PART
        ):
            raise _bad(f"stream of {sid!r} has a non-canonical entry id {entry_id[:40]!r}")
        if current <= last:
            problem = "an entry id 0-0" if current == (0, 0) else "entry ids out of order at"
            raise _bad(f"stream of {sid!r} has {problem} {entry_id[:40]!r}")
        last = current
        if (
            type(values) is not list
            or not values
            or len(values) % 2
            or len(values) > MAX_EVENT_ENTRY_VALUES
            or set(map(type, values)) != _BYTES
        ):
            raise _bad(
                f"stream of {sid!r}: entry {entry_id[:40]!r} is not 1 to "
                f"{MAX_EVENT_ENTRY_VALUES // 2} field/value pairs of bytes"
            )
        total += len(values)
    if total > MAX_EVENT_VALUES:
        raise _bad(f"stream of {sid!r} holds {total} values; at most {MAX_EVENT_VALUES}")
    return record


def check_record(record: Any) -> Record:
    """Refuse anything that is not a well-formed session, tombstone or event stream record."""
    if not isinstance(record, list) or not record:
        raise _bad("record is not a list")
    kind = record[0]
    if kind == "d" and len(record) == 2 and isinstance(record[1], str):
        try:
            parse_session_id(record[1], cache=False)
        except ValidationError as exc:
            raise _bad(f"tombstone carries an invalid session id: {exc}") from exc
        return record
    if kind == "e":
        return check_events(record)
    if kind != "s" or len(record) != 4:
        raise _bad(f"unknown record kind {str(kind)[:20]!r}")
    _, sid, expire, fields = record
    _check_sid_expire(sid, expire)
    # Type sets built at C speed: this runs for every field of every restored session.
    if (
        type(fields) is not dict
        or set(map(type, fields)) != _BYTES
        or set(map(type, fields.values())) != _BYTES
        or b"" in fields
    ):
        raise _bad("record fields are not a map of bytes to bytes")
    if len(fields) > MAX_RECORD_FIELDS:
        raise _bad(f"session {sid!r} has {len(fields)} fields; at most {MAX_RECORD_FIELDS}")
    for name in _CORE:
        if name not in fields:
            raise _bad(f"session {sid!r} lacks core field {name.decode()!r}")
    check_integers(sid, expire, fields)
    return record


def check_integers(sid: str, expire: int, fields: dict[bytes, bytes]) -> None:
    """The integer fields of a session (and its expiry) are decimal (IntegrityError) and within
    what sessioncache writes (ValidationError): past MAX_INT (MAX_COUNTER for the version and
    message count, which updates increment), Lua's arithmetic would corrupt them."""
    if expire > MAX_INT:
        raise ValidationError(f"session {sid!r}: expiry {expire} is beyond {MAX_INT}")
    for name, top in _INT_FIELDS:
        raw = fields.get(name)
        if raw is None:
            continue
        if not raw.isdigit():
            raise _bad(f"session {sid!r} has a non-numeric {_NAMES[name]}")
        if len(raw) > 16 or int(raw) > top:
            raise ValidationError(
                f"session {sid!r}: {_NAMES[name]} must be an integer in [0, {top}], "
                f"got {raw[:24].decode()}"
            )
    priority = fields.get(b"p")
    if priority is not None:
        if not priority.removeprefix(b"-").isdigit():
            raise _bad(f"session {sid!r} has a non-numeric priority")
        if len(priority) > 5 or not -1000 <= int(priority) <= 1000:
            raise ValidationError(
                f"session {sid!r}: priority must be an integer in [-1000, 1000], "
                f"got {priority[:24].decode()}"
            )
