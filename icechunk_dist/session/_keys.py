"""Zarr key <-> (node path, chunk coordinate) mapping, and array metadata parsing."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from icechunk_dist.errors import InvalidInputError
from icechunk_dist.format import ArrayInfo

__all__ = [
    "META",
    "array_info_from_metadata",
    "chunk_key",
    "meta_path",
    "node_kind",
    "parse_chunk_suffix",
    "validate_key",
]

META = "zarr.json"
_CTRL = re.compile(r"[\x00-\x1f\x7f\\]")


def validate_key(key: str) -> str:
    """Check a zarr store key.

    Raises
    ------
    InvalidInputError
        On empty segments, a leading or trailing ``/``, ``.``/``..`` segments, backslashes or
        control characters.
    """
    if not isinstance(key, str) or not key:
        raise InvalidInputError(f"invalid key {key!r}: must be a non-empty string")
    if _CTRL.search(key) or key.startswith("/") or key.endswith("/"):
        raise InvalidInputError(f"invalid key {key!r}")
    for seg in key.split("/"):
        if seg in ("", ".", ".."):
            raise InvalidInputError(f"invalid key {key!r}: empty, '.' or '..' segment")
    return key


def meta_path(key: str) -> str | None:
    """Node path of a metadata key (``"a/b/zarr.json" -> "a/b"``, root ``""``), else None."""
    if key == META:
        return ""
    if key.endswith("/" + META):
        return key[: -len(META) - 1]
    return None


def node_kind(metadata: bytes) -> tuple[str, dict[str, Any] | None]:
    """("array" | "group" | "other", parsed JSON or None) of a zarr.json document."""
    try:
        doc = json.loads(metadata)
    except (ValueError, UnicodeDecodeError):
        return "other", None
    if not isinstance(doc, dict):
        return "other", None
    nt = doc.get("node_type")
    if nt == "array":
        return "array", doc
    if nt == "group":
        return "group", doc
    return "other", doc


def array_info_from_metadata(doc: dict[str, Any], split_size: int,
                             previous: ArrayInfo | None) -> ArrayInfo | None:
    """Chunk-grid facts of a v3 array document, or None if its grid is not regular."""
    try:
        shape = tuple(int(s) for s in doc["shape"])
        grid = doc["chunk_grid"]
        if grid.get("name") != "regular":
            return None
        chunk_shape = tuple(int(c) for c in grid["configuration"]["chunk_shape"])
        cke = doc.get("chunk_key_encoding") or {"name": "default"}
        encoding = cke.get("name", "default")
        conf = cke.get("configuration") or {}
        separator = conf.get("separator", "/" if encoding == "default" else ".")
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if encoding not in ("default", "v2") or len(chunk_shape) != len(shape):
        return None
    if separator not in ("/", "."):  # zarr's only separators; readers refuse others
        return None
    if any(c <= 0 for c in chunk_shape) or any(s < 0 for s in shape):
        return None
    if previous is not None and previous.chunk_shape == chunk_shape and previous.split_shape:
        split_shape = previous.split_shape
    else:
        split_shape = choose_split_shape(shape, chunk_shape, split_size)
    return ArrayInfo(shape=shape, chunk_shape=chunk_shape, encoding=encoding,
                     separator=separator, split_shape=split_shape,
                     raw_chunk_nbytes=_raw_chunk_nbytes(doc, chunk_shape))


_ITEMSIZE = {
    "bool": 1, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "int32": 4, "uint32": 4,
    "int64": 8, "uint64": 8, "float16": 2, "float32": 4, "float64": 8,
    "complex64": 8, "complex128": 16,
}


def _raw_chunk_nbytes(doc: dict[str, Any], chunk_shape: tuple[int, ...]) -> int:
    """Size of an encoded chunk if the codec chain is only ``bytes`` (+ ``crc32c``)."""
    try:
        itemsize = _ITEMSIZE.get(doc["data_type"]) if isinstance(doc["data_type"], str) else None
        names = [c["name"] if isinstance(c, dict) else c for c in doc.get("codecs", [])]
    except (KeyError, TypeError):
        return 0
    if itemsize is None or not names or names[0] != "bytes":
        return 0
    if any(n != "crc32c" for n in names[1:]):
        return 0
    return math.prod(chunk_shape) * itemsize + 4 * (len(names) - 1)


def choose_split_shape(shape: tuple[int, ...], chunk_shape: tuple[int, ...],
                       split_size: int) -> tuple[int, ...]:
    """Tile the chunk grid into regions of about ``split_size`` chunks.

    Trailing dimensions are kept whole where possible and the first dimension (the usual
    append dimension) is cut, so appends touch only the last splits.
    """
    if not shape:
        return (1,)
    grid = [max(1, math.ceil(s / c)) for s, c in zip(shape, chunk_shape, strict=True)]
    split = [1] * len(grid)
    budget = split_size
    for d in range(len(grid) - 1, 0, -1):
        take = max(1, min(grid[d], budget))
        split[d] = take
        budget = max(1, budget // take)
    split[0] = max(1, budget)
    return tuple(split)


def ndim_of(info: ArrayInfo) -> int:
    """Internal dimensionality: 0-d arrays have one chunk at (0,)."""
    return max(1, len(info.shape))


def parse_chunk_suffix(suffix: str, info: ArrayInfo) -> tuple[int, ...] | None:
    """Chunk coordinates of a key suffix under an array, or None if it is not a chunk key."""
    nd = len(info.shape)
    sep = info.separator
    if info.encoding == "default":
        if nd == 0:
            return (0,) if suffix == "c" else None
        if not suffix.startswith("c" + sep):
            return None
        parts = suffix[2:].split(sep)
    else:
        if nd == 0:
            return (0,) if suffix == "0" else None
        parts = suffix.split(sep)
    if len(parts) != nd:
        return None
    out = []
    for p in parts:
        if not p.isdigit() or (len(p) > 1 and p[0] == "0"):
            return None
        out.append(int(p))
    return tuple(out)


def chunk_key(path: str, info: ArrayInfo, coord: tuple[int, ...]) -> str:
    """The zarr key of chunk ``coord`` of the array at ``path``."""
    sep = info.separator
    if info.encoding == "default":
        suffix = "c" if not info.shape else "c" + sep + sep.join(str(c) for c in coord)
    else:
        suffix = "0" if not info.shape else sep.join(str(c) for c in coord)
    return suffix if path == "" else f"{path}/{suffix}"
