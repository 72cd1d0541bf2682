"""Import rules (DESIGN.md section 2): `store` and `analyze` never load torch or `extract`, and
`attncmp analyze --help` does not load torch. Checked in fresh interpreters via sys.modules."""

import subprocess
import sys

import pytest

CHECK = (
    "import sys, {mod}; "
    "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.') "
    "or m == 'extract' or m.startswith('extract.')); "
    "print(','.join(bad)); sys.exit(1 if bad else 0)"
)


@pytest.mark.parametrize("mod", ["store", "analyze"])
def test_package_import_does_not_load_torch(mod: str) -> None:
    r = subprocess.run(
        [sys.executable, "-c", CHECK.format(mod=mod)], capture_output=True, text=True
    )
    assert r.returncode == 0, f"importing {mod} loaded: {r.stdout} {r.stderr}"


@pytest.mark.parametrize(
    "argv", [["analyze", "--help"], ["store", "--help"], ["store", "info", "--help"], ["--help"]]
)
def test_cli_help_does_not_load_torch(argv: list[str]) -> None:
    code = (
        "import sys; from click.testing import CliRunner; import cli; "
        f"r = CliRunner().invoke(cli.main, {argv!r}); "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; "
        "print(r.output[-300:], bad); sys.exit(0 if (r.exit_code == 0 and not bad) else 1)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_source_has_no_forbidden_imports() -> None:
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    pat = re.compile(r"^\s*(import torch|from torch|from extract|import extract)", re.M)
    offenders = [
        str(p.relative_to(root))
        for pkg in ("store", "analyze")
        for p in (root / pkg).rglob("*.py")
        if pat.search(p.read_text())
    ]
    assert not offenders, f"store/analyze import torch or extract: {offenders}"
