"""xarray through forks: write Datasets into sessions, reprocess and rechunk whole datasets.

- :func:`to_icechunk` (the call of Icechunk's ``icechunk.xarray.to_icechunk``): metadata
  into the session on the driver, dask-backed variables on the workers through forks,
  merged by a tree reduction; commit once yourself. Guide: docs/xarray.md.
- :func:`open_dataset`: ``xr.open_zarr`` of a session's store, lazily with dask.
- :func:`reprocess` and :func:`rechunk`: open the dataset at a ref, transform it, write the
  result to a branch as exactly one commit (the Python side of ``icechunk-dist map``).
  Guide: docs/reprocessing.md.

Needs the optional extra: ``pip install 'icechunk_dist[xarray]'`` (and ``[dask]`` for
dask-backed datasets and reprocessing).
"""

from __future__ import annotations

from icechunk_dist._reprocess import MapResult, load_function, parse_rechunk, rechunk, reprocess
from icechunk_dist._xarray_write import open_dataset, to_icechunk

__all__ = [
    "MapResult",
    "load_function",
    "open_dataset",
    "parse_rechunk",
    "rechunk",
    "reprocess",
    "to_icechunk",
]
