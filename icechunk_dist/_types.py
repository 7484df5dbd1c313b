"""Small typed values shared by every layer: ids and their text form."""

from __future__ import annotations

import os
from typing import NewType

from icechunk_dist.errors import InvalidInputError

__all__ = [
    "ChunkId",
    "ManifestId",
    "SnapshotId",
    "decode_id",
    "encode_id",
    "new_id",
    "new_id_bytes",
    "parse_id",
]

SnapshotId = NewType("SnapshotId", str)
ManifestId = NewType("ManifestId", str)
ChunkId = NewType("ChunkId", str)

ID_BYTES = 12
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32, no I L O U
_DECODE = {c: i for i, c in enumerate(_ALPHABET)}
_DECODE.update({c.lower(): i for c, i in list(_DECODE.items())})
ID_CHARS = 20  # ceil(96 / 5)


def new_id_bytes() -> bytes:
    """Return 12 fresh random bytes (96 bits, enough never to collide)."""
    return os.urandom(ID_BYTES)


def encode_id(raw: bytes) -> str:
    """Encode 12 id bytes as 20 Crockford base32 characters."""
    if len(raw) != ID_BYTES:
        raise InvalidInputError(f"an id has {ID_BYTES} bytes, got {len(raw)}")
    n = int.from_bytes(raw, "big")
    out = []
    for _ in range(ID_CHARS):
        out.append(_ALPHABET[n & 31])
        n >>= 5
    return "".join(reversed(out))


def decode_id(text: str) -> bytes:
    """Decode 20 Crockford base32 characters into 12 id bytes.

    Raises
    ------
    InvalidInputError
        If ``text`` is not a well-formed id.
    """
    if not isinstance(text, str) or len(text) != ID_CHARS:
        raise InvalidInputError(f"not an id (want {ID_CHARS} base32 characters): {text!r}")
    n = 0
    for ch in text:
        v = _DECODE.get(ch)
        if v is None:
            raise InvalidInputError(f"not an id (bad character {ch!r}): {text!r}")
        n = (n << 5) | v
    if n >> (ID_BYTES * 8):
        raise InvalidInputError(f"not an id (out of range): {text!r}")
    return n.to_bytes(ID_BYTES, "big")


def parse_id(text: object, what: str = "id") -> str:
    """The canonical (upper-case) form of an id given by a caller.

    Ids are case-insensitive: lower and mixed case name the same id (docs/spec.md
    section 2). Every other text, including Crockford's ``I``/``L``/``O`` aliases, hyphens
    and surrounding blanks, is not an id.

    Raises
    ------
    InvalidInputError
        If ``text`` is not a string of 20 Crockford base32 characters within 96 bits.
    """
    if not isinstance(text, str):
        raise InvalidInputError(f"a {what} must be a string, got {type(text).__name__}")
    try:
        return encode_id(decode_id(text))
    except InvalidInputError as exc:
        raise InvalidInputError(f"not a {what}: {exc}") from None


def new_id() -> str:
    """Return a fresh random id in its text form."""
    return encode_id(new_id_bytes())
