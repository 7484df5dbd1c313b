"""Repository subcommands: init, log, branches, tags, diff."""

from __future__ import annotations

import argparse
from datetime import UTC
from typing import Any

from icechunk_dist.cli._common import REPO_HELP, check_new_repository, resolve_ref, storage_for
from icechunk_dist.repository import Repository

__all__ = ["register"]


def _cmd_init(args: argparse.Namespace) -> int:
    storage = storage_for(args)
    check_new_repository(storage)  # before anything is written: a failed init leaves nothing
    repo = Repository.create(storage)
    print(f"created repository at {args.repo}; main -> {repo.lookup_branch('main')}")
    return 0


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
    return 0


def _cmd_branches(args: argparse.Namespace) -> int:
    repo = Repository.open(storage_for(args))
    for name in sorted(repo.list_branches()):
        print(f"{name}  {repo.lookup_branch(name)}")
    return 0


def _cmd_tags(args: argparse.Namespace) -> int:
    repo = Repository.open(storage_for(args))
    for name in sorted(repo.list_tags()):
        print(f"{name}  {repo.lookup_tag(name)}")
    return 0


def _cmd_diff(args: argparse.Namespace) -> int:
    repo = Repository.open(storage_for(args))
    result = repo.diff(from_snapshot_id=resolve_ref(repo, args.from_ref),
                       to_snapshot_id=resolve_ref(repo, args.to_ref))
    text = str(result)
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
