"""``ingest``: files in, one commit per batch, safe re-runs.

The plan of one run:

1. check the settings (group, S3 settings, storage against the cluster) and find the
   repository without creating anything;
2. expand the sources and compare them with the record of landed inputs that the branch tip
   carries (docs/design/012-landed-inputs-record.md): skip what landed, refuse (or, asked
   to, re-ingest in place) what changed since;
3. summarize every remaining file *on the workers* (dims, variables, dtypes, packing,
   coordinate digests and the first/last value of each dimension coordinate);
4. sort the files along the concat dimension and check them against each other and against
   what the repository already holds, listing every bad file, before anything is written;
5. per batch: create (first run) or resize (later runs) the arrays in a writable session on
   the driver, then every worker task writes its files' region into a child fork of the
   session; the forks are merged on the workers, the driver merges the one result, updates
   the record and commits once, re-planning at the new tip if another ingestion landed
   meanwhile. With ``virtual=True`` the worker tasks index the files and set virtual chunk
   refs into them instead of copying (``_virtual.py``, ``_virtual_write.py``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

from icechunk_dist.errors import (
    ConflictError,
    InvalidInputError,
    MergeConflictError,
    StorageError,
)
from icechunk_dist.ingest._checks import (
    check_chunks,
    check_order,
    check_schema,
    fmt,
    infer_dim,
    raise_problems,
    sort_files,
    unpack_targets,
    unpacked,
)
from icechunk_dist.ingest._containers import ensure_containers
from icechunk_dist.ingest._location import (
    IN_MEMORY_WITH_CLUSTER,
    Location,
    check_s3_settings,
    credentials_error,
)
from icechunk_dist.ingest._progress import Progress, log, size
from icechunk_dist.ingest._readers import FileSummary, checksum, summarize
from icechunk_dist.ingest._record import (
    Landed,
    Record,
    as_metadata,
    changed,
    legacy_record,
    normalize_group,
    read_record,
    write_record,
)
from icechunk_dist.ingest._result import IngestResult
from icechunk_dist.ingest._runner import Failed, Runner, raise_failed, resolve_client
from icechunk_dist.ingest._sources import SourceFile, expand_sources
from icechunk_dist.ingest._virtual import quiet_codecs, ref_url
from icechunk_dist.ingest._virtual_write import create_virtual_dataset, write_virtual_unit
from icechunk_dist.ingest._write import (
    RepoView,
    create_dataset,
    plan_units,
    repo_view,
    resize,
    write_unit,
)
from icechunk_dist.refs import validate_ref_name
from icechunk_dist.repository import Repository
from icechunk_dist.storage import Storage

__all__ = ["IngestResult", "ingest", "landed_inputs"]

_RACE_ATTEMPTS = 5


def _has_arrays(store: Any, group: str | None) -> bool:
    import zarr

    try:
        g = zarr.open_group(store, path=group or "", mode="r")
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
        return False
    return any(True for _ in g.array_keys())


def _record_at(repo: Repository, ref: str, store: Any, group: str | None) -> Record:
    """The record of ``group`` in ``store`` (a snapshot of ``ref``); for a group ingested
    before the record was kept in the tree, the inputs its ancestry's commits list."""
    record = read_record(store, group)
    if record is not None:
        return record
    if _has_arrays(store, group):
        return legacy_record(repo, ref, group)
    return Record()


def landed_inputs(repo: Repository, *, branch: str = "main", group: str | None = None
                  ) -> list[Landed]:
    """The inputs that landed in ``group`` as of ``branch``'s tip, in landing order.

    Raises
    ------
    InvalidInputError
        For a bad group path.
    NotFoundError
        If the branch does not exist.
    """
    group = normalize_group(group)
    store = repo.readonly_session(branch).store
    return list(_record_at(repo, branch, store, group).files)


class _Run:
    """One ingestion: its settings, and the steps of :func:`ingest`."""

    def __init__(self, loc: Location, runner: Runner, opts: dict[str, Any], *, branch: str,
                 group: str | None, concat_dim: str | None, batch_size: int | None,
                 message: str | None, chunks: Mapping[str, int] | None, unpack: bool,
                 checksum: bool, reingest_changed: bool, dry_run: bool,
                 split_every: int, virtual: bool) -> None:
        self.loc, self.runner, self.opts = loc, runner, opts
        self.branch, self.group, self.dim = branch, group, concat_dim
        self.batch_size, self.message = batch_size, message
        self.chunks, self.unpack, self.checksum = chunks, unpack, checksum
        self.reingest_changed, self.dry_run, self.split_every = (reingest_changed, dry_run,
                                                                 split_every)
        self.virtual = virtual
        self.sha: dict[str, str] = {}
        self.targets: dict[str, str] = {}
        self.skipped: list[str] = []
        self.t0 = time.perf_counter()

    # -------------------------------------------------------------------- planning
    def _ref(self, repo: Repository | None) -> str | None:
        if repo is None:
            return None
        branches = repo.list_branches()
        if self.branch in branches:
            return self.branch
        return "main" if "main" in branches else None

    def _result(self, ids: list[str], done: list[str], redone: list[str], text: str,
                nread: int = 0, nwritten: int = 0) -> IngestResult:
        return IngestResult(snapshot_ids=ids, ingested=done, skipped=self.skipped,
                            reingested=redone, branch=self.branch, group=self.group,
                            concat_dim=self.dim, dry_run=self.dry_run, message=text,
                            bytes_read=nread, bytes_written=nwritten,
                            seconds=time.perf_counter() - self.t0, virtual=self.virtual)

    def _summaries(self, files: list[SourceFile], dim: str | None, what: str
                   ) -> list[FileSummary]:
        results = self.runner.map(summarize, files, dim, self.opts, self.unpack, self.virtual,
                                  what=what)
        raise_failed(results)
        bad = [s for s in results if s.error]
        storage = [s for s in bad if s.error_kind == "storage"]
        if storage:
            raise StorageError("; ".join(str(s.error) for s in storage))
        raise_problems([str(s.error) for s in bad])
        return list(results)

    def _changed(self, changes: list[tuple[SourceFile, Landed, str]]) -> None:
        if not changes or self.reingest_changed:
            return
        lines = [f"{f.url}: changed since it landed {old.where()} ({why})"
                 for f, old, why in changes]
        hint = ("re-ingest the new version(s) in place with --reingest-changed "
                "(reingest_changed=True), or ingest them under new names")
        if len(lines) == 1:
            raise InvalidInputError(f"{lines[0]}; {hint}")
        listed = "\n".join(f"  {line}" for line in lines)
        raise InvalidInputError(f"{len(lines)} landed source files changed since they "
                                f"landed:\n{listed}\n{hint}")

    def _rewrite_problems(self, rewrites: list[tuple[FileSummary, Landed]],
                          view: RepoView | None) -> list[str]:
        out = []
        dim = str(self.dim)
        for s, old in rewrites:
            url, steps = s.source.url, s.dims.get(dim)
            if old.start is None or old.steps is None or view is None:
                out.append(f"{url}: changed, but the record of where it landed predates "
                           "re-ingestion; ingest the new version under a new name")
            elif steps != old.steps or old.start + old.steps > view.length:
                out.append(f"{url}: changed from {old.steps} to {steps} steps along "
                           f"{dim!r}; only a file of the same length can be re-ingested in "
                           "place")
            elif len(view.coord) and (view.coord[old.start] != s.first.get(dim) or
                                      view.coord[old.start + old.steps - 1]
                                      != s.last.get(dim)):
                out.append(f"{url}: its {dim} now runs {fmt(s.first.get(dim))} .. "
                           f"{fmt(s.last.get(dim))}, the landed version ran "
                           f"{fmt(view.coord[old.start])} .. "
                           f"{fmt(view.coord[old.start + old.steps - 1])}; it cannot "
                           "replace it in place")
        return out

    def run(self, files: list[SourceFile]) -> IngestResult:
        repo = self.loc.repo
        ref = self._ref(repo)
        tip = repo.readonly_session(ref).store if repo is not None and ref else None
        record = (_record_at(repo, ref, tip, self.group)
                  if repo is not None and ref and tip is not None else Record())
        self.dim = self.dim or record.concat_dim
        if self.checksum:
            sums = self.runner.map(checksum, files, self.opts, what="checksumming")
            raise_failed(sums)
            self.sha = {f.url: str(h) for f, h in zip(files, sums, strict=True)}
        landed = record.by_url()
        todo: list[SourceFile] = []
        changes: list[tuple[SourceFile, Landed, str]] = []
        for f in files:
            old = landed.get(f.url)
            why = None if old is None else changed(old, f, self.sha.get(f.url))
            if old is None:
                todo.append(f)
            elif why is None:
                self.skipped.append(f.url)
            else:
                changes.append((f, old, why))
        self._changed(changes)
        if not todo and not changes:
            return self._result([], [], [], f"nothing new to ingest: all {len(files)} "
                                f"source file(s) already landed on branch {self.branch!r}")
        log.info("%d file(s) to ingest, %d changed to re-ingest, %d already landed",
                 len(todo), len(changes), len(self.skipped))
        work = todo + [f for f, _old, _why in changes]
        if self.dim is None:  # one file, on a worker, tells the concat dimension
            first = self.runner.map(summarize, work[:1], None, self.opts, self.unpack,
                                    self.virtual, what="opening")
            raise_failed(first)
            if first[0].error:  # list every bad file, not only this one
                self._summaries(work, None, "checking")
            self.dim = infer_dim(first[0])
        dim = self.dim
        summaries = self._summaries(work, dim, "checking")
        raise_problems([f"{s.source.url}: has no dimension {dim!r} to concatenate along "
                        f"(dims: {', '.join(s.dims) or 'none'})"
                        for s in summaries if dim not in s.dims])
        view = repo_view(tip, self.group, dim) if tip is not None else None
        if self.unpack:
            self.targets = unpack_targets(summaries, view.summary if view else None)
            summaries = [unpacked(s, self.targets) for s in summaries]
        new_urls = {f.url for f in todo}
        new = sort_files([s for s in summaries if s.source.url in new_urls], dim)
        olds = {f.url: old for f, old, _why in changes}
        rewrites = [(s, olds[s.source.url]) for s in summaries if s.source.url in olds]
        ref_summary = view.summary if view else (new or [s for s, _o in rewrites])[0]
        against = (f"the repository's dataset on {self.branch!r}" if view
                   else ref_summary.source.url)
        problems = check_schema(new + [s for s, _old in rewrites], ref_summary, dim, against)
        problems += check_order(new, dim, view.summary.last.get(dim) if view else None,
                                "the repository")
        problems += self._rewrite_problems(rewrites, view)
        raise_problems(problems)
        chunks = check_chunks(self.chunks, ref_summary.dims, dim)
        if view is not None:
            raise_problems([f"chunks: {d}={c} differs from the repository's chunks "
                            f"({d}={view.chunks.get(d)}); chunks are set when the group is "
                            "created" for d, c in chunks.items() if view.chunks.get(d) != c])
        if self.dry_run:
            n = sum(s.dims[dim] for s in new)
            extra = f", re-ingest {len(rewrites)} changed" if rewrites else ""
            return self._result([], [s.source.url for s in new],
                                [s.source.url for s, _o in rewrites],
                                f"dry run: would ingest {len(new)} file(s) ({n} steps along "
                                f"{dim!r}){' virtually' if self.virtual else ''}{extra}, "
                                f"skip {len(self.skipped)}")
        if new and dim not in chunks:
            chunks[dim] = math.gcd(*(s.dims[dim] for s in new)) or 1
        return self._write(new, rewrites, chunks)

    # -------------------------------------------------------------------- writing
    def _write(self, new: list[FileSummary], rewrites: list[tuple[FileSummary, Landed]],
               chunks: dict[str, int]) -> IngestResult:
        repo = self.loc.create()
        if self.branch not in repo.list_branches():
            repo.create_branch(self.branch, repo.lookup_branch("main"))
        added: list[str] = []
        if self.virtual:  # reads of the refs need a container covering them
            sources = [s.source for s in new] + [s.source for s, _old in rewrites]
            repo, containers = ensure_containers(repo, map(ref_url, sources), self.opts)
            added = [c.url_prefix for c in containers]
        k = int(self.batch_size) if self.batch_size else max(1, len(new))
        batches = [new[i:i + k] for i in range(0, len(new), k)] or [[]]
        ids: list[str] = []
        done: list[str] = []
        redone: list[str] = []
        nread = nwritten = nrefs = 0
        copied: dict[str, str] = {}
        for b, batch in enumerate(batches, 1):
            suffix = f" (batch {b}/{len(batches)})" if len(batches) > 1 else ""
            rw = rewrites if b == 1 else []
            landed = None
            for attempt in range(_RACE_ATTEMPTS):
                try:
                    landed = self._land(repo, batch, rw, chunks, suffix)
                except ConflictError as e:
                    # another writer changed the same arrays (e.g. an ingestion job racing
                    # us): re-plan the batch at the new tip, skipping what that job landed
                    if attempt == _RACE_ATTEMPTS - 1 or isinstance(e, MergeConflictError):
                        raise
                    batch, rw, gone = self._replan(repo, batch, rw, e)
                    self.skipped.extend(gone)
                    log.info("the branch moved under batch %d; re-planned at the new tip "
                             "(%d file(s) landed by another job)", b, len(gone))
                    if not batch and not rw:
                        break
                    continue
                break
            if landed is not None:
                sid, written, refs, why = landed
                nrefs += refs
                for name, reason in why.items():
                    copied.setdefault(name, reason)
                ids.append(sid)
                done += [s.source.url for s in batch]
                redone += [s.source.url for s, _old in rw]
                nread += sum(s.source.size for s in batch) + sum(s.source.size
                                                                 for s, _o in rw)
                nwritten += written
                log.info("committed %s on %s%s: %d file(s)", sid, self.branch, suffix,
                         len(batch) + len(rw))
        elapsed = time.perf_counter() - self.t0
        again = f", re-ingested {len(redone)} changed" if redone else ""
        head = (f"ingested {len(done)} file(s) along {self.dim!r}{again} in {len(ids)} "
                f"commit(s) on branch {self.branch!r}: ")
        if self.virtual:
            groups: dict[str, list[str]] = {}
            for name, reason in sorted(copied.items()):
                groups.setdefault(reason, []).append(name)
            listed = "; ".join(f"{', '.join(names)} ({reason})"
                               for reason, names in groups.items())
            text = (head + f"{nrefs} virtual chunk ref(s) into the sources, "
                    f"{size(nwritten)} copied in {elapsed:.1f} s; skipped "
                    f"{len(self.skipped)} already landed"
                    + (f"; copied instead of referenced: {listed}" if listed else "")
                    + (f"; added virtual chunk container(s) {', '.join(added)} to the "
                       "repository config (readers authorize them with "
                       "authorize_virtual_chunk_access=)" if added else ""))
        else:
            text = (head + f"{size(nwritten)} written in {elapsed:.1f} s "
                    f"({size(nwritten / max(elapsed, 1e-9))}/s; sources {size(nread)}); "
                    f"skipped {len(self.skipped)} already landed")
        result = self._result(ids, done, redone, text, nread, nwritten)
        result.refs, result.copied = nrefs, copied
        return result

    def _land(self, repo: Repository, batch: list[FileSummary],
              rewrites: list[tuple[FileSummary, Landed]], chunks: Mapping[str, int],
              suffix: str) -> tuple[str, int, int, dict[str, str]]:
        """Create or resize the arrays, write (or reference) the files on the workers
        through forks, merge, record them, commit once; return the snapshot id, the bytes
        written, the refs set and the variables copied instead of referenced."""
        from icechunk_dist.conflicts import ConflictDetector

        dim, group = str(self.dim), self.group
        session = repo.writable_session(self.branch)
        record = _record_at(repo, self.branch, session.store, group)
        view = repo_view(session.store, group, dim)
        created: dict[str, str] = {}
        if view is None and self.virtual:
            created = create_virtual_dataset(session, batch[0].source, group, dim,
                                             [s.dims[dim] for s in batch], chunks, self.opts)
        elif view is None:
            create_dataset(session, batch[0].source, group, dim, chunks, self.targets,
                           self.opts)
        if view is None:
            view = repo_view(session.store, group, dim)
        length = view.length if view is not None else 0
        times = view.times if view is not None else {}
        n_new = sum(s.dims[dim] for s in batch)
        dim_chunks = resize(session, group, dim, length + n_new)
        items: list[tuple[SourceFile, int, int]] = []
        entries: list[Landed] = []
        for s, old in rewrites:
            start = int(old.start or 0)
            items.append((s.source, start, s.dims[dim]))
            entries.append(Landed.of(s.source, start=start, steps=s.dims[dim],
                                     sha256=self.sha.get(s.source.url)))
        pos = length
        for s in batch:
            items.append((s.source, pos, s.dims[dim]))
            entries.append(Landed.of(s.source, start=pos, steps=s.dims[dim],
                                     sha256=self.sha.get(s.source.url)))
            pos += s.dims[dim]
        units = plan_units(items, dim_chunks)
        sizes = [(sum(len(srcs) for srcs, _st in u),
                  sum(src.size for srcs, _st in u for src in srcs)) for u in units]
        fork = session.fork()
        task = write_virtual_unit if self.virtual else write_unit
        out = self.runner.write_and_merge(task, units, sizes, fork, dim, group, self.opts,
                                          times, split_every=self.split_every,
                                          what=f"{'indexing' if self.virtual else 'writing'}"
                                               f"{suffix}")
        if isinstance(out, Failed):
            raise out.error
        session.merge(out.fork)
        write_record(session.store, group, record.with_files(dim, entries))
        text = self.message or (f"ingest {len(entries)} file(s) along {dim!r}"
                                f"{' into ' + group if group else ''}")
        sid = session.commit(text + suffix, as_metadata(group, dim, entries),
                             rebase_with=ConflictDetector())
        return sid, out.nbytes, out.refs, {**out.copied, **created}

    def _replan(self, repo: Repository, batch: list[FileSummary],
                rewrites: list[tuple[FileSummary, Landed]], cause: ConflictError
                ) -> tuple[list[FileSummary], list[tuple[FileSummary, Landed]], list[str]]:
        """The batch without the files that landed meanwhile, checked against the new
        tip."""
        dim = str(self.dim)
        tip = repo.readonly_session(self.branch).store
        landed = _record_at(repo, self.branch, tip, self.group).by_url()
        gone = [s.source.url for s in batch if s.source.url in landed]
        left = [s for s in batch if s.source.url not in landed]
        rw_left = []
        for s, _old in rewrites:
            now = landed.get(s.source.url)
            if now is None or changed(now, s.source, self.sha.get(s.source.url)) is None:
                gone.append(s.source.url)
            else:
                rw_left.append((s, now))
        view = repo_view(tip, self.group, dim)
        if view is not None and (left or rw_left):
            against = f"the repository's dataset on {self.branch!r}"
            problems = check_schema(left + [s for s, _o in rw_left], view.summary, dim,
                                    against)
            problems += self._rewrite_problems(rw_left, view)
            raise_problems(problems)
            order = check_order(left, dim, view.summary.last.get(dim), "the repository")
            if order:
                raise ConflictError(f"another writer appended to {self.group or '/'} while "
                                    f"this ingestion ran, and {order[0]}") from cause
        return left, rw_left, gone


def ingest(
    repo_or_url: Repository | Storage | str | os.PathLike[str],
    sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    concat_dim: str | None = None,
    group: str | None = None,
    branch: str = "main",
    batch_size: int | None = None,
    message: str | None = None,
    client: Any = None,
    dry_run: bool = False,
    progress: bool = False,
    chunks: Mapping[str, int] | None = None,
    unpack: bool = False,
    checksum: bool = False,
    reingest_changed: bool = False,
    create: bool = True,
    endpoint_url: str | None = None,
    allow_http: bool = False,
    region: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    split_every: int = 8,
    virtual: bool = False,
) -> IngestResult:
    """Ingest NetCDF/HDF5/GRIB files or Zarr stores into a repository, one commit per batch.

    The first run creates the repository (if missing) and the group; later runs append
    along ``concat_dim``. Files already landed in the group (the record of landed inputs
    that the branch tip carries) are skipped, so a failed run can simply be run again.
    Nothing is printed unless ``progress=True``; messages go to the ``icechunk_dist.ingest``
    logger.

    Parameters
    ----------
    repo_or_url
        A :class:`~icechunk_dist.Repository`, a :class:`~icechunk_dist.storage.Storage` or a
        URL (path, ``file:///path``, ``s3://bucket/prefix``...: see
        :func:`icechunk_dist.storage.from_url`).
    sources
        Paths, directories, ``file://`` or ``s3://`` URLs, or globs of either.
    concat_dim
        Dimension to concatenate and append along (default: what earlier ingestions into the
        group used, else ``time`` if present, else the files' unlimited dimension).
    group
        Zarr group of the dataset (default: the root). ``a/b``, ``/a/b`` and ``a/b/`` are
        one group; ``/`` is the root.
    branch
        Branch to commit to; created at ``main``'s tip if missing.
    batch_size
        Land every ``batch_size`` files as their own commit (default: all in one commit).
    message
        Commit message (default: a description of the files).
    client
        A ``distributed.Client`` (default: the current default client, else threads in this
        process).
    dry_run
        Check everything, write nothing, report what would be ingested.
    progress
        Show progress on stderr (files and bytes done, rate, ETA).
    chunks
        Chunk size per dimension name when the group is created (``{"time": 24}``; ``-1``:
        the whole dimension; default: whole dimensions, and along ``concat_dim`` the greatest
        common divisor of the files' lengths). On later runs it must match the repository's.
    unpack
        Land variables packed with ``scale_factor``/``add_offset`` decoded, as float32
        (float64 where the packing needs it), so that files packed differently can be
        ingested together. Other CF attributes are kept.
    checksum
        Compute a SHA-256 of every source (reading it whole) to tell whether a landed file
        changed, for sources whose size, etag and modification time cannot tell.
    reingest_changed
        Re-ingest in place landed files that changed since (same length and coordinates
        along ``concat_dim``); without it a changed file is an error naming it.
    create
        Create the repository if it is missing (False: a missing repository is an error,
        and nothing is created).
    endpoint_url, allow_http, region, storage_options
        S3 settings for the repository URL and for sources on S3 (``storage_options`` may
        hold ``access_key_id``/``secret_access_key``; without keys the environment is used).
    split_every
        Fan-in of the tree merge of the workers' forks.
    virtual
        Reference the chunks of NetCDF4/HDF5 and NetCDF3 files in place instead of copying
        them: each file is indexed on a worker and every stored chunk of a variable becomes
        a virtual chunk ref (recording the file's etag, or for a local file its identity:
        inode, modification time, size), with the file's chunk shape, byte order and filters
        (deflate, shuffle, fletcher32) as the array's codecs. Variables that cannot be
        referenced (another filter, compact storage, strings...), dimension coordinates and
        variables without ``concat_dim`` are copied; the result says which and why
        (``IngestResult.copied``). Not with ``chunks`` or ``unpack``.

    Returns
    -------
    IngestResult

    Raises
    ------
    InvalidInputError
        Bad input or settings, checked before anything is written: missing, unreadable or
        corrupt files, an empty glob, schema mismatches (every bad file is listed), a landed
        file that changed, a bad group, ``chunks`` or S3 setting, in-memory storage with a
        cluster. The branch is unchanged.
    NotFoundError
        If the repository is missing and ``create`` is False.
    StorageError
        If the repository or the sources' storage cannot be reached (worth retrying).
    ConflictError
        If another writer changed the same arrays and re-planning could not solve it.
    """
    if batch_size is not None and int(batch_size) < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
    if split_every < 2:
        raise InvalidInputError("split_every must be at least 2")
    if virtual and (chunks or unpack):
        raise InvalidInputError(
            "virtual ingestion keeps the files' own chunks and packing: --chunks (chunks=) "
            "and --unpack (unpack=) cannot be combined with --virtual (virtual=True)")
    validate_ref_name(branch, "branch")
    group = normalize_group(group)
    opts: dict[str, Any] = {"endpoint_url": endpoint_url, "allow_http": allow_http or None,
                            "region": region, **dict(storage_options or {})}
    opts = {k: v for k, v in opts.items() if v is not None}
    src_list = [sources] if isinstance(sources, str | os.PathLike) else list(sources)
    for src in src_list:
        if isinstance(src, str):
            check_s3_settings(src, opts)
    client = resolve_client(client)
    loc = Location(repo_or_url, opts)
    if client is not None and not loc.storage.supports_pickle:
        raise InvalidInputError(IN_MEMORY_WITH_CLUSTER)
    if loc.repo is None:
        if not create:
            loc.require()
        loc.check_new()
    run = _Run(loc, Runner(client, Progress(progress)), opts, branch=branch, group=group,
               concat_dim=concat_dim, batch_size=batch_size, message=message, chunks=chunks,
               unpack=unpack, checksum=checksum, reingest_changed=reingest_changed,
               dry_run=dry_run, split_every=split_every, virtual=virtual)
    result = None
    try:
        try:
            files = expand_sources(src_list, storage_options=opts)
        except StorageError as e:
            raise credentials_error(e, "the sources") from None
        with quiet_codecs():
            result = run.run(files)
        return result
    finally:
        loc.finish(landed=bool(result is not None and result.snapshot_ids))
