"""The object-key layout of a repository: every storage key the library reads or writes is
named here and nowhere else (docs/spec.md section 1).

Pure functions of ids and names; no I/O. Ids are the 24-character Crockford base32 form of
:mod:`icechunk_dist._types`.
"""

from __future__ import annotations

__all__ = [
    "AMEND_PREFIX",
    "BRANCH_LIST_PREFIX",
    "CHUNKS_PREFIX",
    "CONFIG_PREFIX",
    "GC_PREFIX",
    "MANIFESTS_PREFIX",
    "METADATA_PREFIX",
    "OBJECT_PREFIXES",
    "REFS_PREFIX",
    "REPO_KEY",
    "SNAPSHOTS_PREFIX",
    "STATUS_PREFIX",
    "TAG_LIST_PREFIX",
    "TRANSACTIONS_PREFIX",
    "VERSION_DIGITS",
    "amend_marker_key",
    "branch_hint_key",
    "branch_prefix",
    "branch_version_key",
    "chunk_key",
    "doc_version_key",
    "gc_done_key",
    "gc_start_key",
    "manifest_key",
    "snapshot_key",
    "tag_deleted_key",
    "tag_key",
    "transaction_key",
]

REPO_KEY = "repo"
CHUNKS_PREFIX = "chunks/"
MANIFESTS_PREFIX = "manifests/"
SNAPSHOTS_PREFIX = "snapshots/"
TRANSACTIONS_PREFIX = "transactions/"
#: the prefixes of immutable objects that garbage collection may delete
OBJECT_PREFIXES = (CHUNKS_PREFIX, MANIFESTS_PREFIX, SNAPSHOTS_PREFIX, TRANSACTIONS_PREFIX)
REFS_PREFIX = "refs/"
BRANCH_LIST_PREFIX = "refs/branch."
TAG_LIST_PREFIX = "refs/tag."
CONFIG_PREFIX = "config/"
METADATA_PREFIX = "metadata/"
#: the repository status (online / read-only), a versioned document like config and metadata
STATUS_PREFIX = "status/"
AMEND_PREFIX = "amends/"
GC_PREFIX = "gc/"
#: versioned objects (branch versions, documents) count down in this many decimal digits,
#: so the newest version sorts first in a listing
VERSION_DIGITS = 12
_MAXV = 10**VERSION_DIGITS - 1


def chunk_key(chunk_id: str) -> str:
    return f"{CHUNKS_PREFIX}{chunk_id}"


def manifest_key(manifest_id: str) -> str:
    return f"{MANIFESTS_PREFIX}{manifest_id}"


def snapshot_key(snapshot_id: str) -> str:
    return f"{SNAPSHOTS_PREFIX}{snapshot_id}"


def transaction_key(snapshot_id: str) -> str:
    return f"{TRANSACTIONS_PREFIX}{snapshot_id}"


def amend_marker_key(snapshot_id: str) -> str:
    """The marker that says snapshot ``snapshot_id`` replaced (amended) its branch's tip."""
    return f"{AMEND_PREFIX}{snapshot_id}"


def branch_prefix(name: str) -> str:
    return f"{BRANCH_LIST_PREFIX}{name}/"


def branch_version_key(name: str, version: int) -> str:
    return f"{branch_prefix(name)}{_MAXV - version:0{VERSION_DIGITS}d}"


def branch_hint_key(name: str) -> str:
    return f"{branch_prefix(name)}tip"


def tag_key(name: str) -> str:
    return f"{TAG_LIST_PREFIX}{name}/ref"


def tag_deleted_key(name: str) -> str:
    return f"{TAG_LIST_PREFIX}{name}/deleted"


def doc_version_key(prefix: str, version: int) -> str:
    """Version ``version`` of the versioned document under ``prefix`` (config, metadata,
    status)."""
    return f"{prefix}{_MAXV - version:0{VERSION_DIGITS}d}"


def gc_start_key(run_id: str) -> str:
    return f"{GC_PREFIX}{run_id}/start"


def gc_done_key(run_id: str) -> str:
    return f"{GC_PREFIX}{run_id}/done"
