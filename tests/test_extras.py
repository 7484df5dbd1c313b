"""The README's first command sets up what the README shows (issue 21, point 10).

``make demo`` installs the extras its stamp rule names; with only those (every module of
the other extras blocked in a fresh interpreter) the README's imports work and
``icechunk-dist ingest`` of NetCDF files lands them. Every "missing optional dependency"
message names an extra that pyproject.toml defines: the CLI's hint for a module that is
not installed, the package's own ``pip install 'icechunk_dist[...]'`` messages, and the docs.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS: dict[str, list[str]] = PROJECT["optional-dependencies"]
SELF = canonicalize_name(PROJECT["name"])

def _requirements(extras: set[str]) -> set[str]:
    """Canonical distribution names the core dependencies plus ``extras`` install directly
    (extras of this package itself are followed)."""
    out = {canonicalize_name(Requirement(r).name) for r in PROJECT["dependencies"]}
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in EXTRAS[extra]:
            req = Requirement(text)
            if canonicalize_name(req.name) == SELF:
                todo.extend(req.extras)
            else:
                out.add(canonicalize_name(req.name))
    return out


def _closure(dists: set[str]) -> set[str]:
    """``dists`` and everything they require, as installed here (no extras)."""
    from importlib.metadata import PackageNotFoundError, requires

    out, todo = set(), list(dists)
    while todo:
        dist = todo.pop()
        if dist in out:
            continue
        out.add(dist)
        try:
            reqs = requires(dist) or []
        except PackageNotFoundError:
            continue
        for text in reqs:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return out


def _modules_of(dists: set[str]) -> set[str]:
    """Top-level modules the distributions provide (as installed here; a distribution that
    is not installed is taken to provide the module of its own name)."""
    by_dist: dict[str, set[str]] = {}
    for module, names in packages_distributions().items():
        for name in names:
            by_dist.setdefault(canonicalize_name(name), set()).add(module)
    return {m for d in dists for m in by_dist.get(d, {d.replace("-", "_")})}


def _demo_extras() -> set[str]:
    """The extras ``make demo`` installs: its stamp prerequisite's ``pip install -e .[...]``."""
    text = (ROOT / "Makefile").read_text()
    (prereqs,) = re.findall(r"^demo:(.*)$", text, re.M)
    stamp = next(p for p in prereqs.split() if ".stamp" in p)
    rule = re.search(rf"^{re.escape(stamp)}:.*\n((?:\t.*\n)+)", text, re.M)
    assert rule, f"no rule for {stamp} in the Makefile"
    (spec,) = re.findall(r"install\b.*-e\s+[\"']?\.\[([\w,-]+)\]", rule.group(1))
    return set(spec.split(","))


def _readme_imports() -> list[str]:
    """Every import statement of the README's Python blocks."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    lines = []
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.Import | ast.ImportFrom):
                lines.append(ast.unparse(node))
    return lines


# ---------------------------------------------------------------- make demo covers the README
def test_make_demo_installs_what_the_readme_uses(tmp_path: Path) -> None:
    pytest.importorskip("xarray")
    sys.path.insert(0, str(ROOT / "tests"))
    from netcdf_xr import write_netcdf

    demo = _demo_extras()
    assert demo <= set(EXTRAS), demo
    installed = _closure(_requirements(demo))
    others = set().union(*(_requirements({e}) for e in EXTRAS)) - installed
    blocked = sorted(_modules_of(others) - _modules_of(installed))
    assert blocked, "every extra is installed: nothing left to prove"
    imports = _readme_imports()
    assert any("icechunk_dist.xarray" in line for line in imports)
    src = tmp_path / "netcdf"
    src.mkdir()
    write_netcdf(src / "a.nc", 0, 4)
    write_netcdf(src / "b.nc", 4, 4)
    script = textwrap.dedent(f"""
        import sys
        for name in {blocked!r}:
            sys.modules[name] = None  # what `make demo` does not install
        {'; '.join(imports)}
        from icechunk_dist.cli import main
        repo = {str(tmp_path / "repo")!r}
        assert main(["init", repo]) == 0
        rc = main(["ingest", repo, {str(src)!r}])
        print("ingest exit", rc)
        ds = icd.xarray.open_dataset(repo)
        print("times", ds.sizes["time"])
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "ingest exit 0" in proc.stdout and "times 8" in proc.stdout, proc.stdout


# ---------------------------------------------------------------- messages name extras
def _named_extras(text: str) -> list[str]:
    return [e.strip() for group in re.findall(r"icechunk_dist\[([\w,\s-]+)\]", text)
            for e in group.split(",")]


def test_every_install_hint_in_the_package_names_an_existing_extra() -> None:
    hints = 0
    for path in sorted((ROOT / "icechunk_dist").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for line in path.read_text().splitlines():
            for m in re.finditer(r"pip install [^)\"`]*", line):
                hint = m.group(0).strip()
                if "{" in hint:
                    continue  # "{extra}": the CLI's table, checked by the test below
                names = _named_extras(hint)
                assert names, f"{rel}: {hint!r} names no icechunk_dist extra"
                assert set(names) <= set(EXTRAS), f"{rel}: {hint!r}"
                hints += 1
    assert hints >= 4


def test_docs_name_existing_extras() -> None:
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), ROOT / "Dockerfile"]:
        names = _named_extras(path.read_text())
        assert set(names) <= set(EXTRAS), (path.name, set(names) - set(EXTRAS))


def test_the_cli_hint_maps_each_module_to_the_extra_that_installs_it() -> None:
    from icechunk_dist.cli import _main

    for module, extra in _main._EXTRA_OF.items():
        assert extra in EXTRAS, (module, extra)
        assert module in _modules_of(_requirements({extra})), (module, extra)
    assert {"xarray", "h5netcdf", "dask", "distributed"} <= set(_main._EXTRA_OF)


@pytest.mark.parametrize("blocked, argv_kind, extra", [
    ("xarray", "ingest", "xarray"),
    ("dask", "synthetic", "dask"),
])
def test_a_missing_module_names_its_extra(tmp_path: Path, blocked: str, argv_kind: str,
                                          extra: str) -> None:
    pytest.importorskip("xarray")
    sys.path.insert(0, str(ROOT / "tests"))
    from netcdf_xr import write_netcdf

    nc = write_netcdf(tmp_path / "a.nc", 0, 4)
    repo = str(tmp_path / "repo")
    argv = ([repo, str(nc)] if argv_kind == "ingest"
            else [repo, "--synthetic", "8,8", "--chunks", "4,4"])
    script = textwrap.dedent(f"""
        import sys
        sys.modules[{blocked!r}] = None
        from icechunk_dist.cli import main
        raise SystemExit(main(["ingest", *{argv!r}]))
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert f"pip install 'icechunk_dist[{extra}]'" in proc.stderr, proc.stderr[-2000:]
    others = set(EXTRAS) - {extra}
    assert not any(f"icechunk_dist[{o}]" in proc.stderr for o in others), proc.stderr


def test_importing_an_integration_without_its_extra_names_the_extra(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import sys
        sys.modules["dask"] = sys.modules["xarray"] = None
        import icechunk_dist
        for name in ("dask", "xarray"):
            try:
                getattr(icechunk_dist, name).__name__
            except ImportError as e:
                print(name, "->", e)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=True)
    assert "dask -> icechunk_dist.dask needs dask: pip install 'icechunk_dist[dask]'" \
        in proc.stdout, proc.stdout
    assert "xarray -> icechunk_dist.xarray needs xarray: pip install 'icechunk_dist[xarray]'" \
        in proc.stdout, proc.stdout
