"""Raw copy: a local NetCDF4/HDF5 file's stored values written as they are, without the CF
decode/encode round trip, when they mean the same in the repository.

Writing through xarray decodes every packed variable (int16 -> float64, masked) and encodes
it again with the repository's encoding, which is most of a write task's CPU time. When a
variable is stored with the same dtype and the same CF coding attributes in the file and in
the repository's array (``scale_factor``, ``add_offset``, ``_FillValue``, ``missing_value``,
``units``, ``calendar``...), both decode the same stored values to the same values: copying
them is exact (the round trip is not always: a large ``add_offset`` loses bits in float).
Anything else (another packing, strings, enums, a file on S3, a scalar concat coordinate)
is left to the xarray path, which decides as it always did.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from icechunk_dist.ingest._sources import SourceFile

__all__ = ["RawFile", "open_raw"]

_HDF5 = b"\x89HDF\r\n\x1a\n"

# attributes that change what xarray decodes stored values to
_CODING = ("scale_factor", "add_offset", "_FillValue", "missing_value", "_Unsigned", "units",
           "calendar", "dtype", "_Encoding", "flag_values", "flag_meanings")


def _norm(value: Any) -> Any:
    """An attribute value comparable across HDF5 (numpy) and Zarr (JSON)."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    arr = np.asarray(value)
    if arr.dtype.kind in "iufb":
        out = arr.tolist()
        return out[0] if isinstance(out, list) and len(out) == 1 else out
    return value


def _same(a: Any, b: Any) -> bool:
    a, b = _norm(a), _norm(b)
    numbers = (int, float)
    if (isinstance(a, numbers) and isinstance(b, numbers)
            and not isinstance(a, bool) and not isinstance(b, bool)):
        return bool(a == b) or (math.isnan(a) and math.isnan(b))
    return type(a) is type(b) and bool(a == b)


def _zarr_attrs(arr: Any) -> dict[str, Any]:
    """The array's attributes as xarray reads them (a float ``_FillValue`` is stored
    base64-encoded)."""
    from xarray.backends.zarr import FillValueCoder

    attrs = dict(arr.attrs)
    if "_FillValue" in attrs:
        attrs["_FillValue"] = FillValueCoder.decode(attrs["_FillValue"], arr.dtype)
    return attrs


class RawFile:
    """An open local HDF5 file whose variables along the concat dimension can be copied as
    stored, with the repository's arrays they go to (name -> zarr array)."""

    def __init__(self, handle: Any, arrays: Mapping[str, Any]) -> None:
        self.handle, self.arrays = handle, arrays

    def write(self, dim: str, start: int) -> int:
        """Write every variable at ``start`` along ``dim``; return the steps written."""
        n = 0
        for name, arr in self.arrays.items():
            var = self.handle.variables[name]
            values = np.asarray(var[...], dtype=arr.dtype)
            axis = var.dimensions.index(dim)
            n = int(values.shape[axis])
            region = tuple(slice(start, start + n) if i == axis else slice(None)
                           for i in range(values.ndim))
            arr[region] = values
        return n

    def close(self) -> None:
        self.handle.close()


def _dims(arr: Any) -> tuple[str, ...]:
    return tuple(getattr(arr.metadata, "dimension_names", None) or ())


def _copyable(var: Any, arr: Any, dim: str) -> bool:
    import h5py

    names = _dims(arr)
    dtype = np.dtype(var.dtype)
    if (tuple(var.dimensions) != names or dtype.kind not in "iuf"
            or h5py.check_dtype(enum=dtype) is not None):
        return False
    if np.dtype(dtype.newbyteorder("=")) != np.dtype(arr.dtype):
        return False
    axis = names.index(dim)
    if any(int(a) != int(b) for i, (a, b) in enumerate(zip(var.shape, arr.shape, strict=True))
           if i != axis):
        return False
    ours, theirs = dict(var.attrs), _zarr_attrs(arr)
    for key in _CODING:
        if (key in ours) != (key in theirs):
            return False
        if key in ours and not _same(ours[key], theirs[key]):
            return False
    return True


def open_raw(src: SourceFile, store: Any, group: str | None, dim: str) -> RawFile | None:
    """The file and the repository's arrays to copy it into, if every array along ``dim``
    can take the file's stored values as they are; else None (the caller writes through
    xarray). Never raises: what cannot be decided here is the xarray path's to report."""
    if src.kind == "zarr" or "://" in src.url:
        return None
    try:
        with open(src.url, "rb") as f:
            if f.read(8) != _HDF5:
                return None
        import h5netcdf
        import zarr

        handle = h5netcdf.File(src.url, "r")
    except Exception:  # the xarray path reports unreadable files
        return None
    try:
        g = zarr.open_group(store, path=group or "", mode="r+")
        arrays = {str(name): arr for name, arr in g.arrays() if dim in _dims(arr)}
        along = [str(name) for name, var in handle.variables.items() if dim in var.dimensions]
        if not arrays or set(along) != set(arrays) or any(
                not _copyable(handle.variables[name], arrays[name], dim) for name in along):
            handle.close()
            return None
        return RawFile(handle, arrays)
    except Exception:
        handle.close()
        return None
