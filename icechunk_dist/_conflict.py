"""The values that describe a rebase conflict (layer 0: plain data, no imports from us).

They live here, below both ``errors`` (whose :class:`~icechunk_dist.RebaseFailedError`
carries them) and ``conflicts`` (which finds them), so neither imports the other.
``icechunk_dist.conflicts`` re-exports them; that is their public home.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

__all__ = ["Conflict", "ConflictType"]


class ConflictType(Enum):
    """Kinds of conflict between our change-set and a commit that landed meanwhile."""

    NewNodeConflictsWithExistingNode = 1
    NewNodeInInvalidGroup = 2
    ZarrMetadataDoubleUpdate = 3
    ZarrMetadataUpdateOfDeletedArray = 4
    ZarrMetadataUpdateOfDeletedGroup = 5
    ChunkDoubleUpdate = 6
    ChunksUpdatedInDeletedArray = 7
    ChunksUpdatedInUpdatedArray = 8
    DeleteOfUpdatedArray = 9
    DeleteOfUpdatedGroup = 10
    KeyDoubleUpdate = 11


@dataclass(frozen=True)
class Conflict:
    """One conflict: its type, the node path (``"/a/b"``) and, for chunk conflicts, the
    coordinates of the chunks involved, each a list of ints as in Icechunk
    (``[[0, 1], [2, 3]]``; ``None`` for conflicts that are not about chunks)."""

    conflict_type: ConflictType
    path: str
    # given as any sequences of ints (tuples, numpy rows); kept as lists of lists
    conflicted_chunks: Sequence[Sequence[int]] | None = None
    snapshot_id: str | None = None  # the landed commit it conflicts with

    def __post_init__(self) -> None:
        # the finders hand over tuples or numpy rows; the public shape is Icechunk's
        if self.conflicted_chunks is not None:
            object.__setattr__(self, "conflicted_chunks",
                               [[int(v) for v in c] for c in self.conflicted_chunks])

    def __str__(self) -> str:
        s = f"{self.conflict_type.name} at {self.path}"
        if self.conflicted_chunks:
            shown = ", ".join(str(c) for c in self.conflicted_chunks[:8])
            more = len(self.conflicted_chunks) - 8
            s += f" (chunks {shown}{f' and {more} more' if more > 0 else ''})"
        return s


for _cls in (ConflictType, Conflict):
    _cls.__module__ = "icechunk_dist.conflicts"
del _cls
