"""Object storage for icechunk_dist: the :class:`Storage` contract and its backends."""

from icechunk_dist.storage._base import ObjectExistsError, ObjectMeta, ObjectNotFoundError, Storage
from icechunk_dist.storage._factories import (
    azure_storage,
    gcs_storage,
    in_memory_storage,
    local_filesystem_storage,
    s3_storage,
)

__all__ = [
    "ObjectExistsError",
    "ObjectMeta",
    "ObjectNotFoundError",
    "Storage",
    "azure_storage",
    "gcs_storage",
    "in_memory_storage",
    "local_filesystem_storage",
    "s3_storage",
]
