"""Writing: the arrays of a group (created from one file, or resized), the worker task that
writes files into a fork, and the plan of which files one task writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
from zarr.storage import WrapperStore

from icechunk_dist.errors import IcechunkDistError, InvalidInputError
from icechunk_dist.ingest._raw_copy import RawFile, open_raw
from icechunk_dist.ingest._readers import FileSummary, describe, open_source
from icechunk_dist.ingest._runner import Written
from icechunk_dist.ingest._sources import SourceFile
from icechunk_dist.ingest._virtual import quiet_codecs
from icechunk_dist.session import ForkSession, Session

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["Counting", "RepoView", "Segment", "create_dataset", "plan_units", "repo_view",
           "resize", "vlen_text", "write_region", "write_unit", "zarr_encoding"]

# encoding keys of the netCDF backends that mean nothing to Zarr (dropped before writing)
_NETCDF_ONLY = ("chunksizes", "contiguous", "zlib", "complevel", "shuffle", "fletcher32",
                "source", "original_shape", "preferred_chunks", "compression",
                "compression_opts", "szip_coding", "szip_pixels_per_block", "endian",
                "least_significant_digit", "quantize_mode", "significant_digits",
                "blosc_shuffle", "chunks", "compressor", "compressors", "filters",
                "serializer", "shards")
_PACKING = ("scale_factor", "add_offset", "missing_value", "_FillValue", "dtype")

#: (files, offset along the concat dimension): consecutive files written as one region
Segment = tuple[list[SourceFile], int]


class RepoView(msgspec.Struct, kw_only=True):
    """The group's dataset as it is in a snapshot or session.

    Attributes
    ----------
    summary
        Its schema, as a file's (to check files against).
    length
        Its length along the concat dimension.
    coord
        The values of the concat coordinate (empty without one).
    chunks
        Chunk size along each dimension (of the first array that has it).
    times
        ``(units, calendar)`` of every datetime variable stored as integers: a value that
        these units cannot hold exactly must not be written (xarray would silently store it
        in other units).
    """

    summary: FileSummary
    length: int
    coord: Any
    chunks: dict[str, int]
    times: dict[str, tuple[str, str]]


def repo_view(store: Any, group: str | None, dim: str) -> RepoView | None:
    """The group's dataset in ``store`` (None if the group holds no arrays).

    Raises
    ------
    InvalidInputError
        If the dataset has no dimension ``dim``.
    """
    import xarray as xr
    import zarr

    try:
        g = zarr.open_group(store, path=group or "", mode="r")
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
        return None
    chunks: dict[str, int] = {}
    arrays = list(g.arrays())
    if not arrays:
        return None
    for _name, arr in arrays:
        names = tuple(arr.metadata.dimension_names or ())  # type: ignore[union-attr]
        for d, c in zip(names, arr.chunks, strict=False):
            chunks.setdefault(str(d), int(c))
    ds = xr.open_zarr(store, group=group, consolidated=False, chunks=None)
    try:
        if dim not in ds.dims:
            raise InvalidInputError(
                f"the repository's dataset at {group or '/'} has no dimension {dim!r} "
                f"(dims: {', '.join(map(str, ds.dims))})"
            )
        dims, variables, first, last = describe(ds, dim)
        times = {}
        for name, var in ds.variables.items():
            enc = var.encoding
            if var.dtype.kind == "M" and "units" in enc and np.dtype(
                    enc.get("dtype", "f8")).kind in "iu":
                times[str(name)] = (str(enc["units"]), str(enc.get("calendar", "standard")))
        coord = ds[dim].values if dim in ds.coords else np.array([])
        return RepoView(
            summary=FileSummary(source=SourceFile(url="<repository>", size=0), dims=dims,
                                variables=variables, first=first, last=last),
            length=int(ds.sizes[dim]), coord=coord, chunks=chunks, times=times)
    finally:
        ds.close()


def zarr_encoding(var: xr.Variable, chunks: tuple[int, ...], float_dtype: str | None
                  ) -> dict[str, Any]:
    """The Zarr encoding of a file's variable: its CF encodings without the netCDF-only
    keys, ``chunks``, and plain floats of ``float_dtype`` if it lands unpacked."""
    enc = {k: v for k, v in var.encoding.items() if k not in _NETCDF_ONLY}
    if float_dtype is not None:  # unpacked: plain floats, NaN for missing values
        enc = {k: v for k, v in enc.items() if k not in _PACKING}
        enc["dtype"] = np.dtype(float_dtype)
        enc["_FillValue"] = np.dtype(float_dtype).type(np.nan)
    enc["chunks"] = chunks
    if var.dtype.kind in "mM" and "units" not in enc:
        # times without CF units: xarray would pick units from the (empty) template; pick
        # exact ones so that any later time step encodes without loss
        enc["units"] = ("nanoseconds since 1970-01-01" if var.dtype.kind == "M"
                        else "nanoseconds")
        enc["dtype"] = np.dtype("int64")
    return enc


def create_dataset(session: Session, first: SourceFile, group: str | None, dim: str,
                   chunks: Mapping[str, int], unpack: Mapping[str, str],
                   storage_options: Mapping[str, Any] | None) -> None:
    """Create the group's arrays (length 0 along ``dim``) from one file: metadata, CF
    encodings and the variables without ``dim`` (written here, on the driver). ``chunks``
    holds the chunk size of every dimension given (others: whole); ``unpack`` the float
    type of every packed variable to land decoded."""
    ds = open_source(first, storage_options, load=False, concat_dim=dim)
    try:
        tmpl = ds.isel({dim: slice(0, 0)})
        for name, var in tmpl.variables.items():
            full = ds.variables[name]
            shape = tuple(chunks.get(str(d), max(1, int(n)))
                          for d, n in zip(full.dims, full.shape, strict=True))
            var.encoding = zarr_encoding(full, shape, unpack.get(str(name)))
            if str(name) in unpack:
                var.attrs = {k: v for k, v in var.attrs.items() if k not in _PACKING}
        vlen_text(tmpl.load()).to_zarr(session.store, group=group, mode="a",
                                       consolidated=False, zarr_format=3)
    finally:
        ds.close()


def vlen_text(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with its unicode variables as variable-length strings: files decode them to
    ``<U{longest}``, which differs file by file, so the arrays must not be fixed-width."""
    from xarray.coding.strings import create_vlen_dtype

    names = [n for n, v in ds.variables.items() if v.dtype.kind == "U"]
    if not names:
        return ds
    out = ds.copy()
    for name in names:
        var = out.variables[name]
        text = var.copy(data=np.asarray(var.values, dtype=create_vlen_dtype(str)))
        text.encoding = {k: v for k, v in var.encoding.items() if k != "dtype"}
        out[name] = text
    return out


def resize(session: Session, group: str | None, dim: str, length: int) -> list[int]:
    """Resize every array with ``dim`` to ``length`` along it; return their chunk sizes
    along ``dim``."""
    import zarr

    g = zarr.open_group(session.store, path=group or "", mode="r+")
    chunks = []
    for _name, arr in g.arrays():
        names = tuple(arr.metadata.dimension_names or ())  # type: ignore[union-attr]
        if dim not in names:
            continue
        axis = names.index(dim)
        if arr.shape[axis] != length:
            shape = list(arr.shape)
            shape[axis] = length
            arr.resize(tuple(shape))
        chunks.append(int(arr.chunks[axis]))
    return chunks


def plan_units(items: Sequence[tuple[SourceFile, int, int]], chunks: Sequence[int]
               ) -> list[list[Segment]]:
    """Group files (source, offset, steps) into tasks so that no two tasks write one chunk:
    a file that shares a chunk (of any array) with the files before it joins their task.
    Within a task, adjacent files form one segment (one region write)."""
    units: list[list[tuple[SourceFile, int, int]]] = []
    end = 0
    for item in sorted(items, key=lambda t: t[1]):
        _src, start, n = item
        if units and any(start // c == (end - 1) // c for c in chunks):
            units[-1].append(item)
        else:
            units.append([item])
        end = start + n
    out: list[list[Segment]] = []
    for unit in units:
        segments: list[Segment] = []
        pos = -1
        for src, start, n in unit:
            if segments and start == pos:
                segments[-1][0].append(src)
            else:
                segments.append(([src], start))
            pos = start + n
        out.append(segments)
    return out


class Counting(WrapperStore[Any]):
    """A zarr store that counts the bytes written through it (its read-only twins share the
    count)."""

    def __init__(self, store: Any, counter: list[int] | None = None) -> None:
        super().__init__(store)
        self.counter = counter if counter is not None else [0]

    def _with_store(self, store: Any) -> Counting:
        return Counting(store, self.counter)

    async def set(self, key: str, value: Any) -> None:
        self.counter[0] += len(value)
        await self._store.set(key, value)


def _check_times(ds: xr.Dataset, times: Mapping[str, tuple[str, str]], names: str) -> None:
    """Refuse datetime values the repository's integer time units cannot hold exactly."""
    from xarray.coding.times import decode_cf_datetime

    for name, (units, calendar) in times.items():
        if name not in ds.variables or ds[name].dtype.kind != "M":
            continue
        values = ds[name].values.astype("datetime64[ns]")
        values = values[~np.isnat(values)]
        if not values.size:
            continue
        try:
            ref, one = decode_cf_datetime(np.array([0, 1]), units, calendar)
            step = np.timedelta64(one - ref, "ns").astype(np.int64)
            offsets = (values - np.datetime64(ref, "ns")).astype(np.int64)
        except Exception:  # units or a calendar numpy cannot do: xarray decides
            continue
        if step > 0 and np.any(offsets % step):
            bad = values[offsets % step != 0][0]
            raise InvalidInputError(
                f"{names}: {name} value {np.datetime_as_string(bad)} cannot be stored exactly "
                f"in the repository's units {units!r}"
            )


def write_unit(unit: list[Segment], fork: ForkSession, dim: str, group: str | None,
               storage_options: Mapping[str, Any] | None,
               times: Mapping[str, tuple[str, str]]) -> Written:
    """Task: write the unit's files at their offsets along ``dim`` into a child fork of
    ``fork``; return the child and the bytes written.

    Raises
    ------
    InvalidInputError
        If a file cannot be read, or its values do not fit the repository's arrays.
    """
    import xarray as xr

    child = fork.child()
    store = Counting(child.store)
    for sources, start in unit:
        if _write_raw(sources, store, group, dim, start):
            continue
        parts = [open_source(s, storage_options, concat_dim=dim) for s in sources]
        ds = parts[0] if len(parts) == 1 else xr.concat(
            parts, dim=dim, data_vars="minimal", coords="minimal", compat="override",
            join="override", combine_attrs="override")
        with quiet_codecs():  # the arrays may be a virtual ingestion's
            write_region(store, ds, dim, group, start, times,
                         ", ".join(s.url for s in sources))
    return Written(child, store.counter[0])


def _write_raw(sources: list[SourceFile], store: Any, group: str | None, dim: str,
               start: int) -> bool:
    """Copy the files' stored values as they are (``_raw_copy.py``) if every one of them
    can be; else write nothing and return False."""
    opened: list[RawFile] = []
    try:
        for src in sources:
            raw = open_raw(src, store, group, dim)
            if raw is None:
                return False
            opened.append(raw)
        pos = start
        for f in opened:
            try:
                pos += f.write(dim, pos)
            except IcechunkDistError:
                raise
            except Exception as e:  # e.g. a truncated file
                msg = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise InvalidInputError(f"{', '.join(s.url for s in sources)}: cannot write "
                                        f"into the repository: {msg}") from None
        return True
    finally:
        for f in opened:
            f.close()


def write_region(store: Any, ds: xr.Dataset, dim: str, group: str | None, start: int,
                 times: Mapping[str, tuple[str, str]], names: str) -> int:
    """Write the variables of ``ds`` that have ``dim`` at ``start`` along it (a region
    write; ``names`` says which files they come from); return the steps written.

    Raises
    ------
    InvalidInputError
        If the values do not fit the repository's arrays.
    """
    ds = vlen_text(ds.drop_vars([n for n, v in ds.variables.items() if dim not in v.dims]))
    n = int(ds.sizes[dim])
    ds.attrs = {}
    # xarray drops indexes from region writes; without its index the coordinate is written
    ds = ds.drop_indexes([d for d in ds.xindexes if d in ds.coords])
    _check_times(ds, times, names)
    try:
        ds.to_zarr(store, group=group, region={dim: slice(start, start + n)},
                   consolidated=False, safe_chunks=False)
    except IcechunkDistError:
        raise
    except Exception as e:  # e.g. values that do not encode like the repository's
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InvalidInputError(f"{names}: cannot write into the repository: {msg}"
                                ) from None
    return n
