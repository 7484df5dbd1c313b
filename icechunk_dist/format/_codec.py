"""Framing of every metadata object: header, zstd-compressed msgpack body, checksum.

Layout (all integers little-endian)::

    offset  size  field
    0       8     magic b"ICDIST\\x00\\x01"
    8       1     format version (currently 1)
    9       1     object type (ObjectType)
    10      1     compression (0 = none, 1 = zstd)
    11      1     reserved (0)
    12      8     body length in bytes (after compression)
    20      n     body: msgpack of a msgspec Struct, maybe zstd-compressed
    20+n    4     CRC-32 of bytes [0, 20+n)

Decoding never unpickles anything and turns every problem into ``FormatError``.
"""

from __future__ import annotations

import struct
import threading
import zlib
from enum import IntEnum
from typing import Any, TypeVar

import msgspec
import zstandard

from icechunk_dist.errors import FormatError, InvalidInputError
from icechunk_dist.format._validate import validate

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_BODY_BYTES",
    "ObjectType",
    "decode_object",
    "encode_object",
]

MAGIC = b"ICDIST\x00\x01"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sBBBBQ")
_CRC = struct.Struct("<I")
_NONE, _ZSTD = 0, 1
# bodies smaller than this are not worth compressing
_MIN_COMPRESS = 256
#: largest decompressed body a reader accepts (1 GiB): a zstd frame that declares more, or
#: does not declare its size, is refused before any output is allocated
MAX_BODY_BYTES = 1 << 30

T = TypeVar("T")


def _decompress(body: bytes, name: str) -> bytes:
    """The content of the one zstd frame ``body``, never more than :data:`MAX_BODY_BYTES`.

    Writers always record the content size in the frame header (``ZstdCompressor.compress``
    does), so a reader checks it before decompressing and libzstd stops at it: the output is
    bounded by the declared size, which is bounded by the cap.
    """
    try:
        declared = zstandard.get_frame_parameters(body).content_size
    except zstandard.ZstdError as e:
        raise FormatError(f"cannot decompress: not a zstd frame ({e})", object_name=name) from None
    if declared == zstandard.CONTENTSIZE_UNKNOWN:
        raise FormatError("zstd frame does not declare its content size", object_name=name)
    if declared > MAX_BODY_BYTES:
        raise FormatError(
            f"zstd frame declares {declared} bytes, more than the {MAX_BODY_BYTES} a "
            "metadata object may hold", object_name=name,
        )
    try:
        dobj = _zstd_decompressor().decompressobj()
        out = dobj.decompress(body)
    except zstandard.ZstdError as e:
        raise FormatError(f"cannot decompress zstd body: {e}", object_name=name) from None
    if not dobj.eof:
        raise FormatError("truncated zstd frame", object_name=name)
    if dobj.unused_data:
        raise FormatError(f"{len(dobj.unused_data)} trailing bytes after the zstd frame",
                          object_name=name)
    if len(out) != declared:
        raise FormatError(f"zstd frame declares {declared} bytes but holds {len(out)}",
                          object_name=name)
    return out


class ObjectType(IntEnum):
    """Kind of object stored in a framed file; a reader checks it matches what it expects."""

    REPO = 1
    SNAPSHOT = 2
    MANIFEST = 3
    TRANSACTION_LOG = 4
    REF = 5
    GC_RECORD = 6


# zstd contexts cost more to set up than a small object costs to compress: one per thread
# (a context is not safe to share between threads) and level, reused
_zstd = threading.local()


def _zstd_compressor(level: int) -> zstandard.ZstdCompressor:
    per_level: dict[int, zstandard.ZstdCompressor] | None = getattr(_zstd, "c", None)
    if per_level is None:
        per_level = _zstd.c = {}
    c = per_level.get(level)
    if c is None:
        c = per_level[level] = zstandard.ZstdCompressor(level=level)
    return c


def _zstd_decompressor() -> zstandard.ZstdDecompressor:
    d: zstandard.ZstdDecompressor | None = getattr(_zstd, "d", None)
    if d is None:
        d = _zstd.d = zstandard.ZstdDecompressor()
    return d


_encoder = msgspec.msgpack.Encoder()
_decoders: dict[type[Any], msgspec.msgpack.Decoder[Any]] = {}


def encode_object(obj: msgspec.Struct, object_type: ObjectType, *, level: int = 3) -> bytes:
    """Serialize ``obj`` into a framed, checksummed byte string.

    Raises
    ------
    InvalidInputError
        If the encoded body is larger than readers accept (:data:`MAX_BODY_BYTES`).
    """
    body = _encoder.encode(obj)
    if len(body) > MAX_BODY_BYTES:
        raise InvalidInputError(
            f"a {object_type.name.lower()} object of {len(body)} bytes is larger than the "
            f"{MAX_BODY_BYTES} bytes readers accept; use smaller manifest splits "
            "(manifest_split_size) or fewer nodes per commit"
        )
    compression = _NONE
    if len(body) >= _MIN_COMPRESS:
        body = _zstd_compressor(level).compress(body)
        compression = _ZSTD
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, int(object_type), compression, 0, len(body))
    framed = head + body
    return framed + _CRC.pack(zlib.crc32(framed))


def decode_object(
    data: bytes | bytearray | memoryview,
    cls: type[T],
    object_type: ObjectType,
    *,
    name: str,
) -> T:
    """Parse framed bytes into an instance of ``cls``.

    Parameters
    ----------
    data
        The raw object bytes as read from storage.
    cls
        The msgspec Struct type expected.
    object_type
        The object type the header must declare.
    name
        The object's storage key, used in error messages.

    Raises
    ------
    FormatError
        On a foreign, truncated, corrupted or newer-version object, naming it.
    """
    raw = bytes(data)
    if len(raw) < _HEADER.size + _CRC.size:
        raise FormatError(f"truncated object ({len(raw)} bytes)", object_name=name)
    magic, version, otype, compression, _reserved, body_len = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise FormatError("not an icechunk_dist object (bad magic bytes)", object_name=name)
    if version > FORMAT_VERSION:
        raise FormatError(
            f"written by a newer format version {version} (this library reads up to "
            f"{FORMAT_VERSION}); upgrade icechunk_dist",
            object_name=name,
        )
    expected_len = _HEADER.size + body_len + _CRC.size
    if len(raw) != expected_len:
        raise FormatError(
            f"truncated or padded object: header says {expected_len} bytes, got {len(raw)}",
            object_name=name,
        )
    (crc,) = _CRC.unpack_from(raw, len(raw) - _CRC.size)
    if zlib.crc32(raw[: len(raw) - _CRC.size]) != crc:
        raise FormatError("checksum mismatch: the object is corrupted", object_name=name)
    try:
        kind = ObjectType(otype)
    except ValueError:
        raise FormatError(f"unknown object type {otype}", object_name=name) from None
    if kind != object_type:
        raise FormatError(
            f"expected a {object_type.name.lower()} object, found a {kind.name.lower()}",
            object_name=name,
        )
    body = raw[_HEADER.size : _HEADER.size + body_len]
    if compression == _ZSTD:
        body = _decompress(body, name)
    elif compression != _NONE:
        raise FormatError(f"unknown compression {compression}", object_name=name)
    decoder = _decoders.get(cls)
    if decoder is None:
        decoder = _decoders[cls] = msgspec.msgpack.Decoder(cls)
    try:
        obj = decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise FormatError(f"invalid {kind.name.lower()} body: {e}", object_name=name) from None
    except RecursionError:
        raise FormatError(f"invalid {kind.name.lower()} body: nested too deeply",
                          object_name=name) from None
    validate(obj, name=name)
    return obj  # type: ignore[no-any-return]
