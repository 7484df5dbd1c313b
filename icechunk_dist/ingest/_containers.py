"""The virtual chunk containers a virtual ingestion needs.

Virtual chunk refs are read only through a container of the repository's config that covers
their URL (docs/virtual.md). A virtual ingestion therefore makes sure, before it writes any
ref, that the config has one for its sources, and saves the config if it had to add one:

- local files: ``file://<dir>/`` with ``local_filesystem_store(<dir>)``, ``<dir>`` the
  deepest directory holding all the run's sources;
- S3 objects: ``s3://<bucket>/`` with ``s3_store(...)`` of the run's S3 settings (endpoint,
  region, plain HTTP), S3-compatible when an endpoint is given.

Containers the config already has are used as they are. Credentials are never saved:
readers authorize the containers (``authorize_virtual_chunk_access=``) when they open the
repository.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from icechunk_dist._containers import VirtualChunkContainer, local_filesystem_store, s3_store
from icechunk_dist.config import RepositoryConfig
from icechunk_dist.errors import InvalidInputError
from icechunk_dist.repository import Repository

__all__ = ["ensure_containers", "source_containers"]

log = logging.getLogger("icechunk_dist.ingest")


def _covered(url: str, containers: Iterable[VirtualChunkContainer]) -> bool:
    return any(url.startswith(c.url_prefix) for c in containers)


def source_containers(urls: Iterable[str], options: Mapping[str, Any],
                      have: Iterable[VirtualChunkContainer] = ()
                      ) -> list[VirtualChunkContainer]:
    """The containers to add so that every ref URL in ``urls`` (``file:///...`` or
    ``s3://bucket/key``) is covered, given the containers the config already ``have``.

    Raises
    ------
    InvalidInputError
        For a URL of another scheme.
    """
    have = list(have)
    local: list[str] = []
    buckets: list[str] = []
    for url in urls:
        if _covered(url, have):
            continue
        parts = urlsplit(url)
        if parts.scheme == "file":
            local.append(os.path.dirname(unquote(parts.path)))
        elif parts.scheme in ("s3", "s3a"):
            if parts.netloc not in buckets:
                buckets.append(parts.netloc)
        else:
            raise InvalidInputError(f"{url}: virtual chunk refs point into local files or "
                                    "S3 objects only")
    out: list[VirtualChunkContainer] = []
    if local:
        root = os.path.commonpath(local)
        prefix = "file://" + root.rstrip("/") + "/"
        out.append(VirtualChunkContainer(prefix, local_filesystem_store(root)))
    endpoint = options.get("endpoint_url")
    for bucket in buckets:
        store = s3_store(region=options.get("region"), endpoint_url=endpoint,
                         allow_http=bool(options.get("allow_http")),
                         anonymous=bool(options.get("anonymous")),
                         s3_compatible=endpoint is not None,
                         force_path_style=endpoint is not None)
        out.append(VirtualChunkContainer(f"s3://{bucket}/", store))
    return out


def ensure_containers(repo: Repository, urls: Iterable[str], options: Mapping[str, Any]
                      ) -> tuple[Repository, list[VirtualChunkContainer]]:
    """``repo`` with containers covering ``urls`` in its config (saved if any was added),
    and the containers added.

    Raises
    ------
    InvalidInputError
        For a URL that is neither a local file nor an S3 object.
    StorageError
        If the config cannot be saved.
    """
    added = source_containers(urls, options, repo.config.containers())
    if not added:
        return repo, []
    extra = RepositoryConfig()
    for c in added:
        extra.set_virtual_chunk_container(c)
    repo = repo.reopen(extra)
    repo.save_config()
    for c in added:
        log.info("added virtual chunk container %s to the repository config; readers "
                 "authorize it with authorize_virtual_chunk_access={%r: None}",
                 c.url_prefix, c.url_prefix)
    return repo, added
