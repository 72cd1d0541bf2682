"""Nothing lost, ever: full disks (a real small tmpfs where one can be mounted, and a
fault-injecting writer everywhere), kills before the first commit and during merges, concurrent
resumes, bounded file growth, atomic outputs."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import pytest
from attncmp.store import (
    SiteSpec,
    StoreConfigMismatch,
    StoreDiskFullError,
    StoreError,
    StoreWriter,
    atomic,
    merge_stores,
    open_store,
    validate_store,
)
from attncmp.store import writer as W
from attncmp.store.synthetic import synthetic_batch, synthetic_spec, write_synthetic_store

from tests.store._util import assert_stores_equal

REPO = Path(__file__).resolve().parents[2]
SITES = (SiteSpec("fine_grained", n_layers=1, n_heads=2),)


def _spec(n=40, **kw):
    return synthetic_spec(n, sites=SITES, **kw)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run_child(code: str, *args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _visible(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if not p.name.startswith("."))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted store every interrupted run must end up equal to."""
    path = tmp_path_factory.mktemp("ref") / "ref.h5"
    write_synthetic_store(path, _spec(), batch_size=8)
    return path


# -- disk full: fault injection (runs everywhere) ---------------------------------------------
def test_full_disk_stops_cleanly_before_hdf5_writes_and_the_store_continues(
    tmp_path, reference, monkeypatch
):
    spec = _spec()
    ids = list(spec.selection_ids)
    path = tmp_path / "s.h5"
    calls = {"n": 0}
    real = W._fallocate

    def fallocate(fd, offset, length):
        calls["n"] += 1
        if calls["n"] >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, offset, length)

    monkeypatch.setattr(W, "_fallocate", fallocate)
    w = StoreWriter.create(path, spec)
    w.append(synthetic_batch(spec, ids[0:8]))
    w.append(synthetic_batch(spec, ids[8:16]))
    with pytest.raises(StoreDiskFullError) as e:
        w.append(synthetic_batch(spec, ids[16:24]))
    msg = str(e.value)
    assert msg.startswith(f"disk full while writing {path}: 16 samples are committed and safe")
    assert "re-run the same command to continue" in msg and "\n" not in msg
    w.close()
    monkeypatch.setattr(W, "_fallocate", real)
    assert validate_store(path).ok
    with open_store(path) as st:
        assert st.n_samples == 16
    with StoreWriter.open(path, spec) as w:
        for lo in range(16, 40, 8):
            w.append(synthetic_batch(spec, ids[lo : lo + 8]))
    assert_stores_equal(path, reference)


def test_without_preallocation_the_free_space_is_checked(tmp_path, monkeypatch):
    spec = _spec()
    ids = list(spec.selection_ids)

    def unsupported(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(W, "_fallocate", unsupported)
    with StoreWriter.create(tmp_path / "s.h5", spec) as w:
        w.append(synthetic_batch(spec, ids[:8]))
        monkeypatch.setattr(atomic, "free_bytes", lambda p: 1000)
        with pytest.raises(StoreDiskFullError, match="8 samples are committed and safe"):
            w.append(synthetic_batch(spec, ids[8:16]))
    monkeypatch.undo()
    with open_store(tmp_path / "s.h5") as st:
        assert st.n_samples == 8


def test_projected_need_beyond_free_space_stops_after_the_first_batch(tmp_path, monkeypatch):
    spec = _spec(20_000)
    ids = list(spec.selection_ids)
    with StoreWriter.create(tmp_path / "s.h5", spec) as w:
        monkeypatch.setattr(atomic, "free_bytes", lambda p: 50_000)
        with pytest.raises(StoreDiskFullError) as e:
            w.append(synthetic_batch(spec, ids[:8]))
    assert "the remaining 19992 samples need about" in str(e.value)
    assert "8 samples are committed and safe" in str(e.value)
    monkeypatch.undo()
    with open_store(tmp_path / "s.h5") as st:
        assert st.n_samples == 8


def test_reserved_space_is_cut_off_on_close(tmp_path):
    spec = _spec()
    path = tmp_path / "s.h5"
    with StoreWriter.create(path, spec) as w:
        w.append(synthetic_batch(spec, list(spec.selection_ids[:8])))
        assert os.path.getsize(path) > w._eoa()  # the next batch's bound is reserved
    sb = W.superblock_info(path) if hasattr(W, "superblock_info") else None
    from attncmp.store.reader import superblock_info

    sb = superblock_info(path)
    assert sb.size == sb.eof and not sb.writing


# -- disk full: a real small file system --------------------------------------------------------
@pytest.fixture
def tmpfs(tmp_path):
    """A 3 MiB tmpfs (skipped only where mounting is impossible: not root / no CAP_SYS_ADMIN)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or 'mount failed'})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


WRITE_UNTIL_FULL = """
import sys
from attncmp.store import SiteSpec, StoreDiskFullError, StoreWriter
from attncmp.store.synthetic import synthetic_batch, synthetic_spec
spec = synthetic_spec(600, sites=(SiteSpec("fine_grained", n_layers=2, n_heads=4),))
try:
    with StoreWriter.open_or_create(sys.argv[1], spec) as w:  # the same command continues
        ids = [i for i in spec.selection_ids if i not in w.committed_ids]
        for lo in range(0, len(ids), 16):
            w.append(synthetic_batch(spec, ids[lo : lo + 16]))
except StoreDiskFullError as e:
    print(e)
    raise SystemExit(3)
"""


def test_real_full_disk_no_crash_committed_samples_safe(tmpfs, tmp_path):
    path = tmpfs / "s.h5"
    code = WRITE_UNTIL_FULL
    r = _run_child(code, path)
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr[-2000:])  # not -11 / -7
    msg = r.stdout.strip()
    assert msg.startswith(f"disk full while writing {path}: "), msg
    n = int(msg.split(": ", 1)[1].split()[0])
    assert n > 0
    assert "HDF5-DIAG" not in r.stderr
    assert validate_store(path).ok
    with open_store(path) as st:
        assert st.n_samples == n
    # free space; the same command continues to the end and equals an uninterrupted run
    subprocess.run(["mount", "-o", "remount,size=64m", str(tmpfs)], check=True)
    r = _run_child(code, path)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    ref = tmp_path / "ref.h5"
    r = _run_child(code, ref)
    assert r.returncode == 0, r.stderr[-2000:]
    assert_stores_equal(path, ref)


def test_real_full_disk_projection_refuses_early(tmpfs):
    r = _run_child(WRITE_UNTIL_FULL.replace("600", "20000"), tmpfs / "s.h5")
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr[-2000:])
    assert "(projected from the first batch)" in r.stdout
    assert "samples are committed and safe" in r.stdout


def test_merge_into_a_full_disk_is_refused_and_leaves_nothing(tmpfs, tmp_path):
    shards = []
    spec = synthetic_spec(200, sites=(SiteSpec("fine_grained", n_layers=2, n_heads=4),))
    from dataclasses import replace

    for i in range(2):
        p = tmp_path / f"shard{i}.h5"
        write_synthetic_store(p, replace(spec, shard_index=i, shard_count=2), batch_size=32)
        shards.append(p)
    out = tmpfs / "merged.h5"
    (tmpfs / "filler").write_bytes(b"\0" * (2 << 20))
    with pytest.raises(StoreDiskFullError, match="merging needs about"):
        merge_stores(out, shards)
    assert _visible(tmpfs) == ["filler"]


# -- kills ------------------------------------------------------------------------------------
KILL_AFTER_CREATE = """
import os, signal, sys
from attncmp.store import SiteSpec, StoreWriter
from attncmp.store.synthetic import synthetic_spec
spec = synthetic_spec(40, sites=(SiteSpec("fine_grained", n_layers=1, n_heads=2),))
w = StoreWriter.create(sys.argv[1], spec)
os.kill(os.getpid(), signal.SIGKILL)
"""

KILL_WHILE_CREATING = """
import os, signal, sys
from attncmp.store import SiteSpec, StoreWriter, atomic
from attncmp.store import writer as W
from attncmp.store.synthetic import synthetic_spec
spec = synthetic_spec(40, sites=(SiteSpec("fine_grained", n_layers=1, n_heads=2),))
def die(tmp, path):
    os.kill(os.getpid(), signal.SIGKILL)
W.atomic.commit_file = die
StoreWriter.create(sys.argv[1], spec)
"""


@pytest.mark.parametrize("child", [KILL_AFTER_CREATE, KILL_WHILE_CREATING])
def test_killed_before_the_first_commit_the_same_command_starts_again(tmp_path, reference, child):
    path = tmp_path / "s.h5"
    r = _run_child(child, path)
    assert r.returncode == -signal.SIGKILL, r.stderr
    spec = _spec()
    with StoreWriter.open_or_create(path, spec) as w:
        assert w.n_committed == 0
        ids = list(spec.selection_ids)
        for lo in range(0, 40, 8):
            w.append(synthetic_batch(spec, ids[lo : lo + 8]))
    assert_stores_equal(path, reference)
    assert _visible(tmp_path) == ["s.h5"]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_empty_store_of_another_configuration_is_replaced_but_not_a_committed_one(tmp_path):
    path = tmp_path / "s.h5"
    StoreWriter.create(path, _spec(config={"adapter": "buggy"})).close()  # first batch failed
    spec = _spec()
    with StoreWriter.open_or_create(path, spec) as w:
        w.append(synthetic_batch(spec, list(spec.selection_ids[:8])))
    with pytest.raises(StoreConfigMismatch):
        StoreWriter.open_or_create(path, _spec(config={"adapter": "other"}))
    with StoreWriter.open_or_create(path, _spec(config={"adapter": "other"}), overwrite=True) as w:
        assert w.n_committed == 0


KILLED_WRITER = """
import os, signal, sys
from attncmp.store import SiteSpec, StoreWriter
from attncmp.store.synthetic import synthetic_batch, synthetic_spec
spec = synthetic_spec(40, sites=(SiteSpec("fine_grained", n_layers=1, n_heads=2),))
w = StoreWriter.create(sys.argv[1], spec)
w.append(synthetic_batch(spec, list(spec.selection_ids[:16])))
os.kill(os.getpid(), signal.SIGKILL)
"""

RESUMER = """
import os, sys, time
from attncmp.store import SiteSpec, StoreError, StoreWriter
from attncmp.store.synthetic import synthetic_batch, synthetic_spec
spec = synthetic_spec(40, sites=(SiteSpec("fine_grained", n_layers=1, n_heads=2),))
go = sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.01)
try:
    w = StoreWriter.open(sys.argv[1], spec)
except StoreError as e:
    print(e)
    raise SystemExit(1)
time.sleep(2.0)  # hold the store while the other one tries
ids = [i for i in spec.selection_ids if i not in w.committed_ids]
for lo in range(0, len(ids), 8):
    w.append(synthetic_batch(spec, ids[lo : lo + 8]))
w.close()
print("continued")
"""


def test_two_resumes_of_a_killed_store_exactly_one_continues(tmp_path, reference):
    path = tmp_path / "s.h5"
    r = _run_child(KILLED_WRITER, path)
    assert r.returncode == -signal.SIGKILL, r.stderr
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(RESUMER), str(path), str(go)],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    time.sleep(1.5)  # both interpreters up and waiting
    go.touch()
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        outs.append((p.returncode, out.strip(), err))
    codes = sorted(o[0] for o in outs)
    assert codes == [0, 1], outs
    loser = next(o for o in outs if o[0] == 1)
    assert "another process is writing this store right now" in loser[1], outs
    assert "\n" not in loser[1]
    assert validate_store(path).ok
    assert_stores_equal(path, reference)


MERGE_KILLED = """
import os, signal, sys
from attncmp.store import merge_stores
out, k, *shards = sys.argv[1:]
def progress(done, total):
    if done >= int(k):
        os.kill(os.getpid(), signal.SIGKILL)
merge_stores(out, shards, overwrite=True, batch_samples=8, progress=progress)
"""


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from dataclasses import replace

    d = tmp_path_factory.mktemp("shards")
    spec = _spec()
    paths = []
    for i in range(2):
        p = d / f"s{i}.h5"
        write_synthetic_store(p, replace(spec, shard_index=i, shard_count=2), batch_size=8)
        paths.append(p)
    return paths


@pytest.mark.parametrize("kill_after", [8, 24, 40])
@pytest.mark.parametrize("existing", [True, False])
def test_merge_killed_at_any_point_never_damages_or_exposes_out(
    tmp_path, shards, reference, kill_after, existing
):
    out = tmp_path / "merged.h5"
    if existing:
        merge_stores(out, shards)
        before = _sha(out)
    r = _run_child(MERGE_KILLED, out, kill_after, *shards)
    assert r.returncode == -signal.SIGKILL, r.stderr
    if existing:
        assert _sha(out) == before  # the previous OUT is whole
    else:
        assert not out.exists()  # no partial OUT under the final name
    assert _visible(tmp_path) == (["merged.h5"] if existing else [])
    # the same command again: leftovers are removed, the merge completes
    merge_stores(out, shards, overwrite=existing)
    assert_stores_equal(out, reference)
    assert [p.name for p in tmp_path.iterdir()] == ["merged.h5"]


# -- file growth --------------------------------------------------------------------------------
def _grow(path, n=2000, batch=32):
    spec = _spec(n)
    ids = list(spec.selection_ids)
    with StoreWriter.create(path, spec) as w:
        for lo in range(0, n, batch):
            w.append(synthetic_batch(spec, ids[lo : lo + batch]))
    return os.path.getsize(path), W.dataset_storage(path)


def test_file_size_stays_within_1_1x_the_datasets_when_committed_after_every_batch(
    tmp_path, monkeypatch
):
    size, storage = _grow(tmp_path / "a.h5")
    assert size <= 1.1 * storage, (size, storage)
    assert validate_store(tmp_path / "a.h5").ok
    # the same run without the repack on close: SWMR never reuses freed space
    monkeypatch.setattr(W, "REPACK_RATIO", 1e9)
    size_raw, storage_raw = _grow(tmp_path / "b.h5")
    assert storage_raw == storage
    assert size_raw > 3 * storage_raw, (size_raw, storage_raw)
    assert_stores_equal(tmp_path / "a.h5", tmp_path / "b.h5")


def test_repacked_store_continues_and_reads_while_written(tmp_path):
    path = tmp_path / "a.h5"
    spec = _spec(400)
    ids = list(spec.selection_ids)
    with StoreWriter.create(path, spec) as w:
        for lo in range(0, 200, 8):
            w.append(synthetic_batch(spec, ids[lo : lo + 8]))
    assert w.repacked
    with StoreWriter.open(path, spec) as w:
        w.append(synthetic_batch(spec, ids[200:208]))
        with open_store(path) as st:  # SWMR read while the writer is open
            assert st.n_samples == 208
    with h5py.File(path, "r") as f:
        assert f.attrs["schema_version"] == "1.0"


# -- atomic helper ------------------------------------------------------------------------------
def test_atomic_path_keeps_the_old_file_on_failure_and_cleans_up(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic.atomic_open(target) as fh:
        fh.write("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]
    atomic.atomic_write_text(target, "new")
    assert target.read_text() == "new"
    with atomic.atomic_path(tmp_path / "fig.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"png")
    assert (tmp_path / "fig.png").read_bytes() == b"png"


def test_clean_leftovers_removes_only_dead_processes_files(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    stale = tmp_path / f".out.tmp-{pid}-abcdef.h5"
    stale.write_bytes(b"x")
    live = atomic.temp_name(tmp_path / "out.h5")
    live.write_bytes(b"y")
    lock = tmp_path / ".gone.h5.lock"
    lock.write_bytes(b"")
    assert sorted(atomic.clean_leftovers(tmp_path)) == sorted([stale, lock])
    assert live.exists()


def test_writer_error_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        StoreWriter.create(tmp_path / "no" / "s.h5", _spec())
