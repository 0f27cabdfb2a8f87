"""``asyncapy.codecs``: the codecs, at the path the README documents (the code is ``asyncapy.wire.codecs``)."""

from .wire.codecs import (
    Codec,
    CODEC_IDS,
    codec_ids,
    CODECS,
    DecodeError,
    EncodeError,
    get_codec,
    JSON,
    JSONCodec,
    register_codec,
    ZIPROTO,
    ZiProtoCodec,
)

__all__ = [
    "Codec",
    "CODEC_IDS",
    "codec_ids",
    "CODECS",
    "DecodeError",
    "EncodeError",
    "get_codec",
    "JSON",
    "JSONCodec",
    "register_codec",
    "ZIPROTO",
    "ZiProtoCodec",
]
