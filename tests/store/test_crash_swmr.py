"""Crash safety (a writer killed with SIGKILL mid-batch) and SWMR (a reader in another process
sees committed samples while the writer is still appending)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from attncmp.store import SiteSpec, StoreError, StoreWriter, open_store
from attncmp.store.synthetic import synthetic_batch, synthetic_spec, write_synthetic_store
from attncmp.store.validate import validate_store

from ._util import assert_batches_equal, assert_stores_equal, read_all

REPO = Path(__file__).resolve().parents[2]
N, BATCH, COMMITTED = 24, 5, 15

SPEC_CODE = """
from attncmp.store import SiteSpec
from attncmp.store.synthetic import synthetic_spec
SPEC = synthetic_spec(
    24,
    sites=(SiteSpec("fine_grained", n_layers=2, n_heads=4), SiteSpec("pool", "nodes", "single")),
    has_gold=True,
)
"""


def _spec():
    ns: dict = {}
    exec(SPEC_CODE, ns)
    return ns["SPEC"]


# The child commits 3 batches, then arms a hook inside the writer so that the 4th append stops
# at a chosen point (after flushing whatever it has written so far), writes a marker file and
# sleeps; the parent SIGKILLs it as soon as the marker appears. The kill therefore lands inside
# the append deterministically, with partial data on disk beyond the commit marker.
WRITER_CHILD = SPEC_CODE + textwrap.dedent(
    """
    import sys, time
    from attncmp.store import StoreWriter
    from attncmp.store.synthetic import synthetic_batch

    path, marker, stop_at = sys.argv[1], sys.argv[2], sys.argv[3]
    ids = SPEC.selection_ids
    w = StoreWriter.create(path, SPEC)
    for b in range(3):
        w.append(synthetic_batch(SPEC, ids[b * 5 : (b + 1) * 5]))
    orig = StoreWriter._put  # appends one array to one dataset

    def hooked(self, name, values):
        orig(self, name, values)
        if "/" + name == stop_at:
            self._f.flush()  # make the partial batch reach the disk
            open(marker, "w").close()
            time.sleep(120)

    StoreWriter._put = hooked
    w.append(synthetic_batch(SPEC, ids[15:20]))
    raise SystemExit("the hook did not fire")
    """
)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    t0 = time.monotonic()
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"child exited early ({proc.returncode}): {out}{err}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"timed out waiting for {path}")
        time.sleep(0.02)


@pytest.mark.parametrize(
    "stop_at",
    [
        "/models/full/attention/fine_grained/data",  # mid-batch: first model's weights written
        "/gold/data",  # late: every weight written and flushed, commit marker not yet
    ],
)
def test_sigkill_mid_batch_loses_only_the_uncommitted_batch(tmp_path, stop_at):
    spec = _spec()
    path = tmp_path / "crash.h5"
    marker = tmp_path / "marker"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER_CHILD, str(path), str(marker), stop_at],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(marker, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    # the kill landed mid-batch: data of the 4th batch lies on disk beyond the commit marker
    with h5py.File(path, "r", libver="latest", swmr=True) as f:  # plain "r" refuses a flagged file
        committed = int(f["commit"][0])
        ds = f["models/full/attention/fine_grained"]
        assert committed == COMMITTED
        assert ds["data"].shape[0] > ds["offsets"][COMMITTED]

    # a reader sees exactly the committed samples, intact
    ref = tmp_path / "ref.h5"
    write_synthetic_store(ref, spec, batch_size=BATCH)
    with open_store(path) as st:
        assert st.ids == list(spec.selection_ids[:COMMITTED])
        got = next(st.iter_flat_batches(100))
    with open_store(ref) as st:
        want = next(st.iter_flat_batches(COMMITTED))
    assert_batches_equal(got, want)
    report = validate_store(path)
    assert report.ok, report.summary()
    assert any("open for writing" in n for n in report.notes)

    # the same writer configuration continues exactly where the marker says
    with StoreWriter.open(path, spec) as w:
        assert w.n_committed == COMMITTED
        rest = w.remaining_ids()
        assert rest == list(spec.selection_ids[COMMITTED:])
        for lo in range(0, len(rest), BATCH):
            w.append(synthetic_batch(spec, rest[lo : lo + BATCH]))
    assert_stores_equal(path, ref)
    assert validate_store(path).ok


# The reader child opens the store before anything is committed, then answers each line on stdin
# with the committed count after refresh() and a digest of every committed weight.
READER_CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from attncmp.store import open_store

    st = open_store(sys.argv[1])
    print(st.n_samples, flush=True)
    for _line in sys.stdin:
        n = st.refresh()
        total = 0.0
        for m in st.models:
            for ch in st.iter_chunks("fine_grained", [m], chunk_samples=4):
                total += float(np.float64(ch.blocks[m].data).sum())
        print(n, ",".join(st.ids), repr(total), flush=True)
    """
)


def test_reader_in_another_process_sees_commits_while_writer_appends(tmp_path):
    spec = synthetic_spec(15, sites=(SiteSpec("fine_grained", n_layers=1, n_heads=3),))
    path = tmp_path / "live.h5"
    ids = spec.selection_ids
    with StoreWriter.create(path, spec) as w:
        proc = subprocess.Popen(
            [sys.executable, "-c", READER_CHILD, str(path)],
            env=_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout.readline().strip() == "0"
            for k in (5, 10, 15):
                w.append(synthetic_batch(spec, ids[k - 5 : k]))
                proc.stdin.write("?\n")
                proc.stdin.flush()
                line = proc.stdout.readline()
                assert line, proc.stderr.read()
                n, seen, total = line.split()
                assert int(n) == k
                assert seen.split(",") == list(ids[:k])
                b = synthetic_batch(spec, ids[:k])
                want = sum(
                    float(np.float64(b.attention[m.name]["fine_grained"].astype(spec.dtype)).sum())
                    for m in spec.models
                )
                assert float(total) == pytest.approx(want, rel=1e-12)
                # validation of the live file also works while the writer holds it
                assert validate_store(path).ok
        finally:
            proc.stdin.close()
            proc.wait(timeout=30)
    assert proc.returncode == 0, proc.stderr.read()
    assert read_all(path).ids == list(ids)


# A live writer in another process: it commits one batch, reports, waits for a line on stdin,
# then commits a second batch and exits.
LIVE_WRITER_CHILD = SPEC_CODE + textwrap.dedent(
    """
    import sys
    from attncmp.store import StoreWriter
    from attncmp.store.synthetic import synthetic_batch

    ids = SPEC.selection_ids
    with StoreWriter.create(sys.argv[1], SPEC) as w:
        w.append(synthetic_batch(SPEC, ids[:5]))
        print("ready", flush=True)
        sys.stdin.readline()
        w.append(synthetic_batch(SPEC, ids[5:10]))
    print("done", flush=True)
    """
)


def test_open_refuses_a_store_another_live_process_is_writing(tmp_path):
    # HDF5's "open for writing" flag of a live writer looks like a killed writer's; recovering
    # by copy would replace the file under the live writer and silently lose its later samples
    path = tmp_path / "busy.h5"
    proc = subprocess.Popen(
        [sys.executable, "-c", LIVE_WRITER_CHILD, str(path)],
        env=_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        with pytest.raises(StoreError, match="another process is writing"):
            StoreWriter.open(path, _spec())
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "done", proc.stderr.read()
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    assert proc.returncode == 0, proc.stderr.read()
    assert read_all(path).ids == list(_spec().selection_ids[:10])
    # once the writer is gone the store continues normally
    with StoreWriter.open(path, _spec()) as w:
        assert w.n_committed == 10
