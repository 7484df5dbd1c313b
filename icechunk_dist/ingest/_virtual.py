"""Virtual ingestion, the indexing half: where each chunk of a file's variables sits.

For a NetCDF4/HDF5 file (through h5py) and a NetCDF3 classic or 64-bit-offset file (its
header, parsed here), :func:`index_file` gives per variable a :class:`Layout` (on-disk
dtype with its byte order, chunk shape, the HDF5 filters as decodable steps, the fill value
of unwritten chunks, or why the variable cannot be referenced) and a :class:`ChunkTable`
(grid coordinates, byte offset and length of every stored chunk), plus the identity of the
file (its etag) that every ref records.

- HDF5 chunked datasets: one ref per allocated chunk (``Dataset.id.chunk_iter``); the
  filters deflate, shuffle and fletcher32 map to Zarr codecs (:func:`zarr_codecs`). Any
  other filter (szip, lzf, scale-offset, nbit, plugins), compact or external storage,
  contiguous storage never written, a chunk that skipped a filter (filter mask), and
  non-numeric data (strings, compounds, enums) cannot be referenced: the variable is copied.
- HDF5 contiguous datasets: one chunk, the whole variable, uncompressed.
- NetCDF3: each record of a record variable is a chunk of one step (at ``begin + r *
  recsize``), each other variable one chunk; always big-endian and uncompressed; character
  data is copied.

Sources on S3 are read through :class:`RangeFile` (ranged GETs, cached in blocks): only the
metadata is read, never the data.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlparse

import msgspec
import numpy as np

from icechunk_dist import _sync
from icechunk_dist.errors import IcechunkDistError, InvalidInputError, StorageError
from icechunk_dist.ingest._sources import SourceFile, s3_source_storage

__all__ = ["ChunkTable", "FileIndex", "Layout", "RangeFile", "index_file", "open_ranges",
           "quiet_codecs", "zarr_codecs"]

_HDF5 = b"\x89HDF\r\n\x1a\n"
_NOT_A_VARIABLE = b"This is a netCDF dimension but not a netCDF variable"
_NON_COORD = "_nc4_non_coord_"
# HDF5 filter ids: the ones we decode, and names for the ones we report
_DEFLATE, _SHUFFLE, _FLETCHER32 = 1, 2, 3
_FILTER_NAMES = {4: "szip", 5: "nbit", 6: "scale-offset", 307: "bzip2", 32000: "lzf",
                 32001: "blosc", 32004: "lz4", 32008: "bitshuffle", 32015: "zstd"}
NOT_VIRTUAL_HINT = "--virtual indexes NetCDF3 and NetCDF4/HDF5 files"


class Layout(msgspec.Struct, frozen=True, kw_only=True):
    """How one variable is stored in a file.

    Attributes
    ----------
    dtype
        On-disk numpy dtype with its byte order (``"<f4"``, ``">i2"``, ``"|i1"``).
    shape, chunks
        Shape of the variable, and of its chunks (the whole shape if contiguous).
    codecs
        The filters in the order they were applied on write: ``("shuffle", elementsize)``,
        ``("zlib", level)``, ``("fletcher32", 0)``.
    fill_value
        What HDF5 returns for unwritten chunks (None for NetCDF3, which has none).
    reason
        Why it cannot be referenced (then it is copied), or None.
    """

    dtype: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    codecs: tuple[tuple[str, int], ...] = ()
    fill_value: Any = None
    reason: str | None = None


class ChunkTable:
    """The stored chunks of one variable: grid coordinates, byte offsets and lengths, and
    whether some chunk of the grid was never written (it reads as the fill value)."""

    __slots__ = ("coords", "lengths", "missing", "offsets")

    def __init__(self, coords: np.ndarray, offsets: np.ndarray, lengths: np.ndarray,
                 missing: bool) -> None:
        self.coords, self.offsets, self.lengths, self.missing = (coords, offsets, lengths,
                                                                 missing)


class FileIndex:
    """A file's variables as refs: where it is (``url``, as refs name it), its identity
    (``etag``), and per variable its :class:`Layout` and :class:`ChunkTable`."""

    __slots__ = ("etag", "layouts", "tables", "url")

    def __init__(self, url: str, etag: str | None, layouts: dict[str, Layout],
                 tables: dict[str, ChunkTable]) -> None:
        self.url, self.etag, self.layouts, self.tables = url, etag, layouts, tables


@contextlib.contextmanager
def quiet_codecs() -> Iterator[None]:
    """Silence zarr's warnings, while ingestion creates and writes arrays, that numcodecs
    codecs (the HDF5 filters' equivalents) and fixed-length byte strings (NetCDF character
    data as xarray decodes it) are not in the Zarr v3 specification: they are the choices
    made here, not news to the user of each run."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr")
        warnings.filterwarnings("ignore", message=r"The data type \(NullTerminatedBytes")
        yield


def zarr_codecs(layout: Layout) -> tuple[Any, list[Any] | None]:
    """(serializer, compressors) that decode the variable's stored chunks: the bytes codec
    in the file's byte order, then the filters as numcodecs codecs."""
    from zarr.codecs import BytesCodec

    try:
        from zarr.codecs import numcodecs as nz3  # zarr >= 3.1.3
    except ImportError:  # pragma: no cover - older zarr
        from numcodecs import zarr3 as nz3  # type: ignore[no-redef]

    order = layout.dtype[0]
    serializer = BytesCodec(endian="big" if order == ">" else "little")
    out: list[Any] = []
    for name, value in layout.codecs:
        if name == "shuffle":
            out.append(nz3.Shuffle(elementsize=value))
        elif name == "zlib":
            out.append(nz3.Zlib(level=value))
        elif name == "fletcher32":
            out.append(nz3.Fletcher32())
    return serializer, out or None


# ------------------------------------------------------------------------------ reading
class RangeFile(io.RawIOBase):
    """A read-only, seekable file over ranged reads of an object, cached in blocks: h5py
    and h5netcdf read a file's metadata in many small pieces. A read fetches the blocks it
    lacks in one request."""

    mode = "rb"

    def __init__(self, read: Callable[[int, int], bytes], size: int, name: str,
                 block: int = 1 << 16, blocks: int = 256) -> None:
        super().__init__()
        self._read, self._size, self.name = read, size, name
        self._block, self._max = block, blocks
        self._pos = 0
        self._cache: dict[int, bytes] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def _fetch(self, first: int, last: int) -> None:
        """Blocks ``first .. last`` into the cache, the missing ones in one read."""
        missing = [i for i in range(first, last + 1) if i not in self._cache]
        if missing:
            lo, hi = missing[0], missing[-1]
            data = self._read(lo * self._block, min(self._size, (hi + 1) * self._block))
            for i in range(lo, hi + 1):
                self._cache[i] = data[(i - lo) * self._block:(i - lo + 1) * self._block]
        for i in range(first, last + 1):  # most recently used last
            self._cache[i] = self._cache.pop(i)
        while len(self._cache) > max(self._max, last - first + 1):  # bounded: LRU out
            self._cache.pop(next(iter(self._cache)))

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), max(0, self._size - self._pos))
        if want <= 0:
            return 0
        first, last = self._pos // self._block, (self._pos + want - 1) // self._block
        self._fetch(first, last)
        done = 0
        for i in range(first, last + 1):
            data = self._cache[i]
            off = self._pos + done - i * self._block
            n = min(want - done, len(data) - off)
            if n <= 0:
                break
            view[done:done + n] = data[off:off + n]
            done += n
        self._pos += done
        return done


def open_ranges(src: SourceFile, storage_options: Mapping[str, Any] | None) -> RangeFile:
    """A :class:`RangeFile` over an S3 source."""
    p = urlparse(src.url)
    storage = s3_source_storage(p.netloc, storage_options)
    key = p.path.lstrip("/")

    def read(start: int, end: int) -> bytes:
        try:
            return _sync.run(storage.get_range(key, start, end))
        except StorageError:
            raise
        except IcechunkDistError as e:
            raise InvalidInputError(f"{src.url}: cannot read: {e}") from None

    return RangeFile(read, src.size, src.url)


def _identity(src: SourceFile, storage_options: Mapping[str, Any] | None) -> str | None:
    """The etag refs to ``src`` record: the object store's (checked against the listing),
    or for a local file the one the local object store gives (inode, modification time
    and size), which every read of a ref compares with the file's current one.

    Raises
    ------
    InvalidInputError
        If the source changed since it was listed in this run.
    """
    from icechunk_dist.storage import local_filesystem_storage

    if src.url.startswith("s3://"):
        p = urlparse(src.url)
        meta = _sync.run(s3_source_storage(p.netloc, storage_options).head(
            p.path.lstrip("/")))
        now = meta.etag
    else:
        try:
            st = os.stat(src.url)
        except OSError as e:
            raise InvalidInputError(f"{src.url}: cannot read: {e.strerror or e}") from None
        if src.mtime is not None and st.st_mtime != src.mtime:
            raise InvalidInputError(f"{src.url}: changed while this run read it (modified "
                                    "again); run again")
        meta = _sync.run(local_filesystem_storage(os.path.dirname(src.url)).head(
            os.path.basename(src.url)))
        now = meta.etag
    if meta.size != src.size or (src.etag is not None and now != src.etag):
        raise InvalidInputError(f"{src.url}: changed while this run read it (size or etag "
                                "differs from the listing); run again")
    return src.etag if src.etag is not None else now


def ref_url(src: SourceFile) -> str:
    """The URL the virtual chunk refs into ``src`` name: its own for S3, ``file://`` plus
    the absolute path for a local file."""
    return src.url if src.url.startswith("s3://") else f"file://{src.url}"


def index_file(src: SourceFile, storage_options: Mapping[str, Any] | None = None
               ) -> FileIndex:
    """Task helper: the :class:`FileIndex` of ``src`` (metadata only is read).

    Raises
    ------
    InvalidInputError
        If the source is missing, unreadable, changed while read, or not a NetCDF3 or
        NetCDF4/HDF5 file.
    StorageError
        If S3 cannot be reached.
    """
    if src.kind != "file":
        raise InvalidInputError(f"{src.url}: a Zarr store; {NOT_VIRTUAL_HINT}")
    etag = _identity(src, storage_options)
    remote = src.url.startswith("s3://")
    url = ref_url(src)
    try:
        with open_ranges(src, storage_options) if remote else open(src.url, "rb") as f:
            head = f.read(8)
            f.seek(0)
            if head.startswith((b"CDF\x01", b"CDF\x02")):
                layouts, tables = _netcdf3(f, src.size, src.url)
            elif head.startswith(_HDF5):
                layouts, tables = _hdf5(f, src.url)
            else:
                raise InvalidInputError(f"{src.url}: not a NetCDF3 or NetCDF4/HDF5 file; "
                                        f"{NOT_VIRTUAL_HINT}")
    except (IcechunkDistError, MemoryError):
        raise
    except OSError as e:
        raise InvalidInputError(f"{src.url}: cannot read: {e.strerror or e}") from None
    except Exception as e:  # h5py/struct errors on a corrupt file
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InvalidInputError(f"{src.url}: cannot index: {msg}") from None
    return FileIndex(url, etag, layouts, tables)


# ------------------------------------------------------------------------------ HDF5
def _table(coords: list[tuple[int, ...]], offsets: list[int], lengths: list[int],
           shape: tuple[int, ...], chunks: tuple[int, ...]) -> ChunkTable:
    ndim = len(shape)
    c = np.array(coords, dtype=np.int64).reshape(len(coords), ndim)
    grid = [-(-n // k) if k else 0 for n, k in zip(shape, chunks, strict=True)]
    inside = np.all(c < np.array(grid, dtype=np.int64), axis=1) if ndim else np.ones(
        len(coords), bool)
    c = c[inside]
    total = int(np.prod(grid)) if ndim else 1
    return ChunkTable(c, np.array(offsets, np.int64)[inside],
                      np.array(lengths, np.int64)[inside], missing=len(c) < total)


def _dtype_reason(dt: np.dtype[Any]) -> str | None:
    import h5py

    if dt.kind not in "iuf" or dt.fields or dt.subdtype or h5py.check_enum_dtype(dt):
        return f"data type {dt} (only numbers are referenced)"
    return None


def _hdf5_variable(d: Any) -> tuple[Layout, ChunkTable | None]:
    import h5py

    dt = d.dtype
    shape = tuple(int(n) for n in d.shape)
    dtype = dt.str if dt.kind in "iuf" else str(dt)
    fill = d.fillvalue.item() if hasattr(d.fillvalue, "item") else d.fillvalue
    reason = _dtype_reason(dt)
    plist = d.id.get_create_plist()
    kind = plist.get_layout()
    if reason is None and kind == h5py.h5d.COMPACT:
        reason = "compact storage (the data sits in the file's metadata)"
    elif reason is None and kind == h5py.h5d.CONTIGUOUS:
        if plist.get_external_count():
            reason = "external storage (the data is in other files)"
        offset = d.id.get_offset()
        if reason is None and offset is None and d.size:
            reason = "contiguous storage never written (not allocated)"
        if reason is None:
            chunks = shape
            lengths = [int(d.id.get_storage_size())] if d.size else []
            table = _table([(0,) * len(shape)] if d.size else [],
                           [int(offset or 0)] if d.size else [], lengths, shape, chunks)
            return Layout(dtype=dtype, shape=shape, chunks=chunks, fill_value=fill), table
    elif reason is None and kind == h5py.h5d.CHUNKED:
        chunks = tuple(int(c) for c in d.chunks)
        codecs: list[tuple[str, int]] = []
        for i in range(plist.get_nfilters()):
            fid, _flags, values, _name = plist.get_filter(i)
            if fid == _DEFLATE:
                codecs.append(("zlib", int(values[0]) if values else 4))
            elif fid == _SHUFFLE:
                codecs.append(("shuffle", int(values[0]) if values else dt.itemsize))
            elif fid == _FLETCHER32:
                codecs.append(("fletcher32", 0))
            else:
                label = _FILTER_NAMES.get(fid, "a plugin filter")
                reason = f"HDF5 filter {label} (id {fid}) has no Zarr codec"
                break
        if reason is None:
            infos: list[Any] = []
            d.id.chunk_iter(infos.append)
            if any(info.filter_mask for info in infos):
                reason = "some chunks skip a filter (HDF5 filter mask)"
            else:
                table = _table([tuple(o // c for o, c in zip(info.chunk_offset, chunks,
                                                              strict=True)) for info in infos],
                               [int(info.byte_offset) for info in infos],
                               [int(info.size) for info in infos], shape, chunks)
                return Layout(dtype=dtype, shape=shape, chunks=chunks, codecs=tuple(codecs),
                              fill_value=fill), table
    elif reason is None:
        reason = "virtual (VDS) storage"
    chunks = tuple(int(c) for c in d.chunks) if d.chunks else shape
    return Layout(dtype=dtype, shape=shape, chunks=chunks, fill_value=None,
                  reason=reason), None


def _hdf5(f: Any, url: str) -> tuple[dict[str, Layout], dict[str, ChunkTable]]:
    import h5py

    layouts: dict[str, Layout] = {}
    tables: dict[str, ChunkTable] = {}
    with h5py.File(f, "r") as h5:
        for name, obj in h5.items():
            if not isinstance(obj, h5py.Dataset):
                continue
            label = obj.attrs.get("NAME")
            if isinstance(label, bytes | np.bytes_) and bytes(label).startswith(
                    _NOT_A_VARIABLE):
                continue  # a dimension without a coordinate variable
            key = name.removeprefix(_NON_COORD)
            layout, table = _hdf5_variable(obj)
            layouts[key] = layout
            if table is not None:
                tables[key] = table
    return layouts, tables


# ------------------------------------------------------------------------------ NetCDF3
_NC3_TYPES = {1: "|i1", 2: "|S1", 3: ">i2", 4: ">i4", 5: ">f4", 6: ">f8"}
_NC3_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 4, 6: 8}
_STREAMING = 0xFFFFFFFF


class _Header:
    """A cursor over a NetCDF3 header, reading more of the file as it goes."""

    def __init__(self, f: Any, size: int, url: str) -> None:
        self.f, self.size, self.url = f, size, url
        self.buf = b""
        self.pos = 0

    def take(self, n: int) -> bytes:
        while self.pos + n > len(self.buf):
            if len(self.buf) >= self.size:
                raise InvalidInputError(f"{self.url}: truncated NetCDF3 header")
            self.f.seek(len(self.buf))
            more = self.f.read(max(1 << 16, len(self.buf)))
            if not more:
                raise InvalidInputError(f"{self.url}: truncated NetCDF3 header")
            self.buf += more
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def int32(self) -> int:
        return int(struct.unpack(">i", self.take(4))[0])

    def uint32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def int64(self) -> int:
        return int(struct.unpack(">q", self.take(8))[0])

    def name(self) -> str:
        n = self.int32()
        text = self.take(n).decode("utf-8")
        self.take(-n % 4)
        return text

    def attributes(self) -> None:
        tag, n = self.int32(), self.int32()
        if tag not in (0, 0x0C):
            raise InvalidInputError(f"{self.url}: corrupt NetCDF3 header (attributes)")
        for _ in range(n):
            self.name()
            nc_type, count = self.int32(), self.int32()
            nbytes = _NC3_SIZES.get(nc_type, 1) * count
            self.take(nbytes + (-nbytes % 4))


def _netcdf3(f: Any, size: int, url: str) -> tuple[dict[str, Layout], dict[str, ChunkTable]]:
    h = _Header(f, size, url)
    version = h.take(4)[3]
    numrecs = h.uint32()
    tag, ndims = h.int32(), h.int32()
    if tag not in (0, 0x0A):
        raise InvalidInputError(f"{url}: corrupt NetCDF3 header (dimensions)")
    dims = [(h.name(), h.int32()) for _ in range(ndims)]
    h.attributes()
    tag, nvars = h.int32(), h.int32()
    if tag not in (0, 0x0B):
        raise InvalidInputError(f"{url}: corrupt NetCDF3 header (variables)")
    found = []
    for _ in range(nvars):
        name = h.name()
        dimids = [h.int32() for _ in range(h.int32())]
        h.attributes()
        nc_type = h.int32()
        h.uint32()  # vsize: redundant, and wrong for variables over 4 GiB
        begin = h.int64() if version == 2 else h.uint32()
        found.append((name, dimids, nc_type, begin))
    records = [v for v in found if v[1] and dims[v[1][0]][1] == 0]
    sizes = {}  # bytes of one record of a record variable, of the whole of another
    for name, dimids, nc_type, _begin in found:
        extent = [dims[i][1] for i in dimids]
        if dimids and dims[dimids[0]][1] == 0:
            extent = extent[1:]
        sizes[name] = int(np.prod(extent, dtype=np.int64)) * _NC3_SIZES.get(nc_type, 1)
    # one record holds every record variable, each padded to 4 bytes; a lone record
    # variable is not padded (netCDF-C's NC_computeshapes)
    recsize = (sizes[records[0][0]] if len(records) == 1 else
               sum(sizes[v[0]] + (-sizes[v[0]] % 4) for v in records))
    if numrecs == _STREAMING and records and recsize:
        numrecs = (size - min(v[3] for v in records)) // recsize
    layouts: dict[str, Layout] = {}
    tables: dict[str, ChunkTable] = {}
    for name, dimids, nc_type, begin in found:
        record = bool(dimids) and dims[dimids[0]][1] == 0
        shape = tuple(numrecs if record and j == 0 else dims[i][1]
                      for j, i in enumerate(dimids))
        dtype = _NC3_TYPES.get(nc_type, "|S1")
        chunks = (1, *shape[1:]) if record else shape
        if dtype == "|S1":
            layouts[name] = Layout(dtype=dtype, shape=shape, chunks=chunks,
                                   reason="character data (decoded to strings)")
            continue
        layouts[name] = Layout(dtype=dtype, shape=shape, chunks=chunks)
        n = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if record:
            r = np.arange(numrecs, dtype=np.int64)
            coords = np.zeros((numrecs, len(shape)), np.int64)
            coords[:, 0] = r
            offsets = begin + r * recsize
            lengths = np.full(numrecs, sizes[name], np.int64)
        elif n:
            coords = np.zeros((1, len(shape)), np.int64)
            offsets, lengths = np.array([begin], np.int64), np.array([sizes[name]], np.int64)
        else:
            coords = np.zeros((0, len(shape)), np.int64)
            offsets = lengths = np.zeros(0, np.int64)
        tables[name] = ChunkTable(coords, offsets, lengths, missing=False)
    return layouts, tables
