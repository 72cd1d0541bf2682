"""Figures in seconds: `attncmp plot stats` vs `attncmp analyze` on the same store, side by side.

Each command runs as the user runs it (a fresh ``attncmp`` process, wall clock), interleaved
``--repeats`` times on the same demo store:

- **analyze**: ``attncmp analyze STORE --save-dir A -q`` (metrics, statistics, every figure,
  heatmap and text view, report);
- **plot stats**: ``attncmp plot stats A -q`` (statistics, tables, summary and report again from
  A's cache; every figure file already holding what it would draw is kept), also with
  ``--lang zh`` (a new report, the same figures), and with ``--force`` (every figure, heatmap and
  text view drawn again), with the default worker processes (the available cores) and with
  ``--jobs 1`` (all in one process);
- **start-up**: a fresh ``attncmp analyze`` process until the metric engine is entered (imports,
  store open, checks: the time before the first chunk is processed); wall and CPU seconds, and
  which of matplotlib / scipy were imported by then.

Goals (issue 12): plot stats <= 3 s wall on 2 cores and <= 1/3 of analyze (both printed for the
default and for ``--force``).

    python benchmarks/bench_figures.py                       # builds `attncmp demo --quick` first
    python benchmarks/bench_figures.py --demo-dir DIR        # an existing demo save directory

Wall clock depends on whatever else the machine is doing (the load average before and after is
printed with the numbers); CPU seconds (user + system of the command and every process it waited
for: the figure workers and their forkserver included) do much less, so both are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = "from attncmp.cli import main; main()"

STARTUP = r"""
import time, sys
t0 = time.perf_counter()
from attncmp.cli import main
import attncmp.analyze.table as T
def entered(*a, **k):
    mods = [m for m in ("matplotlib", "scipy", "torch") if m in sys.modules]
    print("STARTUP " + repr((time.perf_counter() - t0, time.process_time(), mods)))
    raise SystemExit(0)
T.compute_tables = entered
sys.argv = ["attncmp", "analyze", sys.argv[1], "--save-dir", sys.argv[2], "-q"]
main()
"""


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _run(args: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds of one ``attncmp`` command and every process it waited for
    (its figure workers included)."""
    c, t = _cpu(), time.perf_counter()
    r = subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t, _cpu() - c
    if r.returncode != 0:
        raise SystemExit(f"attncmp {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return wall, cpu


def _startup(store: Path, out: Path) -> tuple[float, float, list[str]]:
    r = subprocess.run(
        [sys.executable, "-c", STARTUP, str(store), str(out)], capture_output=True, text=True
    )
    line = next((x for x in r.stdout.splitlines() if x.startswith("STARTUP ")), None)
    if line is None:
        raise SystemExit(f"start-up probe failed:\n{r.stdout}\n{r.stderr}")
    wall, cpu, mods = eval(line[len("STARTUP ") :])  # noqa: S307 - our own repr of a tuple
    return wall, cpu, mods


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--demo-dir", type=Path, help="an `attncmp demo` save directory to reuse")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.demo_dir is None:
            print("building `attncmp demo --quick` ...", file=sys.stderr)
            _run(["demo", "--quick", "--save-dir", str(tmp / "demo"), "--quiet"])
            demo = tmp / "demo"
        else:
            demo = args.demo_dir
        store = demo / "attention_store.h5"
        if not store.exists():
            raise SystemExit(f"{store}: no store; pass the save directory of `attncmp demo`")
        out = tmp / "analysis"
        load0 = os.getloadavg()
        keys = ("analyze", "plot", "zh", "force", "force1")
        rows: dict[str, list] = {k: [] for k in (*keys, "su", "cpu")}
        mods: list[str] = []
        _run(["analyze", str(store), "--save-dir", str(out), "-q"])  # warm-up (page cache)
        for _ in range(args.repeats):
            shutil.rmtree(out, ignore_errors=True)
            rows["analyze"].append(_run(["analyze", str(store), "--save-dir", str(out), "-q"]))
            rows["plot"].append(_run(["plot", "stats", str(out), "-q"]))
            rows["zh"].append(_run(["plot", "stats", str(out), "-q", "--lang", "zh"]))
            rows["force"].append(_run(["plot", "stats", str(out), "-q", "--force"]))
            f1 = ["plot", "stats", str(out), "-q", "--force", "--jobs", "1"]
            rows["force1"].append(_run(f1))
            wall, cpu, mods = _startup(store, tmp / "startup")
            rows["su"].append(wall)
            rows["cpu"].append(cpu)
        load1 = os.getloadavg()
        summary = json.loads((out / "summary.json").read_text())
    n_samples = summary.get("store", {}).get("n_samples") or summary.get("n_samples")
    n_png = len(list(summary.get("files_written", []))) if "files_written" in summary else None
    print(
        f"store {store} ({n_samples} samples); {os.cpu_count()} CPUs, "
        f"{len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'} usable; "
        f"load average {load0[0]:.1f} before, {load1[0]:.1f} after; {args.repeats} repeats"
        + (f"; {n_png} files written per run" if n_png else "")
    )
    labels = {
        "analyze": "attncmp analyze",
        "plot": "plot stats (figures kept)",
        "zh": "plot stats --lang zh (kept)",
        "force": "plot stats --force (all drawn)",
        "force1": "plot stats --force --jobs 1",
    }
    for label, pick in (("median", statistics.median), ("best", min)):
        t = {k: tuple(pick(x[i] for x in rows[k]) for i in (0, 1)) for k in keys}
        su, cpu = pick(rows["su"]), pick(rows["cpu"])
        a = t["analyze"]
        print(
            f"[{label} of {args.repeats}]                         wall      CPU   / analyze (wall)"
        )
        for k in keys:
            goal = "   goal <= 3 s, <= 0.33" if k in ("plot", "force") else ""
            ratio = "" if k == "analyze" else f"   {t[k][0] / a[0]:5.2f}"
            print(f"  {labels[k]:<34} {t[k][0]:7.2f} s {t[k][1]:7.2f} s{ratio}{goal}")
        print(
            f"  {'analyze start-up to the 1st chunk':<34} {su:7.2f} s {cpu:7.2f} s"
            f"   {su / a[0]:5.2f}"
        )
        f, f1 = t["force"], t["force1"]
        print(f"  ratio --force --jobs 1 / --force     {f1[0] / f[0]:7.2f}   {f1[1] / f[1]:7.2f}")
    print(f"  imported before the first chunk: {', '.join(mods) or 'neither matplotlib nor scipy'}")


if __name__ == "__main__":
    main()
