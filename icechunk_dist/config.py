"""Repository configuration: a frozen, versioned struct stored in the repository marker."""

from __future__ import annotations

from typing import Any

import msgspec

from icechunk_dist.errors import InvalidInputError

__all__ = ["RepositoryConfig"]


class RepositoryConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Settings of a repository, fixed at creation (new fields get defaults).

    Parameters
    ----------
    inline_chunk_threshold_bytes
        Chunks of at most this many bytes are kept inside the manifest instead of their own
        object (default 512).
    manifest_split_size
        Target number of chunk refs per manifest split. Each array's chunk grid is tiled into
        regions of about this many chunks; a commit rewrites only the splits it touched.
    compression_level
        zstd level for metadata objects.
    max_concurrent_requests
        Upper bound on concurrent object-store requests issued by one session operation.
    """

    inline_chunk_threshold_bytes: int = 512
    manifest_split_size: int = 100_000
    compression_level: int = 3
    max_concurrent_requests: int = 64

    def __post_init__(self) -> None:
        if self.inline_chunk_threshold_bytes < 0:
            raise InvalidInputError("inline_chunk_threshold_bytes must be >= 0")
        if self.manifest_split_size < 1:
            raise InvalidInputError("manifest_split_size must be >= 1")
        if not 1 <= self.compression_level <= 22:
            raise InvalidInputError("compression_level must be in 1..22")
        if self.max_concurrent_requests < 1:
            raise InvalidInputError("max_concurrent_requests must be >= 1")

    @classmethod
    def default(cls) -> RepositoryConfig:
        return cls()

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RepositoryConfig:
        try:
            return msgspec.convert(d, cls)
        except msgspec.ValidationError as e:
            raise InvalidInputError(f"invalid repository config: {e}") from None
