"""Pieces every ``icechunk-dist`` subcommand shares: repository URLs, Dask clients, exit codes."""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from icechunk_dist import _sync
from icechunk_dist.errors import AlreadyExistsError, InvalidInputError
from icechunk_dist.repository import Repository
from icechunk_dist.storage import Storage, from_url

__all__ = [
    "EXIT_CONFLICT",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_STORAGE",
    "EXIT_USAGE",
    "REPO_HELP",
    "CliParser",
    "add_dask_options",
    "add_verbosity_options",
    "check_new_repository",
    "client_for",
    "common_parser",
    "configure_logging",
    "resolve_ref",
    "storage_for",
]

# Exit codes (documented in the README and docs/cli.md): scripts and job runners branch on them.
EXIT_OK = 0
EXIT_ERROR = 1  # anything else
EXIT_USAGE = 2  # usage or bad input
EXIT_CONFLICT = 3  # a conflict that rebase did not solve
EXIT_STORAGE = 4  # storage unreachable or a transient failure: worth retrying

REPO_HELP = ("repository: a path (a directory), file:///path, s3://bucket/prefix, "
             "gs://bucket/prefix or az://container/prefix")


class CliParser(argparse.ArgumentParser):
    """The parser of ``icechunk-dist`` and of every subcommand (``add_subparsers`` makes its
    subparsers of the same class).

    Options are never abbreviated (``--worker`` is not ``--workers``: a nightly job's typo
    must not silently mean something else), and an unknown option is reported by the
    subcommand that was given it, with that subcommand's usage and the closest option.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.has_subcommands = False

    def add_subparsers(self, **kwargs: Any) -> Any:
        self.has_subcommands = True
        return super().add_subparsers(**kwargs)

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None
                         ) -> tuple[argparse.Namespace, list[str]]:
        ns, extras = super().parse_known_args(args, namespace)
        if extras and not self.has_subcommands:
            self.error(self._unrecognized(extras))
        return ns, extras

    def _unrecognized(self, extras: list[str]) -> str:
        text = f"unrecognized arguments: {' '.join(extras)}"
        known = sorted(set(re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*", self.format_help())))
        for arg in extras:
            if not arg.startswith("-"):
                continue
            name = arg.split("=", 1)[0]
            close = ([k for k in known if k.startswith(name)]
                     or difflib.get_close_matches(name, known, n=3, cutoff=0.6))
            if close:
                return f"{text} (did you mean {' or '.join(close)}?)"
        return text

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def add_verbosity_options(parser: argparse.ArgumentParser) -> None:
    """Add ``-v/--verbose`` (repeatable) and ``-q/--quiet``."""
    g = parser.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="count", default=0,
                   help="more messages on stderr (-vv: debug)")
    g.add_argument("-q", "--quiet", action="store_true",
                   help="no progress and no messages, only errors")


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The CLI's handler on the ``icechunk_dist`` logger (one, however often main runs). It
    writes to whatever ``sys.stderr`` is when a message comes, never to a stream that was
    replaced (and perhaps closed) since ``main`` ran: tests and notebooks swap it."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always the current sys.stderr


def configure_logging(args: argparse.Namespace) -> None:
    """Send the library's log messages to stderr: warnings by default, ``-v`` info, ``-vv``
    debug, ``-q`` errors only."""
    verbose = int(getattr(args, "verbose", 0) or 0)
    level = (logging.ERROR if getattr(args, "quiet", False) else
             logging.WARNING if verbose == 0 else logging.INFO if verbose == 1
             else logging.DEBUG)
    logger = logging.getLogger("icechunk_dist")
    for h in [h for h in logger.handlers if isinstance(h, _Handler)]:
        logger.removeHandler(h)
    handler = _Handler()
    handler.setFormatter(logging.Formatter("icechunk-dist: %(message)s"))
    handler.setLevel(level)
    logger.addHandler(handler)
    logger.setLevel(min(level, logger.level) if logger.level else level)


def common_parser() -> argparse.ArgumentParser:
    """The options every subcommand takes (storage endpoint flags)."""
    common = CliParser(add_help=False)
    common.add_argument("--endpoint-url", default=None,
                        help="S3-compatible endpoint, e.g. http://127.0.0.1:9000")
    common.add_argument("--allow-http", action="store_true", help="permit a plain-HTTP endpoint")
    common.add_argument("--region", default=None, help="S3 region")
    return common


def storage_for(args: argparse.Namespace, url: str | None = None) -> Storage:
    """The storage of ``args.repo`` (or ``url``) with the common endpoint flags applied.

    Raises
    ------
    InvalidInputError
        For an unsupported scheme, or a URL without its bucket or container.
    """
    return from_url(url if url is not None else args.repo,
                    endpoint_url=args.endpoint_url or None,
                    allow_http=bool(args.allow_http) or None, region=args.region or None)


def check_new_repository(storage: Storage) -> None:
    """Refuse, before anything is written, a location where a new repository cannot go
    cleanly: one that holds a repository, or anything else (on local disk: any file or
    directory, e.g. a folder named ``repo`` where the repository marker must go).

    Raises
    ------
    AlreadyExistsError
        If a repository is there.
    InvalidInputError
        If the location is not empty, or a file is where the directory must be.
    StorageError
        If the storage cannot be reached.
    """
    if Repository.exists(storage):
        raise AlreadyExistsError(f"a repository already exists at {storage.describe()}")
    if not _sync.run(storage.is_empty()):
        raise InvalidInputError(
            f"{storage.describe()} is not empty and holds no repository: a new repository "
            "needs an empty (or missing) location"
        )


def resolve_ref(repo: Repository, ref: str) -> str:
    """A snapshot id from a branch name, a tag name or a snapshot id."""
    if ref in repo.list_branches():
        return repo.lookup_branch(ref)
    if ref in repo.list_tags():
        return repo.lookup_tag(ref)
    return repo.lookup_snapshot(ref).id


def add_dask_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--scheduler``, ``--workers``, ``--wait-for-workers`` and ``--timeout`` to a parser.

    Every subcommand that runs Dask work takes these, and :func:`client_for` honours them.
    """
    g = parser.add_argument_group("dask")
    x = g.add_mutually_exclusive_group()
    x.add_argument("--scheduler", default=None,
                   help="address of a running Dask scheduler (default: $DASK_SCHEDULER_ADDRESS)")
    x.add_argument("--workers", type=int, default=0,
                   help="start a LocalCluster of N worker processes (default: threaded scheduler)")
    g.add_argument("--wait-for-workers", type=int, default=0, metavar="N",
                   help="wait until N workers have joined the scheduler before starting")
    g.add_argument("--timeout", type=float, default=300.0, metavar="S",
                   help="seconds to wait for the scheduler and --wait-for-workers (default 300)")


def client_for(args: argparse.Namespace) -> tuple[Any, Any]:
    """(client, cluster we started) for --scheduler, $DASK_SCHEDULER_ADDRESS or --workers N;
    (None, None) means Dask's threaded scheduler.

    Raises
    ------
    InvalidInputError
        If ``--workers`` or ``--wait-for-workers`` is negative.
    StorageError
        If the scheduler cannot be reached, or fewer than ``--wait-for-workers`` workers join
        within ``--timeout`` seconds (worth retrying: exit code 4).
    """
    from icechunk_dist.errors import StorageError

    address = getattr(args, "scheduler", None) or os.environ.get("DASK_SCHEDULER_ADDRESS")
    workers = int(getattr(args, "workers", 0) or 0)
    wait_for = int(getattr(args, "wait_for_workers", 0) or 0)
    timeout = float(getattr(args, "timeout", 300.0) or 300.0)
    if workers < 0 or wait_for < 0:
        raise InvalidInputError("--workers and --wait-for-workers must be >= 0")
    if not address and not workers:
        return None, None
    from distributed import Client, LocalCluster

    cluster = None
    if address:
        try:
            client = Client(address, timeout=timeout)  # type: ignore[no-untyped-call]
        except (OSError, TimeoutError) as e:
            raise StorageError(f"cannot reach the Dask scheduler at {address} within "
                               f"{timeout:g} s: {e}") from None
    else:
        cluster = LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = Client(cluster)  # type: ignore[no-untyped-call]
    if wait_for:
        try:
            client.wait_for_workers(wait_for, timeout=timeout)
        except TimeoutError:
            have = len(client.scheduler_info().get("workers", {}))
            client.close()
            if cluster is not None:
                cluster.close()
            raise StorageError(f"only {have} of {wait_for} Dask workers joined "
                               f"{address or 'the local cluster'} within {timeout:g} s") from None
    return client, cluster
