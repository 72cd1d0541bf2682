"""The outputs of one analysis are one consistent set of files in the save directory.

An analysis (or a re-plot) is written into a hidden staging directory inside the save directory
and moved into place only when every file is complete; the moves are bracketed by a marker file
(``.attncmp-publishing``) and end with a manifest (``analysis_cache/manifest.json``: run id,
every file with its size and modification time). So a failed or killed run leaves the previous
set whole, or, killed during the few renames of publishing, a set that :func:`problem` (checked
by ``attncmp plot stats``) recognises as incomplete and refuses in one line; never a silent
mixture of two runs. Staging directories of killed runs are removed by the next run.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attncmp.store import atomic

__all__ = [
    "MANIFEST",
    "MARKER",
    "discard",
    "intact",
    "new_stage",
    "problem",
    "publish",
    "read_manifest",
    "unchanged",
]

CACHE_DIR = "analysis_cache"
MANIFEST = f"{CACHE_DIR}/manifest.json"
MARKER = ".attncmp-publishing"
FORMAT = "attncmp-analysis-manifest"


def new_stage(save_dir: Path) -> Path:
    """A fresh hidden staging directory inside ``save_dir`` (leftovers of killed runs removed)."""
    atomic.clean_leftovers(save_dir)
    stage = atomic.temp_name(save_dir / "analysis")
    stage.mkdir()
    return stage


def discard(stage: Path) -> None:
    shutil.rmtree(stage, ignore_errors=True)


def _files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()
    )


def _entry(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _same(entry: dict[str, Any], now: dict[str, Any]) -> bool:
    return entry.get("size") == now["size"] and entry.get("mtime_ns") == now["mtime_ns"]


def intact(save_dir: Path, names, manifest: dict[str, Any] | None = None) -> bool:
    """Every file of ``names`` is recorded in the manifest and unchanged since (size, mtime)."""
    files = dict((manifest or read_manifest(save_dir) or {}).get("files", {}))
    for name in names:
        e = files.get(name)
        try:
            if not e or not _same(e, _entry(save_dir / name)):
                return False
        except OSError:
            return False
    return True


def unchanged(save_dir: Path) -> Callable[[str, str], Path | None]:
    """``reuse(key, name)`` for a re-plot of ``save_dir``: the file ``name`` when the manifest
    recorded it with fingerprint ``key`` and it has not changed since (size, modification
    time); else None."""
    manifest = read_manifest(save_dir) or {}
    files = dict(manifest.get("files", {}))

    def reuse(key: str, name: str) -> Path | None:
        recorded = files.get(name) or {}
        same = recorded.get("key") == key and intact(save_dir, [name], manifest)
        return save_dir / name if same else None

    return reuse


def read_manifest(save_dir: Path) -> dict[str, Any] | None:
    p = save_dir / MANIFEST
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and m.get("format") == FORMAT else None


def publish(
    stage: Path, save_dir: Path, *, keep: bool = False, keys: dict[str, str] | None = None
) -> dict[str, Path]:
    """Move every file of ``stage`` into ``save_dir`` and record the set; returns staged path ->
    final path. ``keys``: file name -> the fingerprint of a figure (recorded with the file, so a
    re-plot can keep an unchanged figure: :func:`unchanged`).

    ``keep=False`` (a new analysis): files of the previous set that the new one lacks (e.g. a
    fourth heatmap example) are removed, and a new run id is recorded. ``keep=True`` (a re-plot
    from the cache): the previous set's other files stay and keep its run id.
    """
    names = _files(stage)
    old = read_manifest(save_dir)
    run_id = (old or {}).get("run_id") if keep else None
    run_id = run_id or f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
    atomic.atomic_write_text(save_dir / MARKER, run_id)
    moved: dict[str, Path] = {}
    for rel in names:
        dst = save_dir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage / rel, dst)
        moved[rel] = dst
    entries: dict[str, dict[str, int]] = {}
    if keep and old:
        for rel, e in dict(old.get("files", {})).items():
            if rel not in moved and (save_dir / rel).exists():
                entries[rel] = e
    elif old:
        for rel in old.get("files", {}):
            if rel not in moved and rel != MANIFEST:
                (save_dir / rel).unlink(missing_ok=True)
    elif not keep:  # an analysis from before manifests: its cache belongs wholly to it
        for p in (save_dir / CACHE_DIR).glob("*"):
            if p.is_file() and f"{CACHE_DIR}/{p.name}" not in moved:
                p.unlink(missing_ok=True)
    for rel, dst in moved.items():
        entries[rel] = _entry(dst)
        if keys and rel in keys:
            entries[rel]["key"] = keys[rel]
    manifest = {
        "format": FORMAT,
        "version": "1.0",
        "run_id": run_id,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": dict(sorted(entries.items())),
    }
    (save_dir / CACHE_DIR).mkdir(exist_ok=True)
    atomic.atomic_write_text(save_dir / MANIFEST, json.dumps(manifest, indent=2))
    (save_dir / MARKER).unlink(missing_ok=True)
    discard(stage)
    return {stage / rel: dst for rel, dst in moved.items()}


def problem(save_dir: Path, inputs: set[str] | None = None) -> str | None:
    """Why the analysis in ``save_dir`` is not one consistent set (None when it is, or when it
    was written before manifests existed). ``inputs``: the files a re-plot reads (checked for
    size and modification time; other files may be missing, a re-plot writes them again)."""
    if (save_dir / MARKER).exists():
        return (
            "the analysis there is incomplete (a run was interrupted while moving its files into "
            "place)"
        )
    m = read_manifest(save_dir)
    if m is None:
        return None
    for rel, e in m.get("files", {}).items():
        p = save_dir / rel
        if inputs is not None and rel not in inputs and not rel.startswith(f"{CACHE_DIR}/"):
            continue
        try:
            now = _entry(p)
        except OSError:
            return f"{rel} of the recorded analysis is missing"
        if not _same(e, now):
            return f"{rel} was changed after the analysis wrote it (it belongs to another run)"
    return None
