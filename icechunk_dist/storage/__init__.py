"""Object storage for icechunk_dist: the :class:`Storage` contract and its backends.

:class:`FaultyStorage` (with :class:`Fault` rules) is a testing utility: it wraps any storage
and injects latency, transient errors, lost responses, partial listings or a SIGKILL.
"""

from icechunk_dist.storage._base import ObjectExistsError, ObjectMeta, ObjectNotFoundError, Storage
from icechunk_dist.storage._factories import (
    azure_storage,
    gcs_storage,
    in_memory_storage,
    local_filesystem_storage,
    s3_storage,
)
from icechunk_dist.storage._faults import Fault, FaultKind, FaultyStorage

__all__ = [
    "Fault",
    "FaultKind",
    "FaultyStorage",
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
