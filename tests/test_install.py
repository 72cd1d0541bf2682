"""The distribution installs under the one import name ``attncmp``: ``pip install .``, ``pip install
-e .`` and a built wheel each work in a fresh virtual environment, and the wheel holds nothing
outside ``attncmp/`` (no top-level ``store``, ``cli``... to collide with other distributions).

Fast and offline: the fresh environments get no packages of their own; a ``.pth`` line makes this
environment's site-packages (numpy, h5py, click, pip, setuptools...) importable behind their own,
and pip runs with ``--no-deps --no-build-isolation --no-index``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.install

_SKIP = {".git", ".venv", ".ci-venv", "build", "dist", "__pycache__", ".pytest_cache"}
_SKIP_SUFFIX = (".egg-info", ".h5")

PROBE = """
import importlib.resources, json, sys
import attncmp.analyze, attncmp.cli, attncmp.extract, attncmp.store, attncmp.workflows
data = importlib.resources.files("attncmp.extract.reference") / "data"
print(json.dumps({
    "store": attncmp.store.__file__,
    "data": sorted(p.name for p in data.iterdir()),
    "bare": [m for m in ("store", "cli", "extract", "analyze", "workflows") if m in sys.modules],
}))
"""


def _source_copy(dst: Path) -> Path:
    """The repository's sources without build outputs or virtual environments."""

    def ignore(_d: str, names: list[str]) -> set[str]:
        return {n for n in names if n in _SKIP or n.endswith(_SKIP_SUFFIX)}

    shutil.copytree(ROOT, dst, ignore=ignore)
    return dst


def _fresh_venv(path: Path) -> Path:
    """A virtual environment without packages; this one's site-packages come after its own."""
    venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(path)
    py = path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "_parent_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return py


def _run(cmd: list, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_REQUIRE_VIRTUALENV")}
    r = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


def _pip(py: Path, *args) -> subprocess.CompletedProcess:
    return _run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                 "--no-index", *args])  # fmt: skip


def _probe(py: Path) -> dict:
    import json

    out = json.loads(_run([py, "-c", PROBE], cwd=py.parent).stdout)
    assert out["bare"] == [], out
    assert "freesolv_graphs.json.gz" in out["data"], out
    return out


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    return _source_copy(tmp_path_factory.mktemp("install") / "src")


def test_built_wheel_holds_only_attncmp_and_installs(src, tmp_path):
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "--no-index", "-w", wheels, src])  # fmt: skip
    (whl,) = wheels.glob("attncmp-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    (meta,) = tops - {"attncmp"}
    assert meta.startswith("attncmp-") and meta.endswith(".dist-info"), tops
    for must in (
        "attncmp/cli.py",
        "attncmp/workflows.py",
        "attncmp/store/__init__.py",
        "attncmp/extract/reference/__init__.py",
        "attncmp/analyze/__init__.py",
    ):
        assert must in names, must
    assert not [n for n in names if n.startswith("attncmp/tests/")]
    assert any(n.startswith("attncmp/extract/reference/data/") for n in names)

    py = _fresh_venv(tmp_path / "venv")
    _pip(py, whl)
    out = _probe(py)
    assert Path(out["store"]).is_relative_to(tmp_path / "venv"), out
    _run([py.parent / "attncmp", "--version"])


def test_pip_install_dot(src, tmp_path):
    py = _fresh_venv(tmp_path / "venv")
    _pip(py, src)
    out = _probe(py)
    assert Path(out["store"]).is_relative_to(tmp_path / "venv"), out
    r = _run([py.parent / "attncmp", "analyze", "--help"])
    assert "--save-dir" in r.stdout


def test_pip_install_editable(src, tmp_path):
    py = _fresh_venv(tmp_path / "venv")
    _pip(py, "-e", src)
    out = _probe(py)
    assert Path(out["store"]).resolve() == (src / "store" / "__init__.py").resolve(), out
    _run([py.parent / "attncmp", "--version"])
