"""Join the shard files of one extraction run into a single store, in the recorded selection order.

The shards must come from one run: same fingerprint apart from the ``shard`` field (models, sites,
selection, seed, dtype, configuration...) and no sample in two files. The merged store is written
with the ordinary writer (so it is a normal, resumable store with shard ``0/1``), batch by batch,
so memory is bounded by the batch size. It is written to a hidden temporary file beside ``out``
and renamed into place only when complete: a failed or killed merge leaves no half-written output
under ``out`` and an existing ``out`` untouched (leftover temporary files of a killed merge are
removed by the next one). The free space is checked against an estimate before starting.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from . import atomic
from .errors import StoreDiskFullError, StoreError
from .reader import Store, _open_h5, open_store
from .schema import ModelSpec, SiteSpec, StoreSpec
from .writer import StoreWriter

__all__ = ["MergeResult", "merge_stores", "spec_of"]


@dataclass(frozen=True)
class MergeResult:
    out: Path
    shards: list[Path]
    n_samples: int  # samples written
    n_planned: int  # the run's selection size
    seconds: float

    @property
    def partial(self) -> bool:
        """True when the shards given did not cover the whole selection."""
        return self.n_samples < self.n_planned


def spec_of(st: Store) -> StoreSpec:
    """The :class:`StoreSpec` an open store was written with (shard fields as in its first file).

    ``spec_of(st).fingerprint()`` equals the recorded fingerprint, so a writer given this spec can
    continue the store.
    """
    fp = _fingerprint(st)
    return StoreSpec(
        models=tuple(
            ModelSpec(m, st.provenance(m), source_dtype=_source_dtype(st, m)) for m in st.models
        ),
        sites=tuple(SiteSpec(**d) for d in fp["sites"]),
        selection_ids=tuple(st.selection_ids),
        targets=tuple(st.targets),
        meta_columns=tuple((str(c[0]), str(c[1])) for c in fp["meta_columns"]),
        config=st.config,
        selection_seed=st.selection_seed,
        split=st.split,
        baseline=st.baseline,
        dtype=st.attention_dtype,
        compression=str(st.attrs.get("compression", "gzip")),
        has_gold=st.has_gold,
        shard_index=int(st.attrs.get("shard_index", 0)),
        shard_count=int(st.attrs.get("shard_count", 1)),
    )


def _source_dtype(st: Store, model: str) -> str | None:
    """The model's recorded attention source dtype (section 7.2), None when not recorded."""
    return next((s.source_dtype for s in st.sites(model).values() if s.source_dtype), None)


def _fingerprint(st: Store) -> dict:
    import json

    return json.loads(st.attrs["fingerprint"])


def merge_stores(
    out: str | os.PathLike,
    shards: Sequence[str | os.PathLike],
    *,
    overwrite: bool = False,
    batch_samples: int = 256,
    compression: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> MergeResult:
    """Merge ``shards`` (files of one run) into the new store ``out``.

    Parameters
    ----------
    out
        Output path. Refused if it exists, unless ``overwrite``; refused if it is one of the shards.
    shards
        One or more shard files. Their order does not matter: samples are written in the order of
        the run's recorded selection.
    overwrite
        Replace an existing ``out`` (only once the merge has succeeded).
    batch_samples
        Samples per appended batch (memory is bounded by one batch).
    compression
        ``"gzip"``, ``"lzf"`` or ``"none"``; default: as the shards were written.
    progress
        Called as ``progress(done, total)`` after every batch.

    Raises
    ------
    StoreError
        Incompatible shards (the message names the differing setting), overlapping sample ids,
        an existing output, or an unreadable shard.
    """
    import time

    t0 = time.perf_counter()
    out = Path(out)
    paths = [Path(p) for p in shards]
    if not paths:
        raise StoreError("no shard files given to merge")
    for p in paths:
        if p.exists() and out.exists() and os.path.samefile(p, out):
            raise StoreError(f"{out}: is also one of the shards; choose a new output file")
    if len({p.resolve() for p in paths}) != len(paths):
        raise StoreError("the same shard file is given more than once")
    if out.exists() and not overwrite:
        raise StoreError(f"{out}: already exists; pass --overwrite to replace it")
    if not out.parent.exists():
        raise StoreError(f"{out}: directory {out.parent} does not exist; create it first")
    atomic.clean_leftovers(out.parent)
    tmp = atomic.temp_name(out)
    with open_store(paths) as st:  # checks fingerprints and overlap, orders by selection
        spec = replace(spec_of(st), shard_index=0, shard_count=1)
        if compression is not None:
            spec = replace(spec, compression=compression)
    need = _estimate_bytes(paths, spec.compression)
    free = atomic.free_bytes(out)
    if free is not None and free < need:
        raise StoreDiskFullError(
            f"{out}: merging needs about {_mib(need)} but only {_mib(free)} are free on its "
            "disk; free space or write the merged store elsewhere"
        )
    with open_store(paths) as st:
        total = st.n_samples
        done = 0
        try:
            with StoreWriter.create(tmp, spec, overwrite=True) as w:
                for batch in st.iter_flat_batches(batch_samples):
                    w.append(batch)
                    done += len(batch)
                    if progress is not None:
                        progress(done, total)
        except StoreDiskFullError:
            tmp.unlink(missing_ok=True)
            raise StoreDiskFullError(
                f"disk full while merging into {out} ({done} of {total} samples copied): nothing "
                f"was written under {out}; free space and re-run the same command"
            ) from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        n_planned = st.n_planned
    atomic.commit_file(tmp, out)
    return MergeResult(
        out=out,
        shards=paths,
        n_samples=done,
        n_planned=n_planned,
        seconds=time.perf_counter() - t0,
    )


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _estimate_bytes(paths: Sequence[Path], compression: str) -> int:
    """Bytes the merged store will take: the shards' dataset storage (chunks are re-compressed
    with the same codec), or their uncompressed size when another codec is asked for."""
    import h5py

    total = 0
    for p in paths:
        with _open_h5(p) as f:
            same = str(f.attrs.get("compression", "gzip")) == compression

            def visit(_name: str, obj, same=same) -> None:
                nonlocal total
                if isinstance(obj, h5py.Dataset):
                    total += obj.id.get_storage_size() if same else obj.size * obj.dtype.itemsize

            f.visititems(visit)
    return int(total * 1.05) + (4 << 20)
