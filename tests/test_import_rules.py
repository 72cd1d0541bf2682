"""Import rules (DESIGN.md section 2), checked in fresh interpreters via sys.modules and in the
source text:

- `attncmp.store` imports neither torch, `attncmp.extract` nor `attncmp.analyze`;
- `attncmp.analyze` imports `attncmp.store`, never torch or `attncmp.extract`;
- `attncmp.extract` imports `attncmp.store`, never `attncmp.analyze`;
- `attncmp analyze --help` (and the other analysis/store commands' help) does not load torch.
"""

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# package -> the import prefixes it must never load
FORBIDDEN = {
    "store": ("torch", "attncmp.extract", "attncmp.analyze", "attncmp.workflows"),
    "analyze": ("torch", "attncmp.extract", "attncmp.workflows"),
    "extract": ("attncmp.analyze", "attncmp.workflows"),
}

CHECK = (
    "import sys, attncmp.{pkg}; "
    "bad = sorted(m for m in sys.modules "
    "if any(m == p or m.startswith(p + '.') for p in {forb!r})); "
    "print(','.join(bad)); sys.exit(1 if bad else 0)"
)


@pytest.mark.parametrize("pkg", sorted(FORBIDDEN))
def test_package_import_loads_nothing_forbidden(pkg: str) -> None:
    code = CHECK.format(pkg=pkg, forb=FORBIDDEN[pkg])
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, f"importing attncmp.{pkg} loaded: {r.stdout} {r.stderr}"


def test_extract_submodules_load_no_analysis() -> None:
    """Every extract module (including the demo/reference parts) imported together."""
    mods = sorted(
        "attncmp." + ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "extract").rglob("*.py")
    )
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('attncmp.analyze', "
        "'attncmp.workflows')))\n"
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, f"extract loaded: {r.stdout} {r.stderr}"


@pytest.mark.parametrize(
    "argv",
    [
        ["analyze", "--help"],
        ["store", "--help"],
        ["store", "info", "--help"],
        ["--help"],
        ["compare", "--help"],
        ["extract", "--help"],
        ["plot", "stats", "--help"],
    ],
)
def test_cli_help_does_not_load_torch(argv: list[str]) -> None:
    code = (
        "import sys; from click.testing import CliRunner; from attncmp import cli; "
        f"r = CliRunner().invoke(cli.main, {argv!r}); "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; "
        "print(r.output[-300:], bad); sys.exit(0 if (r.exit_code == 0 and not bad) else 1)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _offenders(pkg: str) -> list[str]:
    names = "|".join(re.escape(f) for f in FORBIDDEN[pkg])
    pat = re.compile(rf"^\s*(import|from)\s+({names})\b", re.M)
    return [
        str(p.relative_to(ROOT)) for p in (ROOT / pkg).rglob("*.py") if pat.search(p.read_text())
    ]


@pytest.mark.parametrize("pkg", sorted(FORBIDDEN))
def test_source_has_no_forbidden_imports(pkg: str) -> None:
    offenders = _offenders(pkg)
    assert not offenders, f"{pkg} imports one of {FORBIDDEN[pkg]}: {offenders}"


def test_no_bare_top_level_imports() -> None:
    """Code imports the installed names (attncmp.store, ...), never a bare `store`/`cli`."""
    pat = re.compile(r"^\s*(from|import)\s+(store|extract|analyze|cli|workflows)\b", re.M)
    offenders = [
        str(p.relative_to(ROOT))
        for p in ROOT.rglob("*.py")
        if not {".git", ".venv", ".ci-venv", "build"} & set(p.parts) and pat.search(p.read_text())
    ]
    assert not offenders, offenders
