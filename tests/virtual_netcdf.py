"""Test helper: real NetCDF4 files written by xarray (zlib + shuffle, explicit chunking) and
virtual refs to their chunks built from h5py's chunk index, as an indexer would.

The virtual arrays use the Zarr codecs that undo HDF5's filters: ``numcodecs.shuffle``
(element size of the dtype) then ``numcodecs.zlib`` (HDF5 applies shuffle, then deflate).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import xarray as xr
import zarr
from zarr.codecs.numcodecs import Shuffle, Zlib

import icechunk_dist as icd

__all__ = ["chunk_specs", "create_virtual_array", "sample_data", "write_netcdf"]


def sample_data(i: int, steps: int = 4, ny: int = 10, nx: int = 12) -> dict[str, np.ndarray]:
    """File ``i``'s variables: a float32 field and an int16 one (shuffle element sizes 4, 2)."""
    rng = np.random.default_rng(100 + i)
    t2m = (rng.standard_normal((steps, ny, nx)) * 5 + 280 + i).astype("f4")
    counts = rng.integers(-3000, 3000, (steps, ny, nx)).astype("i2")
    return {"t2m": t2m, "counts": counts}


def write_netcdf(path: Path, data: dict[str, np.ndarray],
                 chunks: tuple[int, ...] = (1, 5, 6)) -> Path:
    """A NetCDF4 file (xarray, h5netcdf engine) with ``data`` as (time, y, x) variables,
    each compressed with zlib + shuffle in ``chunks``."""
    ds = xr.Dataset({k: (("time", "y", "x"), v) for k, v in data.items()})
    enc = {k: {"zlib": True, "shuffle": True, "complevel": 4, "chunksizes": chunks,
               "_FillValue": None} for k in data}
    ds.to_netcdf(path, engine="h5netcdf", encoding=enc)
    return path


def chunk_specs(path: Path, var: str, url: str, *, etag: str | None = None,
                modified: Any = None, time_offset: int = 0) -> list[icd.VirtualChunkSpec]:
    """One spec per allocated chunk of ``var`` (offsets and sizes from h5py's chunk index),
    its time index shifted by ``time_offset`` chunks."""
    out = []
    with h5py.File(path, "r") as f:
        d = f[var]
        assert d.compression == "gzip" and d.shuffle, (d.compression, d.shuffle)
        for k in range(d.id.get_num_chunks()):
            info = d.id.get_chunk_info(k)
            idx = [o // c for o, c in zip(info.chunk_offset, d.chunks, strict=True)]
            idx[0] += time_offset
            out.append(icd.VirtualChunkSpec(idx, url, info.byte_offset, info.size,
                                            etag_checksum=etag,
                                            last_updated_at_checksum=modified))
    return out


def create_virtual_array(store: Any, name: str, shape: Sequence[int], chunks: Sequence[int],
                         dtype: str) -> zarr.Array:
    """An array whose chunks decode what HDF5's shuffle + deflate filters wrote."""
    itemsize = np.dtype(dtype).itemsize
    return zarr.create_array(store, name=name, shape=tuple(shape), chunks=tuple(chunks),
                             dtype=dtype, compressors=[Shuffle(elementsize=itemsize),
                                                       Zlib(level=4)],
                             fill_value=0, dimension_names=("time", "y", "x"))
