"""The README's "Python API (notebooks)" section runs as written (on a small synthetic store)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_api_block() -> str:
    text = README.read_text(encoding="utf-8")
    m = re.search(r"### Python API[^\n]*\n+```python\n(.*?)```", text, re.S)
    assert m, "README has no Python API section with a python block"
    return m.group(1)


def test_readme_python_api_runs(tmp_path, monkeypatch):
    from attncmp.store.synthetic import synthetic_spec, write_synthetic_store

    monkeypatch.chdir(tmp_path)
    write_synthetic_store(tmp_path / "attention_store.h5", synthetic_spec(12))
    code = _python_api_block()
    assert "attention_store.h5" in code and "run_analysis" in code
    ns: dict = {}
    exec(compile(code, "README.md:Python API", "exec"), ns)  # noqa: S102 - the documented code
    assert (tmp_path / "out" / "report.md").exists()
    assert ns["res"].summary["verdict"]["overall"]
    assert ns["fig"].axes  # a matplotlib Figure with content
