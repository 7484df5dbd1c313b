"""What one ingestion did: :class:`IngestResult`."""

from __future__ import annotations

import msgspec

__all__ = ["IngestResult"]


class IngestResult(msgspec.Struct, kw_only=True):
    """What :func:`ingest` did.

    Attributes
    ----------
    snapshot_ids
        The commits made, oldest first (one per batch; empty if nothing was new or for a
        dry run).
    ingested
        URLs of the new files ingested (for a dry run: that would be ingested), in order.
    skipped
        URLs of the files skipped because they already landed on the branch.
    reingested
        URLs of landed files that had changed and were re-ingested in place
        (``reingest_changed=True``).
    branch, group, concat_dim
        Where, and along which dimension (``group`` in its one spelling, None for the root).
    dry_run
        Whether this was a dry run.
    message
        A one-line summary (the CLI prints it).
    bytes_read
        Size of the source files landed.
    bytes_written
        Bytes of chunk data written to the repository.
    seconds
        Wall time of the run.
    virtual
        Whether the sources were referenced (``virtual=True``) rather than copied.
    refs
        Virtual chunk refs set (``virtual=True``).
    copied
        ``virtual=True``: the variables copied instead of referenced, each with why (an
        unsupported filter, a dimension coordinate, no concat dimension...).
    """

    snapshot_ids: list[str]
    ingested: list[str]
    skipped: list[str]
    branch: str
    group: str | None
    concat_dim: str | None
    reingested: list[str] = msgspec.field(default_factory=list)
    dry_run: bool = False
    message: str = ""
    bytes_read: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    virtual: bool = False
    refs: int = 0
    copied: dict[str, str] = msgspec.field(default_factory=dict)

    @property
    def nothing_new(self) -> bool:
        """True if every source had already landed (nothing was written)."""
        return not self.ingested and not self.reingested
