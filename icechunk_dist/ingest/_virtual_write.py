"""Virtual ingestion, the writing half: arrays whose chunks are refs into the sources.

- :func:`create_virtual_dataset` creates the group from one file, as ``xr.open_dataset``
  decodes it (CF attributes, fill values, dtypes), with each referenceable variable's
  chunk shape, byte order and filters taken from the file (so its stored chunks decode
  as they are) and its HDF5 fill value as the Zarr fill value (unwritten chunks read the
  same). Dimension coordinates and variables without the concat dimension are copied.
- :func:`write_virtual_unit` (a worker task) indexes each file of its unit and sets one ref
  per stored chunk in a child fork; a variable whose layout in that file does not match
  the repository's array (other chunks, filters, byte order, CF encoding, a start inside a
  chunk) is copied into it instead, and the result says which and why.

All refs go through :func:`_set_refs`, the one place that sets them.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from icechunk_dist import _sync
from icechunk_dist.errors import InvalidInputError
from icechunk_dist.ingest._readers import open_source, with_dim
from icechunk_dist.ingest._runner import Written
from icechunk_dist.ingest._sources import SourceFile
from icechunk_dist.ingest._virtual import (
    ChunkTable,
    FileIndex,
    Layout,
    index_file,
    quiet_codecs,
    zarr_codecs,
)
from icechunk_dist.ingest._write import (
    Counting,
    Segment,
    vlen_text,
    write_region,
    zarr_encoding,
)
from icechunk_dist.session import ForkSession, Session

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["create_virtual_dataset", "write_virtual_unit"]

_DIM_COORD = "a dimension coordinate: small, and read whole when the dataset opens"
_CF_NUMBERS = ("scale_factor", "add_offset")
_CF_FILLS = ("_FillValue", "missing_value")
_NUMCODECS = {"numcodecs.shuffle": "shuffle", "numcodecs.zlib": "zlib",
              "numcodecs.fletcher32": "fletcher32"}


def _set_refs(store: Any, array_path: str, coords: np.ndarray, url: str,
              offsets: Sequence[int] | np.ndarray, lengths: Sequence[int] | np.ndarray,
              etag: str | None) -> int:
    """Point the chunks at ``coords`` (one row of grid indices each) of ``array_path`` at
    ``lengths[i]`` bytes at ``offsets[i]`` of the file at ``url``, recording its ``etag``
    (a read fails if the file changed since); return how many refs were set.

    Every ref of virtual ingestion is set here, in one columnar call
    (``set_virtual_refs_columns``: the file's location once, no per-chunk Python work).

    Raises
    ------
    InvalidInputError
        If a chunk is outside the array's grid, the URL is not one, or no virtual chunk
        container of the repository's config covers it.
    """
    n = len(offsets)
    if not n:
        return 0
    left = store.set_virtual_refs_columns(
        array_path, coords=np.asarray(coords, dtype=np.int64).reshape(n, -1),
        location_ids=np.zeros(n, dtype=np.int64),
        offsets=np.asarray(offsets, dtype=np.int64),
        lengths=np.asarray(lengths, dtype=np.int64), locations=[url], etags=[etag])
    if left:
        raise InvalidInputError(
            f"{array_path}: no virtual chunk container of the repository's config covers "
            f"{url!r} (the refs of chunk(s) {', '.join(map(str, left[:3]))})")
    return n


class _ArraySpec:
    """What a repository array stores, as far as refs must match it."""

    __slots__ = ("axis", "chunks", "dims", "dtype", "fill_value", "path", "shape", "steps")

    def __init__(self, path: str, dims: tuple[str, ...], axis: int, shape: tuple[int, ...],
                 chunks: tuple[int, ...], dtype: str,
                 steps: tuple[tuple[str, int], ...] | None, fill_value: Any) -> None:
        self.path, self.dims, self.axis, self.shape, self.chunks = (path, dims, axis, shape,
                                                                    chunks)
        self.dtype, self.steps, self.fill_value = dtype, steps, fill_value


def _ordered(dtype: Any, big: bool) -> str:
    d = np.dtype(dtype)
    if d.kind not in "iufc" or d.itemsize == 1:
        return str(d)  # strings and other types are never referenced
    return str(d.newbyteorder(">" if big else "<").str)


def _decode_steps(codecs: Sequence[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    """Codec steps as far as decoding goes (a zlib level does not matter)."""
    return tuple((n, 0 if n == "zlib" else v) for n, v in codecs)


def _array_specs(store: Any, group: str | None, dim: str) -> dict[str, _ArraySpec]:
    """The arrays of ``group`` that have ``dim``."""
    import zarr

    out: dict[str, _ArraySpec] = {}
    g = zarr.open_group(store, path=group or "", mode="r")
    for name, arr in g.arrays():
        md: dict[str, Any] = dict(arr.metadata.to_dict())
        dims = tuple(str(d) for d in (md.get("dimension_names") or ()))
        if dim not in dims:
            continue
        codecs = list(md["codecs"])
        keys = md.get("chunk_key_encoding") or {}
        steps: tuple[tuple[str, int], ...] | None = None
        big = False
        if (codecs and codecs[0]["name"] == "bytes" and keys.get("name") == "default"
                and (keys.get("configuration") or {}).get("separator") == "/"):
            big = (codecs[0].get("configuration") or {}).get("endian") == "big"
            found = []
            for c in codecs[1:]:
                conf = c.get("configuration") or {}
                step = _NUMCODECS.get(c["name"])
                if step is None:
                    break
                found.append((step, int(conf.get("elementsize") or 0)))
            else:
                steps = _decode_steps(found)
        path = f"{group}/{name}" if group else str(name)
        out[str(name)] = _ArraySpec(path, dims, dims.index(dim),
                                    tuple(int(n) for n in arr.shape),
                                    tuple(int(c) for c in arr.chunks),
                                    _ordered(arr.dtype, big), steps, arr.fill_value)
    return out


# ------------------------------------------------------------------------------ matching
def _same_value(a: Any, b: Any, dtype: Any) -> bool:
    try:
        x, y = np.asarray(a).astype(dtype), np.asarray(b).astype(dtype)
    except (TypeError, ValueError):
        return bool(a == b)
    return bool(np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"))


def _cf_difference(file_var: xr.Variable, repo_var: xr.Variable, raw: str) -> str | None:
    """The CF encoding (packing, fill values, time units) that differs, or None: the raw
    values of the file only mean the same in the repository if these are the same."""
    from xarray.coding.times import decode_cf_datetime

    ea, eb = file_var.encoding, repo_var.encoding
    native = np.dtype(raw).newbyteorder("=")
    for key, dtype in [(k, np.float64) for k in _CF_NUMBERS] + [(k, native)
                                                                 for k in _CF_FILLS]:
        a, b = ea.get(key, file_var.attrs.get(key)), eb.get(key, repo_var.attrs.get(key))
        if (a is None) != (b is None) or (a is not None and not _same_value(a, b, dtype)):
            return f"{key} {a} in the file, {b} in the repository"
    if file_var.dtype.kind == "M":
        probe = np.array([0, 1])
        try:
            same = np.array_equal(
                np.asarray(decode_cf_datetime(probe, str(ea["units"]), ea.get("calendar"))),
                np.asarray(decode_cf_datetime(probe, str(eb["units"]), eb.get("calendar"))))
        except Exception:  # units xarray cannot decode alone: compare the text
            same = (ea.get("units"), ea.get("calendar")) == (eb.get("units"),
                                                              eb.get("calendar"))
        if not same:
            return f"time units {ea.get('units')!r}, the repository's {eb.get('units')!r}"
    elif file_var.dtype.kind == "m" and ea.get("units") != eb.get("units"):
        return f"units {ea.get('units')!r}, the repository's {eb.get('units')!r}"
    return None


def _fitted(index: FileIndex, name: str, raw: xr.Variable | None, dims: tuple[str, ...],
            dim: str) -> tuple[Layout, ChunkTable | None] | None:
    """The file's layout and chunk table of ``name`` as a variable with ``dims``: as stored,
    or with a leading step of ``dim`` if the file has it as a scalar coordinate (one step
    per file: a chunk of shape (y, x) holds the bytes of one of shape (1, y, x)). None if
    the file has no such variable."""
    layout = index.layouts.get(name)
    if layout is None or raw is None:
        return None
    table = index.tables.get(name)
    if tuple(raw.dims) == tuple(dims):
        return layout, table
    if tuple(dims) != (dim, *raw.dims):
        return None
    layout = msgspec.structs.replace(layout, shape=(1, *layout.shape),
                                     chunks=(1, *layout.chunks))
    if table is not None:
        table = ChunkTable(np.insert(table.coords, 0, 0, axis=1), table.offsets,
                           table.lengths, table.missing)
    return layout, table


def _creation_reason(name: str, full: xr.Variable, layout: Layout | None, dim: str,
                     lengths: Sequence[int]) -> str | None:
    """Why the group's array ``name`` is created to be copied into, or None: refs."""
    if dim not in full.dims:
        return f"no {dim!r} dimension: written once, when the group was created"
    if name == dim:
        return _DIM_COORD
    if layout is None:
        return f"not a variable of the file's root group with dims {full.dims}"
    if layout.reason:
        return layout.reason
    encoded = full.encoding.get("dtype")
    if encoded is not None and np.dtype(encoded).newbyteorder("=") != np.dtype(
            layout.dtype).newbyteorder("="):
        return f"xarray encodes it as {np.dtype(encoded)}, the file stores {layout.dtype}"
    c = layout.chunks[full.dims.index(dim)]
    if any(n % c for n in lengths[:-1]):
        return (f"files of {', '.join(map(str, sorted(set(lengths))))} steps along {dim!r} "
                f"do not fill whole chunks of {c} steps")
    return None


def _file_reason(name: str, spec: _ArraySpec, var: xr.Variable | None,
                 repo_var: xr.Variable | None,
                 fitted: tuple[Layout, ChunkTable | None] | None, pos: int, dim: str
                 ) -> str | None:
    """Why variable ``name`` of a file starting at ``pos`` is copied into the repository's
    array rather than referenced, or None."""
    if name == dim:
        return _DIM_COORD
    if fitted is None or var is None or repo_var is None:
        return f"not a variable of the file's root group with dims {spec.dims}"
    layout, table = fitted
    if layout.reason or table is None:
        return layout.reason or "not stored as chunks"
    if layout.chunks != spec.chunks:
        return f"chunks {layout.chunks} in the file, {spec.chunks} in the repository"
    if _ordered(layout.dtype, layout.dtype[0] == ">") != spec.dtype:
        return f"stored as {layout.dtype}, the repository's array as {spec.dtype}"
    if spec.steps is None or _decode_steps(layout.codecs) != spec.steps:
        return "its filters differ from the repository's codecs"
    c = spec.chunks[spec.axis]
    if pos % c:
        return f"starts at step {pos} of {dim!r}, inside a chunk of {c} steps"
    if table.missing and not _same_value(layout.fill_value, spec.fill_value,
                                         np.dtype(layout.dtype)):
        return (f"unwritten chunks read as {layout.fill_value}, the repository's fill value "
                f"is {spec.fill_value}")
    diff = _cf_difference(var, repo_var, layout.dtype)
    return f"CF encoding differs: {diff}" if diff else None


# ------------------------------------------------------------------------------ tasks
def _copy_chunks(full: xr.Variable, layout: Layout | None, dim: str,
                 lengths: Sequence[int], chunks: Mapping[str, int]) -> tuple[int, ...]:
    """Chunks of an array created to be copied into: the file's own where they tile the
    files along ``dim``, else ``chunks`` (whole dimensions where not given)."""
    if (layout is not None and len(layout.chunks) == full.ndim and dim in full.dims
            and full.dims.index(dim) < len(layout.chunks)):
        c = layout.chunks[full.dims.index(dim)]
        if c and not any(n % c for n in lengths[:-1]):
            return layout.chunks
    return tuple(chunks.get(str(d), max(1, int(n))) for d, n in zip(full.dims, full.shape,
                                                                     strict=True))


def create_virtual_dataset(session: Session, first: SourceFile, group: str | None,
                           dim: str, lengths: Sequence[int], chunks: Mapping[str, int],
                           storage_options: Mapping[str, Any] | None) -> dict[str, str]:
    """Create the group's arrays (length 0 along ``dim``) from one file for refs into the
    sources (``lengths``: the files' steps along ``dim``, in order; ``chunks``: chunk
    sizes of the copied arrays); return the variables created to be copied, with why.

    Raises
    ------
    InvalidInputError
        If the file cannot be read or indexed.
    """
    index = index_file(first, storage_options)
    raw = open_source(first, storage_options, load=False, virtual=True)
    copied: dict[str, str] = {}
    try:
        ds = with_dim(raw, dim)
        tmpl = ds.isel({dim: slice(0, 0)})
        for name, var in tmpl.variables.items():
            full = ds.variables[name]
            fitted = _fitted(index, str(name), raw.variables.get(name),
                             tuple(map(str, full.dims)), dim)
            layout = fitted[0] if fitted else None
            why = _creation_reason(str(name), full, layout, dim, lengths)
            if why is None and layout is not None:
                enc = zarr_encoding(full, layout.chunks, None)
                serializer, compressors = zarr_codecs(layout)
                enc.update(serializer=serializer, compressors=compressors,
                           dtype=np.dtype(layout.dtype))
                # no _FillValue in the file: none in the repository (xarray would add NaN)
                enc.setdefault("_FillValue", None)
                if layout.fill_value is not None:
                    enc["fill_value"] = layout.fill_value
            else:
                copied[str(name)] = str(why)
                enc = zarr_encoding(full, _copy_chunks(full, layout, dim, lengths, chunks),
                                    None)
            var.encoding = enc
        vlen_text(tmpl.load()).to_zarr(session.store, group=group, mode="a",
                                       consolidated=False, zarr_format=3)
    finally:
        raw.close()
    return copied


def _clear_unwritten(store: Any, spec: _ArraySpec, coords: np.ndarray, pos: int,
                     n: int) -> None:
    """Delete the chunks of the file's region that the file never wrote (a file
    re-ingested in place must not keep the old version's refs there)."""
    c = spec.chunks[spec.axis]
    ranges = [range(-(-s // k)) for s, k in zip(spec.shape, spec.chunks, strict=True)]
    ranges[spec.axis] = range(pos // c, -(-(pos + n) // c))
    have = {tuple(int(i) for i in row) for row in coords}
    for coord in itertools.product(*ranges):
        if coord not in have:
            _sync.run(store.delete(f"{spec.path}/c/{'/'.join(map(str, coord))}"))


def _write_file(child: ForkSession, store: Counting, src: SourceFile, pos: int,
                specs: Mapping[str, _ArraySpec], repo: xr.Dataset, dim: str,
                group: str | None, storage_options: Mapping[str, Any] | None,
                times: Mapping[str, tuple[str, str]], copied: dict[str, str]
                ) -> tuple[int, int]:
    """Refs (and copies) of one file at ``pos`` along ``dim``; return (steps, refs)."""
    index = index_file(src, storage_options)
    ds = open_source(src, storage_options, load=False, virtual=True)
    refs = 0
    try:
        n = int(ds.sizes[dim]) if dim in ds.dims else 1
        native = []
        for name, spec in specs.items():
            var = ds.variables.get(name)
            fitted = _fitted(index, name, var, spec.dims, dim)
            why = _file_reason(name, spec, var, repo.variables.get(name), fitted, pos, dim)
            if why is not None or fitted is None or fitted[1] is None:
                native.append(name)
                copied.setdefault(name, str(why))
                continue
            table = fitted[1]
            coords = table.coords.copy()
            coords[:, spec.axis] += pos // spec.chunks[spec.axis]
            refs += _set_refs(child.store, spec.path, coords, index.url,
                              table.offsets, table.lengths, index.etag)
            if table.missing:
                _clear_unwritten(child.store, spec, coords, pos, n)
        if native:
            sub = with_dim(ds, dim)
            sub = sub.drop_vars([v for v in sub.variables if v not in native])
            write_region(store, sub.load(), dim, group, pos, times, src.url)
    finally:
        ds.close()
    return n, refs


def write_virtual_unit(unit: list[Segment], fork: ForkSession, dim: str, group: str | None,
                       storage_options: Mapping[str, Any] | None,
                       times: Mapping[str, tuple[str, str]]) -> Written:
    """Task: index the unit's files and set their refs at their offsets along ``dim`` in a
    child fork of ``fork`` (copying what cannot be referenced); return the child, the
    bytes copied, the refs set and the variables copied (name -> why).

    Raises
    ------
    InvalidInputError
        If a file cannot be read or indexed, changed while read, or its values do not fit
        the repository's arrays.
    """
    import xarray as xr

    child = fork.child()
    store = Counting(child.store)
    with quiet_codecs():
        specs = _array_specs(child.store, group, dim)
    copied: dict[str, str] = {}
    refs = 0
    # the arrays' CF encodings, to compare each file's with; without the concat coordinate,
    # which xarray would load whole (it grows with every file) and which is always copied
    with quiet_codecs(), xr.open_zarr(child.store, group=group, consolidated=False,
                                      chunks=None, drop_variables=[dim]) as repo:
        for sources, start in unit:
            pos = start
            for src in sources:
                n, k = _write_file(child, store, src, pos, specs, repo, dim, group,
                                   storage_options, times, copied)
                pos += n
                refs += k
    return Written(child, store.counter[0], refs, copied)
