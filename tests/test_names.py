"""Ref names: every name that validates can be stored, on every backend (docs/spec.md section 6).

A name is one key component (``refs/branch.<name>/...``, ``refs/tag.<name>/...``); a local
file name holds 255 bytes, so names hold at most 248 bytes of UTF-8. The boundary is tested
end to end on local disk, where a longer name used to pass validation and then fail as a
storage error that said to retry.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zarr

import icechunk_dist as icd
from icechunk_dist.refs import MAX_REF_NAME_BYTES
from icechunk_dist.storage import Storage

# the longest valid names: one-, two-, three- and four-byte UTF-8 characters, and a mix
LONGEST = {
    "ascii": "b" * 248,
    "two-byte": "é" * 124,
    "three-byte": "€" * 82 + "xx",
    "four-byte": "😀" * 62,
    "mixed": "v1.0-" + "ü" * 100 + "😀" * 10 + "x" * 3,
}
# one byte more than allowed, and far more characters than bytes would suggest
TOO_LONG = {
    "ascii": "b" * 249,
    "two-byte": "é" * 124 + "a",
    "two-byte-chars": "é" * 125,  # 125 characters, 250 bytes
    "four-byte": "😀" * 62 + "x",
    "four-byte-255-chars": "😀" * 200,  # 200 characters (passed the old 255-character rule)
}


def test_the_limit() -> None:
    assert MAX_REF_NAME_BYTES == 248 == 255 - len("branch.")
    for name in LONGEST.values():
        assert len(name.encode()) == MAX_REF_NAME_BYTES, name
    for name in TOO_LONG.values():
        assert len(name.encode()) > MAX_REF_NAME_BYTES, name


def _repo(tmp_path: Path) -> icd.Repository:
    return icd.Repository.create(icd.local_filesystem_storage(tmp_path / "repo"))


def _write(repo: icd.Repository, branch: str, value: int) -> str:
    s = repo.writable_session(branch)
    a = zarr.create_array(s.store, name="x", shape=(4,), chunks=(2,), dtype="i4",
                          fill_value=-1, overwrite=True)
    a[:] = value
    return s.commit(f"x={value}")


def _x(session: icd.Session) -> np.ndarray:
    return zarr.open_array(session.store, path="x", mode="r")[:]


@pytest.mark.parametrize("alphabet", sorted(LONGEST))
def test_branch_name_boundary(tmp_path: Path, alphabet: str) -> None:
    repo = _repo(tmp_path)
    base = repo.lookup_branch("main")
    name = LONGEST[alphabet]
    repo.create_branch(name, base)
    assert repo.list_branches() == {"main", name}
    assert repo.lookup_branch(name) == base
    sid = _write(repo, name, 7)
    assert repo.lookup_branch(name) == sid
    assert [h.id for h in repo.ancestry(branch=name)] == [sid, base]
    np.testing.assert_array_equal(_x(repo.readonly_session(name)), [7, 7, 7, 7])
    repo.reset_branch(name, base)
    assert repo.lookup_branch(name) == base
    repo.delete_branch(name)
    assert repo.list_branches() == {"main"}
    with pytest.raises(icd.NotFoundError):
        repo.lookup_branch(name)
    # one byte more is refused before anything is written, saying the limit
    for long in TOO_LONG.values():
        with pytest.raises(icd.InvalidInputError, match="at most 248"):
            repo.create_branch(long, base)
    assert sorted(p.name for p in (tmp_path / "repo" / "refs").iterdir()) == [
        f"branch.{name}"]


@pytest.mark.parametrize("alphabet", sorted(LONGEST))
def test_tag_name_boundary(tmp_path: Path, alphabet: str) -> None:
    repo = _repo(tmp_path)
    sid = _write(repo, "main", 3)
    name = LONGEST[alphabet]
    repo.create_tag(name, sid)
    assert repo.list_tags() == {name}
    assert repo.lookup_tag(name) == sid
    assert next(h.id for h in repo.ancestry(tag=name)) == sid
    np.testing.assert_array_equal(_x(repo.readonly_session(tag=name)), [3, 3, 3, 3])
    repo.delete_tag(name)
    assert repo.list_tags() == set()
    with pytest.raises(icd.AlreadyExistsError):
        repo.create_tag(name, sid)  # deleted names are never reused
    for long in TOO_LONG.values():
        with pytest.raises(icd.InvalidInputError, match="at most 248"):
            repo.create_tag(long, sid)
    assert sorted(p.name for p in (tmp_path / "repo" / "refs").iterdir()) == [
        "branch.main", f"tag.{name}"]


@pytest.mark.parametrize("kind", sorted(TOO_LONG))
def test_too_long_names_are_invalid_input_everywhere(tmp_path: Path, kind: str) -> None:
    repo = _repo(tmp_path)
    sid = repo.lookup_branch("main")
    name = TOO_LONG[kind]
    calls = [
        lambda: repo.create_branch(name, sid),
        lambda: repo.lookup_branch(name),
        lambda: repo.reset_branch(name, sid),
        lambda: repo.delete_branch(name),
        lambda: repo.writable_session(name),
        lambda: repo.readonly_session(name),
        lambda: repo.create_tag(name, sid),
        lambda: repo.lookup_tag(name),
        lambda: repo.delete_tag(name),
        lambda: repo.readonly_session(tag=name),
    ]
    for call in calls:
        with pytest.raises(icd.InvalidInputError,
                           match=r"too long: \d+ bytes of UTF-8, at most 248"):
            call()
    assert repo.list_branches() == {"main"}
    assert repo.list_tags() == set()


def test_name_that_is_not_unicode_is_invalid(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    with pytest.raises(icd.InvalidInputError, match="not valid Unicode"):
        repo.create_branch("a\udc80b", repo.lookup_branch("main"))
    assert repo.list_branches() == {"main"}


def test_cli_refuses_a_too_long_branch_as_bad_input(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # `ingest --branch` creates the branch: a name no retry could store said "worth
    # retrying" (exit 4); it is bad input (exit 2) and nothing is written
    pytest.importorskip("h5netcdf")
    from netcdf_data import write_files

    from icechunk_dist.cli import main

    src, path = tmp_path / "src", tmp_path / "repo"
    write_files(src, 1)
    code = main(["ingest", str(path), str(src), "--no-progress", "--branch", "b" * 249])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "at most 248" in err
    assert not path.exists()  # refused before anything was created


ODD = ["a%b", "a%25b", "a#1", "a b", "a?b*", "x~[]{}^`|<>\"", "a+b=c&d", "ÿ", "é" * 124,
       "😀" * 62, "b" * 248]


def test_odd_and_longest_names_round_trip_on_s3(make_s3_storage: Callable[..., Storage]) -> None:
    # characters an object store URL-encodes, and the longest names, under a prefix
    repo = icd.Repository.create(make_s3_storage("some/prefix/repo"))
    sid = repo.lookup_branch("main")
    for name in ODD:
        repo.create_branch(name, sid)
        repo.create_tag(name, sid)
    assert repo.list_branches() == {"main", *ODD}
    assert repo.list_tags() == set(ODD)
    for name in ODD:
        assert repo.lookup_branch(name) == sid
        assert repo.lookup_tag(name) == sid
        repo.delete_branch(name)
    assert repo.list_branches() == {"main"}
    # S3 could hold a longer name, but a repository must move between backends: the
    # limit is the same everywhere
    with pytest.raises(icd.InvalidInputError, match="at most 248"):
        repo.create_branch("b" * 249, sid)


def test_odd_names_round_trip_on_local_disk(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    sid = repo.lookup_branch("main")
    for name in ODD:
        repo.create_branch(name, sid)
        repo.create_tag(name, sid)
    assert repo.list_branches() == {"main", *ODD}
    assert repo.list_tags() == set(ODD)
    assert {repo.lookup_branch(n) for n in ODD} == {repo.lookup_tag(n) for n in ODD} == {sid}
    with pytest.raises(icd.InvalidInputError, match="at most 248"):
        repo.create_tag("é" * 124 + "a", sid)


# ----------------------------------------------------------------------------- snapshot ids
# docs/spec.md section 2: ids are case-insensitive for callers and canonical (upper case)
# in every object and key; any other text is not an id
NOT_IDS: list[object] = [
    "", "0" * 19, "0" * 21, " " + "0" * 19, "0" * 19 + " ", "0" * 19 + "\n",
    "0" * 19 + "U", "0" * 19 + "u",
    "0" * 19 + "I", "0" * 19 + "L", "0" * 19 + "O",  # Crockford's aliases are not accepted
    "00000-00000-00000-00",  # nor its hyphens
    "2" + "0" * 19, "z" + "0" * 19,  # more than 96 bits
    "\uff10" * 20,  # full-width digits
    123, b"0" * 20, ["0" * 20],
]
ABSENT = "0" * 19 + "1"


def _history(tmp_path: Path) -> tuple[icd.Repository, str, str]:
    """A repository on local disk: (repo, the initial snapshot, one commit after it)."""
    repo = _repo(tmp_path)
    init = repo.lookup_branch("main")
    return repo, init, _write(repo, "main", 5)


def _entry_points(repo: icd.Repository, init: str) -> dict[str, Callable[[object], object]]:
    """Each public call that takes a snapshot id; each returns the id it resolved."""
    def branch(sid: object) -> str:
        repo.create_branch("b", sid)  # type: ignore[arg-type]
        try:
            return repo.lookup_branch("b")
        finally:
            repo.delete_branch("b")

    def reset(sid: object) -> str:
        if "r" not in repo.list_branches():
            repo.create_branch("r", init)
        repo.reset_branch("r", sid)  # type: ignore[arg-type]
        return repo.lookup_branch("r")

    tags = iter(range(1000))

    def tag(sid: object) -> str:
        name = f"t{next(tags)}"
        repo.create_tag(name, sid)  # type: ignore[arg-type]
        return repo.lookup_tag(name)

    def diff_to(sid: object) -> str:
        d = repo.diff(from_snapshot_id=init.lower(), to_snapshot_id=sid)  # type: ignore[arg-type]
        assert d.new_arrays == {"/x"}
        return next(repo.ancestry(snapshot_id=sid)).id  # type: ignore[arg-type]

    def diff_from(sid: object) -> str:
        d = repo.diff(from_snapshot_id=sid, to_branch="main")  # type: ignore[arg-type]
        assert d.new_arrays == {"/x"}
        return next(repo.ancestry(snapshot_id=sid)).id  # type: ignore[arg-type]

    def session(sid: object) -> str:
        s = repo.readonly_session(snapshot_id=sid)  # type: ignore[arg-type]
        np.testing.assert_array_equal(_x(s), [5, 5, 5, 5])
        return s.snapshot_id

    return {
        "lookup_snapshot": lambda sid: repo.lookup_snapshot(sid).id,  # type: ignore[arg-type]
        "readonly_session": session,
        "create_branch": branch,
        "reset_branch": reset,
        "create_tag": tag,
        "ancestry": lambda sid: [h.id for h in repo.ancestry(snapshot_id=sid)],  # type: ignore[arg-type]
        "diff_to": diff_to,
        "diff_from": diff_from,
    }


@pytest.mark.parametrize("entry", ["lookup_snapshot", "readonly_session", "create_branch",
                                   "reset_branch", "create_tag", "ancestry", "diff_to",
                                   "diff_from"])
def test_snapshot_id_entry_points(tmp_path: Path, entry: str) -> None:
    repo, init, sid = _history(tmp_path)
    call = _entry_points(repo, init)[entry]
    target = init if entry == "diff_from" else sid
    want = call(target)
    assert want in (target, [sid, init])
    mixed = "".join(c.lower() if i % 2 else c for i, c in enumerate(target))
    for form in (target.lower(), mixed):
        assert call(form) == want  # resolved to the canonical id, never stored otherwise
    for bad in NOT_IDS:
        with pytest.raises(icd.InvalidInputError, match="snapshot id"):
            call(bad)
    for absent in (ABSENT, ABSENT.lower()):
        with pytest.raises(icd.NotFoundError, match=f"snapshot {ABSENT} does not exist"):
            call(absent)
    # every ref written holds the canonical id
    for ref in (tmp_path / "repo" / "refs").rglob("*"):
        if ref.is_file():
            assert target.lower().encode() not in ref.read_bytes()


def test_cli_diff_takes_lower_case_ids(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from icechunk_dist.cli import main

    _, init, sid = _history(tmp_path)
    assert main(["diff", str(tmp_path / "repo"), init.lower(), sid.lower()]) == 0
    assert "new arrays: /x" in capsys.readouterr().out
    assert main(["diff", str(tmp_path / "repo"), init, "0" * 19 + "O"]) == 2


def test_stored_ids_are_upper_case() -> None:
    # an id inside an object names a key: a lower-case one is a corrupt object
    from datetime import UTC, datetime

    from icechunk_dist._types import new_id
    from icechunk_dist.format import ObjectType, RefData, decode_object, encode_object

    sid = new_id()
    for snapshot_id in (sid, sid.lower()):
        ref = RefData(snapshot_id=snapshot_id, write_id=new_id(), written_at=datetime.now(UTC))
        raw = encode_object(ref, ObjectType.REF)
        if snapshot_id == sid:
            assert decode_object(raw, RefData, ObjectType.REF, name="r").snapshot_id == sid
        else:
            with pytest.raises(icd.FormatError, match="not written in upper case"):
                decode_object(raw, RefData, ObjectType.REF, name="r")


def test_parse_id() -> None:
    from icechunk_dist._types import new_id, parse_id

    sid = new_id()
    assert parse_id(sid) == parse_id(sid.lower()) == parse_id(sid.swapcase()) == sid
    for bad in NOT_IDS:
        with pytest.raises(icd.InvalidInputError, match=r"not a snapshot id|must be a string"):
            parse_id(bad, "snapshot id")
