"""icechunk_dist: transactional, versioned Zarr v3 storage on object storage, built for many
Dask workers writing one dataset as one atomic commit.

``import icechunk_dist as icechunk`` is the one import a port from Icechunk needs: the
integrations ``icechunk.dask``, ``icechunk.xarray`` (and ``ingest``, ``kubernetes``, ``cli``)
are submodules loaded on first use, so importing the package itself never imports dask or
xarray.

The library prints nothing; it logs through ``logging.getLogger("icechunk_dist")`` (a
``NullHandler`` is attached, so nothing shows unless the application configures logging),
and progress bars are opt-in (``progress=True``, drawn on stderr).
"""

import importlib
import logging
from typing import TYPE_CHECKING, Any

from icechunk_dist._documents import RepoAvailability, RepoStatus
from icechunk_dist._enums import ChunkType, SessionMode
from icechunk_dist._maintenance import GCSummary
from icechunk_dist._opslog import Update, UpdateType
from icechunk_dist.config import (
    CachingConfig,
    CompressionAlgorithm,
    CompressionConfig,
    ManifestConfig,
    ManifestSplittingConfig,
    RepositoryConfig,
)
from icechunk_dist.conflicts import (
    BasicConflictSolver,
    Conflict,
    ConflictDetector,
    ConflictSolver,
    ConflictType,
    VersionSelection,
)
from icechunk_dist.credentials import (
    Credentials,
    GcsCredentials,
    HttpAccess,
    LocalFileSystemAccess,
    S3Credentials,
    S3StaticCredentials,
    containers_credentials,
    gcs_credentials,
    s3_anonymous_credentials,
    s3_credentials,
    s3_from_env_credentials,
    s3_refreshable_credentials,
    s3_static_credentials,
)
from icechunk_dist.errors import (
    AlreadyExistsError,
    BranchMovedError,
    ConflictError,
    ErrorKind,
    FormatError,
    GaveUpError,
    GCConflictError,
    HistoryRewrittenError,
    IcechunkDistError,
    IcechunkError,
    InternalError,
    InvalidInputError,
    LostWritesError,
    MergeConflictError,
    NodeNotFoundError,
    NotFoundError,
    ReadOnlyError,
    RebaseFailedError,
    RefNotFoundError,
    RepositoryNotFoundError,
    SessionStateError,
    SnapshotNotFoundError,
    SourceChangedError,
    StorageError,
    VirtualChunkAccessError,
)
from icechunk_dist.repository import Repository, SnapshotInfo, SpecVersion
from icechunk_dist.session import Diff, ForkSession, Session
from icechunk_dist.storage import (
    ObjectStoreConfig,
    S3Options,
    Storage,
    azure_storage,
    azure_store,
    gcs_storage,
    gcs_store,
    http_store,
    in_memory_storage,
    local_filesystem_storage,
    local_filesystem_store,
    s3_object_store_storage,
    s3_storage,
    s3_store,
)
from icechunk_dist.store import IcechunkStore
from icechunk_dist.virtual import VirtualChunkContainer, VirtualChunkSpec

if TYPE_CHECKING:  # the lazy submodules, for type checkers (not cli: it imports the package)
    from icechunk_dist import dask as dask
    from icechunk_dist import ingest as ingest
    from icechunk_dist import kubernetes as kubernetes
    from icechunk_dist import xarray as xarray

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

# integrations whose dependencies are optional extras: imported on first attribute access
_LAZY_SUBMODULES = frozenset({"cli", "dask", "ingest", "kubernetes", "xarray"})


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY_SUBMODULES)


__all__ = [
    "AlreadyExistsError",
    "BranchMovedError",
    "BasicConflictSolver",
    "CachingConfig",
    "ChunkType",
    "CompressionAlgorithm",
    "CompressionConfig",
    "Conflict",
    "ConflictDetector",
    "ConflictError",
    "ConflictSolver",
    "ConflictType",
    "Credentials",
    "Diff",
    "ErrorKind",
    "FormatError",
    "GCConflictError",
    "GCSummary",
    "GaveUpError",
    "GcsCredentials",
    "HttpAccess",
    "HistoryRewrittenError",
    "ForkSession",
    "IcechunkDistError",
    "IcechunkError",
    "IcechunkStore",
    "InternalError",
    "InvalidInputError",
    "LocalFileSystemAccess",
    "LostWritesError",
    "MergeConflictError",
    "ManifestConfig",
    "ManifestSplittingConfig",
    "NodeNotFoundError",
    "NotFoundError",
    "ObjectStoreConfig",
    "ReadOnlyError",
    "RebaseFailedError",
    "RefNotFoundError",
    "RepoAvailability",
    "RepoStatus",
    "Repository",
    "RepositoryConfig",
    "RepositoryNotFoundError",
    "S3Credentials",
    "S3Options",
    "S3StaticCredentials",
    "Session",
    "SessionMode",
    "SessionStateError",
    "SnapshotInfo",
    "SnapshotNotFoundError",
    "SourceChangedError",
    "SpecVersion",
    "Storage",
    "StorageError",
    "Update",
    "UpdateType",
    "VersionSelection",
    "VirtualChunkAccessError",
    "VirtualChunkContainer",
    "VirtualChunkSpec",
    "__version__",
    "azure_storage",
    "azure_store",
    "containers_credentials",
    "gcs_credentials",
    "gcs_storage",
    "gcs_store",
    "http_store",
    "in_memory_storage",
    "local_filesystem_storage",
    "local_filesystem_store",
    "s3_anonymous_credentials",
    "s3_credentials",
    "s3_from_env_credentials",
    "s3_object_store_storage",
    "s3_refreshable_credentials",
    "s3_static_credentials",
    "s3_storage",
    "s3_store",
]
