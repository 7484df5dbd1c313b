"""Fuzzed decoding of every object type: bad bytes give ``FormatError``, nothing else.

What this file proves (issue 10, "fuzzed decoding"; the format is docs/spec.md):

- ``decode_object`` (and ``ChunkTable.from_manifest`` for manifests) turns any byte string into
  either the struct it expects or a ``FormatError``: random bytes, bit flips, truncation,
  extension, changed header fields, and valid frames (correct length and CRC) around malicious
  bodies (msgpack mutations, wrong types, huge or negative numbers, wrong array shapes, deep
  nesting, zstd frames that lie about their size or carry trailing data).
- Whatever decodes is safe to use: its ids are ids, its shapes are shapes, every manifest row
  points inside its blob or url table, so the read path cannot crash on it later.
- The same holds end to end: a repository whose objects were replaced by mutated ones fails
  to open or read with ``FormatError`` (or ``NotFoundError`` for a ref naming a snapshot that
  does not exist), never another exception.
- Decompression is bounded: a zstd frame declaring a huge size, or a real decompression bomb,
  is refused before its output is allocated; proved in a subprocess whose address space is
  capped with ``resource.setrlimit``.

The Hypothesis settings derive from the ``ci`` profile of ``tests/conftest.py`` with a bounded
number of examples; ``ICECHUNK_DIST_FUZZ_EXAMPLES=5000`` runs a deeper search locally.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import struct
import subprocess
import sys
import textwrap
import zlib
from datetime import UTC, datetime
from functools import cache
from typing import Any

import msgspec
import numpy as np
import pytest
import zarr
import zstandard
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import icechunk_dist as icd
from icechunk_dist import FormatError, NotFoundError
from icechunk_dist._types import new_id
from icechunk_dist.format import (
    ChunkTable,
    ManifestData,
    ObjectType,
    RefData,
    RepoInfo,
    SnapshotData,
    TransactionLogData,
    decode_object,
)
from icechunk_dist.storage import Storage

_DEEP = int(os.environ.get("ICECHUNK_DIST_FUZZ_EXAMPLES", "0"))


def fuzz_settings(n: int) -> settings:
    """The ``ci`` profile with ``n`` examples (or the deeper count from the environment)."""
    return settings(
        settings.get_profile("ci"),
        max_examples=_DEEP or n,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


HEADER = struct.Struct("<8sBBBBQ")
CRC = struct.Struct("<I")
STRUCTS: dict[ObjectType, type[Any]] = {
    ObjectType.REPO: RepoInfo,
    ObjectType.SNAPSHOT: SnapshotData,
    ObjectType.MANIFEST: ManifestData,
    ObjectType.TRANSACTION_LOG: TransactionLogData,
    ObjectType.REF: RefData,
}


def kind_of_key(key: str) -> ObjectType | None:
    """The object type stored under a repository key (None for chunks)."""
    if key == "repo":
        return ObjectType.REPO
    top = key.split("/", 1)[0]
    return {
        "snapshots": ObjectType.SNAPSHOT,
        "manifests": ObjectType.MANIFEST,
        "transactions": ObjectType.TRANSACTION_LOG,
        "refs": ObjectType.REF,
    }.get(top)


def frame(body: bytes, otype: int, *, compression: int = 0, version: int = 1,
          reserved: int = 0, magic: bytes = b"ICDIST\x00\x01", length: int | None = None) -> bytes:
    """A frame with a correct CRC around ``body`` (header fields as given)."""
    head = HEADER.pack(magic, version, otype, compression, reserved,
                       len(body) if length is None else length)
    return head + body + CRC.pack(zlib.crc32(head + body))


def unframe(data: bytes) -> tuple[int, int, bytes]:
    """(object type, compression, raw msgpack body) of a frame written by the library."""
    _, _, otype, compression, _, n = HEADER.unpack_from(data)
    body = data[HEADER.size : HEADER.size + n]
    if compression == 1:
        body = zstandard.ZstdDecompressor().decompress(body)
    return otype, compression, body


def decode(data: bytes, otype: ObjectType, name: str = "fuzzed") -> Any:
    """What a reader does with the bytes of one object: decode, and rebuild manifests."""
    obj = decode_object(data, STRUCTS[otype], otype, name=name)
    if otype is ObjectType.MANIFEST:
        table = ChunkTable.from_manifest(obj, name=name)
        # every row must be readable once the manifest decoded
        for i in range(len(table)):
            table.row_payload(i)
        if len(table):
            table.find(tuple(int(c) for c in table.coords[0]))
    return obj


def check_decodes_or_format_error(data: bytes, otype: ObjectType) -> None:
    try:
        decode(data, otype)
    except FormatError as e:
        assert e.object_name == "fuzzed"


# ----------------------------------------------------------------------------- the corpus
def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _dump(storage: Storage) -> dict[str, bytes]:
    return {m.key: await storage.get(m.key) async for m in storage.list("")}


@cache
def corpus() -> dict[str, bytes]:
    """Every metadata object of a small but varied repository (native, inline, virtual and
    loose refs, 0-d and v2 arrays, groups, two commits, a tag, a second branch)."""
    storage = icd.in_memory_storage()
    repo = icd.Repository.create(storage)
    s = repo.writable_session("main")
    root = zarr.open_group(s.store, mode="w", attributes={"title": "fuzz", "nested": {"a": [1]}})
    big = root.create_array("big", shape=(40, 30), chunks=(10, 10), dtype="f8",
                            compressors=None, fill_value=0)
    big[:] = np.arange(1200, dtype="f8").reshape(40, 30)  # native chunks (800 bytes)
    small = root.create_array("small", shape=(12,), chunks=(4,), dtype="i2", fill_value=0)
    small[:] = np.arange(12, dtype="i2")  # inline chunks
    scalar = root.create_array("scalar", shape=(), dtype="i4", fill_value=0)
    scalar[...] = 7
    zarr.create_array(s.store, name="g/v2", shape=(6, 6), chunks=(3, 3), dtype="u1",
                      chunk_key_encoding={"name": "v2", "separator": "."}, fill_value=0)[:] = 1
    zarr.create_array(s.store, name="virt", shape=(8,), chunks=(4,), dtype="<i4",
                      compressors=None, fill_value=0)
    s.store.set_virtual_ref("virt/c/0", "file:///nowhere/legacy.bin", offset=6, length=16,
                            validate_container=False)  # only its manifest row matters here
    s.commit("first", metadata={"who": "fuzz"})
    s = repo.writable_session("main")
    big = zarr.open_array(s.store, path="big", mode="r+")
    big[0:10, 0:10] = -1
    zarr.open_array(s.store, path="big", mode="r+").resize((50, 30))
    first = s.commit("second")
    repo.create_tag("v1", first)
    repo.create_branch("dev", first)
    repo.delete_tag("v1")
    return dict(_run(_dump(storage)))


def corpus_items() -> list[tuple[str, bytes]]:
    """The metadata objects of the corpus (everything but chunks), sorted by key."""
    return sorted((k, v) for k, v in corpus().items() if kind_of_key(k) is not None)


def test_corpus_covers_every_object_type() -> None:
    kinds = {kind_of_key(k) for k, _ in corpus_items()}
    assert kinds == set(STRUCTS)
    for key, data in corpus_items():
        otype = kind_of_key(key)
        assert otype is not None
        decode(data, otype, name=key)  # the unmutated objects decode


valid_object = st.sampled_from(corpus_items())


# ----------------------------------------------------------------------------- raw bytes
@fuzz_settings(300)
@given(data=st.binary(max_size=300), otype=st.sampled_from(list(STRUCTS)))
def test_random_bytes(data: bytes, otype: ObjectType) -> None:
    check_decodes_or_format_error(data, otype)


@fuzz_settings(200)
@given(body=st.binary(max_size=300), otype=st.sampled_from(list(STRUCTS)),
       compression=st.integers(0, 3))
def test_random_body_in_valid_frame(body: bytes, otype: ObjectType, compression: int) -> None:
    check_decodes_or_format_error(frame(body, int(otype), compression=compression), otype)


# ----------------------------------------------------------------------------- byte mutations
@st.composite
def mutated_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    """Flip bits, truncate, extend, overwrite or splice ``data``."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "extend", "overwrite", "insert", "delete"]))
        if op == "flip" and out:
            i = draw(st.integers(0, len(out) - 1))
            out[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del out[draw(st.integers(0, len(out))):]
        elif op == "extend":
            out += draw(st.binary(min_size=1, max_size=16))
        elif op == "overwrite" and out:
            i = draw(st.integers(0, len(out) - 1))
            patch = draw(st.binary(min_size=1, max_size=9))
            out[i : i + len(patch)] = patch
        elif op == "insert":
            i = draw(st.integers(0, len(out)))
            out[i:i] = draw(st.binary(min_size=1, max_size=9))
        elif op == "delete" and out:
            i = draw(st.integers(0, len(out) - 1))
            del out[i : i + draw(st.integers(1, 9))]
    return bytes(out)


@fuzz_settings(150)
@given(st.data())
def test_mutated_frames(data: st.DataObject) -> None:
    """Mutations of whole objects (most stop at the CRC or length check)."""
    key, raw = data.draw(valid_object)
    otype = kind_of_key(key)
    assert otype is not None
    check_decodes_or_format_error(data.draw(mutated_bytes(raw)), otype)


@fuzz_settings(150)
@given(st.data())
def test_changed_header_fields(data: st.DataObject) -> None:
    """Any header field changed, with the CRC and (maybe) the length made consistent."""
    key, raw = data.draw(valid_object)
    otype = kind_of_key(key)
    assert otype is not None
    magic, version, ot, compression, reserved, n = HEADER.unpack_from(raw)
    body = raw[HEADER.size : HEADER.size + n]
    field = data.draw(st.sampled_from(["version", "type", "compression", "reserved", "length"]))
    b = st.integers(0, 255)
    if field == "version":
        version = data.draw(b)
    elif field == "type":
        ot = data.draw(b)
    elif field == "compression":
        compression = data.draw(b)
    elif field == "reserved":
        reserved = data.draw(b)
    else:
        n = data.draw(st.one_of(st.integers(0, 2 * n + 8), st.just(2**64 - 1)))
    check_decodes_or_format_error(
        frame(body, ot, compression=compression, version=version, reserved=reserved, magic=magic,
              length=n),
        otype,
    )


@fuzz_settings(200)
@given(st.data(), st.booleans())
def test_mutated_bodies_in_valid_frames(data: st.DataObject, compress: bool) -> None:
    """Byte mutations of the msgpack body itself, re-framed with a correct CRC."""
    _, raw = data.draw(valid_object)
    otype, _, body = unframe(raw)
    body = data.draw(mutated_bytes(body))
    if compress:
        framed = frame(zstandard.ZstdCompressor().compress(body), otype, compression=1)
    else:
        framed = frame(body, otype)
    check_decodes_or_format_error(framed, ObjectType(otype))


# ----------------------------------------------------------------------------- structured bodies
def _deep(depth: int) -> str:
    """A placeholder that :func:`encode_tree` replaces by ``depth`` nested msgpack arrays (too
    deep for msgspec to encode from Python objects, so it is spliced in as bytes)."""
    return f"\x00deep:{depth}\x00"


def encode_tree(tree: Any) -> bytes:
    """msgpack of a decoded (and mutated) body, with :func:`_deep` placeholders expanded."""
    # a placeholder is a fixstr: its header byte, then the text
    return _DEEP_MARK.sub(lambda m: b"\x91" * int(m[1]) + b"\x00",
                          msgspec.msgpack.encode(tree))


_DEEP_MARK = re.compile(rb"[\xa0-\xbf]\x00deep:(\d+)\x00")


MALICIOUS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.sampled_from([-1, 0, 2**31, 2**62, 2**63 - 1, 2**64 - 1, -(2**63)]),
    st.text(max_size=30),
    st.sampled_from(["", "/", ".", "..", "0" * 20, "Z" * 20, "not an id", "a" * 10_000]),
    st.binary(max_size=64),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True),
    st.lists(st.integers(-3, 2**63), max_size=5),
    st.lists(st.integers(-(2**63), 2**64 - 1), max_size=3).map(tuple),
    st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**63 - 1), max_size=3),
    st.integers(1, 100_000).map(_deep),
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a field, list item or map value in a decoded msgpack tree."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:8]):
            out += _paths(v, (*prefix, i))
    return out


def _replace(tree: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(tree, dict):
        return {**tree, head: _replace(tree[head], rest, new)}
    items = list(tree)
    items[head] = _replace(items[head], rest, new)
    return items


@st.composite
def structurally_mutated(draw: st.DrawFn) -> tuple[bytes, ObjectType]:
    """A valid object whose decoded body has some fields replaced by malicious values,
    removed, or added, re-encoded as msgpack inside a correct frame."""
    _, raw = draw(valid_object)
    otype, compression, body = unframe(raw)
    tree = msgspec.msgpack.decode(body)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(tree)))
        action = draw(st.sampled_from(["replace", "replace", "replace", "drop", "add"]))
        if action == "drop" and path and isinstance(tree, dict):
            parent = _get(tree, path[:-1])
            if isinstance(parent, dict):
                tree = _replace(tree, path[:-1], {k: v for k, v in parent.items()
                                                  if k != path[-1]})
                continue
        if action == "add" and isinstance(_get(tree, path), dict):
            current = _get(tree, path)
            tree = _replace(tree, path, {**current, draw(st.text(max_size=8)): draw(MALICIOUS)})
            continue
        tree = _replace(tree, path, draw(MALICIOUS))
    new_body = encode_tree(tree)
    if compression == 1 or draw(st.booleans()):
        return frame(zstandard.ZstdCompressor().compress(new_body), otype, compression=1), \
            ObjectType(otype)
    return frame(new_body, otype), ObjectType(otype)


def _get(tree: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        tree = tree[p]
    return tree


@fuzz_settings(400)
@given(structurally_mutated())
def test_malicious_field_values(case: tuple[bytes, ObjectType]) -> None:
    data, otype = case
    check_decodes_or_format_error(data, otype)


# ----------------------------------------------------------------------------- end to end
READERS = ["open", "log", "read", "diff"]


async def _load(storage: Storage, objects: dict[str, bytes]) -> None:
    for k, v in objects.items():
        await storage.put(k, v)


async def _read_keys(store: Any) -> int:
    """Every key of a session's store, listed and read through the zarr Store API (the bytes
    themselves are not decoded: corrupt chunk bytes or zarr.json text are zarr's to reject)."""
    from zarr.core.buffer import default_buffer_prototype

    proto = default_buffer_prototype()
    n = 0
    keys = [k async for k in store.list()]
    for key in keys:
        # the virtual chunk's file does not exist: a storage error, not a format error
        with contextlib.suppress(icd.StorageError):
            buf = await store.get(key, proto)
            n += 0 if buf is None else len(buf.to_bytes())
        await store.getsize(key) if await store.exists(key) else None
    for prefix in ("", "big", "g"):
        [k async for k in store.list_dir(prefix)]
    return n


def read_everything(storage: Storage) -> None:
    """Open the repository and read every ref, snapshot, log and key a user can reach."""
    repo = icd.Repository.open(storage)
    for branch in sorted(repo.list_branches()):
        history = list(repo.ancestry(branch=branch))
        _run(_read_keys(repo.readonly_session(branch).store))
        for snap in history:
            if snap.parent_id is not None:
                repo.diff(from_snapshot_id=snap.parent_id, to_snapshot_id=snap.id)
    for tag in sorted(repo.list_tags()):
        _run(_read_keys(repo.readonly_session(tag=tag).store))


def test_unmutated_repository_reads() -> None:
    storage = icd.in_memory_storage()
    _run(_load(storage, corpus()))
    read_everything(storage)


@fuzz_settings(60)
@given(st.data())
def test_mutated_repository_reads_fail_cleanly(data: st.DataObject) -> None:
    """One object of a whole repository replaced by a structurally mutated or byte-mutated
    copy of itself: reading everything either works or raises FormatError/NotFoundError."""
    objects = dict(corpus())
    key = data.draw(st.sampled_from([k for k, _ in corpus_items()]))
    otype, _, body = unframe(objects[key])
    if data.draw(st.booleans()):
        tree = msgspec.msgpack.decode(body)
        path = data.draw(st.sampled_from(_paths(tree)))
        body = encode_tree(_replace(tree, path, data.draw(MALICIOUS)))
    else:
        body = data.draw(mutated_bytes(body))
    objects[key] = frame(body, otype)
    storage = icd.in_memory_storage()
    _run(_load(storage, objects))
    with contextlib.suppress(FormatError, NotFoundError):
        read_everything(storage)


# ----------------------------------------------------------------------------- bounded memory
def rle_bomb(total: int, *, declare: int | None) -> bytes:
    """A hand-made zstd frame of ``total`` zero bytes (RLE blocks, 4 bytes per 128 KiB), that
    declares ``declare`` as its content size (None: no content size in the header)."""
    out = bytearray(b"\x28\xb5\x2f\xfd")
    if declare is None:
        out += bytes([0x00, 0x58])  # no FCS, not single segment; window descriptor: 8 MiB
    else:
        out += bytes([0xC0]) + struct.pack("<Q", declare)  # 8-byte FCS, no window descriptor
        out[4] = 0xE0  # single segment: the window is the declared size
    block = 128 * 1024
    left = total
    while left > 0:
        size = min(block, left)
        left -= size
        last = 1 if left == 0 else 0
        header = last | (1 << 1) | (size << 3)  # RLE block
        out += header.to_bytes(3, "little") + b"\x00"
    if total == 0:
        out += (1).to_bytes(3, "little")  # one empty raw last block
    return bytes(out)


def test_rle_bomb_helper_is_a_real_zstd_frame() -> None:
    small = rle_bomb(300_000, declare=300_000)
    assert zstandard.ZstdDecompressor().decompress(small) == bytes(300_000)
    assert zstandard.get_frame_parameters(rle_bomb(10, declare=None)).content_size == \
        zstandard.CONTENTSIZE_UNKNOWN


def test_declared_sizes_are_checked_before_decompressing() -> None:
    for bomb in (rle_bomb(1024, declare=2**40), rle_bomb(1024, declare=None),
                 rle_bomb(1024, declare=100)):
        with pytest.raises(FormatError, match="zstd"):
            decode_object(frame(bomb, 2, compression=1), SnapshotData, ObjectType.SNAPSHOT,
                          name="bomb")


def test_trailing_bytes_after_the_zstd_frame() -> None:
    key, raw = next((k, v) for k, v in corpus_items() if k.startswith("snapshots/"))
    otype, _, body = unframe(raw)
    z = zstandard.ZstdCompressor().compress(body)
    assert decode_object(frame(z, otype, compression=1), SnapshotData, ObjectType.SNAPSHOT,
                         name=key)
    with pytest.raises(FormatError, match="trailing"):
        decode_object(frame(z + b"junk", otype, compression=1), SnapshotData,
                      ObjectType.SNAPSHOT, name=key)
    with pytest.raises(FormatError, match="trailing"):
        decode_object(frame(z + z, otype, compression=1), SnapshotData, ObjectType.SNAPSHOT,
                      name=key)


_BOMB_SCRIPT = textwrap.dedent(
    """
    import resource, struct, sys, zlib
    sys.path.insert(0, {tests!r})
    from test_fuzz_format import frame, rle_bomb
    from icechunk_dist import FormatError
    from icechunk_dist.format import ObjectType, SnapshotData, decode_object
    import icechunk_dist.format._codec as codec

    # the address space this process already uses, plus 256 MiB: a decoder that allocates a
    # bomb's output (GiBs) dies with MemoryError here instead of refusing it
    with open("/proc/self/statm") as f:
        used = int(f.read().split()[0]) * resource.getpagesize()
    limit = used + 256 * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    def attempt(what, body):
        try:
            decode_object(frame(body, 2, compression=1), SnapshotData, ObjectType.SNAPSHOT,
                          name=what)
        except FormatError as e:
            print("refused", what, "|", e)
        else:
            print("DECODED", what)

    attempt("declares 1 TiB", rle_bomb(4096, declare=2**40))
    attempt("declares 8 GiB, holds 8 GiB", rle_bomb(8 * 2**30, declare=8 * 2**30))
    attempt("declares nothing, holds 8 GiB", rle_bomb(8 * 2**30, declare=None))
    # under a smaller cap, an honest frame just above it is refused too (no output allocated)
    codec.MAX_BODY_BYTES = 64 * 2**20
    attempt("declares 512 MiB over a 64 MiB cap", rle_bomb(512 * 2**20, declare=512 * 2**20))
    """
)


def test_decompression_bombs_under_a_memory_limit() -> None:
    if not os.path.exists("/proc/self/statm"):
        pytest.skip("needs /proc to measure the process's address space")
    script = _BOMB_SCRIPT.format(tests=os.path.dirname(__file__))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 4, proc.stdout
    assert all(line.startswith("refused") for line in lines), proc.stdout


# ----------------------------------------------------------------------------- regressions
def test_fresh_ids_are_valid_in_every_field() -> None:
    # the validation of decoded ids must accept every id the library writes
    sid = new_id()
    snap = SnapshotData(id=sid, parent_id=None, written_at=datetime.now(UTC), message="")
    from icechunk_dist.format import encode_object

    assert decode_object(encode_object(snap, ObjectType.SNAPSHOT), SnapshotData,
                         ObjectType.SNAPSHOT, name="s").id == sid


_ = example  # regression examples are attached with @example where a bug was found


def test_virtual_ref_into_a_missing_directory_is_a_storage_error(tmp_path: Any) -> None:
    # found by this file's corpus: obstore's LocalStore refused the missing directory with a
    # raw obstore GenericError instead of our StorageError
    # (reads need an authorized container since virtual chunk containers exist)
    config = icd.RepositoryConfig()
    config.set_virtual_chunk_container(icd.VirtualChunkContainer(
        f"file://{tmp_path}/", icd.local_filesystem_store(str(tmp_path))))
    repo = icd.Repository.create(icd.in_memory_storage(), config, authorize_virtual_chunk_access={
        f"file://{tmp_path}/": icd.LocalFileSystemAccess})
    s = repo.writable_session("main")
    zarr.create_array(s.store, name="v", shape=(4,), chunks=(4,), dtype="<i4",
                      compressors=None, fill_value=0)
    s.store.set_virtual_ref("v/c/0", f"file://{tmp_path}/missing/dir/x.bin", offset=0,
                            length=16)
    s.commit("dangling virtual ref")
    with pytest.raises(icd.StorageError, match="cannot read virtual chunk"):
        zarr.open_array(repo.readonly_session("main").store, path="v", mode="r")[:]


def test_writers_refuse_what_readers_would_refuse(monkeypatch: pytest.MonkeyPatch) -> None:
    import icechunk_dist.format._codec as codec
    from icechunk_dist.format import encode_object

    snap = SnapshotData(id=new_id(), parent_id=None, written_at=datetime.now(UTC),
                        message="x" * 5000)
    monkeypatch.setattr(codec, "MAX_BODY_BYTES", 4096)
    with pytest.raises(icd.InvalidInputError, match="larger than"):
        encode_object(snap, ObjectType.SNAPSHOT)


@pytest.mark.parametrize("field", ["metadata", "unknown_future_field"])
def test_deeply_nested_body_is_a_format_error(field: str) -> None:
    # found by test_malicious_field_values: msgspec raised RecursionError on a free-form map
    # (commit metadata, repository config) or a skipped unknown field nested 100000 deep
    _, raw = next((k, v) for k, v in corpus_items() if k.startswith("snapshots/"))
    otype, _, body = unframe(raw)
    tree = msgspec.msgpack.decode(body)
    tree[field] = {"k": _deep(100_000)}
    with pytest.raises(FormatError, match="nested too deeply"):
        decode_object(frame(encode_tree(tree), otype), SnapshotData, ObjectType.SNAPSHOT,
                      name="deep")


@pytest.mark.parametrize("config", [{"manifest_split_size": 0},
                                    {"inline_chunk_threshold_bytes": ""},
                                    {"compression_level": 99}])
def test_invalid_repository_config_is_a_format_error(config: dict[str, Any]) -> None:
    # found by test_mutated_repository_reads_fail_cleanly: Repository.open raised
    # InvalidInputError (bad input from the caller) for a corrupt repository marker
    objects = dict(corpus())
    otype, _, body = unframe(objects["repo"])
    tree = msgspec.msgpack.decode(body)
    tree["config"] = {**tree["config"], **config}
    objects["repo"] = frame(encode_tree(tree), otype)
    storage = icd.in_memory_storage()
    _run(_load(storage, objects))
    with pytest.raises(FormatError, match="repo: "):
        icd.Repository.open(storage)


def _with_snapshot_edit(edit: Any) -> Storage:
    """The corpus with the tip snapshot of main edited by ``edit(tree)`` (in place)."""
    objects = dict(corpus())
    repo_storage = icd.in_memory_storage()
    _run(_load(repo_storage, objects))
    tip = icd.Repository.open(repo_storage).lookup_branch("main")
    key = f"snapshots/{tip}"
    otype, _, body = unframe(objects[key])
    tree = msgspec.msgpack.decode(body)
    edit(tree)
    objects[key] = frame(encode_tree(tree), otype)
    storage = icd.in_memory_storage()
    _run(_load(storage, objects))
    return storage


def _node(tree: dict[str, Any], path: str) -> dict[str, Any]:
    return next(n for n in tree["nodes"] if n["path"] == path)


SNAPSHOT_EDITS = {
    "split shape of zero": lambda t: _node(t, "big")["array"].update(split_shape=[0, 0]),
    "split shape too short": lambda t: _node(t, "big")["array"].update(split_shape=[1]),
    "chunk shape of zero": lambda t: _node(t, "big")["array"].update(chunk_shape=[0, 10]),
    "negative shape": lambda t: _node(t, "big")["array"].update(shape=[-5, 30]),
    "shape and chunks differ": lambda t: _node(t, "big")["array"].update(chunk_shape=[10]),
    "empty separator": lambda t: _node(t, "big")["array"].update(separator=""),
    "unknown encoding": lambda t: _node(t, "big")["array"].update(encoding="v9"),
    "control character in a manifest id": lambda t: _node(t, "big")["manifests"][0].update(
        id="\x10" + _node(t, "big")["manifests"][0]["id"][1:]),
    "manifest split of the wrong length": lambda t: _node(t, "big")["manifests"][0].update(
        split=[0]),
    "negative manifest split": lambda t: _node(t, "big")["manifests"][0].update(split=[-1, 0]),
    "node id not an id": lambda t: _node(t, "big").update(node_id="../../etc"),
    "duplicate node": lambda t: t["nodes"].append(_node(t, "big")),
    "parent id not an id": lambda t: t.update(parent_id="x"),
    "unknown loose kind": lambda t: t["nodes"] and t.update(
        loose=[{"key": "x/y", "kind": 9}]),
    "negative loose length": lambda t: t.update(
        loose=[{"key": "x/y", "kind": 1, "length": -4}]),
}


@pytest.mark.parametrize("edit", list(SNAPSHOT_EDITS), ids=list(SNAPSHOT_EDITS))
def test_malicious_snapshot_is_refused_when_read(edit: str) -> None:
    # found by test_mutated_repository_reads_fail_cleanly and by reading the read path: a
    # snapshot with these values decoded, then reads crashed (ZeroDivisionError on a zero
    # split, ValueError on an empty separator, InvalidInputError on a key with a control
    # character, wrong refs from a short split)
    storage = _with_snapshot_edit(SNAPSHOT_EDITS[edit])
    with pytest.raises(FormatError, match="snapshots/"):
        read_everything(storage)


def _edit_manifest(**changes: Any) -> bytes:
    from icechunk_dist.format import TableBuilder

    b = TableBuilder(2)
    b.add_native((0, 0), bytes(12), 100)
    b.add_inline((0, 1), b"abcd")
    b.add_virtual((1, 0), "file:///x", 0, 8, None)
    m = ChunkTable.to_manifest(b.build(), new_id())
    from icechunk_dist.format import encode_object

    return encode_object(msgspec.structs.replace(m, **changes), ObjectType.MANIFEST)


MANIFEST_EDITS = {
    "unknown row kind": {"kinds": bytes([0, 1, 7])},
    "negative coordinate": {"coords": struct.pack("<6q", 0, 0, 0, 1, -1, 0)},
    "unsorted rows": {"coords": struct.pack("<6q", 1, 0, 0, 1, 0, 0)},
    "duplicate rows": {"coords": struct.pack("<6q", 0, 0, 0, 0, 1, 0)},
    "inline chunk past its blob": {"offsets": struct.pack("<3Q", 0, 2, 0)},
    "huge length": {"lengths": struct.pack("<3Q", 2**64 - 1, 4, 8)},
    "url index on a native row": {"url_idx": struct.pack("<3i", 0, -1, 0)},
    "virtual row without a url": {"url_idx": struct.pack("<3i", -1, -1, -1)},
    "node id not an id": {"node_id": "no"},
    "absurd dimensionality": {"ndim": 10**6},
}


def test_manifest_edits_decode_unedited() -> None:
    decode(_edit_manifest(), ObjectType.MANIFEST)


@pytest.mark.parametrize("edit", list(MANIFEST_EDITS), ids=list(MANIFEST_EDITS))
def test_malicious_manifest_is_refused(edit: str) -> None:
    # a manifest whose columns have the right sizes but say impossible things: before these
    # checks it decoded and its rows then read outside the blob, missed lookups (unsorted),
    # or raised IndexError (url index)
    with pytest.raises(FormatError, match="fuzzed"):
        decode(_edit_manifest(**MANIFEST_EDITS[edit]), ObjectType.MANIFEST)
