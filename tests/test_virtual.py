"""Virtual chunk refs on local disk: containers and their authorization, checksums of the
source (etag and last-modified time), mixed virtual and native chunks (issue 22).

Every source file is made by the test; S3 and NetCDF4 sources are in test_virtual_netcdf.py,
the bulk API and the manifest encoding in test_virtual_bulk.py.
"""

from __future__ import annotations

import functools
import http.server
import os
import pickle
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import zarr

import icechunk_dist as icd

DATA = np.arange(100, dtype="<i4")


def _source(tmp_path: Path) -> tuple[Path, str, str]:
    """A legacy binary file of 6 header bytes then DATA; (file, its URL, container prefix)."""
    src = tmp_path / "archive"
    src.mkdir(exist_ok=True)
    raw = src / "legacy.bin"
    raw.write_bytes(b"HEADER" + DATA.tobytes())
    return raw, f"file://{raw}", f"file://{src}/"


def _config(prefix: str, root: str) -> icd.RepositoryConfig:
    config = icd.RepositoryConfig()
    config.set_virtual_chunk_container(
        icd.VirtualChunkContainer(prefix, icd.local_filesystem_store(root)))
    return config


def _repo(tmp_path: Path, prefix: str, *, authorize: bool = True) -> icd.Repository:
    auth = {prefix: icd.LocalFileSystemAccess} if authorize else None
    return icd.Repository.create(icd.local_filesystem_storage(tmp_path / "repo"),
                                 _config(prefix, prefix[len("file://"):]),
                                 authorize_virtual_chunk_access=auth)


def _virtual_array(session: icd.Session) -> zarr.Array:
    return zarr.create_array(session.store, name="v", shape=(100,), chunks=(50,), dtype="<i4",
                             compressors=None, fill_value=0)


def _read(repo: icd.Repository, sel: slice = slice(None)) -> np.ndarray:
    return zarr.open_array(repo.readonly_session("main").store, path="v", mode="r")[sel]


def _two_refs(repo: icd.Repository, url: str, **checksum: object) -> None:
    s = repo.writable_session("main")
    _virtual_array(s)
    s.store.set_virtual_ref("v/c/0", url, offset=6, length=200, **checksum)  # type: ignore[arg-type]
    s.store.set_virtual_ref("v/c/1", url, offset=206, length=200, **checksum)  # type: ignore[arg-type]
    s.commit("reference the legacy file")


def test_virtual_refs_to_a_local_file(tmp_path: Path) -> None:
    _raw, url, prefix = _source(tmp_path)
    repo = _repo(tmp_path, prefix)
    _two_refs(repo, url)
    assert not (tmp_path / "repo" / "chunks").exists()  # nothing was copied
    np.testing.assert_array_equal(_read(repo), DATA)
    np.testing.assert_array_equal(_read(repo, slice(60, 70)), DATA[60:70])  # partial reads
    assert repo.readonly_session("main").all_virtual_chunk_locations() == [url]
    assert repo.authorized_virtual_container_prefixes == {prefix}


def test_virtual_ref_bad_input(tmp_path: Path) -> None:
    _raw, url, prefix = _source(tmp_path)
    repo = _repo(tmp_path, prefix)
    s = repo.writable_session("main")
    _virtual_array(s)
    with pytest.raises(icd.InvalidInputError, match="URL"):
        s.store.set_virtual_ref("v/c/0", "/no/scheme", offset=0, length=4)
    with pytest.raises(icd.InvalidInputError, match="metadata"):
        s.store.set_virtual_ref("v/zarr.json", url, offset=0, length=4)
    with pytest.raises(icd.InvalidInputError):
        s.store.set_virtual_ref("v/c/9", url, offset=0, length=4)  # outside the grid
    with pytest.raises(icd.InvalidInputError, match="timezone-aware"):
        s.store.set_virtual_ref("v/c/0", url, offset=0, length=4,
                                checksum=datetime(2024, 1, 1))
    # a location no container covers: refused when set (Icechunk's validate_container)...
    with pytest.raises(icd.InvalidInputError, match="no virtual chunk container covers"):
        s.store.set_virtual_ref("v/c/0", "ftp://host/x", offset=0, length=200)
    # ...and, set anyway, refused when read, before anything is fetched
    s.store.set_virtual_ref("v/c/0", "ftp://host/x", offset=0, length=200,
                            validate_container=False)
    s.commit("unreachable location")
    with pytest.raises(icd.VirtualChunkAccessError, match=r"'ftp://host/x'.*no virtual chunk "
                                                          r"container covers it"):
        _read(repo)


def test_containers_live_in_the_config(tmp_path: Path) -> None:
    s3 = icd.VirtualChunkContainer("s3://bucket/archive/",
                                   icd.s3_store(region="eu-west-1", anonymous=True))
    local = icd.VirtualChunkContainer("file:///data/", icd.local_filesystem_store("/data"),
                                      name="data")
    config = icd.RepositoryConfig()
    assert config.virtual_chunk_containers is None
    config.set_virtual_chunk_container(s3)
    config.set_virtual_chunk_container(local)
    assert config.virtual_chunk_containers == {"s3://bucket/archive/": s3, "data": local}
    assert config.get_virtual_chunk_container("data") == local
    assert icd.RepositoryConfig.from_dict(config.to_dict()) == config
    # containers of another config extend ours in a merge
    other = icd.RepositoryConfig(virtual_chunk_containers=[
        icd.VirtualChunkContainer("https://host/files/", icd.http_store())])
    merged = config.merge(other)
    assert set(merged.virtual_chunk_containers or {}) == {
        "s3://bucket/archive/", "data", "https://host/files/"}
    # persisted by save_config (credentials never are: there are none in a config)
    repo = icd.Repository.create(icd.local_filesystem_storage(tmp_path / "repo"))
    repo = repo.reopen(config)
    repo.save_config()
    back = icd.Repository.open(icd.local_filesystem_storage(tmp_path / "repo"))
    assert back.config.virtual_chunk_containers == config.virtual_chunk_containers
    assert back.authorized_virtual_container_prefixes == set()
    config.clear_virtual_chunk_containers()
    assert config.virtual_chunk_containers is None
    for bad, store in (("s3://bucket/no-slash", icd.s3_store()),
                       ("/data/", icd.local_filesystem_store("/data")),
                       ("s3://bucket/", icd.local_filesystem_store("/data")),
                       ("file:///elsewhere/", icd.local_filesystem_store("/data"))):
        with pytest.raises(icd.InvalidInputError):
            icd.VirtualChunkContainer(bad, store)  # type: ignore[arg-type]
    with pytest.raises(icd.InvalidInputError):
        icd.Repository.open(icd.local_filesystem_storage(tmp_path / "repo"),
                            authorize_virtual_chunk_access={"file:///data/": "password"})


def test_unauthorized_containers_are_refused(tmp_path: Path) -> None:
    raw, url, prefix = _source(tmp_path)
    _two_refs(_repo(tmp_path, prefix), url)
    storage = icd.local_filesystem_storage(tmp_path / "repo")
    # the container is configured (saved at create) but this process did not authorize it
    repo = icd.Repository.open(storage)
    with pytest.raises(icd.VirtualChunkAccessError,
                       match=rf"{url!r}.*not authorized.*authorize_virtual_chunk_access"):
        _read(repo)
    # authorizing another prefix does not help
    repo = icd.Repository.open(storage, authorize_virtual_chunk_access={
        "file:///somewhere/else/": icd.LocalFileSystemAccess})
    with pytest.raises(icd.VirtualChunkAccessError, match="not authorized"):
        _read(repo)
    # never fetched: with the file gone, a fetch would fail with "does not exist"
    raw.unlink()
    with pytest.raises(icd.VirtualChunkAccessError) as info:
        _read(repo)
    assert info.value.key == url and "does not exist" not in str(info.value)
    repo = icd.Repository.open(storage, authorize_virtual_chunk_access={
        prefix: icd.LocalFileSystemAccess})
    with pytest.raises(icd.StorageError, match="does not exist"):
        _read(repo)


def test_the_most_specific_container_serves_a_url(tmp_path: Path) -> None:
    raw, url, prefix = _source(tmp_path)
    (tmp_path / "secret.bin").write_bytes(DATA.tobytes())
    outer = f"file://{tmp_path}/"
    config = _config(outer, str(tmp_path))
    config.set_virtual_chunk_container(
        icd.VirtualChunkContainer(prefix, icd.local_filesystem_store(str(raw.parent))))
    repo = icd.Repository.create(icd.local_filesystem_storage(tmp_path / "repo"), config,
                                 authorize_virtual_chunk_access={
                                     prefix: icd.LocalFileSystemAccess})
    _two_refs(repo, url)
    np.testing.assert_array_equal(_read(repo), DATA)  # served by the inner container
    s = repo.writable_session("main")
    s.store.set_virtual_ref("v/c/0", f"file://{tmp_path}/secret.bin", offset=0, length=200)
    # a ".." segment does not leave the authorized container
    s.store.set_virtual_ref("v/c/1", f"{prefix}../secret.bin", offset=200, length=200)
    s.commit("outside the authorized directory")
    arr = zarr.open_array(repo.readonly_session("main").store, path="v", mode="r")
    with pytest.raises(icd.VirtualChunkAccessError, match="not authorized"):
        arr[:50]  # the outer container covers it, and is not authorized
    with pytest.raises(icd.VirtualChunkAccessError, match=r"'\.\.' path segments"):
        arr[50:]


def test_a_changed_source_is_refused_by_etag(tmp_path: Path) -> None:
    raw, url, prefix = _source(tmp_path)
    repo = _repo(tmp_path, prefix)
    etag = icd.virtual.source_stat(url).etag
    assert etag
    _two_refs(repo, url, checksum=etag)
    np.testing.assert_array_equal(_read(repo), DATA)
    # same size, other bytes, written in place: never returned as the chunk
    raw.write_bytes(b"HEADER" + (DATA * 2).tobytes())
    with pytest.raises(icd.SourceChangedError, match=rf"{url!r}.*changed since") as info:
        _read(repo)
    assert info.value.key == url


def test_a_changed_source_is_refused_by_modification_time(tmp_path: Path) -> None:
    raw, url, prefix = _source(tmp_path)
    repo = _repo(tmp_path, prefix)
    stat = icd.virtual.source_stat(url)
    assert stat.last_modified is not None and stat.size == 406
    _two_refs(repo, url, checksum=stat.last_modified)
    np.testing.assert_array_equal(_read(repo), DATA)
    later = stat.last_modified.timestamp() + 10
    os.utime(raw, (later, later))
    with pytest.raises(icd.SourceChangedError, match=r"modified after"):
        _read(repo)
    # a time given by the user (the time of indexing) works the same way
    s = repo.writable_session("main")
    s.store.set_virtual_ref("v/c/0", url, offset=6, length=200,
                            checksum=datetime.now(UTC) + timedelta(minutes=5))
    s.commit("indexed 'later'")
    np.testing.assert_array_equal(_read(repo, slice(0, 50)), DATA[:50])


def test_virtual_and_native_chunks_in_one_array(tmp_path: Path) -> None:
    _raw, url, prefix = _source(tmp_path)
    repo = _repo(tmp_path, prefix)
    _two_refs(repo, url)
    # append native data to the virtual array, and overwrite part of a virtual chunk
    s = repo.writable_session("main")
    arr = zarr.open_array(s.store, path="v", mode="r+")
    arr.resize((150,))
    arr[100:150] = -np.arange(50, dtype="<i4")
    arr[10:20] = 7
    assert s.chunk_type("/v", [1]) is icd.ChunkType.virtual
    assert s.chunk_type("/v", [2]) is not icd.ChunkType.virtual  # native or inline
    assert s.chunk_type("/v", [0]) is not icd.ChunkType.virtual  # rewritten whole
    s.commit("append native chunks")
    want = np.concatenate([DATA, -np.arange(50, dtype="<i4")])
    want[10:20] = 7
    np.testing.assert_array_equal(_read(repo), want)
    r = repo.readonly_session("main")
    assert r.all_virtual_chunk_locations() == [url]  # chunk 1 still points into it
    assert r.chunk_stats("/v").virtual == 1


def test_sessions_and_forks_carry_the_authorization(tmp_path: Path) -> None:
    _raw, url, prefix = _source(tmp_path)
    repo = _repo(tmp_path, prefix)
    _two_refs(repo, url)
    for obj in (repo.readonly_session("main"), pickle.loads(pickle.dumps(repo))
                .readonly_session("main")):
        got = zarr.open_array(pickle.loads(pickle.dumps(obj)).store, path="v", mode="r")[:]
        np.testing.assert_array_equal(got, DATA)
    s = repo.writable_session("main")
    fork = pickle.loads(pickle.dumps(s.fork()))
    np.testing.assert_array_equal(zarr.open_array(fork.store, path="v", mode="r")[:], DATA)
    # reopen keeps the authorization unless told otherwise
    assert repo.reopen().authorized_virtual_container_prefixes == {prefix}
    assert repo.reopen(authorize_virtual_chunk_access=None) \
        .authorized_virtual_container_prefixes == set()


def test_plan_spans_merges_adjacent_and_close_ranges() -> None:
    from icechunk_dist.storage import plan_spans

    # 4 adjacent chunks, one 10 bytes away, one far away, one overlapping
    ranges = [(300, 400), (0, 100), (100, 200), (200, 300), (410, 500), (5000, 5100),
              (50, 150)]
    spans = plan_spans(ranges, gap=16, max_span=10_000)
    assert [(s, e, sorted(m)) for s, e, m in spans] == [
        (0, 500, [0, 1, 2, 3, 4, 6]), (5000, 5100, [5])]
    assert len(plan_spans(ranges, gap=0, max_span=10_000)) == 3  # the 10-byte gap splits
    bounded = plan_spans(ranges, gap=16, max_span=250)  # spans are bounded
    assert [(s, e) for s, e, _ in bounded] == [(0, 200), (200, 400), (410, 500), (5000, 5100)]


def test_named_containers_serve_relative_refs(tmp_path: Path) -> None:
    _raw, _url, prefix = _source(tmp_path)
    config = icd.RepositoryConfig()
    config.set_virtual_chunk_container(icd.VirtualChunkContainer(
        prefix, icd.local_filesystem_store(prefix[len("file://"):]), name="archive"))
    repo = icd.Repository.create(icd.local_filesystem_storage(tmp_path / "repo"), config,
                                 authorize_virtual_chunk_access={
                                     prefix: icd.LocalFileSystemAccess})
    _two_refs(repo, "vcc://archive/legacy.bin")
    np.testing.assert_array_equal(_read(repo), DATA)
    s = repo.writable_session("main")
    with pytest.raises(icd.InvalidInputError, match="no virtual chunk container"):
        s.store.set_virtual_ref("v/c/0", "vcc://other/legacy.bin", offset=6, length=200)


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """A static file server that answers ranged GETs (206), as object stores do, and counts
    the GETs in flight at once (each takes ``delay`` seconds)."""

    delay = 0.0
    lock = threading.Lock()
    in_flight = 0
    most = 0

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        cls = type(self)
        with cls.lock:
            cls.in_flight += 1
            cls.most = max(cls.most, cls.in_flight)
        try:
            time.sleep(cls.delay)
            self._get()
        finally:
            with cls.lock:
                cls.in_flight -= 1

    def _get(self) -> None:
        rng = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if rng is None or not path.is_file():
            super().do_GET()
            return
        data = path.read_bytes()
        start, _, end = rng.removeprefix("bytes=").partition("-")
        body = data[int(start):int(end) + 1]
        self.send_response(206)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Range", f"bytes {start}-{int(start) + len(body) - 1}/"
                                          f"{len(data)}")
        self.end_headers()
        self.wfile.write(body)


def test_http_containers_and_bounded_concurrency(tmp_path: Path) -> None:
    _raw, _url, _prefix = _source(tmp_path)
    for f in range(8):  # 8 more sources: 8 requests that cannot be merged
        (tmp_path / "archive" / f"part{f}.bin").write_bytes((DATA + f).tobytes())
    handler = type("Handler", (_RangeHandler,), {"delay": 0.05, "in_flight": 0, "most": 0})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(tmp_path / "archive")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        config = icd.RepositoryConfig(max_concurrent_requests=2)
        config.set_virtual_chunk_container(icd.VirtualChunkContainer(
            base, icd.http_store({"allow_http": "true"})))
        repo = icd.Repository.create(icd.local_filesystem_storage(tmp_path / "repo"), config,
                                     authorize_virtual_chunk_access={base: icd.HttpAccess})
        _two_refs(repo, f"{base}legacy.bin")
        np.testing.assert_array_equal(_read(repo), DATA)
        s = repo.writable_session("main")
        zarr.create_array(s.store, name="w", shape=(8, 100), chunks=(1, 100), dtype="<i4",
                          compressors=None, fill_value=0)
        s.store.set_virtual_refs("w", [icd.VirtualChunkSpec([f, 0], f"{base}part{f}.bin", 0,
                                                            400) for f in range(8)])
        s.commit("8 sources")
        handler.most = 0
        got = zarr.open_array(repo.readonly_session("main").store, path="w", mode="r")[:]
        np.testing.assert_array_equal(got, DATA[None, :] + np.arange(8)[:, None])
        assert handler.most == 2  # zarr asked for 8 at once; 2 were sent at a time
    finally:
        server.shutdown()
        server.server_close()
