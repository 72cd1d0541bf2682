"""Worker processes never re-run the caller's script (analyze.processes): a plain script that
calls run_analysis at top level, with no ``if __name__ == "__main__":`` guard, as the README's
Python API example does, runs once and uses its workers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types

from attncmp.analyze import processes

SCRIPT = textwrap.dedent(
    """
    import sys
    from attncmp.analyze.outputs import AnalysisOptions, run_analysis
    from attncmp.store.synthetic import STUDY, study_sites, synthetic_spec, write_synthetic_store

    print("TOP-LEVEL RUN", flush=True)
    out = sys.argv[1]
    spec = synthetic_spec(24, sites=study_sites(n_layers=1, n_heads=2), has_gold=True)
    write_synthetic_store(f"{out}/store.h5", spec, STUDY, sharpness={"full": 1.6})
    opts = AnalysisOptions(n_boot=200, examples=1, quiet=True, jobs=2, chunk_samples=8)
    res = run_analysis([f"{out}/store.h5"], f"{out}/analysis", opts)
    print("WORKERS", res.tables.run_info["workers"])
    print("VERDICT", res.summary["verdict"]["overall"])
    """
)


def test_a_script_without_main_guard_runs_once_with_workers(tmp_path):
    script = tmp_path / "analyse.py"
    script.write_text(SCRIPT)
    r = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("TOP-LEVEL RUN") == 1, r.stdout  # never re-run by a worker
    assert "WORKERS 2" in r.stdout  # the metric chunks did run in worker processes
    assert "VERDICT supported" in r.stdout
    assert (tmp_path / "analysis" / "attention_heatmap_example_1.png").exists()


def test_main_hidden_restores_the_main_module(monkeypatch):
    main = types.ModuleType("__main__")
    main.__file__ = "/somewhere/script.py"
    main.__spec__ = "a spec"
    monkeypatch.setitem(sys.modules, "__main__", main)
    with processes.main_hidden():
        assert not hasattr(main, "__file__") and main.__spec__ is None
    assert main.__file__ == "/somewhere/script.py" and main.__spec__ == "a spec"
    bare = types.ModuleType("__main__")  # an interactive session: no file
    monkeypatch.setitem(sys.modules, "__main__", bare)
    with processes.main_hidden():
        assert bare.__spec__ is None
    assert not hasattr(bare, "__file__")
