"""``icechunk-dist ingest``: NetCDF/HDF5/GRIB files or Zarr stores in, one commit per batch.

``icechunk-dist ingest REPO SOURCE... [--concat-dim DIM] [--group G] [--branch B]
[--batch-size K] [--chunks DIM=N,...] [--unpack] [--virtual] [--checksum] [--reingest-changed]
[--no-create] [-m MSG] [--workers N | --scheduler ADDR] [--dry-run] [--config FILE]
[-v | -q]`` runs :func:`icechunk_dist.ingest.ingest`, with progress on stderr and a summary
line on stdout. ``--synthetic SHAPE --chunks CHUNKS`` instead writes random data (a demo of
distributed writes through forks).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from icechunk_dist.cli._common import (
    REPO_HELP,
    add_dask_options,
    add_verbosity_options,
    client_for,
    configure_logging,
)
from icechunk_dist.errors import InvalidInputError
from icechunk_dist.ingest import IngestConfig, load_config
from icechunk_dist.ingest._location import IN_MEMORY_WITH_CLUSTER, Location
from icechunk_dist.storage import from_url

__all__ = ["register"]


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise InvalidInputError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise InvalidInputError(f"{what} must be positive integers, got {text!r}")
    return values


def _chunks_by_name(text: str) -> dict[str, int]:
    """``time=24,latitude=-1`` -> ``{"time": 24, "latitude": -1}``."""
    out: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        name, eq, value = part.partition("=")
        try:
            n = int(value)
        except ValueError:
            n = 0
        if not eq or not name.strip() or (n < 1 and n != -1):
            raise InvalidInputError(
                f"--chunks {text!r}: for files give DIM=N pairs, e.g. time=24,latitude=-1 "
                "(N a positive integer, -1 for the whole dimension)"
            )
        out[name.strip()] = n
    return out


def _wants_cluster(args: argparse.Namespace) -> bool:
    import os

    return bool(args.workers or args.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS"))


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
    loc = Location(args.repo, {k: v for k, v in (
        ("endpoint_url", args.endpoint_url), ("allow_http", args.allow_http or None),
        ("region", args.region)) if v is not None})
    if not loc.storage.supports_pickle and _wants_cluster(args):
        raise InvalidInputError(IN_MEMORY_WITH_CLUSTER)
    if args.no_create:
        loc.require()
    else:
        loc.check_new()
    repo = loc.create()
    branch = args.branch or "main"
    session = repo.writable_session(branch)
    start = time.perf_counter()
    client, cluster = client_for(args)
    sid = None
    try:
        zarr.open_group(session.store, mode="a")
        rng = da.random.default_rng(args.seed)  # type: ignore[no-untyped-call]
        arr = (rng.random(tuple(shape), chunks=tuple(chunks)) * 100).astype(np.dtype(args.dtype))
        to_zarr(arr, session, args.array, chunks=tuple(chunks),
                progress=not (args.no_progress or args.quiet), overwrite=True)
        if not args.quiet:
            print(f"wrote {args.array}: shape {tuple(arr.shape)}, chunks {tuple(chunks)}, "
                  f"{arr.dtype}, {arr.nbytes / 2**20:.1f} MiB")
        sid = session.commit(args.message or "icechunk-dist ingest --synthetic",
                             rebase_with=ConflictDetector())
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        loc.finish(landed=sid is not None)
    if not args.quiet:
        print(f"committed {sid} on {branch} (1 array(s), "
              f"{time.perf_counter() - start:.1f} s)")
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
        "chunks": _chunks_by_name(args.chunks) if args.chunks else None,
        "unpack": True if args.unpack else None,
        "checksum": True if args.checksum else None,
        "reingest_changed": True if args.reingest_changed else None,
        "create": False if args.no_create else None,
        "virtual": True if args.virtual else None,
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


def _cmd_ingest(args: argparse.Namespace) -> int:
    configure_logging(args)
    if args.synthetic:
        return _synthetic(args)
    cfg = _config(args)
    from icechunk_dist.ingest import ingest

    storage_options = {"endpoint_url": cfg.endpoint_url, "allow_http": cfg.allow_http or None,
                       "region": cfg.region}
    # refused before a cluster starts: workers cannot reach this process's memory
    if not from_url(cfg.repo, **storage_options).supports_pickle and _wants_cluster(args):
        raise InvalidInputError(IN_MEMORY_WITH_CLUSTER)
    client, cluster = client_for(args)
    try:
        result = ingest(
            cfg.repo, cfg.sources, concat_dim=cfg.concat_dim, group=cfg.group,
            branch=cfg.branch, batch_size=cfg.batch_size, message=cfg.message,
            client=client, dry_run=bool(args.dry_run),
            progress=not (args.no_progress or args.quiet), chunks=cfg.chunks,
            unpack=cfg.unpack, checksum=cfg.checksum, reingest_changed=cfg.reingest_changed,
            create=cfg.create, endpoint_url=cfg.endpoint_url, allow_http=cfg.allow_http,
            region=cfg.region, virtual=cfg.virtual,
        )
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    if args.quiet and not args.dry_run:
        return 0
    print(result.message)
    if args.dry_run:
        for url in result.ingested:
            print(f"  would ingest {url}")
        for url in result.reingested:
            print(f"  would re-ingest {url}")
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
                    "the branch. Progress goes to stderr, the summary to stdout. Exit codes: "
                    "0 ok (also: nothing new), 2 bad input or configuration, 3 conflict, "
                    "4 storage unreachable, 1 other.",
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
    s.add_argument("--group", default=None,
                   help="zarr group of the dataset: a/b, /a/b and a/b/ are one group "
                        "(default and '/': the root)")
    s.add_argument("--branch", default=None, help="branch to commit to (default main)")
    s.add_argument("--batch-size", type=int, default=None, metavar="K",
                   help="commit every K files separately (a crash loses one batch at most)")
    s.add_argument("-m", "--message", default=None, help="commit message")
    s.add_argument("--chunks", metavar="CHUNKS",
                   help="chunk sizes when the group is created, by dimension name: "
                        "time=24,latitude=-1 (-1: whole dimension; default: whole "
                        "dimensions, one file's steps along the concat dimension); with "
                        "--synthetic: a chunk shape, e.g. 10,10")
    s.add_argument("--unpack", action="store_true",
                   help="land variables packed with scale_factor/add_offset decoded as "
                        "float32 (float64 where the packing needs it): files packed "
                        "differently can then be ingested together")
    s.add_argument("--virtual", action="store_true",
                   help="reference the chunks of NetCDF4/HDF5 and NetCDF3 files in place "
                        "instead of copying them (variables that cannot be referenced are "
                        "copied, and the summary says which); not with --chunks/--unpack")
    s.add_argument("--checksum", action="store_true",
                   help="tell changed sources by a SHA-256 of their content (reads every "
                        "source whole), not only by size, etag and modification time")
    s.add_argument("--reingest-changed", action="store_true",
                   help="re-ingest in place landed files that changed since (same length "
                        "along the concat dimension); without it they are an error")
    s.add_argument("--no-create", action="store_true",
                   help="fail (exit 2) if the repository is missing, creating nothing")
    s.add_argument("--dry-run", action="store_true",
                   help="check the sources and report what would be ingested; write nothing")
    add_dask_options(s)
    s.add_argument("--no-progress", action="store_true", help="no progress display")
    add_verbosity_options(s)
    demo = s.add_argument_group("demo: random data instead of files")
    demo.add_argument("--synthetic", metavar="SHAPE",
                      help="write random data of this shape, e.g. 100,100")
    demo.add_argument("--array", default="data", help="array path (default data)")
    demo.add_argument("--dtype", default="float32", help="dtype (default float32)")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    s.set_defaults(func=_cmd_ingest)
