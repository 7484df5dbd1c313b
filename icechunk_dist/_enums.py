"""Small public enums shaped like Icechunk's (layer 0: no imports of ours)."""

from __future__ import annotations

from enum import Enum

__all__ = ["ChunkType", "SessionMode"]


class ChunkType(Enum):
    """How one chunk is stored (``Session.chunk_type``).

    Attributes
    ----------
    uninitialized
        No chunk there (zarr reads the fill value).
    native
        An object of its own in the repository.
    virtual
        A byte range of an object outside the repository.
    inline
        Kept inside the manifest (small chunks).
    """

    uninitialized = 0
    native = 1
    virtual = 2
    inline = 3


class SessionMode(Enum):
    """What a session may do (``Session.mode``).

    Attributes
    ----------
    readonly
        Read only.
    writable
        Read and write data and metadata.
    rearrange
        Only move and rename nodes (``Repository.rearrange_session``).
    """

    readonly = 0
    writable = 1
    rearrange = 2
