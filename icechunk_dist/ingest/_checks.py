"""Checks of one run's files, before anything is written: schema against the repository (or
the first file), order along the concat dimension, ``chunks`` and ``unpack`` settings.

Every check collects the problems of all files: a run lists every bad file, not the first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgspec
import numpy as np

from icechunk_dist.errors import InvalidInputError
from icechunk_dist.ingest._readers import FileSummary, VarSummary, unpacked_dtype

__all__ = [
    "check_chunks",
    "check_order",
    "check_schema",
    "fmt",
    "infer_dim",
    "raise_problems",
    "sort_files",
    "unpack_targets",
    "unpacked",
]

_UNPACK_HINT = ("; files packed differently can be ingested decoded to floats with --unpack "
                "(unpack=True)")


def fmt(v: Any) -> str:
    """A coordinate value for messages."""
    if isinstance(v, np.datetime64):
        return str(np.datetime_as_string(v))
    return str(v)


def raise_problems(problems: list[str], what: str = "source file(s)") -> None:
    """Raise one :class:`InvalidInputError` listing every problem (one line for one); of
    several problems of one file (a message starts with its URL) the first is listed.

    Raises
    ------
    InvalidInputError
        If there is any problem.
    """
    if not problems:
        return
    first: dict[str, str] = {}
    for p in problems:
        where = p.split(": ", 1)[0]
        first.setdefault(where if "/" in where or "\\" in where else p, p)
    problems = list(first.values())
    if len(problems) == 1:
        raise InvalidInputError(problems[0])
    lines = "\n".join(f"  {p}" for p in problems)
    raise InvalidInputError(f"{len(problems)} bad {what}:\n{lines}")


def sort_files(summaries: list[FileSummary], dim: str) -> list[FileSummary]:
    """Files in order of their first ``dim`` value (by URL where that cannot order them)."""
    by_url = sorted(summaries, key=lambda s: s.source.url)
    if any(dim not in s.first for s in by_url):
        return by_url
    try:
        return sorted(by_url, key=lambda s: s.first[dim])
    except TypeError:
        return by_url


def infer_dim(s: FileSummary) -> str:
    """The concat dimension a file suggests: ``time``, its unlimited dimension, or its only
    dimension.

    Raises
    ------
    InvalidInputError
        If none of those applies.
    """
    if "time" in s.dims or "time" in s.scalar_coords:
        return "time"
    if len(s.unlimited) == 1:
        return s.unlimited[0]
    if len(s.dims) == 1:
        return next(iter(s.dims))
    raise InvalidInputError(
        f"{s.source.url}: cannot tell the concat dimension (dims: {', '.join(s.dims)}); "
        "give --concat-dim / concat_dim="
    )


# ------------------------------------------------------------------------------ schema
def _is_text(dtype: str) -> bool:
    """Variable-length strings: decoded to ``<U{longest}``, which differs file by file."""
    try:
        return np.dtype(dtype).kind in "UO"
    except TypeError:
        return False


def _compare(name: str, ref: VarSummary, got: VarSummary, dim: str) -> str | None:
    """The difference between two variable descriptions, or None."""
    if got.dims != ref.dims:
        return f"variable {name!r} has dims {got.dims}, expected {ref.dims}"
    packed = ref.scale_factor is not None or ref.add_offset is not None
    if not packed and got.dtype != ref.dtype and not (
            _is_text(got.dtype) and _is_text(ref.dtype)):
        return f"variable {name!r} has dtype {got.dtype}, expected {ref.dtype}"
    if (ref.encoded_dtype and got.encoded_dtype and got.encoded_dtype != ref.encoded_dtype
            and packed):
        return (f"variable {name!r} is stored as {got.encoded_dtype}, expected "
                f"{ref.encoded_dtype}")
    for attr in ("scale_factor", "add_offset"):
        a, b = getattr(ref, attr), getattr(got, attr)
        if (a is None) != (b is None) or (a is not None and b is not None
                                          and not math.isclose(a, b, rel_tol=1e-6)):
            return f"variable {name!r} has {attr} {b}, expected {a}{_UNPACK_HINT}"
    for d, n_ref, n_got in zip(ref.dims, ref.shape, got.shape, strict=True):
        if d != dim and n_ref != n_got:
            return f"variable {name!r} has {d}={n_got}, expected {d}={n_ref}"
    if dim not in ref.dims and ref.digest and got.digest and ref.digest != got.digest:
        what = "coordinate" if ref.is_coord else "variable"
        return f"{what} {name!r} (without {dim!r}) has different values"
    return None


def _mismatch(s: FileSummary, ref: FileSummary, dim: str) -> str | None:
    missing = sorted(set(ref.variables) - set(s.variables))
    extra = sorted(set(s.variables) - set(ref.variables))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"lacks variable(s) {', '.join(missing)}")
        if extra:
            parts.append(f"has extra variable(s) {', '.join(extra)}")
        return "; ".join(parts)
    for name, ref_var in ref.variables.items():
        diff = _compare(name, ref_var, s.variables[name], dim)
        if diff:
            return diff
    return None


def check_schema(summaries: list[FileSummary], ref: FileSummary, dim: str,
                 against: str) -> list[str]:
    """Every file whose schema differs from ``ref`` (described as ``against``)."""
    out = []
    for s in summaries:
        if s is ref:
            continue
        diff = _mismatch(s, ref, dim)
        if diff:
            out.append(f"{s.source.url}: schema mismatch with {against}: {diff}")
    return out


def check_order(summaries: list[FileSummary], dim: str, prev_last: Any,
                prev_name: str) -> list[str]:
    """Every file that does not start after the end of the one before it (the first: after
    ``prev_last`` of ``prev_name``)."""
    out = []
    for s in summaries:
        first = s.first.get(dim)
        try:
            bad = prev_last is not None and first is not None and not first > prev_last
        except TypeError:
            bad = False
        if bad:
            out.append(f"{s.source.url}: {dim} starts at {fmt(first)}, not after the end of "
                       f"{prev_name} ({fmt(prev_last)}); files are appended along {dim!r} "
                       "without overlap")
        prev_last, prev_name = s.last.get(dim, prev_last), s.source.url
    return out


# ------------------------------------------------------------------------------ settings
def check_chunks(chunks: Mapping[str, int] | None, dims: Mapping[str, int],
                 dim: str) -> dict[str, int]:
    """``chunks`` checked against the files' dimensions, ``-1`` resolved to the whole
    dimension.

    Raises
    ------
    InvalidInputError
        For an unknown dimension, a value that is not a positive integer or -1, or -1 for
        the concat dimension (which grows with every append).
    """
    out: dict[str, int] = {}
    for name, value in (chunks or {}).items():
        if name not in dims:
            raise InvalidInputError(
                f"chunks: the files have no dimension {name!r} (dimensions: "
                f"{', '.join(f'{d}={n}' for d, n in dims.items())})"
            )
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or (
                value < 1 and value != -1):
            raise InvalidInputError(
                f"chunks: {name}={value!r} is not a chunk size: give a positive integer, "
                "or -1 for the whole dimension"
            )
        if value == -1 and name == dim:
            raise InvalidInputError(
                f"chunks: {name}=-1: {name!r} is the concat dimension and grows with every "
                "append; give a number of steps"
            )
        out[name] = int(dims[name]) if value == -1 else int(value)
    return out


def unpack_targets(summaries: list[FileSummary], existing: FileSummary | None
                   ) -> dict[str, str]:
    """Per packed variable, the float type of this run: the widest any file needs (or the
    repository's, which a file that needs more is then checked against)."""
    out: dict[str, str] = {}
    for s in summaries:
        for name, v in s.variables.items():
            need = unpacked_dtype(v)
            if need is not None and out.get(name) != "float64":
                out[name] = need
    if existing is not None:
        for name in out:
            have = existing.variables.get(name)
            if have is not None and have.dtype in ("float32", "float64"):
                out[name] = have.dtype
    return out


def unpacked(s: FileSummary, targets: Mapping[str, str]) -> FileSummary:
    """``s`` as it lands with ``unpack=True``: packed variables as plain floats (a file that
    needs float64 where the run lands float32 keeps float64, and so fails the check)."""
    variables = dict(s.variables)
    for name, v in s.variables.items():
        need = unpacked_dtype(v)
        if need is None:
            continue
        target = targets.get(name, need)
        dtype = "float64" if "float64" in (need, target) else "float32"
        variables[name] = VarSummary(dims=v.dims, shape=v.shape, dtype=dtype,
                                     encoded_dtype=dtype, scale_factor=None, add_offset=None,
                                     is_coord=v.is_coord, digest=v.digest)
    return msgspec.structs.replace(s, variables=variables)
