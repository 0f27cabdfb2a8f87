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

import math
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
    """JSON: UTF-8, integers of any size exact, no NaN or infinity (docs/protocol.md; DESIGN §10).

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
            data = orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)
        except TypeError as exc:
            if str(exc) == _ORJSON_WIDE_INT:
                return self._encode_wide_ints(obj)
            raise EncodeError(f"cannot encode as JSON: {exc}") from None
        return data if data.find(b"null") < 0 else finite_json(data, obj)

    def _encode_wide_ints(self, obj: Any) -> bytes:
        try:
            data: bytes = self._encode_wide(obj)
        except (TypeError, ValueError, OverflowError) as exc:
            raise EncodeError(f"cannot encode as JSON: {exc}") from None
        return finite_json(data, obj)

    def decode(self, data: bytes) -> Any:
        try:
            return self._decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise DecodeError(f"invalid JSON: {exc}") from None


#: What orjson raises for an integer it cannot write (beyond 64 bits).
_ORJSON_WIDE_INT: Final = "Integer exceeds 64-bit range"


#: Characters of a map key, and of the whole path, in the reason a NaN was refused (keys may
#: come from a client).
_MAX_KEY: Final = 32
_MAX_PATH: Final = 200


def finite_json(data: bytes, value: Any) -> bytes:
    """``data``, the JSON of ``value``, unless ``value`` holds NaN or an infinity.

    JSON has neither, and orjson, msgspec and pydantic write them as ``null``: a changed
    value (DESIGN §10). So ``value`` is searched only when ``null`` is in ``data``
    (``find``: faster than ``in`` on bytes).

    Raises:
        EncodeError: naming where the value is (``$.rows[1].value``).
    """
    if data.find(b"null") >= 0:
        where = _non_finite(value.model_dump() if hasattr(value, "model_dump") else value, "$")
        if where is not None:
            path = where[0] if len(where[0]) <= _MAX_PATH else where[0][: _MAX_PATH - 3] + "..."
            raise EncodeError(f"cannot encode as JSON: {path} is {where[1]} (JSON has no NaN or infinity)")
    return data


def _non_finite(value: Any, path: str) -> tuple[str, float] | None:
    """Where in ``value`` (a reply's maps, lists and numbers) the first NaN or infinity is, and it."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    if isinstance(value, dict):
        for key, item in value.items():
            name = str(key)
            found = _non_finite(item, f"{path}.{name if len(name) <= _MAX_KEY else name[: _MAX_KEY - 3] + '...'}")
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _non_finite(item, f"{path}[{index}]")
            if found is not None:
                return found
    elif hasattr(value, "model_dump"):  # a model inside a map
        return _non_finite(value.model_dump(), path)
    return None


#: Why an integer cannot be written as ZiProto (msgpack's message names no type or bound).
_ZIPROTO_WIDE_INT: Final = "cannot encode as ZiProto: an integer beyond 64 bits (ZiProto carries -2**63 to 2**64 - 1)"


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
        except OverflowError:
            raise EncodeError(_ZIPROTO_WIDE_INT) from None
        except (TypeError, ValueError) as exc:
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
            raise DecodeError(f"invalid ZiProto: {_why_undecodable(exc)}") from None


def _why_undecodable(exc: BaseException) -> str:
    """msgpack's reason, in words even when its exception carries no message."""
    if isinstance(exc, msgpack.FormatError):
        return "a byte that starts no ZiProto value (FormatError)"
    if isinstance(exc, (msgpack.StackError, RecursionError)):
        return "values nested too deeply (StackError)"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


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
