"""Codecs: ZiProto byte-identical with the ``ziproto`` reference, and safe on hostile input."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest
import ziproto
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncapy.wire.codecs import _BY_NAME, CODECS, DecodeError, EncodeError, get_codec, register_codec

ZIPROTO = get_codec("ziproto")
JSON = get_codec("json")

_text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=300)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | _text
)


def json_values(max_leaves: int, max_size: int) -> st.SearchStrategy[Any]:
    return st.recursive(
        _scalars,
        lambda children: st.lists(children, max_size=max_size)
        | st.dictionaries(_text, children, max_size=max_size),
        max_leaves=max_leaves,
    )


@settings(max_examples=400, deadline=None)
@given(json_values(max_leaves=60, max_size=40))
def test_ziproto_encode_is_byte_identical_with_the_reference(value: Any) -> None:
    assert ZIPROTO.encode(value) == bytes(ziproto.encode(value))


# The reference decoder cannot read array16/map16 (it calls a missing struct.decode),
# so the decode direction stays with containers of at most 15 items.
@settings(max_examples=400, deadline=None)
@given(json_values(max_leaves=40, max_size=15))
def test_ziproto_decodes_what_the_reference_writes_and_back(value: Any) -> None:
    reference = bytes(ziproto.encode(value))
    assert ZIPROTO.decode(reference) == value
    assert ziproto.decode(ZIPROTO.encode(value)) == value


def test_bytes_round_trip_and_the_known_empty_bytes_divergence() -> None:
    assert ZIPROTO.encode(b"ab") == bytes(ziproto.encode(b"ab")) == b"\xc4\x02ab"
    # ziproto writes b"" as a lone 0xC4 (no length byte), which no decoder can read
    # back; asyncapy writes the valid bin8 form instead.
    assert bytes(ziproto.encode(b"")) == b"\xc4"
    assert ZIPROTO.encode(b"") == b"\xc4\x00"
    assert ZIPROTO.decode(b"\xc4\x00") == b""


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\xdb\xff\xff\xff\xff", "str32 declaring 4 GiB"),
        (b"\xc6\xff\xff\xff\xffab", "bin32 declaring 4 GiB"),
        (b"\xdd\xff\xff\xff\xff", "array32 declaring 4 billion items"),
        (b"\xdf\xff\xff\xff\xff\x01", "map32 declaring 4 billion pairs"),
        (b"\x91" * 200_000 + b"\x00", "200,000 levels of nesting"),
        (b"\xa2\xff\xfe", "invalid UTF-8"),
        (b"\x81\xa1a\x01\x00", "trailing bytes"),
        (b"\xc1", "the never-used byte"),
        (b"\xd4\x01\x00", "an extension type"),
        (b"", "nothing"),
        (b"\x81\x91\x01\x01", "an unhashable map key"),
    ],
)
def test_hostile_ziproto_payloads_are_decode_errors(data: bytes, why: str) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError) as caught:
            ZIPROTO.decode(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * 1024 * 1024 + 20 * len(data), why
    detail = str(caught.value)  # what ERR_REQUEST_MALFORMED's detail says
    assert "ZiProto" in detail and not detail.rstrip().endswith(":"), (why, detail)  # never an empty "FormatError: "
    assert len(detail) > len("invalid ZiProto: ") + 8, (why, detail)


@pytest.mark.parametrize(
    "data",
    [b"[" * 200_000, b'{"a": 1} x', b'{"a": "\xff"}', b"", b"{", b"NaN", b'"\\ud800"x'],
)
def test_hostile_json_payloads_are_decode_errors(data: bytes) -> None:
    with pytest.raises(DecodeError):
        JSON.decode(data)


def test_encode_errors_are_typed() -> None:
    with pytest.raises(EncodeError):
        JSON.encode({"a": object()})
    with pytest.raises(EncodeError):
        ZIPROTO.encode({"a": object()})
    with pytest.raises(EncodeError):
        ZIPROTO.encode(2**64)


def test_registry_by_byte_and_name() -> None:
    assert CODECS[0] is JSON and CODECS[1] is ZIPROTO
    assert get_codec(1) is ZIPROTO and get_codec("JSON") is JSON
    with pytest.raises(ValueError, match="known encodings: json, ziproto"):
        get_codec("xml")


def test_a_registered_codec_is_found_by_byte_and_name() -> None:
    class Upper:
        name = "upper-test"
        id = 200

        def encode(self, obj: Any) -> bytes:
            return str(obj).upper().encode()

        def decode(self, data: bytes) -> Any:
            return data.decode().lower()

    register_codec(Upper())
    try:
        assert get_codec("upper-test").encode("x") == b"X"
        assert get_codec(200).decode(b"X") == "x"
    finally:
        CODECS.pop(200)
        _BY_NAME.pop("upper-test")


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"a": float("nan")}, r"\$\.a is nan"),
        ({"rows": [1.0, {"b": float("-inf")}]}, r"\$\.rows\[1\]\.b is -inf"),
        ({"wide": 2**70, "c": float("inf")}, r"\$\.c is inf"),  # the msgspec path (an integer beyond 64 bits)
        ({"k" * 1000: float("nan")}, r"\$\.k{29}\.\.\. is nan"),  # a client's key, cut
    ],
)
def test_json_refuses_nan_and_infinity_instead_of_writing_null(value: Any, where: str) -> None:
    with pytest.raises(EncodeError, match=where):
        JSON.encode(value)


def test_json_null_itself_and_finite_floats_still_encode() -> None:
    assert JSON.decode(JSON.encode({"a": None, "b": [None, 1.5], "c": -0.0})) == {"a": None, "b": [None, 1.5], "c": -0.0}


def test_ziproto_says_why_an_integer_does_not_fit() -> None:
    with pytest.raises(EncodeError, match="beyond 64 bits"):
        ZIPROTO.encode({"n": 2**64})
