"""icechunk_dist: transactional, versioned Zarr v3 storage on object storage, built for many
Dask workers writing one dataset as one atomic commit."""

from icechunk_dist.config import RepositoryConfig
from icechunk_dist.conflicts import (
    BasicConflictSolver,
    Conflict,
    ConflictDetector,
    ConflictSolver,
    ConflictType,
    VersionSelection,
)
from icechunk_dist.errors import (
    AlreadyExistsError,
    ConflictError,
    ErrorKind,
    FormatError,
    GCConflictError,
    IcechunkDistError,
    InvalidInputError,
    NotFoundError,
    ReadOnlyError,
    RebaseFailedError,
    RepositoryNotFoundError,
    SessionStateError,
    StorageError,
)
from icechunk_dist.repository import Repository, SnapshotInfo
from icechunk_dist.session import Diff, ForkSession, Session
from icechunk_dist.storage import (
    Storage,
    azure_storage,
    gcs_storage,
    in_memory_storage,
    local_filesystem_storage,
    s3_storage,
)
from icechunk_dist.store import IcechunkStore

__version__ = "0.1.0"

__all__ = [
    "AlreadyExistsError",
    "BasicConflictSolver",
    "Conflict",
    "ConflictDetector",
    "ConflictError",
    "ConflictSolver",
    "ConflictType",
    "Diff",
    "ErrorKind",
    "FormatError",
    "GCConflictError",
    "ForkSession",
    "IcechunkDistError",
    "IcechunkStore",
    "InvalidInputError",
    "NotFoundError",
    "ReadOnlyError",
    "RebaseFailedError",
    "Repository",
    "RepositoryConfig",
    "RepositoryNotFoundError",
    "Session",
    "SessionStateError",
    "SnapshotInfo",
    "Storage",
    "StorageError",
    "VersionSelection",
    "__version__",
    "azure_storage",
    "gcs_storage",
    "in_memory_storage",
    "local_filesystem_storage",
    "s3_storage",
]
