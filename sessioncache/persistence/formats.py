"""Part codecs: json, msgpack and pickle, each optionally gzip-compressed; pickle behind a guard."""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import json
import pickle
import zlib
from dataclasses import dataclass
from typing import Any

import msgpack

from ..errors import IntegrityError, ValidationError

FORMATS = ("json", "json.gz", "msgpack", "msgpack.gz", "pickle", "pickle.gz")
PICKLE_FORMATS = ("pickle", "pickle.gz")
MAX_PART_BYTES = 1 << 30
"""Largest decompressed part accepted: a gzip bomb stops here instead of exhausting memory."""

# A record is ["s", session_id, expire_at_ms, {field: value}] (a session as stored, expire 0 =
# none), ["d", session_id] (a tombstone: deleted or expired since the previous backup) or
# ["e", session_id, expire_at_ms, [[entry_id, [field, value, ...]], ...]] (the session's event
# stream as stored, oldest entry first; written right after that session's "s" record).
Record = list[Any]


def kind_counts(records: list[Record]) -> tuple[int, int, int]:
    """(sessions, tombstones, event streams) among records of known kinds."""
    sessions = events = 0
    for record in records:
        kind = record[0]
        if kind == "s":
            sessions += 1
        elif kind == "e":
            events += 1
    return sessions, len(records) - sessions - events, events


def check_format(name: object) -> str:
    if name not in FORMATS:
        raise ValidationError(f"format must be one of {', '.join(FORMATS)}; got {name!r}")
    return str(name)


class _NoGlobals(pickle.Unpickler):
    """Records are lists, dicts, str, bytes and ints: no class is ever needed to load one."""

    def find_class(self, module: str, name: str) -> Any:
        raise IntegrityError(f"backup pickle refers to {module}.{name}; refused")


def _gunzip(data: bytes) -> bytes:
    # wbits=31: gzip framing. max_length bounds memory whatever the compressed data claims.
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, MAX_PART_BYTES)
    except zlib.error as exc:
        raise IntegrityError(f"part is not valid gzip: {exc}") from exc
    if inflater.unconsumed_tail or not inflater.eof:
        raise IntegrityError("part is truncated or decompresses beyond the size limit")
    return out


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise IntegrityError("json part holds a non-string where base64 was expected")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise IntegrityError(f"json part holds invalid base64: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Codec:
    """Encodes a list of records into a part's bytes and back."""

    name: str
    compresslevel: int = 1

    @property
    def base(self) -> str:
        return self.name.removesuffix(".gz")

    @property
    def compressed(self) -> bool:
        return self.name.endswith(".gz")

    @property
    def is_pickle(self) -> bool:
        return self.base == "pickle"

    def encode(self, records: list[Record]) -> bytes:
        if self.base == "json":
            raw = json.dumps([_json_record(r) for r in records], separators=(",", ":")).encode()
        elif self.base == "msgpack":
            raw = msgpack.packb(records, use_bin_type=True)
        else:
            raw = pickle.dumps(records, protocol=5)
        if self.compressed:
            raw = gzip.compress(raw, compresslevel=self.compresslevel, mtime=0)
        return raw

    def decode(self, data: bytes, *, pickle_allowed: bool = False) -> list[Any]:
        """Decode a part whose checksum (and, for pickle, signature) was already verified."""
        raw = _gunzip(data) if self.compressed else data
        if self.base == "json":
            try:
                doc = json.loads(raw)
            except ValueError as exc:
                raise IntegrityError(f"json part does not parse: {exc}") from exc
            if not isinstance(doc, list):
                raise IntegrityError("json part is not a list of records")
            return [_json_unrecord(r) for r in doc]
        if self.base == "msgpack":
            try:
                doc = msgpack.unpackb(raw, raw=False, strict_map_key=False, use_list=True)
            except Exception as exc:
                raise IntegrityError(f"msgpack part does not parse: {exc}") from exc
            if not isinstance(doc, list):
                raise IntegrityError("msgpack part is not a list of records")
            return doc
        if not pickle_allowed:
            raise IntegrityError("refusing to unpickle: signature not verified or not allowed")
        try:
            doc = _NoGlobals(io.BytesIO(raw)).load()
        except IntegrityError:
            raise
        except Exception as exc:
            raise IntegrityError(f"pickle part does not load: {exc}") from exc
        if not isinstance(doc, list):
            raise IntegrityError("pickle part is not a list of records")
        return doc


def _json_bytes(data: bytes) -> str | list[str]:
    """Text where the bytes are UTF-8, else a one-element list holding their base64."""
    try:
        return data.decode()
    except UnicodeDecodeError:
        return [_b64(data)]


def _json_unbytes(item: Any) -> bytes:
    if isinstance(item, str):
        try:
            return item.encode()
        except UnicodeEncodeError as exc:
            raise IntegrityError("json event record holds text that is not UTF-8") from exc
    if isinstance(item, list) and len(item) == 1:
        return _unb64(item[0])
    raise IntegrityError("json event record holds a value that is neither text nor [base64]")


def _json_record(record: Record) -> list[Any]:
    # Field names are always UTF-8 (codec.py validates them); values are UTF-8 text or
    # 0xC1+msgpack. Text stays readable; anything else goes to a base64 map.
    if record[0] == "e":
        # Stream entries: every id, field and value as text, or [base64] where not UTF-8.
        entries = [
            [_json_bytes(entry_id), [_json_bytes(v) for v in values]]
            for entry_id, values in record[3]
        ]
        return ["e", record[1], record[2], entries]
    if record[0] != "s":
        return list(record)
    text: dict[str, str] = {}
    binary: dict[str, str] = {}
    for name, value in record[3].items():
        try:
            text[name.decode()] = value.decode()
        except UnicodeDecodeError:
            binary[name.decode()] = _b64(value)
    return ["s", record[1], record[2], text, binary]


def _json_unrecord(item: Any) -> list[Any]:
    if isinstance(item, list) and len(item) == 4 and item[0] == "e":
        entries = item[3]
        if not isinstance(entries, list):
            raise IntegrityError("json event record has no list of entries")
        out = []
        for entry in entries:
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], list)):
                raise IntegrityError("json event record has a malformed entry")
            out.append([_json_unbytes(entry[0]), [_json_unbytes(v) for v in entry[1]]])
        return ["e", item[1], item[2], out]
    if not (isinstance(item, list) and len(item) == 5 and item[0] == "s"):
        return item if isinstance(item, list) else [item]
    text, binary = item[3], item[4]
    if not isinstance(text, dict) or not isinstance(binary, dict):
        raise IntegrityError("json record has malformed field maps")
    try:
        fields = {k.encode(): v.encode() for k, v in text.items()}
    except (AttributeError, UnicodeEncodeError) as exc:
        raise IntegrityError("json record has a non-text field in its text map") from exc
    for name, value in binary.items():
        fields[name.encode()] = _unb64(value)
    return ["s", item[1], item[2], fields]
