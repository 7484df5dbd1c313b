"""Model-based property test of rebase-on-commit (issue 4).

Two or three writers open sessions on ``main`` at random moments; each writes a few random
chunks of two arrays (some with the fill value, which deletes the chunk) and maybe appends a
chunk to ``a``, then commits with ``rebase_with=BasicConflictSolver()`` (chunk conflicts:
ours wins) in a random order. The
final state must equal replaying the landed commits' writes, in history order (oldest
first), into a numpy model. Which writers fail is predicted too: only an appender whose
array was appended by another writer after it opened (a metadata double update).

The second half (issue 20, scenario 3) is about the hierarchy: random edits of two
sessions (creates, attribute updates, deletes of arrays and groups, chunk writes and
deletes, keys; ``hierarchy_ops``), one lands, the other rebases with each solver; the tip
is always a valid Zarr hierarchy. Example tests pin a winning group delete (the subtree
that landed inside the group goes too), a losing one (the group keeps its subtree) and a
node of ours in a group they deleted (a conflict with every solver but keep-theirs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import zarr
from hierarchy_ops import apply_edits, check_valid_tree, dump, edits, make_base, set_key
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from icechunk_dist import (
    BasicConflictSolver,
    Conflict,
    ConflictDetector,
    ConflictSolver,
    ConflictType,
    RebaseFailedError,
    Repository,
    Session,
    VersionSelection,
    in_memory_storage,
)

A_LEN, A_CHUNK = 16, 2  # "a": 1-D, 8 chunks, may grow
B_SHAPE, B_CHUNK = (4, 4), (2, 2)  # "b": 2-D, 2x2 chunks
FILL = -1

# (array, chunk coordinate, clear): a clear writes the fill value, so zarr deletes the chunk
write_a = st.tuples(st.just("a"), st.tuples(st.integers(0, A_LEN // A_CHUNK - 1)),
                    st.booleans())
write_b = st.tuples(st.just("b"), st.tuples(st.integers(0, 1), st.integers(0, 1)),
                    st.booleans())


@dataclass
class Writer:
    index: int
    writes: list[tuple[str, tuple[int, ...], bool]]
    append: bool
    session: Session | None = None
    base_len: int = 0  # length of "a" when it opened
    opened_after: int = 0  # number of landed appends when it opened

    def value(self, k: int) -> int:
        if k < len(self.writes) and self.writes[k][2]:
            return FILL
        return 100 * (self.index + 1) + k  # unique per writer and write

    @property
    def append_value(self) -> int:
        return self.value(99)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Writer], list[int]]:
    n = draw(st.integers(2, 3))
    writers = [Writer(i, draw(st.lists(st.one_of(write_a, write_b), min_size=1, max_size=4)),
                      draw(st.booleans())) for i in range(n)]
    # each writer appears twice: the first time it opens (and writes), the second it commits
    events = draw(st.permutations([i for i in range(n) for _ in (0, 1)]))
    return writers, list(events)


def sel(name: str, coord: tuple[int, ...]) -> tuple[slice, ...]:
    chunk = (A_CHUNK,) if name == "a" else B_CHUNK
    return tuple(slice(c * k, (c + 1) * k) for c, k in zip(coord, chunk, strict=True))


def open_and_write(repo: Repository, w: Writer, landed_appends: int) -> None:
    s = w.session = repo.writable_session("main")
    a = zarr.open_array(s.store, path="a", mode="r+")
    b = zarr.open_array(s.store, path="b", mode="r+")
    w.base_len, w.opened_after = a.shape[0], landed_appends
    for k, (name, coord, _) in enumerate(w.writes):
        (a if name == "a" else b)[sel(name, coord)] = w.value(k)
    if w.append:
        a.resize((w.base_len + A_CHUNK,))
        a[w.base_len:] = w.append_value


def replay(model: dict[str, np.ndarray], w: Writer) -> None:
    """Apply one landed commit's writes to the model."""
    if w.append:
        assert model["a"].shape[0] == w.base_len  # appends land on the shape they grew
        model["a"] = np.concatenate([model["a"], np.full(A_CHUNK, w.append_value, "i4")])
    for k, (name, coord, _) in enumerate(w.writes):
        model[name][sel(name, coord)] = w.value(k)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_final_state_is_landed_commits_replayed_in_history_order(
        scenario: tuple[list[Writer], list[int]]) -> None:
    writers, events = scenario
    repo = Repository.create(in_memory_storage())
    s = repo.writable_session("main")
    root = zarr.open_group(s.store, mode="w")
    for name, shape, chunks in (("a", (A_LEN,), (A_CHUNK,)), ("b", B_SHAPE, B_CHUNK)):
        root.create_array(name, shape=shape, chunks=chunks, dtype="i4", fill_value=FILL)[:] = 0
    setup_id = s.commit("setup")

    landed_appends = 0
    landed: dict[str, Writer] = {}
    failed: set[int] = set()
    for i in events:
        w = writers[i]
        if w.session is None:
            open_and_write(repo, w, landed_appends)
            continue
        appended_meanwhile = landed_appends > w.opened_after
        try:
            sid = w.session.commit(f"writer {i}", {"writer": i},
                                   rebase_with=BasicConflictSolver())
        except RebaseFailedError as e:
            # the only unsolvable conflict here: two appends to "a"
            assert w.append and appended_meanwhile, e
            assert {(c.conflict_type, c.path) for c in e.conflicts} == {
                (ConflictType.ZarrMetadataDoubleUpdate, "/a")}
            failed.add(i)
            continue
        assert not (w.append and appended_meanwhile), "a double append must not land"
        landed[sid] = w
        landed_appends += w.append

    history = list(repo.ancestry(branch="main"))
    assert history[len(landed)].id == setup_id and len(history) == len(landed) + 2
    assert set(landed) == {h.id for h in history[:len(landed)]}
    assert failed | {w.index for w in landed.values()} == set(range(len(writers)))

    model = {"a": np.zeros(A_LEN, "i4"), "b": np.zeros(B_SHAPE, "i4")}
    for h in reversed(history[:len(landed)]):  # oldest first
        assert h.metadata["writer"] == landed[h.id].index
        replay(model, landed[h.id])

    ro = repo.readonly_session("main")
    for name in ("a", "b"):
        got = zarr.open_array(ro.store, path=name, mode="r")[:]
        np.testing.assert_array_equal(got, model[name], err_msg=f"array {name}")


# ------------------------------------------------------------------------------ hierarchy
# (issue 20, scenario 3) A rebase never leaves a node without its parent group: a group
# delete that wins takes the subtree the landed commits added with it (nodes, chunks, keys);
# a solver that keeps theirs keeps the group with its subtree; a node of ours in a group
# they deleted is a conflict whatever the solver (or dropped, if it keeps theirs).

class AllOurs(ConflictSolver):
    def choose(self, conflict: Conflict) -> VersionSelection:
        return VersionSelection.UseOurs


class AllTheirs(ConflictSolver):
    def choose(self, conflict: Conflict) -> VersionSelection:
        return VersionSelection.UseTheirs


def _hierarchy_repo() -> tuple[Repository, str]:
    repo = Repository.create(in_memory_storage())
    return repo, make_base(repo)


def _delete(store: Any, path: str) -> None:
    parent, _, name = path.rpartition("/")
    del zarr.open_group(store, path=parent, mode="r+")[name]


def _tip_tree(repo: Repository) -> dict[str, bytes]:
    keys = dump(repo.readonly_session("main").store)
    check_valid_tree(keys)
    return keys


def _create_y_in_g(store: Any) -> None:
    zarr.create_array(store, name="g/y", shape=(4,), chunks=(2,), dtype="i4",
                      fill_value=0)[:] = 5
    set_key(store, "g/extra", b"theirs")


@pytest.mark.parametrize("solver", [BasicConflictSolver(), AllOurs()], ids=repr)
def test_winning_group_delete_removes_what_landed_inside_it(solver: ConflictSolver) -> None:
    repo, _ = _hierarchy_repo()
    a, b = repo.writable_session("main"), repo.writable_session("main")
    _delete(a.store, "g")
    zarr.open_array(a.store, path="x", mode="r+")[0:2] = 7  # and a change elsewhere
    _create_y_in_g(b.store)
    b.commit("b creates /g/y")
    a.commit("a deletes /g", rebase_with=solver)
    keys = _tip_tree(repo)
    assert sorted(k for k in keys if k.startswith("g/")) == []  # no /g/y, chunks or keys
    assert "g/zarr.json" not in keys
    ro = repo.readonly_session("main")
    assert zarr.open_array(ro.store, path="x", mode="r")[:].tolist() == [7, 7, 1, 1]


def test_group_delete_that_loses_keeps_the_group_with_its_subtree() -> None:
    repo, _ = _hierarchy_repo()
    a, b = repo.writable_session("main"), repo.writable_session("main")
    _delete(a.store, "g")
    zarr.open_array(a.store, path="x", mode="r+")[0:2] = 7
    _create_y_in_g(b.store)
    b.commit("b creates /g/y")
    a.commit("a deletes /g", rebase_with=AllTheirs())
    keys = _tip_tree(repo)
    assert {"g/zarr.json", "g/a/zarr.json", "g/h/zarr.json", "g/h/b/zarr.json",
            "g/y/zarr.json", "g/notes", "g/extra"} <= set(keys)
    ro = repo.readonly_session("main")
    assert zarr.open_array(ro.store, path="g/h/b", mode="r")[:].tolist() == [3] * 4
    assert zarr.open_array(ro.store, path="g/y", mode="r")[:].tolist() == [5] * 4
    assert zarr.open_array(ro.store, path="x", mode="r")[:].tolist() == [7, 7, 1, 1]


@pytest.mark.parametrize("ours", ["array", "key"])
@pytest.mark.parametrize("solver", [ConflictDetector(), BasicConflictSolver(), AllOurs()],
                         ids=repr)
def test_node_in_a_group_they_deleted_is_a_conflict(solver: ConflictSolver,
                                                    ours: str) -> None:
    repo, _ = _hierarchy_repo()
    a, b = repo.writable_session("main"), repo.writable_session("main")
    if ours == "array":
        zarr.create_array(a.store, name="g/h/y", shape=(4,), chunks=(2,), dtype="i4")[:] = 5
    else:
        set_key(a.store, "g/h/extra", b"ours")
    _delete(b.store, "g")
    their_id = b.commit("b deletes /g")
    with pytest.raises(RebaseFailedError) as ei:
        a.commit("a writes in /g/h", rebase_with=solver)
    assert {(c.conflict_type, c.path) for c in ei.value.conflicts} == {
        (ConflictType.NewNodeInInvalidGroup, "/g/h/y" if ours == "array" else "/g/h/extra")}
    assert repo.lookup_branch("main") == their_id
    _tip_tree(repo)
    # keeping theirs drops our node (or key): the commit lands, without /g
    a.commit("a, without its node in /g", rebase_with=AllTheirs())
    keys = _tip_tree(repo)
    assert not any(k.startswith("g/") for k in keys)


solvers = st.sampled_from([
    ConflictDetector(),
    BasicConflictSolver(),
    BasicConflictSolver(on_chunk_conflict=VersionSelection.UseTheirs),
    BasicConflictSolver(on_chunk_conflict=VersionSelection.Fail),
    BasicConflictSolver(fail_on_delete_of_updated_array=True,
                        fail_on_delete_of_updated_group=True),
    AllOurs(),
    AllTheirs(),
])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ours=edits(), theirs=edits(), solver=solvers)
def test_rebase_with_every_solver_leaves_a_valid_hierarchy(
        ours: list[Any], theirs: list[Any], solver: ConflictSolver) -> None:
    """Random edits of two sessions of one base; theirs lands first, ours rebases with
    ``solver``: it lands or raises RebaseFailedError, and the tip is a valid tree."""
    repo, _ = _hierarchy_repo()
    a, b = repo.writable_session("main"), repo.writable_session("main")
    apply_edits(a.store, ours)
    apply_edits(b.store, theirs)
    if b.has_uncommitted_changes:
        b.commit("theirs")
    tip = repo.lookup_branch("main")
    _tip_tree(repo)
    if not a.has_uncommitted_changes:
        return
    try:
        a.commit("ours", rebase_with=solver)
        event("landed")
    except RebaseFailedError:
        assert repo.lookup_branch("main") == tip
        event("rebase failed")
    _tip_tree(repo)
