"""Payload codecs, one registry keyed by the Content-Encoding byte.

Every codec has the same surface: ``name``, ``id`` (the wire byte), ``encode(obj)``
and ``decode(data)``. ``decode`` raises ``DecodeError`` for anything the peer sent
wrong and nothing else; ``encode`` raises ``EncodeError`` for values the format
cannot carry.

ZiProto is byte-for-byte the ``ziproto`` package's format, a MessagePack subset.
The reference implementation costs tens of microseconds per small map, so ZiProto
goes through ``msgpack``'s C extension, configured to write exactly what ``ziproto``
writes (str8 for strings, bin for bytes, float64 for floats) and to refuse, on
input, the MessagePack features ZiProto lacks (ext types, trailing bytes).
"""

from __future__ import annotations

from typing import Any, Final, Protocol

import msgpack
import msgspec
import orjson

JSON: Final = 0
ZIPROTO: Final = 1


class DecodeError(ValueError):
    """The payload is not a valid document of its codec."""


class EncodeError(ValueError):
    """The value cannot be written in this codec."""


class Codec(Protocol):
    """What every codec provides."""

    @property
    def name(self) -> str: ...

    @property
    def id(self) -> int: ...

    def encode(self, obj: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


class JSONCodec:
    """JSON: UTF-8, no NaN, integers of any size exact (docs/protocol.md).

    Decoding goes through msgspec, which reads integers beyond 64 bits as Python
    ints (orjson reads them as rounded floats) and refuses the absurdly long ones
    (thousands of digits) in bounded time; it is as fast as orjson on small maps.
    Encoding goes through orjson, and through msgspec only for a value orjson
    refuses because an integer exceeds 64 bits.
    """

    name: Final = "json"
    id: Final = JSON

    def __init__(self) -> None:
        self._decode = msgspec.json.Decoder().decode
        self._encode_wide = msgspec.json.Encoder().encode

    def encode(self, obj: Any) -> bytes:
        try:
            return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as exc:
            if str(exc) == _ORJSON_WIDE_INT:
                return self._encode_wide_ints(obj)
            raise EncodeError(f"cannot encode as JSON: {exc}") from None

    def _encode_wide_ints(self, obj: Any) -> bytes:
        try:
            data: bytes = self._encode_wide(obj)
            return data
        except (TypeError, ValueError, OverflowError) as exc:
            raise EncodeError(f"cannot encode as JSON: {exc}") from None

    def decode(self, data: bytes) -> Any:
        try:
            return self._decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise DecodeError(f"invalid JSON: {exc}") from None


#: What orjson raises for an integer it cannot write (beyond 64 bits).
_ORJSON_WIDE_INT: Final = "Integer exceeds 64-bit range"


def _refuse_ext(code: int, data: bytes) -> Any:
    raise DecodeError(f"ZiProto has no extension types (got ext type {code})")


class ZiProtoCodec:
    """ZiProto through msgpack's C extension, byte-identical with ``ziproto``."""

    name: Final = "ziproto"
    id: Final = ZIPROTO

    def __init__(self) -> None:
        self._packer = msgpack.Packer(use_bin_type=True, use_single_float=False, autoreset=True)

    def encode(self, obj: Any) -> bytes:
        try:
            data: bytes = self._packer.pack(obj)
            return data
        except (TypeError, ValueError, OverflowError) as exc:
            raise EncodeError(f"cannot encode as ZiProto: {exc}") from None

    def decode(self, data: bytes) -> Any:
        try:
            # msgpack bounds every declared length by len(data), so a huge declared
            # length inside a small payload fails instead of allocating.
            return msgpack.unpackb(
                data,
                raw=False,
                strict_map_key=False,
                ext_hook=_refuse_ext,
                use_list=True,
            )
        except DecodeError:
            raise
        except (ValueError, TypeError, OverflowError, RecursionError, msgpack.UnpackException) as exc:
            raise DecodeError(f"invalid ZiProto: {type(exc).__name__}: {exc}") from None


CODECS: dict[int, Codec] = {}
_BY_NAME: dict[str, Codec] = {}
_BY_KEY: dict[int | str, Codec] = {}
#: Codec name -> wire byte, for the hot path's one lookup.
CODEC_IDS: dict[str, int] = {}


def register_codec(codec: Codec) -> None:
    """Add ``codec`` to the registry under its wire byte and its name."""
    if not 0 <= codec.id <= 255:
        raise ValueError(f"codec id must be one byte, not {codec.id}")
    CODECS[codec.id] = codec
    _BY_NAME[codec.name] = codec
    _BY_KEY[codec.id] = _BY_KEY[codec.name] = codec
    CODEC_IDS[codec.name] = codec.id


def get_codec(key: int | str) -> Codec:
    """The codec for a wire byte or a name ("json", "ziproto")."""
    codec = _BY_KEY.get(key)  # the exact key: one lookup on the hot path
    if codec is None and isinstance(key, str):
        codec = _BY_NAME.get(key.lower())
    if codec is None:
        known = ", ".join(sorted(_BY_NAME))
        raise ValueError(f"unknown encoding {key!r}; known encodings: {known}")
    return codec


def codec_ids() -> frozenset[int]:
    """The wire bytes of every registered codec."""
    return frozenset(CODECS)


register_codec(JSONCodec())
register_codec(ZiProtoCodec())
