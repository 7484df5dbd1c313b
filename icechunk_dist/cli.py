"""The ``icechunk-dist`` command line: init, log, branches, tags, diff, ingest, gc.

A repository is named by a path or URL: a plain path or ``file:///path`` is a directory on local
disk; ``s3://bucket/prefix`` is S3 (credentials from the environment: ``AWS_*`` variables or
the instance role), with ``--endpoint-url`` / ``--allow-http`` for S3-compatible servers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from icechunk_dist import __version__
from icechunk_dist.errors import IcechunkDistError, InvalidInputError
from icechunk_dist.repository import Repository
from icechunk_dist.storage import Storage, local_filesystem_storage, s3_storage

__all__ = ["load_ingest_config", "main", "storage_from_url"]

_SOURCES = ("random", "zeros", "ones")


def storage_from_url(url: str, *, endpoint_url: str | None = None, allow_http: bool = False,
                     region: str | None = None) -> Storage:
    """The storage a CLI path or URL names.

    Raises
    ------
    InvalidInputError
        For an unsupported scheme or an S3 URL without a bucket.
    """
    if not url:
        raise InvalidInputError("a repository path or URL is required")
    parsed = urlparse(url)
    if parsed.scheme in ("", "file") or (len(parsed.scheme) == 1 and url[1:3] == ":\\"):
        path = unquote(parsed.path) if parsed.scheme == "file" else url
        if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
            raise InvalidInputError(f"file URLs must be local (file:///path), got {url!r}")
        return local_filesystem_storage(path)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise InvalidInputError(f"S3 URL needs a bucket: s3://bucket/prefix, got {url!r}")
        return s3_storage(bucket=parsed.netloc, prefix=parsed.path.strip("/"), region=region,
                          endpoint_url=endpoint_url, allow_http=allow_http, from_env=True)
    raise InvalidInputError(
        f"unsupported repository URL {url!r}: use a path, file:///path or s3://bucket/prefix"
    )


def _storage(args: argparse.Namespace, url: str | None = None) -> Storage:
    return storage_from_url(url if url is not None else args.repo,
                            endpoint_url=args.endpoint_url or None,
                            allow_http=bool(args.allow_http), region=args.region or None)


def _resolve(repo: Repository, ref: str) -> str:
    """A snapshot id from a branch name, a tag name or a snapshot id."""
    if ref in repo.list_branches():
        return repo.lookup_branch(ref)
    if ref in repo.list_tags():
        return repo.lookup_tag(ref)
    return repo.lookup_snapshot(ref).id


# ----------------------------------------------------------------------------- commands
def _cmd_init(args: argparse.Namespace) -> int:
    repo = Repository.create(_storage(args))
    print(f"created repository at {args.repo}; main -> {repo.lookup_branch('main')}")
    return 0


def _cmd_log(args: argparse.Namespace) -> int:
    repo = Repository.open(_storage(args))
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
    repo = Repository.open(_storage(args))
    for name in sorted(repo.list_branches()):
        print(f"{name}  {repo.lookup_branch(name)}")
    return 0


def _cmd_tags(args: argparse.Namespace) -> int:
    repo = Repository.open(_storage(args))
    for name in sorted(repo.list_tags()):
        print(f"{name}  {repo.lookup_tag(name)}")
    return 0


def _cmd_diff(args: argparse.Namespace) -> int:
    repo = Repository.open(_storage(args))
    diff = getattr(repo, "diff", None)
    if diff is None:
        print("icechunk-dist: diff is not available in this version of icechunk_dist "
              "(Repository.diff is not implemented yet)", file=sys.stderr)
        return 1
    result = diff(from_snapshot_id=_resolve(repo, args.from_ref),
                  to_snapshot_id=_resolve(repo, args.to_ref))
    text = str(result)
    print(text if text.strip() else "no changes")
    return 0


def _cmd_gc(args: argparse.Namespace) -> int:
    repo = Repository.open(_storage(args))
    gc = getattr(repo, "garbage_collect", None)
    if gc is None:
        print("icechunk-dist: garbage collection is not yet implemented "
              "(Repository.garbage_collect does not exist in this version)", file=sys.stderr)
        return 1
    older_than = datetime.now(UTC) - timedelta(days=args.older_than_days)
    summary = gc(older_than, dry_run=True) if args.dry_run else gc(older_than)
    print(("would delete (dry run): " if args.dry_run else "") + str(summary))
    return 0


# ----------------------------------------------------------------------------- ingest
def load_ingest_config(path: str | Path) -> dict[str, Any]:
    """Read an ingestion config (JSON; YAML if the file ends in .yaml/.yml and PyYAML exists).

    Raises
    ------
    InvalidInputError
        If the file is missing, unparsable or not a mapping.
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise InvalidInputError(f"cannot read ingestion config {str(p)!r}: {e}") from None
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml  # type: ignore[import-untyped]

            doc = yaml.safe_load(text)
        else:
            doc = json.loads(text)
    except ImportError:
        raise InvalidInputError("YAML configs need PyYAML; use JSON or install pyyaml") from None
    except Exception as e:  # json.JSONDecodeError, yaml.YAMLError (not a ValueError)
        raise InvalidInputError(f"cannot parse ingestion config {str(p)!r}: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidInputError(f"ingestion config {str(p)!r} must be a mapping")
    return doc


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise InvalidInputError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise InvalidInputError(f"{what} must be positive integers, got {text!r}")
    return values


def _array_specs(args: argparse.Namespace, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    if args.synthetic:
        if not args.chunks:
            raise InvalidInputError("--synthetic needs --chunks")
        specs = [{"path": args.array, "shape": _ints(args.synthetic, "--synthetic"),
                  "chunks": _ints(args.chunks, "--chunks"), "dtype": args.dtype,
                  "source": "random"}]
    else:
        specs = list(cfg.get("arrays") or [])
    if not specs:
        raise InvalidInputError("nothing to ingest: give --synthetic SHAPE --chunks CHUNKS "
                                "or a config with 'arrays'")
    for s in specs:
        if not isinstance(s, dict) or not s.get("path") or "shape" not in s or "chunks" not in s:
            raise InvalidInputError(f"array spec needs path, shape and chunks: {s!r}")
        if len(s["shape"]) != len(s["chunks"]):
            raise InvalidInputError(f"shape and chunks differ in length: {s!r}")
        if s.get("source", "random") not in _SOURCES:
            raise InvalidInputError(f"array source must be one of {_SOURCES}: {s!r}")
    return specs


def _dask_source(spec: dict[str, Any], seed: int) -> Any:
    import dask.array as da
    import numpy as np

    shape = tuple(int(v) for v in spec["shape"])
    chunks = tuple(int(v) for v in spec["chunks"])
    dtype = np.dtype(spec.get("dtype", "float32"))
    source = spec.get("source", "random")
    if source == "zeros":
        return da.zeros(shape, chunks=chunks, dtype=dtype)
    if source == "ones":
        return da.ones(shape, chunks=chunks, dtype=dtype)
    rng = da.random.default_rng(seed)  # type: ignore[no-untyped-call]
    return (rng.random(shape, chunks=chunks) * 100).astype(dtype)


def _client(args: argparse.Namespace) -> tuple[Any, Any]:
    """(client, cluster we started) for --scheduler, $DASK_SCHEDULER_ADDRESS or --workers N;
    (None, None) means Dask's threaded scheduler."""
    import os

    address = args.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if not address and not args.workers:
        return None, None
    from distributed import Client, LocalCluster

    if address:
        return Client(address), None  # type: ignore[no-untyped-call]
    cluster = LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    return Client(cluster), cluster  # type: ignore[no-untyped-call]


def _cmd_ingest(args: argparse.Namespace) -> int:
    cfg = load_ingest_config(args.config) if args.config else {}
    st = cfg.get("storage") or {}
    url = args.repo or st.get("url")
    if not url:
        raise InvalidInputError("no repository: give REPO or storage.url in the config")
    storage = storage_from_url(
        url,
        endpoint_url=args.endpoint_url or st.get("endpoint_url") or None,
        allow_http=bool(args.allow_http or st.get("allow_http")),
        region=args.region or st.get("region") or None,
    )
    specs = _array_specs(args, cfg)
    branch = args.branch or cfg.get("branch") or "main"
    message = args.message or cfg.get("message") or f"icechunk-dist ingest of {len(specs)} array(s)"
    create = cfg.get("create", True) and not args.no_create
    rebase = cfg.get("rebase", True) and not args.no_rebase

    import zarr

    from icechunk_dist.conflicts import ConflictDetector
    from icechunk_dist.dask import to_zarr

    repo = Repository.open_or_create(storage) if create else Repository.open(storage)
    session = repo.writable_session(branch)
    start = time.perf_counter()
    client, cluster = _client(args)
    try:
        zarr.open_group(session.store, mode="a")  # the root group, if the repo has none yet
        for i, spec in enumerate(specs):
            arr = _dask_source(spec, args.seed + i)
            to_zarr(arr, session, str(spec["path"]),
                    chunks=tuple(int(c) for c in spec["chunks"]),
                    progress=not args.no_progress, overwrite=True)
            print(f"wrote {spec['path']}: shape {tuple(arr.shape)}, chunks "
                  f"{tuple(spec['chunks'])}, {arr.dtype}, {arr.nbytes / 2**20:.1f} MiB")
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    sid = session.commit(message, rebase_with=ConflictDetector() if rebase else None)
    elapsed = time.perf_counter() - start
    print(f"committed {sid} on {branch} ({len(specs)} array(s), {elapsed:.1f} s)")
    return 0


# ----------------------------------------------------------------------------- parser
def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--endpoint-url", default=None,
                        help="S3-compatible endpoint, e.g. http://127.0.0.1:9000")
    common.add_argument("--allow-http", action="store_true", help="permit a plain-HTTP endpoint")
    common.add_argument("--region", default=None, help="S3 region")

    p = argparse.ArgumentParser(
        prog="icechunk-dist",
        description="Transactional, versioned Zarr v3 repositories on object storage.",
    )
    p.add_argument("--version", action="version", version=f"icechunk-dist {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    repo_help = "repository: a path, file:///path or s3://bucket/prefix"

    s = sub.add_parser("init", parents=[common], help="create a repository")
    s.add_argument("repo", metavar="PATH_OR_URL", help=repo_help)
    s.set_defaults(func=_cmd_init)

    s = sub.add_parser("log", parents=[common], help="history of a branch or tag, newest first")
    s.add_argument("repo", metavar="PATH_OR_URL", help=repo_help)
    g = s.add_mutually_exclusive_group()
    g.add_argument("--branch", default="main", help="branch (default main)")
    g.add_argument("--tag", default=None, help="tag instead of a branch")
    s.add_argument("-n", "--max-count", type=int, default=None, help="show at most N entries")
    s.set_defaults(func=_cmd_log)

    s = sub.add_parser("branches", parents=[common], help="list branches and their tips")
    s.add_argument("repo", metavar="PATH_OR_URL", help=repo_help)
    s.set_defaults(func=_cmd_branches)

    s = sub.add_parser("tags", parents=[common], help="list tags and their snapshots")
    s.add_argument("repo", metavar="PATH_OR_URL", help=repo_help)
    s.set_defaults(func=_cmd_tags)

    s = sub.add_parser("diff", parents=[common], help="changes between two snapshots")
    s.add_argument("repo", metavar="PATH_OR_URL", help=repo_help)
    s.add_argument("from_ref", metavar="FROM", help="branch, tag or snapshot id")
    s.add_argument("to_ref", metavar="TO", help="branch, tag or snapshot id")
    s.set_defaults(func=_cmd_diff)

    s = sub.add_parser(
        "ingest", parents=[common],
        help="write arrays through Dask forks and land them as one commit",
        description="Create/overwrite arrays in one writable session, write their data on Dask "
                    "workers through forks, merge, and commit once. Uses a distributed "
                    "scheduler at --scheduler or $DASK_SCHEDULER_ADDRESS, a LocalCluster with "
                    "--workers N, else Dask's threaded scheduler.",
    )
    s.add_argument("repo", metavar="PATH_OR_URL", nargs="?", default=None,
                   help=repo_help + " (default: storage.url of --config)")
    s.add_argument("--config", help="ingestion config (JSON, or YAML with PyYAML)")
    s.add_argument("--synthetic", metavar="SHAPE",
                   help="write random data of this shape, e.g. 100,100")
    s.add_argument("--chunks", metavar="CHUNKS", help="chunk shape for --synthetic, e.g. 10,10")
    s.add_argument("--array", default="data", help="array path for --synthetic (default data)")
    s.add_argument("--dtype", default="float32", help="dtype for --synthetic (default float32)")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument("--branch", default=None, help="branch to commit to (default main)")
    s.add_argument("-m", "--message", default=None, help="commit message")
    s.add_argument("--scheduler", default=None, help="address of a Dask scheduler")
    s.add_argument("--workers", type=int, default=0, help="start a LocalCluster of N processes")
    s.add_argument("--no-create", action="store_true", help="fail if the repository is missing")
    s.add_argument("--no-rebase", action="store_true",
                   help="fail with ConflictError if the branch moved (default: rebase)")
    s.add_argument("--no-progress", action="store_true", help="no progress display")
    s.set_defaults(func=_cmd_ingest)

    s = sub.add_parser("gc", parents=[common], help="delete unreachable objects")
    s.add_argument("repo", metavar="PATH_OR_URL", help=repo_help)
    s.add_argument("--older-than-days", type=float, default=7.0,
                   help="grace period: keep objects younger than this (default 7 days)")
    s.add_argument("--dry-run", action="store_true", help="report, delete nothing")
    s.set_defaults(func=_cmd_gc)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 error, 2 usage)."""
    args = _parser().parse_args(argv)
    try:
        rc: int = args.func(args)
    except IcechunkDistError as e:
        print(f"icechunk-dist: error: {e}", file=sys.stderr)
        return 1
    except ImportError as e:
        print(f"icechunk-dist: error: {e} (pip install 'icechunk_dist[dask]')", file=sys.stderr)
        return 1
    return rc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
