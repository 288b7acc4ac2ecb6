"""Value and field-name encoding, and the limits checked before anything reaches Redis."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sessioncache import Limits, ValidationError
from sessioncache.codec import data_field, decode_value, encode_value, metadata_field

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_values_round_trip(value: object) -> None:
    try:
        raw = encode_value(value)
    except ValidationError:
        # only lone surrogates in text are refused among these
        return
    assert decode_value(raw) == value


def test_text_costs_no_extra_byte_and_datetimes_keep_their_instant() -> None:
    assert encode_value("hello") == b"hello"
    when = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.timezone(dt.timedelta(hours=3)))
    assert decode_value(encode_value({"at": when}))["at"] == when


@pytest.mark.parametrize(
    "bad",
    [
        dt.datetime(2026, 1, 1),  # naive
        math.nan,
        {1: "int key"},
        {"a", "set"},
        2**64,
        object(),
    ],
)
def test_unstorable_values_raise(bad: object) -> None:
    with pytest.raises(ValidationError):
        encode_value(bad)


def test_limits_on_size_and_nesting() -> None:
    limits = Limits(max_value_bytes=100, max_nesting=3)
    encode_value("x" * 100, limits)
    with pytest.raises(ValidationError, match="100"):
        encode_value("x" * 101, limits)
    encode_value([[1]], limits)
    with pytest.raises(ValidationError, match="deeper"):
        encode_value([[[1]]], limits)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_limits_must_be_positive_ints(bad: object) -> None:
    with pytest.raises(ValidationError):
        Limits(max_fields=bad)  # type: ignore[arg-type]


def test_field_names_never_collide_with_core_or_metadata_fields() -> None:
    assert data_field("name") == "name"
    assert data_field("v") == "~v"
    assert data_field("~x") == "~~x"
    assert data_field("@x") == "~@x"
    assert metadata_field("v") == "@v"
    for bad in ["", 5, None, "x" * 257]:
        with pytest.raises(ValidationError):
            data_field(bad)
        with pytest.raises(ValidationError):
            metadata_field(bad)
