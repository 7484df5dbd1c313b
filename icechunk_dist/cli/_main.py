"""The ``icechunk-dist`` parser and entry point; subcommands live in their own modules."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from icechunk_dist import __version__
from icechunk_dist.cli import _ingest, _maintenance, _repo
from icechunk_dist.cli._common import EXIT_ERROR, common_parser
from icechunk_dist.errors import IcechunkDistError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    common = common_parser()
    p = argparse.ArgumentParser(
        prog="icechunk-dist",
        description="Transactional, versioned Zarr v3 repositories on object storage.",
    )
    p.add_argument("--version", action="version", version=f"icechunk-dist {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _repo.register(sub, common)
    _ingest.register(sub, common)
    _maintenance.register(sub, common)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 error, 2 usage)."""
    args = _parser().parse_args(argv)
    try:
        rc: int = args.func(args)
    except IcechunkDistError as e:
        print(f"icechunk-dist: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except ImportError as e:
        print(f"icechunk-dist: error: {e} (pip install 'icechunk_dist[dask]')", file=sys.stderr)
        return EXIT_ERROR
    return rc
