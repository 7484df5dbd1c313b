"""icechunk_dist: transactional, versioned Zarr v3 storage on object storage, built for many
Dask workers writing one dataset as one atomic commit."""

from icechunk_dist._enums import ChunkType, SessionMode
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
    InvalidInputError,
    LostWritesError,
    MergeConflictError,
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
    "Diff",
    "ErrorKind",
    "FormatError",
    "GCConflictError",
    "GaveUpError",
    "HistoryRewrittenError",
    "ForkSession",
    "IcechunkDistError",
    "IcechunkError",
    "IcechunkStore",
    "InvalidInputError",
    "LostWritesError",
    "MergeConflictError",
    "ManifestConfig",
    "ManifestSplittingConfig",
    "NotFoundError",
    "ReadOnlyError",
    "RebaseFailedError",
    "Repository",
    "RepositoryConfig",
    "RepositoryNotFoundError",
    "Session",
    "SessionMode",
    "SessionStateError",
    "SnapshotInfo",
    "Storage",
    "StorageError",
    "Update",
    "UpdateType",
    "VersionSelection",
    "__version__",
    "azure_storage",
    "gcs_storage",
    "in_memory_storage",
    "local_filesystem_storage",
    "s3_storage",
]
