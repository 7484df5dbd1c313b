"""The on-disk format: ids, framing of every object type, bad bytes, columnar chunk tables."""

from __future__ import annotations

import json
import struct
import zlib
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
import pytest
import zstandard

from icechunk_dist import FormatError, InvalidInputError
from icechunk_dist._types import ID_CHARS, decode_id, encode_id, new_id, new_id_bytes
from icechunk_dist.format import (
    FORMAT_VERSION,
    KIND_INLINE,
    KIND_NATIVE,
    KIND_VIRTUAL,
    ArrayInfo,
    ChunkRefRecord,
    ChunkTable,
    ManifestData,
    ManifestRef,
    NodeRecord,
    ObjectType,
    RefData,
    RepoInfo,
    SnapshotData,
    TableBuilder,
    TransactionLogData,
    TxChunks,
    decode_object,
    encode_object,
)
from icechunk_dist.format._codec import MAGIC

NOW = datetime(2024, 5, 17, 12, 30, 0, 123456, tzinfo=UTC)
HEADER = struct.Struct("<8sBBBBQ")


# ------------------------------------------------------------------------------------ ids
class TestIds:
    def test_round_trip(self) -> None:
        for raw in (bytes(12), b"\xff" * 12, bytes(range(12)), new_id_bytes()):
            text = encode_id(raw)
            assert len(text) == ID_CHARS == 20
            assert set(text) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
            assert decode_id(text) == raw
            assert decode_id(text.lower()) == raw  # Crockford decoding is case-insensitive

    def test_known_values(self) -> None:
        assert encode_id(bytes(12)) == "0" * 20
        assert encode_id(b"\x00" * 11 + b"\x01") == "0" * 19 + "1"
        assert encode_id(b"\x00" * 11 + b"\x1f") == "0" * 19 + "Z"
        assert encode_id(b"\xff" * 12) == "1" + "Z" * 19  # 96 bits: the top char holds 1 bit

    def test_order_preserved(self) -> None:
        raws = sorted(new_id_bytes() for _ in range(200))
        assert [encode_id(r) for r in raws] == sorted(encode_id(r) for r in raws)

    def test_new_ids_are_distinct(self) -> None:
        ids = {new_id() for _ in range(1000)}
        assert len(ids) == 1000

    @pytest.mark.parametrize(
        "bad",
        [
            "",
            "0" * 19,  # too short
            "0" * 21,  # too long
            "0" * 19 + "U",  # U is not in Crockford base32
            "0" * 19 + "I",
            "0" * 19 + "-",
            "2" + "0" * 19,  # more than 96 bits
            None,
            b"0" * 20,
        ],
    )
    def test_bad_id_text(self, bad: object) -> None:
        with pytest.raises(InvalidInputError, match="not an id"):
            decode_id(bad)  # type: ignore[arg-type]

    @pytest.mark.parametrize("n", [0, 11, 13])
    def test_bad_id_bytes(self, n: int) -> None:
        with pytest.raises(InvalidInputError):
            encode_id(b"\x01" * n)

    def test_invalid_input_is_value_error(self) -> None:
        with pytest.raises(ValueError):
            decode_id("nope")


# ------------------------------------------------------------------------------- framing
def _snapshot(nodes: int = 2) -> SnapshotData:
    info = ArrayInfo(shape=(100, 20), chunk_shape=(10, 10), encoding="default", separator="/",
                     split_shape=(10, 2))
    recs = tuple(
        NodeRecord(
            path=f"g/a{i}", node_id=new_id(), kind="array", metadata=b'{"node_type":"array"}',
            array=info,
            manifests=(ManifestRef(id=new_id(), split=(0, 0), count=7),),
        )
        for i in range(nodes)
    )
    group = NodeRecord(path="g", node_id=new_id(), kind="group", metadata=b"{}")
    loose = (
        ChunkRefRecord(key="x/other", kind=KIND_INLINE, data=b"abc", length=3),
        ChunkRefRecord(key="x/big", kind=KIND_NATIVE, id=new_id(), length=4096),
        ChunkRefRecord(key="x/virt", kind=KIND_VIRTUAL, url="s3://b/k", offset=5, length=9,
                       etag="abc"),
    )
    return SnapshotData(id=new_id(), parent_id=new_id(), written_at=NOW, message="msg",
                        metadata={"author": "me", "n": 3, "nested": {"a": [1, 2]}},
                        nodes=(group, *recs), loose=loose)


def _manifest() -> ManifestData:
    b = TableBuilder(2)
    for i in range(50):
        b.add_native((i, 0), bytes([i]) * 12, 1000 + i)
    b.add_inline((0, 1), b"inline!")
    b.add_virtual((1, 1), "s3://bucket/file.nc", 100, 200, "etag-1")
    return b.build().to_manifest(new_id())


SAMPLES: list[tuple[str, msgspec.Struct, ObjectType]] = [
    ("repo", RepoInfo(format_version=1, created_at=NOW, initial_snapshot_id=new_id(),
                      config={"inline_chunk_threshold_bytes": 512}), ObjectType.REPO),
    ("snapshot-small", SnapshotData(id=new_id(), parent_id=None, written_at=NOW,
                                    message="init"), ObjectType.SNAPSHOT),
    ("snapshot-big", _snapshot(40), ObjectType.SNAPSHOT),
    ("manifest", _manifest(), ObjectType.MANIFEST),
    ("txlog", TransactionLogData(
        snapshot_id=new_id(), new_groups=("g",), new_arrays=("g/a",), updated_arrays=("b",),
        deleted_groups=("old",),
        chunks=(TxChunks(path="g/a", node_id=new_id(), ndim=2, count=2,
                         coords=np.array([[0, 0], [3, 4]], "<i8").tobytes()),),
        loose_keys=("x/other",), extended_arrays={"b": (10, 4)}), ObjectType.TRANSACTION_LOG),
    ("ref", RefData(snapshot_id=new_id(), write_id=new_id(), written_at=NOW), ObjectType.REF),
    ("ref-deleted", RefData(snapshot_id=None, write_id=new_id(), written_at=NOW),
     ObjectType.REF),
]


@pytest.mark.parametrize(("label", "obj", "otype"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_round_trip(label: str, obj: msgspec.Struct, otype: ObjectType) -> None:
    raw = encode_object(obj, otype)
    magic, version, kind, _compression, reserved, body_len = HEADER.unpack_from(raw)
    assert magic == MAGIC == b"ICDIST\x00\x01"
    assert version == FORMAT_VERSION == 1
    assert kind == int(otype)
    assert reserved == 0
    assert len(raw) == HEADER.size + body_len + 4
    assert struct.unpack_from("<I", raw, len(raw) - 4)[0] == zlib.crc32(raw[:-4])
    back = decode_object(raw, type(obj), otype, name=f"objects/{label}")
    assert back == obj
    # bytes, bytearray and memoryview are all accepted
    assert decode_object(memoryview(bytearray(raw)), type(obj), otype, name=label) == obj


def test_small_bodies_stored_raw_large_compressed() -> None:
    small = encode_object(RefData(snapshot_id=None, write_id="W", written_at=NOW), ObjectType.REF)
    assert HEADER.unpack_from(small)[3] == 0
    snap = _snapshot(40)
    big = encode_object(snap, ObjectType.SNAPSHOT)
    assert HEADER.unpack_from(big)[3] == 1
    body_len = HEADER.unpack_from(big)[5]
    body = zstandard.ZstdDecompressor().decompress(big[HEADER.size:HEADER.size + body_len])
    assert msgspec.msgpack.decode(body, type=SnapshotData) == snap


def test_body_is_plain_msgpack_not_pickle() -> None:
    obj = RefData(snapshot_id="S", write_id="W", written_at=NOW)
    raw = encode_object(obj, ObjectType.REF)
    body = raw[HEADER.size:-4]
    # a msgpack map of field name -> value, readable by any msgpack library
    assert msgspec.msgpack.decode(body) == {"snapshot_id": "S", "write_id": "W",
                                            "written_at": NOW}


# ------------------------------------------------------------------------ bad bytes
NAME = "snapshots/0123456789ABCDEFGHJK"


def _good() -> bytes:
    return encode_object(_snapshot(3), ObjectType.SNAPSHOT)


def _decode(raw: bytes, otype: ObjectType = ObjectType.SNAPSHOT) -> object:
    return decode_object(raw, SnapshotData, otype, name=NAME)


def _reframe(body: bytes, *, version: int = FORMAT_VERSION, otype: int = 2,
             compression: int = 0) -> bytes:
    head = HEADER.pack(MAGIC, version, otype, compression, 0, len(body))
    return head + body + struct.pack("<I", zlib.crc32(head + body))


def _expect(raw: bytes, match: str, otype: ObjectType = ObjectType.SNAPSHOT) -> FormatError:
    with pytest.raises(FormatError, match=match) as info:
        _decode(raw, otype)
    err = info.value
    assert err.object_name == NAME
    assert str(err).startswith(NAME + ": ")
    return err


@pytest.mark.parametrize("cut", [0, 1, 10, 23, -1, -4, -50])
def test_truncated(cut: int) -> None:
    raw = _good()
    _expect(raw[:cut], "truncated")


def test_padded() -> None:
    _expect(_good() + b"\x00", "truncated or padded")


@pytest.mark.parametrize("where", ["header-type", "body-first", "body-middle", "crc"])
def test_flipped_byte_fails_checksum(where: str) -> None:
    raw = bytearray(_good())
    pos = {"header-type": 9, "body-first": 20, "body-middle": len(raw) // 2,
           "crc": len(raw) - 1}[where]
    raw[pos] ^= 0x40
    _expect(bytes(raw), "checksum mismatch")


def test_every_single_bit_flip_is_caught() -> None:
    raw = encode_object(RefData(snapshot_id="S", write_id="W", written_at=NOW), ObjectType.REF)
    for i in range(len(raw)):
        for bit in (1, 0x80):
            bad = bytearray(raw)
            bad[i] ^= bit
            with pytest.raises(FormatError):
                decode_object(bytes(bad), RefData, ObjectType.REF, name="r")


@pytest.mark.parametrize(
    "foreign",
    [
        b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(40),
        json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}).encode(),
        b"\x80\x04\x95" + bytes(40),  # a pickle header: never unpickled
        bytes(64),
    ],
    ids=["png", "json", "pickle", "zeros"],
)
def test_foreign_bytes(foreign: bytes) -> None:
    _expect(foreign, "not an icechunk_dist object")


def test_empty_object() -> None:
    _expect(b"", "truncated object \\(0 bytes\\)")


@pytest.mark.parametrize("otype", [ObjectType.MANIFEST, ObjectType.REF, ObjectType.REPO,
                                   ObjectType.TRANSACTION_LOG])
def test_wrong_object_type(otype: ObjectType) -> None:
    err = _expect(_good(), f"expected a {otype.name.lower()} object, found a snapshot", otype)
    assert "snapshot" in str(err)


def test_unknown_object_type() -> None:
    _expect(_reframe(b"\x80", otype=99), "unknown object type 99")


def test_newer_version() -> None:
    err = _expect(_reframe(b"\x80", version=FORMAT_VERSION + 1), "newer format version 2")
    assert "upgrade" in str(err)


def test_unknown_compression() -> None:
    _expect(_reframe(b"\x80", compression=7), "unknown compression 7")


def test_bad_zstd_body() -> None:
    _expect(_reframe(b"definitely not zstd", compression=1), "cannot decompress")


@pytest.mark.parametrize(
    "body",
    [
        b"\xc1",  # reserved msgpack byte
        b"\x93\x01\x02",  # array declared 3 items, has 2
        msgspec.msgpack.encode({"id": 5, "parent_id": None}),  # wrong field type
        msgspec.msgpack.encode({"message": "no id"}),  # missing required fields
        msgspec.msgpack.encode([1, 2, 3]),
    ],
    ids=["reserved", "short-array", "wrong-type", "missing-fields", "not-a-map"],
)
def test_garbage_body_with_valid_frame(body: bytes) -> None:
    _expect(_reframe(body), "invalid snapshot body")


def test_garbage_zstd_body_with_valid_frame() -> None:
    body = zstandard.ZstdCompressor().compress(b"\xc1" * 400)
    _expect(_reframe(body, compression=1), "invalid snapshot body")


def test_unknown_fields_are_ignored() -> None:
    """Schema evolution: a newer writer's extra field does not break an older reader."""
    ref = RefData(snapshot_id=new_id(), write_id=new_id(), written_at=NOW)
    doc = msgspec.to_builtins(ref)
    doc["added_in_a_later_minor"] = {"x": 1}
    raw = _reframe(msgspec.msgpack.encode(doc), otype=int(ObjectType.REF))
    got = decode_object(raw, RefData, ObjectType.REF, name="r")
    assert got == ref


def test_missing_optional_fields_take_defaults() -> None:
    doc = {"id": new_id(), "parent_id": None, "written_at": NOW, "message": "m"}
    raw = _reframe(msgspec.msgpack.encode(doc))
    snap = decode_object(raw, SnapshotData, ObjectType.SNAPSHOT, name=NAME)
    assert snap.nodes == () and snap.loose == () and snap.metadata == {}


# -------------------------------------------------------------------------- chunk tables
def _table(rows: list[tuple[tuple[int, ...], int]], ndim: int = 2) -> ChunkTable:
    b = TableBuilder(ndim)
    for coord, tag in rows:
        b.add_native(coord, bytes([tag]) * 12, 100 + tag)
    return b.build()


def _coords(t: ChunkTable) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in row) for row in t.coords]


class TestChunkTable:
    def test_normalize_sorts_and_last_wins(self) -> None:
        t = _table([((2, 0), 1), ((0, 5), 2), ((2, 0), 3), ((0, 0), 4), ((0, 5), 5)])
        n = t.normalized()
        assert n.sorted_unique
        assert _coords(n) == [(0, 0), (0, 5), (2, 0)]
        tags = [int(r[0]) for r in n.ids]
        assert tags == [4, 5, 3]  # the last write of each coordinate wins
        assert list(n.lengths) == [104, 105, 103]
        assert n.normalized() is n

    def test_sort_is_numeric_not_textual(self) -> None:
        t = _table([((10, 0), 1), ((2, 0), 2), ((1, 300), 3), ((1, 4), 4)])
        assert _coords(t.normalized()) == [(1, 4), (1, 300), (2, 0), (10, 0)]

    def test_find(self) -> None:
        n = _table([((i, j), i * 10 + j) for i in range(5) for j in range(3)]).normalized()
        assert n.find((3, 2)) == 3 * 3 + 2
        assert n.row_payload(n.find((3, 2))) == (KIND_NATIVE, (encode_id(bytes([32]) * 12), 0,
                                                               132))
        assert n.find((5, 0)) == -1
        assert ChunkTable.empty(2).find((0, 0)) == -1
        with pytest.raises(ValueError):
            _table([((1, 0), 1), ((0, 0), 2)]).find((0, 0))

    def test_split(self) -> None:
        t = _table([((i, j), i + j) for i in range(7) for j in range(5)]).normalized()
        parts = t.split((3, 2))
        assert sorted(parts) == [(a, b) for a in range(3) for b in range(3)]
        for (si, sj), part in parts.items():
            for i, j in _coords(part):
                assert (i // 3, j // 2) == (si, sj)
            assert part.sorted_unique
        assert sum(len(p) for p in parts.values()) == len(t)
        back = ChunkTable.concat(list(parts.values())).normalized()
        assert _coords(back) == _coords(t)
        assert ChunkTable.empty(2).split((3, 2)) == {}

    def test_concat_later_wins_and_rebases_inline_blob(self) -> None:
        a = TableBuilder(1)
        a.add_inline((0,), b"AAAA")
        a.add_inline((1,), b"bb")
        b = TableBuilder(1)
        b.add_inline((1,), b"CCC")
        b.add_virtual((2,), "s3://x/y", 10, 20, None)
        c = TableBuilder(1)
        c.add_virtual((3,), "s3://x/z", 1, 2, "e")
        t = ChunkTable.concat([a.build(), b.build(), c.build()]).normalized()
        assert [t.row_payload(i) for i in range(len(t))] == [
            (KIND_INLINE, b"AAAA"),
            (KIND_INLINE, b"CCC"),
            (KIND_VIRTUAL, ("s3://x/y", None, 0, 10, 20)),
            (KIND_VIRTUAL, ("s3://x/z", "e", 0, 1, 2)),
        ]

    def test_concat_edge_cases(self) -> None:
        assert len(ChunkTable.concat([], ndim=3)) == 0
        with pytest.raises(ValueError):
            ChunkTable.concat([])
        one = _table([((0, 0), 1)])
        assert ChunkTable.concat([ChunkTable.empty(2), one]) is one
        with pytest.raises(ValueError):
            ChunkTable.concat([one, _table([((0,), 1)], ndim=1)])

    def test_manifest_round_trip_native_inline_virtual(self) -> None:
        b = TableBuilder(3)
        b.add_native((5, 0, 1), b"\x07" * 12, 4096, offset=64)
        b.add_inline((0, 0, 0), b"tiny chunk")
        b.add_virtual((1, 2, 3), "s3://bucket/a.nc", 1000, 500, "etag-a")
        b.add_virtual((1, 2, 4), "gs://bucket/b.nc", 0, 8, None)
        b.add_inline((0, 0, 0), b"overwritten")  # later write wins
        t = b.build()
        node_id = new_id()
        m = t.to_manifest(node_id)
        assert m.node_id == node_id and m.ndim == 3 and m.count == 4
        assert m.blob == b"overwritten"  # dead inline bytes are compacted away
        assert m.urls == ("s3://bucket/a.nc", "gs://bucket/b.nc")
        raw = encode_object(m, ObjectType.MANIFEST)
        back = ChunkTable.from_manifest(
            decode_object(raw, ManifestData, ObjectType.MANIFEST, name="manifests/x"),
            name="manifests/x")
        assert back.sorted_unique
        assert _coords(back) == [(0, 0, 0), (1, 2, 3), (1, 2, 4), (5, 0, 1)]
        assert [back.row_payload(i) for i in range(4)] == [
            (KIND_INLINE, b"overwritten"),
            (KIND_VIRTUAL, ("s3://bucket/a.nc", "etag-a", 0, 1000, 500)),
            (KIND_VIRTUAL, ("gs://bucket/b.nc", None, 0, 0, 8)),
            (KIND_NATIVE, (encode_id(b"\x07" * 12), 64, 4096)),
        ]

    def test_manifest_columns_are_little_endian_raw(self) -> None:
        t = _table([((1, 2), 9), ((0, 3), 8)])
        m = t.to_manifest("N")
        assert np.frombuffer(m.coords, "<i8").reshape(2, 2).tolist() == [[0, 3], [1, 2]]
        assert np.frombuffer(m.kinds, np.uint8).tolist() == [KIND_NATIVE, KIND_NATIVE]
        assert m.ids == b"\x08" * 12 + b"\x09" * 12
        assert np.frombuffer(m.offsets, "<u8").tolist() == [0, 0]
        assert np.frombuffer(m.lengths, "<u8").tolist() == [108, 109]
        assert np.frombuffer(m.url_idx, "<i4").tolist() == [-1, -1]

    def test_large_table_round_trip(self) -> None:
        n = 20_000
        rng = np.random.default_rng(0)
        b = TableBuilder(2)
        coords = rng.permutation(n)
        for c in coords:
            b.add_native((int(c) // 100, int(c) % 100), int(c).to_bytes(12, "big"), int(c))
        t = b.build()
        back = ChunkTable.from_manifest(t.to_manifest("N"), name="m")
        assert len(back) == n
        i = back.find((123, 45))
        assert back.row_payload(i) == (KIND_NATIVE, (encode_id((12345).to_bytes(12, "big")),
                                                     0, 12345))

    @pytest.mark.parametrize(
        "patch",
        [
            {"count": 3},
            {"coords": b"\x00" * 7},
            {"ids": b"\x00" * 11},
            {"ndim": 0},
            {"url_idx": np.array([5, -1], "<i4").tobytes()},
            {"etags": ()},
        ],
        ids=["count", "coords", "ids", "ndim", "url_idx", "etags"],
    )
    def test_from_manifest_rejects_inconsistent_columns(self, patch: dict[str, object]) -> None:
        b = TableBuilder(1)
        b.add_virtual((0,), "s3://a", 0, 1, None)
        b.add_native((1,), b"\x01" * 12, 5)
        m = msgspec.structs.replace(b.build().to_manifest("N"), **patch)
        with pytest.raises(FormatError) as info:
            ChunkTable.from_manifest(m, name="manifests/BAD")
        assert info.value.object_name == "manifests/BAD"

    def test_builder_rejects_wrong_ndim(self) -> None:
        b = TableBuilder(2)
        with pytest.raises(ValueError):
            b.add_native((1,), bytes(12), 1)


# ------------------------------------------------------------------------ manifest splits
@pytest.mark.parametrize(
    ("shape", "chunks", "size", "expected"),
    [
        ((100, 20), (10, 10), 7, (3, 2)),  # trailing dim kept whole, first dim cut
        ((1000,), (1,), 100_000, (100_000,)),
        ((10, 10, 10), (1, 1, 1), 50, (1, 5, 10)),
        ((), (), 5, (1,)),  # 0-d
        ((0, 4), (3, 2), 10, (5, 2)),  # empty first dimension still tiles
    ],
)
def test_choose_split_shape(shape: tuple[int, ...], chunks: tuple[int, ...], size: int,
                            expected: tuple[int, ...]) -> None:
    from icechunk_dist.session._keys import choose_split_shape

    assert choose_split_shape(shape, chunks, size) == expected


def test_commit_rewrites_only_touched_splits(tmp_path: Any) -> None:
    import zarr

    from icechunk_dist import Repository, RepositoryConfig, local_filesystem_storage

    root = tmp_path / "repo"
    repo = Repository.create(local_filesystem_storage(root),
                             RepositoryConfig(manifest_split_size=4))
    with repo.transaction("main", message="16 chunks") as store:
        arr = zarr.create_array(store, name="x", shape=(16,), chunks=(1,), dtype="i8")
        arr[:] = np.arange(16)
    first = {p.name for p in (root / "manifests").iterdir()}
    assert len(first) == 4  # splits (0,), (1,), (2,), (3,) of 4 chunks each
    with repo.transaction("main", message="touch chunk 9") as store:
        zarr.open_array(store, path="x", mode="r+")[9] = -9
    second = {p.name for p in (root / "manifests").iterdir()} - first
    assert len(second) == 1  # only split (2,) was rewritten
    expected = np.arange(16)
    expected[9] = -9
    got = zarr.open_array(repo.readonly_session().store, path="x", mode="r")[:]
    np.testing.assert_array_equal(got, expected)
