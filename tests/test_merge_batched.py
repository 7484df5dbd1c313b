"""The merge's batched paths (issue 24) give what folding each change-set first gives.

A merge of many in-process forks builds their unfolded writes at once
(``TableBuilder.build_all``) and sorts and checks them once; a small fold orders a task's
few writes in Python. These tests compare both with the per-table path on the same rows,
conflicts included.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from icechunk_dist.changeset import ArrayChunks, ChangeSet
from icechunk_dist.errors import MergeConflictError
from icechunk_dist.format import ChunkTable, TableBuilder


def _columns(t: ChunkTable) -> tuple[object, ...]:
    return (t.ndim, t.coords.tolist(), t.kinds.tolist(), t.ids.tolist(), t.offsets.tolist(),
            t.lengths.tolist(), t.url_idx.tolist(), t.blob, t.urls, t.etags,
            None if t.digests is None else t.digests.tolist())


def _payloads(t: ChunkTable) -> list[tuple[tuple[int, ...], object]]:
    return [(tuple(int(v) for v in t.coords[i]), t.row_payload(i)) for i in range(len(t))]


def _mixed_builders() -> list[TableBuilder]:
    out = []
    for b_i in range(3):
        b = TableBuilder(2)
        b.add_native((b_i, 0), os.urandom(12), 100 + b_i, digest=7 + b_i)
        b.add_inline((b_i, 1), bytes([b_i]) * (3 + b_i))
        b.add_virtual((b_i, 2), f"s3://bucket/f{b_i}.nc", 10 * b_i, 50, f"etag{b_i}")
        b.add_inline((b_i, 3), b"xyz" * (b_i + 1))
        b.add_tombstone((b_i, 4))
        b.add_virtual((b_i, 5), f"s3://bucket/g{b_i}.nc", 5, 6, None)
        out.append(b)
    out.append(TableBuilder(2))  # an empty one changes nothing
    b = TableBuilder(2)
    b.add_native((9, 9), os.urandom(12), 1)  # no digest
    out.append(b)
    return out


def test_build_all_is_the_concatenation_of_builds() -> None:
    builders = _mixed_builders()
    want = ChunkTable.concat([b.build() for b in builders])
    got = TableBuilder.build_all(builders)
    assert _columns(got) == _columns(want)
    assert _payloads(got) == _payloads(want)


def test_build_all_refuses_mixed_dimensionality() -> None:
    with pytest.raises(ValueError, match="dimensionality"):
        TableBuilder.build_all([TableBuilder(1), TableBuilder(2)])


def _unfolded(rows: list[tuple[tuple[int, ...], bytes | str]]) -> ArrayChunks:
    """An ArrayChunks of writes not folded yet: bytes -> inline, str -> native id seed."""
    ac = ArrayChunks(2)
    for coord, what in rows:
        if isinstance(what, bytes):
            ac.set_inline(coord, what)
        else:
            ac.set_native(coord, what.encode().ljust(12, b"_")[:12], 4096)
    return ac


def _folded_copy(ac: ArrayChunks) -> ArrayChunks:
    """The same writes through the per-table path (folded before the merge)."""
    return ArrayChunks(ac.ndim, ac.table)


def _merge(forks: list[list[tuple[tuple[int, ...], bytes | str]]], *, fold_first: bool,
           policy: str = "fail", mine: ArrayChunks | None = None) -> ChunkTable:
    base = ChangeSet()
    if mine is not None:
        base.chunks["n"] = mine
    parts = []
    for rows in forks:
        cs = ChangeSet()
        ac = _unfolded(rows)
        assert ac.unfolded() is not None
        cs.chunks["n"] = _folded_copy(ac) if fold_first else ac
        parts.append((cs, None))
    merged = base.merge_many(parts, policy=policy)  # type: ignore[arg-type]
    return merged.chunks["n"].table


FORKS = [
    [((0, 3), "a3"), ((0, 1), b"inline-01"), ((0, 2), "a2")],  # out of order
    [((5, 0), b"five"), ((4, 4), "b44")],
    [((1, 0), "c10"), ((2, 7), b"two-seven"), ((1, 9), "c19")],
]


def test_batched_merge_equals_the_per_table_merge() -> None:
    got = _merge(FORKS, fold_first=False)
    want = _merge(FORKS, fold_first=True)
    assert got.sorted_unique
    assert _payloads(got) == _payloads(want)
    assert got.coords.tolist() == sorted(got.coords.tolist())


def test_batched_merge_after_the_sessions_own_writes() -> None:
    mine = _unfolded([((7, 7), "m77"), ((0, 0), b"mine")])
    mine.fold()  # the session's table, folded
    got = _merge(FORKS, fold_first=False, mine=mine)
    mine2 = _unfolded([((7, 7), "m77"), ((0, 0), b"mine")])
    mine2.fold()
    want = _merge(FORKS, fold_first=True, mine=mine2)
    assert _payloads(got) == _payloads(want)
    assert len(got) == 10


@pytest.mark.parametrize("fold_first", [False, True])
def test_batched_merge_refuses_two_different_writes_of_one_chunk(fold_first: bool) -> None:
    forks = [[((0, 0), "x"), ((0, 1), "y")], [((3, 3), "z")], [((0, 1), b"other")]]
    with pytest.raises(MergeConflictError) as e:
        _merge(forks, fold_first=fold_first)
    assert e.value.chunk_coords == [(0, 1)]


def test_batched_merge_identical_inline_writes_are_one_write() -> None:
    forks = [[((0, 1), b"same")], [((2, 2), "q")], [((0, 1), b"same")]]
    got = _merge(forks, fold_first=False)
    assert _payloads(got) == _payloads(_merge(forks, fold_first=True))
    assert len(got) == 2


def test_batched_merge_last_wins() -> None:
    forks = [[((0, 1), "first")], [((2, 2), "q")], [((0, 1), "last")]]
    got = _merge(forks, fold_first=False, policy="last_wins")
    want = _merge(forks, fold_first=True, policy="last_wins")
    assert _payloads(got) == _payloads(want)
    row = int(np.flatnonzero((got.coords == [0, 1]).all(axis=1))[0])
    assert got.ids[row].tobytes() == b"last".ljust(12, b"_")


def test_a_change_set_that_wrote_a_chunk_twice_is_not_batched() -> None:
    ac = _unfolded([((0, 0), "a"), ((0, 0), "b")])
    assert ac.unfolded() is None  # its own rewrite is not a conflict: folded first
    forks = [[((1, 1), "c")], [((2, 2), "d")]]
    base = ChangeSet()
    parts = [(ChangeSet(chunks={"n": ac}), None)] + [
        (ChangeSet(chunks={"n": _unfolded(r)}), None) for r in forks]
    table = base.merge_many(parts).chunks["n"].table  # type: ignore[arg-type]
    assert len(table) == 3
    assert table.ids[0].tobytes() == b"b".ljust(12, b"_")


def test_small_fold_orders_the_writes() -> None:
    rows: list[tuple[tuple[int, ...], bytes | str]] = [
        ((3, 1), "a"), ((0, 5), b"b"), ((0, 2), "c"), ((2, 0), b"dd")]
    ac = _unfolded(rows)
    assert len(ac) == 4  # counted without folding
    t = ac.table
    assert t.sorted_unique
    assert t.coords.tolist() == [[0, 2], [0, 5], [2, 0], [3, 1]]
    ref = TableBuilder(2)
    for coord, what in rows:
        if isinstance(what, bytes):
            ref.add_inline(coord, what)
        else:
            ref.add_native(coord, what.encode().ljust(12, b"_")[:12], 4096)
    assert _payloads(t) == _payloads(ref.build().normalized())


def test_build_all_of_native_rows_only_is_the_concatenation_of_builds() -> None:
    """The forks of a distributed write: native rows and tombstones only (one join of the
    builders' packed rows)."""
    builders = []
    for b_i in range(5):
        b = TableBuilder(3)
        for j in range(4):
            b.add_native((b_i, j, -j), os.urandom(12), 4096 + j, offset=j, digest=j)
        b.add_tombstone((b_i, 9, 9))
        builders.append(b)
    want = ChunkTable.concat([b.build() for b in builders])
    got = TableBuilder.build_all(builders)
    assert _columns(got) == _columns(want)
    assert _payloads(got) == _payloads(want)
    # every column is its own writable array, as those of any other table
    assert all(a.flags.writeable for a in (got.coords, got.kinds, got.ids, got.offsets))


def test_a_builder_stays_appendable_after_it_was_built() -> None:
    """Building reads the packed rows; it copies them, so the builder can take more rows
    (a fork keeps writing after a read of its own writes folded nothing)."""
    b = TableBuilder(1)
    b.add_native((0,), os.urandom(12), 10)
    first = b.build()
    b.add_native((1,), os.urandom(12), 20)
    both = b.build()
    assert first.coords.tolist() == [[0]]
    assert both.coords.tolist() == [[0], [1]]
    assert both.lengths.tolist() == [10, 20]


def test_build_all_keeps_each_location_once_across_builders() -> None:
    one, two = TableBuilder(1), TableBuilder(1)
    one.add_virtual((0,), "s3://b/f.nc", 0, 10, "e")
    two.add_virtual((1,), "s3://b/g.nc", 0, 10, None)
    two.add_virtual((2,), "s3://b/f.nc", 10, 10, "e")
    got = TableBuilder.build_all([one, two])
    assert got.urls == ["s3://b/f.nc", "s3://b/g.nc"]
    assert [got.row_payload(i) for i in range(3)] == [
        (2, ("s3://b/f.nc", "e", 0, 0, 10)), (2, ("s3://b/g.nc", None, 0, 0, 10)),
        (2, ("s3://b/f.nc", "e", 0, 10, 10))]


def test_a_chunk_id_must_be_12_bytes() -> None:
    with pytest.raises(ValueError, match="12 bytes"):
        TableBuilder(1).add_native((0,), b"short", 1)


def test_a_folded_change_set_among_unfolded_ones_merges_its_array_per_table() -> None:
    """The one pass that gathers the forks' writes takes a node's unfolded builders only
    while each change-set after the first left its writes unfolded: one folded table sends
    that array through the per-table merge, the others stay batched, and every array gets
    what folding each change-set first gives."""
    def parts(fold: set[int]) -> list[tuple[ChangeSet, None]]:
        out = []
        for i, rows in enumerate(FORKS):
            n = _unfolded(rows)
            m = _unfolded([((9, i), f"m{i}")])  # a second array, never folded
            out.append((ChangeSet(chunks={"n": _folded_copy(n) if i in fold else n,
                                          "m": m}), None))
        return out

    got = ChangeSet().merge_many(parts({1}))  # type: ignore[arg-type]
    want = ChangeSet().merge_many(parts({0, 1, 2}))  # type: ignore[arg-type]
    for nid in ("n", "m"):
        assert _payloads(got.chunks[nid].table) == _payloads(want.chunks[nid].table)
    assert len(got.chunks["m"].table) == 3
    assert ArrayChunks(2).table is ArrayChunks(2).table  # one shared empty table ...
    assert len(ArrayChunks(2).table) == 0  # ... that no merge wrote into


def test_an_unpickled_array_without_rows_stays_batchable() -> None:
    """A fork's ArrayChunks that crossed a pickle before its first write (a worker's copy)
    holds the shared empty table again, so its writes merge in the batched path."""
    import pickle

    ac = pickle.loads(pickle.dumps(ArrayChunks(2)))
    assert ac.table is ArrayChunks(2).table
    ac.set_native((0, 1), b"x" * 12, 10)
    assert ac.unfolded() is not None
