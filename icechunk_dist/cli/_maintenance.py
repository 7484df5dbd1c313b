"""Maintenance subcommands: ``gc`` (garbage collection) and ``expire`` (snapshot expiry).

See docs/maintenance.md.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

from icechunk_dist.cli._common import REPO_HELP, storage_for
from icechunk_dist.errors import InvalidInputError
from icechunk_dist.repository import Repository

__all__ = ["register"]


def _cutoff(args: argparse.Namespace, default_days: float | None) -> datetime:
    if args.older_than is not None:
        try:
            when = datetime.fromisoformat(args.older_than)
        except ValueError:
            raise InvalidInputError(
                f"--older-than must be an ISO 8601 time, got {args.older_than!r}"
            ) from None
        return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    days = args.older_than_days if args.older_than_days is not None else default_days
    if days is None:
        raise InvalidInputError("give --older-than-days N or --older-than TIME")
    if days < 0:
        raise InvalidInputError("--older-than-days must be >= 0")
    return datetime.now(UTC) - timedelta(days=days)


def _cmd_gc(args: argparse.Namespace) -> int:
    repo = Repository.open(storage_for(args))
    summary = repo.garbage_collect(_cutoff(args, 7.0), dry_run=bool(args.dry_run),
                                   incremental=bool(args.incremental))
    print(str(summary) + (" (dry run)" if args.dry_run else ""))
    return 0


def _cmd_expire(args: argparse.Namespace) -> int:
    repo = Repository.open(storage_for(args))
    expired = repo.expire_snapshots(_cutoff(args, None),
                                    delete_expired_branches=bool(args.delete_expired_branches),
                                    delete_expired_tags=bool(args.delete_expired_tags))
    for sid in sorted(expired):
        print(sid)
    print(f"expired {len(expired)} snapshots; `icechunk-dist gc` frees their objects")
    return 0


def _add_cutoff(s: argparse.ArgumentParser, what: str) -> None:
    g = s.add_mutually_exclusive_group()
    g.add_argument("--older-than-days", type=float, default=None, metavar="DAYS",
                   help=f"{what} older than this many days")
    g.add_argument("--older-than", default=None, metavar="TIME",
                   help=f"{what} older than this ISO 8601 time (UTC if no offset)")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``gc`` and ``expire`` to ``sub`` (an argparse subparsers action)."""
    s = sub.add_parser("gc", parents=[common], help="delete unreachable objects")
    s.add_argument("repo", metavar="PATH_OR_URL", help=REPO_HELP)
    _add_cutoff(s, "delete unreachable objects last modified")
    s.add_argument("--dry-run", action="store_true", help="report, delete nothing")
    s.add_argument("--incremental", action="store_true",
                   help="do not list chunks/ (chunks of writes that never produced a "
                        "manifest wait for a full run)")
    s.set_defaults(func=_cmd_gc)

    s = sub.add_parser("expire", parents=[common],
                       help="drop old snapshots from history (then run gc)")
    s.add_argument("repo", metavar="PATH_OR_URL", help=REPO_HELP)
    _add_cutoff(s, "expire snapshots written")
    s.add_argument("--delete-expired-branches", action="store_true",
                   help="also delete branches (not main) whose tip is expired")
    s.add_argument("--delete-expired-tags", action="store_true",
                   help="also delete tags whose snapshot is expired")
    s.set_defaults(func=_cmd_expire)
