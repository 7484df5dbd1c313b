"""``icechunk-dist ingest``: write arrays through Dask forks and land them as one commit."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from icechunk_dist.cli._common import REPO_HELP, add_dask_options, client_for, storage_from_url
from icechunk_dist.errors import InvalidInputError
from icechunk_dist.repository import Repository

__all__ = ["load_ingest_config", "register"]

_SOURCES = ("random", "zeros", "ones")


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
    client, cluster = client_for(args)
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


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``ingest`` to ``sub`` (an argparse subparsers action)."""
    s = sub.add_parser(
        "ingest", parents=[common],
        help="write arrays through Dask forks and land them as one commit",
        description="Create/overwrite arrays in one writable session, write their data on Dask "
                    "workers through forks, merge, and commit once. Uses a distributed "
                    "scheduler at --scheduler or $DASK_SCHEDULER_ADDRESS, a LocalCluster with "
                    "--workers N, else Dask's threaded scheduler.",
    )
    s.add_argument("repo", metavar="PATH_OR_URL", nargs="?", default=None,
                   help=REPO_HELP + " (default: storage.url of --config)")
    s.add_argument("--config", help="ingestion config (JSON, or YAML with PyYAML)")
    s.add_argument("--synthetic", metavar="SHAPE",
                   help="write random data of this shape, e.g. 100,100")
    s.add_argument("--chunks", metavar="CHUNKS", help="chunk shape for --synthetic, e.g. 10,10")
    s.add_argument("--array", default="data", help="array path for --synthetic (default data)")
    s.add_argument("--dtype", default="float32", help="dtype for --synthetic (default float32)")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument("--branch", default=None, help="branch to commit to (default main)")
    s.add_argument("-m", "--message", default=None, help="commit message")
    add_dask_options(s)
    s.add_argument("--no-create", action="store_true", help="fail if the repository is missing")
    s.add_argument("--no-rebase", action="store_true",
                   help="fail with ConflictError if the branch moved (default: rebase)")
    s.add_argument("--no-progress", action="store_true", help="no progress display")
    s.set_defaults(func=_cmd_ingest)
