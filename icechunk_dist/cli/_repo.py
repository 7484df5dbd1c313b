"""Repository subcommands: init, log, branches, tags, diff (``info`` is in ``_info``)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC
from typing import Any

from icechunk_dist.cli._common import REPO_HELP, check_new_repository, resolve_ref, storage_for
from icechunk_dist.repository import Repository
from icechunk_dist.session import Diff

__all__ = ["commit_inputs", "diff_text", "register"]


def _cmd_init(args: argparse.Namespace) -> int:
    storage = storage_for(args)
    check_new_repository(storage)  # before anything is written: a failed init leaves nothing
    repo = Repository.create(storage)
    print(f"created repository at {args.repo}; main -> {repo.lookup_branch('main')}")
    return 0


def commit_inputs(metadata: Mapping[str, Any]) -> list[str]:
    """What a commit's metadata records as its inputs: the files of an ingestion (under
    the ingestion's metadata key) and the source of an ``icechunk-dist map``."""
    from icechunk_dist.ingest import METADATA_KEY

    out = []
    rec = metadata.get(METADATA_KEY)
    if isinstance(rec, dict):
        for f in rec.get("files") or ():
            if isinstance(f, dict) and "url" in f:
                size = f" ({f['size']:,} bytes)" if isinstance(f.get("size"), int) else ""
                out.append(f"{f['url']}{size}")
    rec = metadata.get("icechunk_dist.map")
    if isinstance(rec, dict) and rec.get("source"):
        out.append(f"{rec['source']} = {rec.get('source_snapshot')}"
                   + (f", func {rec['func']}" if rec.get("func") else "")
                   + (f", rechunk {rec['rechunk']}" if rec.get("rechunk") else ""))
    return out


def _cmd_log(args: argparse.Namespace) -> int:
    repo = Repository.open(storage_for(args))
    if args.tag:
        history = repo.ancestry(tag=args.tag)
    else:
        history = repo.ancestry(branch=args.branch)
    for n, info in enumerate(history):
        if args.max_count is not None and n >= args.max_count:
            break
        stamp = info.written_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        print(f"{info.id}  {stamp}  {info.message}")
        if args.inputs:
            inputs = commit_inputs(info.metadata or {})
            if inputs:
                print(f"    inputs ({len(inputs)}):")
                for line in inputs:
                    print(f"      {line}")
    return 0


def _cmd_branches(args: argparse.Namespace) -> int:
    repo = Repository.open(storage_for(args))
    names = sorted(repo.list_branches())
    for name in names:
        print(f"{name}  {repo.lookup_branch(name)}")
    if not names:
        print("no branches")
    return 0


def _cmd_tags(args: argparse.Namespace) -> int:
    repo = Repository.open(storage_for(args))
    names = sorted(repo.list_tags())
    for name in names:
        print(f"{name}  {repo.lookup_tag(name)}")
    if not names:
        print("no tags")
    return 0


def diff_text(d: Diff) -> str:
    """``d`` for people: a node deleted and created again in the range (a group or array
    written with mode "w") reads as replaced, not as deleted plus new."""
    replaced_g = d.new_groups & d.deleted_groups
    replaced_a = d.new_arrays & d.deleted_arrays
    lines = [f"replaced {what}: {', '.join(sorted(items))}"
             for what, items in (("groups", replaced_g), ("arrays", replaced_a)) if items]
    rest = str(replace(d, new_groups=d.new_groups - replaced_g,
                       deleted_groups=d.deleted_groups - replaced_g,
                       new_arrays=d.new_arrays - replaced_a,
                       deleted_arrays=d.deleted_arrays - replaced_a))
    if rest != "no changes" or not lines:
        lines.append(rest)
    return "\n".join(lines)


def _cmd_diff(args: argparse.Namespace) -> int:
    repo = Repository.open(storage_for(args))
    result = repo.diff(from_snapshot_id=resolve_ref(repo, args.from_ref),
                       to_snapshot_id=resolve_ref(repo, args.to_ref))
    text = diff_text(result)
    print(text if text.strip() else "no changes")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the repository subcommands to ``sub`` (an argparse subparsers action)."""
    s = sub.add_parser("init", parents=[common], help="create a repository")
    s.add_argument("repo", metavar="PATH_OR_URL", help=REPO_HELP)
    s.set_defaults(func=_cmd_init)

    s = sub.add_parser("log", parents=[common], help="history of a branch or tag, newest first")
    s.add_argument("repo", metavar="PATH_OR_URL", help=REPO_HELP)
    g = s.add_mutually_exclusive_group()
    g.add_argument("--branch", default="main", help="branch (default main)")
    g.add_argument("--tag", default=None, help="tag instead of a branch")
    s.add_argument("-n", "--max-count", type=int, default=None, help="show at most N entries")
    s.add_argument("--inputs", action="store_true",
                   help="also list each commit's inputs (ingested files, map sources)")
    s.set_defaults(func=_cmd_log)

    s = sub.add_parser("branches", parents=[common], help="list branches and their tips")
    s.add_argument("repo", metavar="PATH_OR_URL", help=REPO_HELP)
    s.set_defaults(func=_cmd_branches)

    s = sub.add_parser("tags", parents=[common], help="list tags and their snapshots")
    s.add_argument("repo", metavar="PATH_OR_URL", help=REPO_HELP)
    s.set_defaults(func=_cmd_tags)

    s = sub.add_parser("diff", parents=[common], help="changes between two snapshots")
    s.add_argument("repo", metavar="PATH_OR_URL", help=REPO_HELP)
    s.add_argument("from_ref", metavar="FROM", help="branch, tag or snapshot id")
    s.add_argument("to_ref", metavar="TO", help="branch, tag or snapshot id")
    s.set_defaults(func=_cmd_diff)
