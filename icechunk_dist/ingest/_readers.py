"""Readers: open one source as an xarray Dataset (on a worker), and summarize its schema.

NetCDF3 (scipy), NetCDF4/HDF5 (h5netcdf), Zarr v2/v3 stores (zarr), GRIB (cfgrib, when it
is installed). Sources on S3 are fetched through :mod:`icechunk_dist.storage`.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import msgspec
import numpy as np

from icechunk_dist.errors import IcechunkDistError, InvalidInputError, StorageError
from icechunk_dist.ingest._sources import SourceFile, s3_source_storage
from icechunk_dist.ingest._virtual import NOT_VIRTUAL_HINT, open_ranges

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["FileSummary", "VarSummary", "checksum", "describe", "open_source", "summarize",
           "unpacked_dtype", "with_dim"]

_HDF5 = b"\x89HDF\r\n\x1a\n"


class VarSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What a variable looks like: dims, shape, decoded and encoded dtype, packing."""

    dims: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    encoded_dtype: str | None
    scale_factor: float | None
    add_offset: float | None
    is_coord: bool
    digest: str | None  # values digest of variables without the concat dim


class FileSummary(msgspec.Struct, frozen=True, kw_only=True):
    """A file's schema, computed on a worker; ``error`` says why it could not be read."""

    source: SourceFile
    error: str | None = None
    error_kind: str | None = None
    dims: dict[str, int] = {}
    variables: dict[str, VarSummary] = {}
    first: dict[str, Any] = {}
    last: dict[str, Any] = {}
    unlimited: tuple[str, ...] = ()
    scalar_coords: tuple[str, ...] = ()


def _engine(head: bytes, url: str, *, virtual: bool = False) -> str:
    low = url.lower()
    if head.startswith((b"CDF\x01", b"CDF\x02")):
        return "scipy"
    if head.startswith(_HDF5):
        return "h5netcdf"
    if virtual:
        raise InvalidInputError(f"{url}: not a NetCDF3 or NetCDF4/HDF5 file; "
                                f"{NOT_VIRTUAL_HINT}")
    if head.startswith(b"GRIB") or low.endswith((".grib", ".grb", ".grib2", ".grb2")):
        try:
            import cfgrib  # type: ignore[import-not-found]  # noqa: F401
        except ImportError:
            raise InvalidInputError(
                f"{url}: GRIB files need cfgrib (pip install 'icechunk_dist[grib]')"
            ) from None
        return "cfgrib"
    if head.startswith(b"CDF\x05"):
        raise InvalidInputError(f"{url}: NetCDF3 64-bit data (CDF5) is not supported")
    raise InvalidInputError(f"{url}: not a NetCDF, HDF5, GRIB file or Zarr store")


def _fetch(src: SourceFile, storage_options: Mapping[str, Any] | None) -> bytes:
    p = urlparse(src.url)
    storage = s3_source_storage(p.netloc, storage_options)
    try:
        return storage.get_sync(p.path.lstrip("/"))
    except StorageError:
        raise
    except IcechunkDistError as e:
        raise InvalidInputError(f"{src.url}: cannot read: {e}") from None


def _open_zarr(src: SourceFile, storage_options: Mapping[str, Any] | None) -> xr.Dataset:
    import xarray as xr

    if src.url.startswith("s3://"):
        raise InvalidInputError(f"{src.url}: Zarr stores on S3 are not supported as sources "
                                "yet; copy the store to a local path or ingest NetCDF files")
    consolidated = os.path.exists(os.path.join(src.url, ".zmetadata"))
    ds: xr.Dataset = xr.open_zarr(src.url, consolidated=consolidated, chunks=None)
    return ds


def _open_s3(src: SourceFile, storage_options: Mapping[str, Any] | None,
             virtual: bool) -> xr.Dataset:
    import xarray as xr

    if virtual:  # HDF5 through ranged reads: only what is used is fetched
        f = open_ranges(src, storage_options)
        engine = _engine(f.read(8), src.url, virtual=True)
        f.seek(0)
        if engine == "h5netcdf":
            ds: xr.Dataset = xr.open_dataset(f, engine=engine, chunks=None)
            return ds
        data = _fetch(src, storage_options)  # scipy reads a NetCDF3 file-like whole
    else:
        data = _fetch(src, storage_options)
        engine = _engine(data[:8], src.url)
    if engine == "cfgrib":
        raise InvalidInputError(f"{src.url}: GRIB sources on S3 are not supported")
    ds = xr.open_dataset(io.BytesIO(data), engine=engine, chunks=None)
    return ds


def open_source(src: SourceFile, storage_options: Mapping[str, Any] | None = None,
                *, load: bool = True, concat_dim: str | None = None,
                virtual: bool = False) -> xr.Dataset:
    """Open ``src`` as a Dataset with CF decoding (values loaded into memory by default).

    If ``concat_dim`` is a scalar coordinate of the file (one time step without a time
    dimension), it becomes a dimension of length 1 of every variable that has none of it
    and is not a coordinate. ``virtual``: only NetCDF3 and NetCDF4/HDF5 files are accepted,
    and HDF5 files on S3 are read through ranged requests instead of fetched whole.

    Raises
    ------
    InvalidInputError
        If the source is missing, unreadable or corrupt, naming it.
    StorageError
        If S3 cannot be reached.
    """
    import xarray as xr

    try:
        if src.kind == "zarr":
            if virtual:
                raise InvalidInputError(f"{src.url}: a Zarr store; {NOT_VIRTUAL_HINT}")
            ds = _open_zarr(src, storage_options)
        elif src.url.startswith("s3://"):
            ds = _open_s3(src, storage_options, virtual)
        else:
            try:
                with open(src.url, "rb") as f:
                    head = f.read(8)
            except OSError as e:
                raise InvalidInputError(f"{src.url}: cannot read: {e.strerror or e}") from None
            ds = xr.open_dataset(src.url, engine=_engine(head, src.url, virtual=virtual),
                                 chunks=None)
        if load:
            try:
                ds.load()
            finally:
                ds.close()
        if concat_dim is not None:
            ds = with_dim(ds, concat_dim)
        return ds
    except (IcechunkDistError, MemoryError):
        raise
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InvalidInputError(f"{src.url}: cannot read as a dataset: {msg}") from None


def with_dim(ds: xr.Dataset, dim: str) -> xr.Dataset:
    """``ds`` with a scalar coordinate ``dim`` promoted to a dimension of length 1."""
    if dim in ds.dims or dim not in ds.coords or ds[dim].ndim != 0:
        return ds
    out: xr.Dataset = ds.expand_dims(dim)
    for name in ds.coords:  # coordinates stay without the new dimension
        if name != dim and name in out.coords and dim in out[name].dims:
            out = out.assign_coords({name: ds[name].variable})
    return out


def _dt(dtype: Any) -> str:
    """A dtype's name in native byte order (NetCDF files are often big-endian)."""
    d = np.dtype(dtype)
    return str(d.newbyteorder("=")) if d.byteorder in "<>" else str(d)


def _digest(var: xr.Variable) -> str:
    values = np.asarray(var.values)
    if values.dtype.byteorder in "<>":
        values = values.astype(values.dtype.newbyteorder("="))
    h = hashlib.sha256(str((_dt(values.dtype), values.shape)).encode())
    if values.dtype.kind == "O":
        h.update(repr(values.tolist()).encode())
    else:
        h.update(np.ascontiguousarray(values).tobytes())
    return h.hexdigest()[:32]


def _scalar(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item() if v.dtype.kind not in "mM" else v
    return v


def unpacked_dtype(v: VarSummary) -> str | None:
    """The float type a packed variable lands as with ``unpack=True`` (None if it is not
    packed): float32 unless the packing needs float64, i.e. a packed type wider than 16 bits
    or an offset so large against the scale that float32 cannot resolve one packed step."""
    if v.scale_factor is None and v.add_offset is None:
        return None
    enc = np.dtype(v.encoded_dtype) if v.encoded_dtype else np.dtype("float64")
    scale = abs(v.scale_factor) if v.scale_factor else 1.0
    offset = abs(v.add_offset or 0.0)
    if enc.kind in "iu" and enc.itemsize <= 2:
        steps = offset / scale + 2 ** (8 * enc.itemsize)
        return "float32" if steps < 2 ** 24 else "float64"
    return "float32" if enc == np.dtype("float32") else "float64"


def describe(ds: xr.Dataset, concat_dim: str | None, *, unpack: bool = False
             ) -> tuple[dict[str, int], dict[str, VarSummary], dict[str, Any], dict[str, Any]]:
    """(dims, variables, first and last value of each dimension coordinate) of ``ds``;
    variables without ``concat_dim`` get a digest of their values (none if it is None), of
    the float values they land as if ``unpack`` and they are packed."""
    vars_: dict[str, VarSummary] = {}
    first: dict[str, Any] = {}
    last: dict[str, Any] = {}
    for name, var in ds.variables.items():
        enc = var.encoding
        enc_dtype = enc.get("dtype")
        sf, ao = enc.get("scale_factor"), enc.get("add_offset")
        summary = VarSummary(
            dims=tuple(str(d) for d in var.dims), shape=tuple(int(s) for s in var.shape),
            dtype=_dt(var.dtype),
            encoded_dtype=None if enc_dtype is None else _dt(enc_dtype),
            scale_factor=None if sf is None else float(sf),
            add_offset=None if ao is None else float(ao),
            is_coord=name in ds.coords, digest=None,
        )
        if concat_dim is not None and concat_dim not in var.dims:
            target = unpacked_dtype(summary) if unpack else None
            summary = msgspec.structs.replace(
                summary, digest=_digest(var if target is None else var.astype(target)))
        vars_[str(name)] = summary
        if var.ndim == 1 and var.dims[0] == name and var.size:
            first[str(name)] = _scalar(var.values[0])
            last[str(name)] = _scalar(var.values[-1])
    dims = {str(k): int(v) for k, v in ds.sizes.items()}
    return dims, vars_, first, last


def summarize(src: SourceFile, concat_dim: str | None,
              storage_options: Mapping[str, Any] | None = None, unpack: bool = False,
              virtual: bool = False) -> FileSummary:
    """Task: open ``src`` and describe its schema (never raises for bad input: the summary
    carries the error). ``virtual``: as :func:`open_source` opens for virtual ingestion."""
    try:
        ds = open_source(src, storage_options, load=False, concat_dim=concat_dim,
                         virtual=virtual)
    except InvalidInputError as e:
        return FileSummary(source=src, error=str(e), error_kind="input")
    except StorageError as e:
        return FileSummary(source=src, error=str(e), error_kind="storage")
    try:
        dims, vars_, first, last = describe(ds, concat_dim, unpack=unpack)
        unlimited = ds.encoding.get("unlimited_dims") or ()
        scalars = tuple(str(n) for n, c in ds.coords.items() if c.ndim == 0)
        return FileSummary(source=src, dims=dims, variables=vars_, first=first, last=last,
                           unlimited=tuple(str(u) for u in unlimited), scalar_coords=scalars)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        return FileSummary(source=src, error=f"{src.url}: cannot read: {msg}",
                           error_kind="input")
    finally:
        ds.close()


def checksum(src: SourceFile, storage_options: Mapping[str, Any] | None = None) -> str:
    """Task: the SHA-256 of ``src``'s content (of a Zarr store: of its files' relative paths
    and contents, in path order).

    Raises
    ------
    InvalidInputError
        If the source cannot be read.
    StorageError
        If S3 cannot be reached.
    """
    h = hashlib.sha256()
    if src.url.startswith("s3://"):
        h.update(_fetch(src, storage_options))
        return h.hexdigest()
    paths = [src.url]
    if src.kind == "zarr":
        paths = sorted(os.path.join(root, f) for root, _d, files in os.walk(src.url)
                       for f in files)
    try:
        for path in paths:
            if src.kind == "zarr":
                h.update(os.path.relpath(path, src.url).encode() + b"\0")
            with open(path, "rb") as f:
                while block := f.read(1 << 22):
                    h.update(block)
    except OSError as e:
        raise InvalidInputError(f"{src.url}: cannot read: {e.strerror or e}") from None
    return h.hexdigest()
