"""Key encoding: hostile ids are refused or encoded; distinct identities never share a key."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sessioncache import KeySchema, ValidationError
from sessioncache.identity import MAX_ID_BYTES, Identity, make_identity, parse_session_id

ids = st.one_of(
    st.text(min_size=1, max_size=40),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from(["{x}", "a:b", "*", "?", "[a-z]", "%", "%3A", ":", "}{", "\\", " ", "~", "@"]),
)
platforms = st.sampled_from(["telegram", "discord", "web", "my-bot", "x_1"])
identities = st.tuples(platforms, ids, ids, st.one_of(st.none(), ids))


def _normal(parts: tuple[object, ...]) -> tuple[object, ...]:
    return tuple(None if p is None else str(p) for p in parts)


@settings(max_examples=400, deadline=None)
@given(identities, identities)
def test_distinct_identities_never_share_a_key(a: tuple, b: tuple) -> None:  # type: ignore[type-arg]
    keys = KeySchema("sc")
    ia, ib = make_identity(*a), make_identity(*b)
    if _normal(a) == _normal(b):
        assert keys.session(ia) == keys.session(ib)
    else:
        assert keys.session(ia) != keys.session(ib)
        assert ia.session_id != ib.session_id


@settings(max_examples=400, deadline=None)
@given(identities)
def test_keys_have_one_hash_tag_no_globs_and_round_trip(parts: tuple) -> None:  # type: ignore[type-arg]
    keys = KeySchema("sc")
    ident = make_identity(*parts)
    key = keys.session(ident)
    assert key.count("{") == 1 and key.count("}") == 1
    tag = key[key.index("{") + 1 : key.index("}")]
    assert tag == ident.user_tag
    assert keys.user_index(ident.user_tag).endswith("{" + tag + "}")
    assert not re.search(r"[*?\[\]\\\s]", key)
    assert parse_session_id(ident.session_id) == ident
    assert keys.session_id_of_key(key) == ident.session_id
    # The backup finds a session's event stream from its hash key: the tracker's own key.
    stream = keys.events_of_session_key(key)
    assert stream == keys.events(ident)
    assert keys.events_of_session_key(keys.restore_keys(ident.session_id)[0]) == stream


@pytest.mark.parametrize(
    "bad",
    [None, 1.5, b"bytes", ["list"], {"d": 1}, True, "", "x" * (MAX_ID_BYTES + 1), "x" * 10_000],
)
def test_bad_ids_raise_validation_error(bad: object) -> None:
    for position in (1, 2):  # chat_id, user_id
        parts: list[object] = ["telegram", "c", "u"]
        parts[position] = bad
        with pytest.raises(ValidationError):
            make_identity(*parts)
    with pytest.raises(ValidationError):
        make_identity("telegram", "c", "u", bad if bad is not None else 1.5)


@pytest.mark.parametrize("hostile", ["{x}", "a:b", "*", "?", "a{b}c:*?[x]", "\x00", "\ud800"])
def test_hostile_strings_are_encoded_or_refused(hostile: str) -> None:
    try:
        ident = make_identity("telegram", hostile, hostile, hostile)
    except ValidationError:
        assert hostile == "\ud800"  # a lone surrogate is not text
        return
    key = KeySchema().session(ident)
    assert key.count("{") == 1 and key.count("}") == 1
    assert ident.chat_id == hostile and parse_session_id(ident.session_id) == ident


@pytest.mark.parametrize(
    "sid",
    [
        "telegram:a",
        "telegram:a:b:c:d",
        "Telegram:a:b",
        "telegram:%zz:b",
        "telegram:%61:b",  # non-canonical: "a" needs no escape
        "telegram:a{x}:b",
        "telegram::b",
        "telegram:a:*",
        "x" * 20_000,
    ],
)
def test_malformed_session_ids_are_refused(sid: str) -> None:
    with pytest.raises(ValidationError):
        parse_session_id(sid)


def test_session_id_must_be_str() -> None:
    with pytest.raises(ValidationError):
        parse_session_id(["telegram", "a", "b"])


def test_events_key_only_from_a_session_key_of_the_namespace() -> None:
    keys = KeySchema("sc")
    for bad in ("sc:u:{u1}", "other:s:{u1}:web:1", "sc:ev:{u1}:web:1", ""):
        with pytest.raises(ValidationError):
            keys.events_of_session_key(bad)


def test_int_and_str_ids_are_the_same_identity() -> None:
    assert make_identity("telegram", 5, 7) == make_identity("telegram", "5", "7")
    assert make_identity("telegram", 5, 7) == Identity("telegram", "5", "7", None)


@pytest.mark.parametrize("ns", ["", "a{b}", "a*", "a b", "x" * 65, "a:b"])
def test_bad_namespaces_are_refused(ns: str) -> None:
    with pytest.raises(ValidationError):
        KeySchema(ns)


@pytest.mark.parametrize("platform", ["", "Telegram", "has space", "a" * 33, "{x}", 5])
def test_bad_platforms_are_refused(platform: object) -> None:
    with pytest.raises(ValidationError):
        make_identity(platform, "c", "u")
