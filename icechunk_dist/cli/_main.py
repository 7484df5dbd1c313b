"""The ``icechunk-dist`` parser and entry point; subcommands live in their own modules."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from icechunk_dist import __version__
from icechunk_dist.cli import _info, _ingest, _maintenance, _map, _repo
from icechunk_dist.cli._common import (
    EXIT_CONFLICT,
    EXIT_ERROR,
    EXIT_STORAGE,
    EXIT_USAGE,
    CliParser,
    common_parser,
)
from icechunk_dist.errors import (
    ConflictError,
    FormatError,
    IcechunkDistError,
    InvalidInputError,
    NotFoundError,
    StorageError,
)

__all__ = ["exit_code_for", "main"]


def _parser() -> argparse.ArgumentParser:
    common = common_parser()
    p = CliParser(  # no abbreviated options, here and in every subcommand
        prog="icechunk-dist",
        description="Transactional, versioned Zarr v3 repositories on object storage.",
    )
    p.add_argument("--version", action="version", version=f"icechunk-dist {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _repo.register(sub, common)
    _ingest.register(sub, common)
    _maintenance.register(sub, common)
    _map.register(sub, common)
    _info.register(sub, common)
    return p


def exit_code_for(exc: BaseException) -> int:
    """The documented exit status for an error (see the README's exit-code table).

    0 ok, 2 usage or bad input (including unreadable, corrupt or missing inputs), 3 a conflict
    that rebase did not solve, 4 storage unreachable or a transient failure (worth retrying),
    1 anything else.
    """
    if isinstance(exc, ConflictError):
        return EXIT_CONFLICT
    if isinstance(exc, StorageError):
        return EXIT_STORAGE
    if isinstance(exc, InvalidInputError | NotFoundError | FormatError):
        return EXIT_USAGE
    return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 error, 2 usage/bad input, 3 conflict,
    4 storage unreachable or transient)."""
    args = _parser().parse_args(argv)
    try:
        rc: int = args.func(args)
    except IcechunkDistError as e:
        print(f"icechunk-dist: error: {e}", file=sys.stderr)
        return exit_code_for(e)
    except ImportError as e:
        print(f"icechunk-dist: error: {_install_hint(e)}", file=sys.stderr)
        return EXIT_ERROR
    return rc


# the extra of pyproject.toml that provides each optional import (tests/test_extras.py)
_EXTRA_OF = {"dask": "dask", "distributed": "dask", "xarray": "xarray", "h5netcdf": "xarray",
             "h5py": "xarray", "scipy": "xarray", "yaml": "xarray", "dask_kubernetes": "k8s",
             "cfgrib": "grib"}


def _install_hint(e: ImportError) -> str:
    """The error, naming the extra that provides the missing module (our own messages
    already name it)."""
    if "pip install" in str(e):
        return str(e)
    extra = _EXTRA_OF.get((e.name or "").partition(".")[0])
    return f"{e} (pip install 'icechunk_dist[{extra}]')" if extra else str(e)
