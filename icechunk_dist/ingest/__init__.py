"""Ingestion of files into a repository: NetCDF/HDF5/GRIB files or Zarr stores in, one
committed, versioned dataset out (one commit per batch), with safe re-runs.

Quick use::

    from icechunk_dist.ingest import ingest

    result = ingest("s3://bucket/repo", ["s3://raw/2024/*.nc"], concat_dim="time",
                    group="era5", batch_size=100)
    print(result.message, result.snapshot_ids)

Files are opened on the workers (a ``distributed`` client, or threads in this process),
checked against each other and against the repository before anything is written, sorted
along the concat dimension, and written through forks of one session: see
``docs/ingestion.md``. The group carries a record of its landed inputs in the tree
(:func:`landed_inputs`; docs/design/012-landed-inputs-record.md), so a re-run skips what
already landed, also after ``expire_snapshots``, amend or ``reset_branch``; each ingestion
commit also lists its inputs under :data:`METADATA_KEY` in its metadata.

``ingest(..., virtual=True)`` indexes NetCDF4/HDF5 and NetCDF3 files instead of copying
them: every stored chunk becomes a virtual chunk ref into its file, and what cannot be
referenced is copied and reported (``docs/virtual-ingestion.md``).
"""

from icechunk_dist.ingest._config import IngestConfig, load_config
from icechunk_dist.ingest._ingest import IngestResult, ingest, landed_inputs
from icechunk_dist.ingest._readers import open_source
from icechunk_dist.ingest._record import METADATA_KEY, Landed, normalize_group
from icechunk_dist.ingest._sources import SourceFile, expand_sources

__all__ = [
    "METADATA_KEY",
    "IngestConfig",
    "IngestResult",
    "Landed",
    "SourceFile",
    "expand_sources",
    "ingest",
    "landed_inputs",
    "load_config",
    "normalize_group",
    "open_source",
]
