"""``icechunk-dist info``: what a repository holds at a branch, tag or snapshot.

The tree of groups and arrays, each array with its shape, chunks, dtype, the chunks written
(of how many) by kind (native, inline, virtual) and the bytes stored, all read from the
snapshot and its manifests (no chunk is read). ``--json`` prints the same as one JSON
document for machines.
"""

from __future__ import annotations

import argparse
import json
import math
from datetime import UTC
from typing import Any

from icechunk_dist.cli._common import REPO_HELP, storage_for
from icechunk_dist.errors import InvalidInputError, NotFoundError
from icechunk_dist.repository import Repository
from icechunk_dist.session import Session

__all__ = ["describe", "register"]


def _array_entry(session: Session, path: str, arr: Any) -> dict[str, Any]:
    stats = session.chunk_stats(path)
    grid = arr.shards or arr.chunks  # one stored object per shard when sharded
    total = math.prod(-(-n // c) for n, c in zip(arr.shape, grid, strict=True))
    names = arr.metadata.dimension_names
    return {
        "path": "/" + path, "kind": "array", "shape": list(arr.shape),
        "chunks": list(arr.chunks), "shards": list(arr.shards) if arr.shards else None,
        "dtype": str(arr.dtype), "dimension_names": list(names) if names else None,
        "chunks_total": total, "chunks_written": stats.written, "native": stats.native,
        "inline": stats.inline, "virtual": stats.virtual,
        "stored_bytes": stats.stored_bytes, "virtual_bytes": stats.virtual_bytes,
    }


def describe(session: Session, group: str | None = None) -> list[dict[str, Any]]:
    """The nodes under ``group`` (default the root), itself first, sorted by path: groups
    as ``{"path", "kind": "group"}``, arrays with their shape, chunks, dtype and chunk
    statistics (:meth:`Session.chunk_stats`). An empty repository has no nodes at all.

    Raises
    ------
    NotFoundError
        If there is no group at ``group``.
    InvalidInputError
        If ``group`` is an array.
    """
    import zarr

    root = (group or "").strip("/")
    try:
        node = zarr.open(session.store, path=root, mode="r")
    except (FileNotFoundError, KeyError):
        if not root:
            return []  # nothing written yet, not even the root group
        raise NotFoundError(f"no group at {'/' + root!r}") from None
    if not isinstance(node, zarr.Group):
        raise InvalidInputError(f"{'/' + root!r} is an array, not a group: --group names a "
                                "group (info lists the group that holds it)")
    prefix = root + "/" if root else ""
    out: list[dict[str, Any]] = [{"path": "/" + root, "kind": "group"}]
    for rel, member in sorted(node.members(max_depth=None), key=lambda m: m[0]):
        path = prefix + rel
        if isinstance(member, zarr.Group):
            out.append({"path": "/" + path, "kind": "group"})
        else:
            out.append(_array_entry(session, path, member))
    return out


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def _tuple(v: list[int]) -> str:
    return "(" + ", ".join(map(str, v)) + ("," if len(v) == 1 else "") + ")"


def _array_line(e: dict[str, Any]) -> str:
    kinds = ", ".join(f"{k} {e[k]}" for k in ("native", "inline", "virtual") if e[k])
    shards = f"  shards {_tuple(e['shards'])}" if e["shards"] else ""
    virtual = f" (+{_size(e['virtual_bytes'])} virtual)" if e["virtual"] else ""
    return (f"{e['dtype']}  shape {_tuple(e['shape'])}  chunks {_tuple(e['chunks'])}{shards}"
            f"  {e['chunks_written']}/{e['chunks_total']} chunks written"
            f"{' (' + kinds + ')' if kinds else ''}  {_size(e['stored_bytes'])} stored{virtual}")


def _text(header: str, nodes: list[dict[str, Any]]) -> str:
    if not nodes:
        return f"{header}\n/ (empty: no groups or arrays)"
    base = nodes[0]["path"].rstrip("/")
    labels = []
    for e in nodes:
        rel = e["path"][len(base):].strip("/")
        depth = rel.count("/") + 1 if rel else 0
        name = (rel.rsplit("/", 1)[-1] if rel else e["path"]) + \
            ("/" if e["kind"] == "group" and rel else "")
        labels.append("  " * depth + name)
    width = max((len(x) for x, e in zip(labels, nodes, strict=True) if e["kind"] == "array"),
                default=0)
    lines = [header]
    lines.extend(label if e["kind"] == "group" else f"{label:<{width}}  {_array_line(e)}"
                 for label, e in zip(labels, nodes, strict=True))
    arrays = [e for e in nodes if e["kind"] == "array"]
    groups = len(nodes) - len(arrays)
    written = sum(e["chunks_written"] for e in arrays)
    stored = sum(e["stored_bytes"] for e in arrays)
    lines.append(f"{groups} group(s), {len(arrays)} array(s), {written} chunk(s) written, "
                 f"{_size(stored)} stored")
    return "\n".join(lines)


def _cmd_info(args: argparse.Namespace) -> int:
    repo = Repository.open(storage_for(args))
    session = repo.readonly_session(args.branch, tag=args.tag, snapshot_id=args.snapshot)
    snap = repo.lookup_snapshot(session.snapshot_id)
    nodes = describe(session, args.group)
    ref = (f"tag {args.tag}" if args.tag else f"snapshot {args.snapshot}" if args.snapshot
           else f"branch {args.branch or 'main'}")
    if args.json:
        arrays = [e for e in nodes if e["kind"] == "array"]
        doc = {
            "snapshot_id": snap.id, "branch": None if (args.tag or args.snapshot)
            else (args.branch or "main"), "tag": args.tag,
            "written_at": snap.written_at.astimezone(UTC).isoformat(),
            "message": snap.message, "group": "/" + (args.group or "").strip("/"),
            "nodes": nodes,
            "totals": {"groups": len(nodes) - len(arrays), "arrays": len(arrays),
                       **{k: sum(e[k] for e in arrays) for k in
                          ("chunks_written", "native", "inline", "virtual", "stored_bytes",
                           "virtual_bytes")}},
        }
        print(json.dumps(doc, indent=2))
        return 0
    stamp = snap.written_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    print(_text(f"{ref}: snapshot {snap.id}  {stamp}  {snap.message}", nodes))
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``info`` to ``sub`` (an argparse subparsers action)."""
    s = sub.add_parser(
        "info", parents=[common], help="the groups and arrays at a branch, tag or snapshot",
        description="Print the tree of groups and arrays at a branch (default main), tag or "
                    "snapshot: each array's dtype, shape, chunks, chunks written (native, "
                    "inline, virtual) and bytes stored, from the manifests.",
    )
    s.add_argument("repo", metavar="PATH_OR_URL", help=REPO_HELP)
    g = s.add_mutually_exclusive_group()
    g.add_argument("--branch", default=None, help="branch (default main)")
    g.add_argument("--tag", default=None, help="tag instead of a branch")
    g.add_argument("--snapshot", default=None, metavar="ID", help="a snapshot id")
    s.add_argument("--group", default=None, help="only this group (default: the root)")
    s.add_argument("--json", action="store_true", help="one JSON document, for machines")
    s.set_defaults(func=_cmd_info)
