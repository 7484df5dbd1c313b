"""``icechunk-dist ingest``: NetCDF/HDF5/GRIB files or Zarr stores in, one commit per batch.

``icechunk-dist ingest REPO SOURCE... [--concat-dim DIM] [--group G] [--branch B]
[--batch-size K] [-m MSG] [--workers N | --scheduler ADDR] [--dry-run] [--config FILE]``
runs :func:`icechunk_dist.ingest.ingest`. ``--synthetic SHAPE --chunks CHUNKS`` instead
writes random data (a demo of distributed writes through forks).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from icechunk_dist.cli._common import (
    REPO_HELP,
    add_dask_options,
    check_new_repository,
    client_for,
    storage_for,
)
from icechunk_dist.errors import InvalidInputError
from icechunk_dist.ingest import IngestConfig, load_config
from icechunk_dist.repository import Repository
from icechunk_dist.storage import Storage, from_url

__all__ = ["register"]


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise InvalidInputError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise InvalidInputError(f"{what} must be positive integers, got {text!r}")
    return values


def _synthetic(args: argparse.Namespace) -> int:
    """The demo: random data of --synthetic SHAPE written through forks, one commit."""
    if not args.repo:
        raise InvalidInputError("--synthetic needs REPO")
    if args.sources:
        raise InvalidInputError("give SOURCE files or --synthetic, not both")
    if not args.chunks:
        raise InvalidInputError("--synthetic needs --chunks")
    import dask.array as da
    import numpy as np
    import zarr

    from icechunk_dist.conflicts import ConflictDetector
    from icechunk_dist.dask import to_zarr

    shape = _ints(args.synthetic, "--synthetic")
    chunks = _ints(args.chunks, "--chunks")
    if len(shape) != len(chunks):
        raise InvalidInputError("--synthetic and --chunks differ in length")
    storage = _repository_storage(storage_for(args), create=not args.no_create)
    repo = Repository.open(storage) if args.no_create else Repository.open_or_create(storage)
    branch = args.branch or "main"
    session = repo.writable_session(branch)
    start = time.perf_counter()
    client, cluster = client_for(args)
    try:
        zarr.open_group(session.store, mode="a")
        rng = da.random.default_rng(args.seed)  # type: ignore[no-untyped-call]
        arr = (rng.random(tuple(shape), chunks=tuple(chunks)) * 100).astype(np.dtype(args.dtype))
        to_zarr(arr, session, args.array, chunks=tuple(chunks),
                progress=not args.no_progress, overwrite=True)
        print(f"wrote {args.array}: shape {tuple(arr.shape)}, chunks {tuple(chunks)}, "
              f"{arr.dtype}, {arr.nbytes / 2**20:.1f} MiB")
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    sid = session.commit(args.message or "icechunk-dist ingest --synthetic",
                         rebase_with=ConflictDetector())
    print(f"committed {sid} on {branch} (1 array(s), {time.perf_counter() - start:.1f} s)")
    return 0


def _config(args: argparse.Namespace) -> IngestConfig:
    """The config file (if any) with the command line's values on top."""
    base: dict[str, Any] = {}
    if args.config:
        cfg = load_config(args.config)
        base = {f: getattr(cfg, f) for f in cfg.__struct_fields__}
    overrides = {
        "repo": args.repo, "sources": list(args.sources) or None,
        "concat_dim": args.concat_dim, "group": args.group, "branch": args.branch,
        "batch_size": args.batch_size, "message": args.message,
        "endpoint_url": args.endpoint_url, "region": args.region,
        "allow_http": True if args.allow_http else None,
    }
    base.update({k: v for k, v in overrides.items() if v is not None})
    if not base.get("repo"):
        raise InvalidInputError("no repository: give REPO (or repo in --config)")
    if not base.get("sources"):
        raise InvalidInputError("nothing to ingest: give SOURCE files, directories, globs or "
                                "URLs (or sources in --config), or --synthetic SHAPE")
    if base.get("batch_size") is not None and base["batch_size"] < 1:
        raise InvalidInputError(f"--batch-size must be >= 1, got {base['batch_size']}")
    return IngestConfig(**base)


def _repository_storage(storage: Storage, *, create: bool) -> Storage:
    """``storage``, checked before any work starts: a repository there, or (``create``) a
    location where a new one can go cleanly."""
    if create and not Repository.exists(storage):
        check_new_repository(storage)
    return storage


def _cmd_ingest(args: argparse.Namespace) -> int:
    if args.synthetic:
        return _synthetic(args)
    cfg = _config(args)
    from icechunk_dist.ingest import ingest

    storage = _repository_storage(
        from_url(cfg.repo, endpoint_url=cfg.endpoint_url, allow_http=cfg.allow_http or None,
                 region=cfg.region),
        create=True,  # a dry run says so too, rather than the real run failing later
    )
    client, cluster = client_for(args)
    try:
        result = ingest(
            storage, cfg.sources, concat_dim=cfg.concat_dim, group=cfg.group,
            branch=cfg.branch, batch_size=cfg.batch_size, message=cfg.message,
            client=client, dry_run=bool(args.dry_run), progress=not args.no_progress,
            endpoint_url=cfg.endpoint_url, allow_http=cfg.allow_http, region=cfg.region,
        )
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    print(result.message)
    if args.dry_run:
        for url in result.ingested:
            print(f"  would ingest {url}")
    for sid in result.snapshot_ids:
        print(f"committed {sid} on {result.branch}")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``ingest`` to ``sub`` (an argparse subparsers action)."""
    s = sub.add_parser(
        "ingest", parents=[common],
        help="ingest NetCDF/HDF5/GRIB files or Zarr stores as one commit (per batch)",
        description="Ingest files into a repository: open them on Dask workers, check them "
                    "against each other and the repository, write them through forks and "
                    "commit once per batch. The first run creates the repository and group; "
                    "later runs append along --concat-dim and skip files already landed on "
                    "the branch. Exit codes: 0 ok (also: nothing new), 2 bad input, "
                    "3 conflict, 4 storage unreachable, 1 other.",
    )
    s.add_argument("repo", metavar="REPO", nargs="?", default=None,
                   help=REPO_HELP + " (default: repo of --config)")
    s.add_argument("sources", metavar="SOURCE", nargs="*", default=[],
                   help="files, directories, file:// or s3:// URLs, or globs of either "
                        "(quote globs: 's3://raw/2024/*.nc')")
    s.add_argument("--config", help="ingestion config (JSON, or YAML); flags override it")
    s.add_argument("--concat-dim", default=None,
                   help="dimension to concatenate/append along (default: time, or the "
                        "files' unlimited dimension)")
    s.add_argument("--group", default=None, help="zarr group of the dataset (default: root)")
    s.add_argument("--branch", default=None, help="branch to commit to (default main)")
    s.add_argument("--batch-size", type=int, default=None, metavar="K",
                   help="commit every K files separately (a crash loses one batch at most)")
    s.add_argument("-m", "--message", default=None, help="commit message")
    s.add_argument("--dry-run", action="store_true",
                   help="check the sources and report what would be ingested; write nothing")
    add_dask_options(s)
    s.add_argument("--no-progress", action="store_true", help="no progress display")
    demo = s.add_argument_group("demo: random data instead of files")
    demo.add_argument("--synthetic", metavar="SHAPE",
                      help="write random data of this shape, e.g. 100,100")
    demo.add_argument("--chunks", metavar="CHUNKS", help="chunk shape, e.g. 10,10")
    demo.add_argument("--array", default="data", help="array path (default data)")
    demo.add_argument("--dtype", default="float32", help="dtype (default float32)")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--no-create", action="store_true",
                      help="fail if the repository is missing")
    s.set_defaults(func=_cmd_ingest)
