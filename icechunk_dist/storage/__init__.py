"""Object storage for icechunk_dist: the :class:`Storage` contract and its backends.

:class:`WrapperStorage` forwards every operation to another storage; it is the base of
storages that change some requests. :class:`FaultyStorage` (with :class:`Fault` rules) is a
testing utility built on it: it injects latency, transient errors, lost responses, partial
listings or a SIGKILL. :class:`VirtualSources` reads virtual chunks from the containers a
repository was authorized to read.

:class:`S3Options` and :class:`ObjectStoreConfig` (``s3_store``, ``local_filesystem_store``,
...) describe object stores as values, with Icechunk's names (defined in
``icechunk_dist._containers``, re-exported here).
"""

from icechunk_dist._containers import (
    AnyObjectStoreConfig,
    ObjectStoreConfig,
    S3Options,
    azure_store,
    gcs_store,
    http_store,
    local_filesystem_store,
    s3_store,
)
from icechunk_dist.storage._base import ObjectExistsError, ObjectMeta, ObjectNotFoundError, Storage
from icechunk_dist.storage._factories import (
    azure_storage,
    gcs_storage,
    in_memory_storage,
    local_filesystem_storage,
    s3_object_store_storage,
    s3_storage,
)
from icechunk_dist.storage._faults import Fault, FaultKind, FaultyStorage
from icechunk_dist.storage._url import from_url
from icechunk_dist.storage._virtual import SourceStat, VirtualSources, plan_spans
from icechunk_dist.storage._wrapper import WrapperStorage

__all__ = [
    "AnyObjectStoreConfig",
    "Fault",
    "FaultKind",
    "FaultyStorage",
    "ObjectExistsError",
    "ObjectMeta",
    "ObjectNotFoundError",
    "ObjectStoreConfig",
    "S3Options",
    "SourceStat",
    "Storage",
    "VirtualSources",
    "WrapperStorage",
    "azure_storage",
    "azure_store",
    "from_url",
    "gcs_storage",
    "gcs_store",
    "http_store",
    "in_memory_storage",
    "local_filesystem_storage",
    "local_filesystem_store",
    "plan_spans",
    "s3_object_store_storage",
    "s3_storage",
    "s3_store",
]
