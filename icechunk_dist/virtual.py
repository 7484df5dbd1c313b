"""Virtual chunks: chunks that stay in existing files (NetCDF/HDF5, binary archives) and are
referenced by byte range instead of copied. Icechunk's ``icechunk.virtual`` names, plus the
object-store configs containers hold and a helper to read a source's checksums.

See docs/virtual.md: a :class:`VirtualChunkContainer` in the repository config says where
virtual chunks may live, ``authorize_virtual_chunk_access=`` on ``Repository.open`` says
which containers this process may read (with which credentials), and
``store.set_virtual_refs`` / ``set_virtual_refs_columns`` record refs in bulk.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from icechunk_dist import _sync
from icechunk_dist._containers import (
    AnyObjectStoreConfig,
    ObjectStoreConfig,
    S3Options,
    VirtualChunkContainer,
    gcs_store,
    http_store,
    local_filesystem_store,
    s3_store,
)
from icechunk_dist.credentials import LocalFileSystemAccess, containers_credentials
from icechunk_dist.errors import InvalidInputError
from icechunk_dist.format import VirtualChunkSpec
from icechunk_dist.storage import SourceStat, VirtualSources

__all__ = [
    "ObjectStoreConfig",
    "S3Options",
    "SourceStat",
    "VirtualChunkContainer",
    "VirtualChunkSpec",
    "gcs_store",
    "http_store",
    "local_filesystem_store",
    "s3_store",
    "source_stat",
    "source_stat_async",
]


def _one_container(url: str, store: AnyObjectStoreConfig | None) -> VirtualChunkContainer:
    parts = urlsplit(url)
    if parts.scheme == "file":
        return VirtualChunkContainer("file:///", store or local_filesystem_store("/"))
    if store is None:
        raise InvalidInputError(f"source_stat of {url!r} needs the store to reach it "
                                "(s3_store, gcs_store or http_store)")
    return VirtualChunkContainer(f"{parts.scheme}://{parts.netloc}/", store)


async def source_stat_async(url: str, store: AnyObjectStoreConfig | None = None,
                            credentials: Any = None) -> SourceStat:
    """Async twin of :func:`source_stat`."""
    c = _one_container(url, store)
    cred = credentials if credentials is not None or c.scheme != "file" \
        else LocalFileSystemAccess
    auth = containers_credentials({c.url_prefix: cred})
    return await VirtualSources([c], auth).stat(url)


def source_stat(url: str, store: AnyObjectStoreConfig | None = None,
                credentials: Any = None) -> SourceStat:
    """Size, etag and last-modified time of a virtual chunk source as virtual reads see
    it: record ``etag`` (or ``last_modified``) with refs into it, and reads refuse the
    source once it changes.

    Parameters
    ----------
    url
        The source (``file:///data/x.nc``, ``s3://bucket/x.nc``...).
    store
        How to reach it (not needed for ``file://``).
    credentials
        Its credentials (``icechunk_dist.credentials``), wrapped or not.

    Raises
    ------
    InvalidInputError
        If a store is needed and missing.
    StorageError
        If the source cannot be reached.
    """
    return _sync.run(source_stat_async(url, store, credentials))
