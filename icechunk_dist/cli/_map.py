"""``icechunk-dist map``: reprocess the dataset at a ref onto a branch, as one commit."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from icechunk_dist.cli._common import REPO_HELP, add_dask_options, client_for, storage_for
from icechunk_dist.errors import IcechunkDistError, InvalidInputError
from icechunk_dist.repository import Repository

__all__ = ["register"]


def _cmd_map(args: argparse.Namespace) -> int:
    if not args.func_spec and not args.rechunk:
        raise InvalidInputError("map needs --func module:function, --rechunk dim=n,..., "
                                "or both")
    from icechunk_dist._reprocess import load_function, parse_rechunk, reprocess

    # `--func mymodule:fn` names a module in the current directory too (as `python -m` would)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    # bad input is reported before anything is opened, started or created
    func = load_function(args.func_spec) if args.func_spec else None
    spec = parse_rechunk(args.rechunk) if args.rechunk else None
    repo = Repository.open(storage_for(args))
    start = time.perf_counter()
    client, cluster = client_for(args)
    try:
        result = reprocess(repo, source=args.source, branch=args.branch, func=func,
                           rechunk=spec, group=args.group, message=args.message,
                           client=client, progress=not args.no_progress)
    except IcechunkDistError:
        raise
    except Exception as e:  # a task of the job failed on a worker: one line, exit 1
        job = " ".join(x for x in (args.func_spec,
                                   args.rechunk and f"--rechunk {args.rechunk}") if x)
        raise IcechunkDistError(
            f"map {job} failed while writing {args.branch!r} (nothing committed): "
            f"{type(e).__name__}: {e}"
        ) from e
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    elapsed = time.perf_counter() - start
    made = "created at" if result.created_branch else "from"
    print(f"committed {result.snapshot_id} on {result.branch} ({made} {args.source} = "
          f"{result.source_snapshot}; {len(result.variables)} variable(s), {elapsed:.1f} s)")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``map`` to ``sub`` (an argparse subparsers action)."""
    s = sub.add_parser(
        "map", parents=[common],
        help="reprocess the dataset at a ref (function and/or rechunk) onto a branch, "
             "one commit",
        description="Open the xarray dataset at --from lazily with Dask, apply --func "
                    "(module:function, Dataset -> Dataset) and/or --rechunk, and write the "
                    "result to --to-branch (created at --from if missing) through forks, as "
                    "exactly one commit, rebasing if the branch moved. --from and every other "
                    "branch are unchanged. See docs/reprocessing.md.",
    )
    s.add_argument("repo", metavar="PATH_OR_URL", help=REPO_HELP)
    s.add_argument("--from", dest="source", required=True, metavar="REF",
                   help="branch, tag or snapshot id to read")
    s.add_argument("--to-branch", dest="branch", required=True, metavar="BRANCH",
                   help="branch to write (created at --from if missing)")
    s.add_argument("--func", dest="func_spec", default=None, metavar="MODULE:FUNCTION",
                   help="the function Dataset -> Dataset, e.g. mypkg.jobs:daily_mean")
    s.add_argument("--rechunk", default=None, metavar="DIM=N,...",
                   help="re-chunk the result, e.g. time=1,lat=-1 (-1: the whole dimension)")
    s.add_argument("--group", default=None, help="zarr group of the dataset (default: root)")
    s.add_argument("-m", "--message", default=None, help="commit message")
    add_dask_options(s)
    s.add_argument("--no-progress", action="store_true", help="no progress display")
    s.set_defaults(func=_cmd_map)  # main() dispatches on args.func; --func is args.func_spec
