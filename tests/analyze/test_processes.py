"""Worker processes never re-run the caller's script (analyze.processes): a plain script that
calls run_analysis at top level, with no ``if __name__ == "__main__":`` guard, as the README's
Python API example does, runs once and uses its workers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import types

import pytest
from attncmp.analyze import processes

SCRIPT = textwrap.dedent(
    """
    import sys
    from attncmp.analyze.outputs import AnalysisOptions, run_analysis
    from attncmp.store.synthetic import STUDY, study_sites, synthetic_spec, write_synthetic_store

    print("TOP-LEVEL RUN", flush=True)
    out = sys.argv[1]
    sites = study_sites(n_layers=1, n_heads=2)[: int(sys.argv[3])]
    spec = synthetic_spec(24, sites=sites, has_gold=True)
    write_synthetic_store(f"{out}/store.h5", spec, STUDY, sharpness={"full": 1.6})
    chunk = int(sys.argv[2])  # 8 (or 2 sites): the scan in worker processes; else here
    opts = AnalysisOptions(n_boot=200, examples=1, quiet=True, jobs=2, chunk_samples=chunk)
    res = run_analysis([f"{out}/store.h5"], f"{out}/analysis", opts)
    print("WORKERS", res.tables.run_info["workers"])
    print("VERDICT", res.summary["verdict"]["overall"])
    """
)


@pytest.mark.parametrize("chunk, sites, engine_workers", [(8, 9, 2), (64, 1, 0)])
def test_a_script_without_main_guard_runs_once_with_workers(tmp_path, chunk, sites, engine_workers):
    """Also when the scan runs in this process and the figure workers' server starts during it
    (render.prestart_workers)."""
    script = tmp_path / "analyse.py"
    script.write_text(SCRIPT)
    r = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(chunk), str(sites)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("TOP-LEVEL RUN") == 1, r.stdout  # never re-run by a worker
    assert f"WORKERS {engine_workers}" in r.stdout  # the metric chunks' processes (0: none)
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


# ---------------------------------------------------------------------------------------------
# a caller killed outright (SIGKILL, OOM killer): its worker processes leave with it
# ---------------------------------------------------------------------------------------------
POOLS = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from attncmp.analyze import render, table
    from attncmp.analyze.processes import main_hidden
    from attncmp.store import open_store
    from attncmp.store.synthetic import STUDY, study_sites, synthetic_spec, write_synthetic_store

    out = Path(sys.argv[1])
    which = sys.argv[2]
    if which == "figures":
        r = render.FigureRenderer(formats=("png",), workers=2)
        r.start()
        pool = r._feed(r._executor).result()  # the pool the feeder thread is starting
    else:
        spec = synthetic_spec(6, sites=study_sites(n_layers=1, n_heads=2))
        write_synthetic_store(out / "s.h5", spec, STUDY)
        pool = table._pool(open_store([out / "s.h5"]), out, 2)
    with main_hidden():
        for f in [pool.submit(os.getpid) for _ in range(8)]:
            f.result()
    import multiprocessing.forkserver as fs
    pids = [*pool._processes, fs._forkserver._forkserver_pid]
    print("PIDS", *pids, flush=True)
    time.sleep(600)  # killed by the test long before
    """
)


def _running(pid: int) -> bool:
    return processes.caller_alive(pid)


@pytest.mark.parametrize("which", ["figures", "engine"])
def test_workers_and_forkserver_exit_when_the_caller_is_killed(tmp_path, which):
    script = tmp_path / "pools.py"
    script.write_text(POOLS)
    p = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path), which],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        line = p.stdout.readline()
        assert line.startswith("PIDS "), line + p.stderr.read()[-3000:]
        pids = [int(x) for x in line.split()[1:]]
        assert len(pids) == 3 and all(_running(q) for q in pids)  # 2 workers + the forkserver
    finally:
        p.kill()
        p.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_running(q) for q in pids):
        time.sleep(0.1)
    assert not [q for q in pids if _running(q)], "orphaned worker processes outlived the caller"


def test_caller_alive_tells_running_zombie_gone_and_reused(tmp_path):
    me, start = processes.caller_identity()
    assert processes.caller_alive(me, start)
    assert not processes.caller_alive(me, str(int(start) + 1))  # same pid, another process
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while processes.caller_alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # exited but not reaped yet: a zombie counts as gone
    assert not processes.caller_alive(child.pid)
    child.wait()
    assert not processes.caller_alive(child.pid)  # reaped: no such process
