"""Validate an attention store (one file or the shard files of one run) against ``store_schema.md``.

:func:`validate_store` never raises for a bad store: every finding becomes a :class:`Problem`
(kind, HDF5 path, first offending sample, message, count) in a :class:`ValidationReport`. A file
that cannot be opened at all (missing, truncated, not HDF5, not a store, newer major version)
gives exactly one problem.

What is checked, per file: required groups, datasets and attributes with their encoding stamps,
dtypes and shapes; the schema version; the commit marker; every offsets array (starts at 0,
monotone, consistent with ``n_nodes`` / ``n_tokens`` / layers / heads, flat data long enough for
the committed part); sample ids (valid UTF-8, unique, members of the recorded selection and of the
file's shard block); gold masks; every chunk of every dataset is read back (HDF5 verifies the
Fletcher-32 checksums while reading); and attention sanity per model and site: no NaN/Inf, no
negative weight, every row summing to 1 within ``schema.ROW_SUM_TOL[dtype]``. Across files:
compatible fingerprints, one selection, no overlapping ids, distinct shard indices.

Memory stays bounded: data is read in slices of about ``SPAN`` elements, aligned to HDF5 chunks
(or to whole samples for the attention checks), and the checks are vectorised segment reductions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import encodings as E
from . import schema as S
from .errors import StoreError, one_line
from .reader import _open_h5, superblock_info

__all__ = ["Problem", "ValidationReport", "validate_store", "PROBLEM_KINDS"]

SPAN = 1 << 22  # elements per read (4 Mi: 8 MiB float16, 16 MiB float32 plus a float64 row sum)
MAX_IDS = 5  # offending sample ids named per problem

PROBLEM_KINDS = {
    "open": "the file cannot be opened as HDF5",
    "not-a-store": "the file is HDF5 but not an attncmp store",
    "version": "the schema version is missing, malformed or newer than this attncmp",
    "structure": "a required group, dataset or attribute is missing or malformed",
    "encoding": "a missing or unknown encoding-type/encoding-version stamp, or invalid UTF-8",
    "dtype": "a dataset has the wrong dtype, rank or filters",
    "commit": "the commit marker is missing or inconsistent",
    "count": "a per-sample dataset is shorter than the committed sample count, or a bad count",
    "offsets": "an offsets array does not start at 0, decreases, or disagrees with the sizes",
    "ids": "duplicate sample ids, or ids outside the recorded selection",
    "shard": "shard files that do not belong together, or ids outside their shard block",
    "checksum": "a chunk fails its Fletcher-32 checksum or cannot be decompressed",
    "read": "a dataset could not be read for another reason",
    "nan": "attention rows containing NaN or Inf",
    "negative": "attention rows containing negative weights",
    "row-sum": "attention rows not summing to 1 within the dtype's tolerance",
    "gold": "gold masks with wrong sizes or values other than 0/1",
    "fingerprint": "the fingerprint attribute disagrees with the file's own layout",
}


@dataclass(frozen=True)
class Problem:
    """One finding. ``path`` is the HDF5 path (``""`` for the file itself); ``count`` how many
    elements/rows/chunks it covers; ``sample_id`` the first offending sample, if any."""

    kind: str
    path: str
    sample_id: str | None
    message: str
    count: int = 1
    file: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.path}" if self.file else self.path
        return f"[{self.kind}] {where or '(file)'}: {self.message}"


@dataclass
class ValidationReport:
    """The outcome of :func:`validate_store`: problems (empty when valid) and informative notes."""

    files: list[str]
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    n_samples: int = 0  # committed samples over all files
    n_planned: int = 0
    datasets_read: int = 0
    chunks_read: int = 0
    rows_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts_by_kind(self) -> dict[str, int]:
        """Number of problems of each kind (not the element counts inside them)."""
        out: dict[str, int] = {}
        for p in self.problems:
            out[p.kind] = out.get(p.kind, 0) + 1
        return out

    def summary(self, max_problems: int = 50) -> str:
        """Human-readable multi-line summary: verdict, what was checked, problems by kind."""
        lines = [f"store: {', '.join(self.files)}"]
        partial = " (partial)" if self.n_samples < self.n_planned else ""
        if self.datasets_read:
            lines.append(
                f"checked: {self.n_samples} of {self.n_planned} planned samples committed"
                f"{partial}; {self.datasets_read} datasets, {self.chunks_read} chunks read; "
                f"{self.rows_checked} attention rows checked"
            )
        for n in self.notes:
            lines.append(f"note: {n}")
        if self.ok:
            lines.append("VALID: no problems found")
            return "\n".join(lines)
        by_kind = self.counts_by_kind()
        lines.append(
            f"INVALID: {len(self.problems)} problem(s): "
            + ", ".join(f"{k} {v}" for k, v in sorted(by_kind.items()))
        )
        for p in self.problems[:max_problems]:
            lines.append(f"  {p}")
        if len(self.problems) > max_problems:
            lines.append(f"  ... and {len(self.problems) - max_problems} more")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
def validate_store(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> ValidationReport:
    """Validate one store file, or the shard files of one run, and return a report.

    Never raises for a damaged or foreign file; see :class:`ValidationReport`.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    report = ValidationReport(files=[str(p) for p in paths])
    if not paths:
        report.problems.append(Problem("open", "", None, "no store path given"))
        return report
    multi = len(paths) > 1
    results = []
    for p in paths:
        v = _FileValidator(p, report, label=str(p) if multi else "")
        v.run()
        results.append(v)
    if multi:
        _cross_check(results, report)
    report.n_planned = next((len(v.selection) for v in results if v.selection is not None), 0)
    if report.ok:
        _reader_check(paths, report)
    return report


class _Stop(Exception):
    """Abandon the current file (a problem has been recorded)."""


class _Reported(Exception):
    """Abandon the current check (its problem has been recorded)."""


class _FileValidator:
    def __init__(self, path: Path, report: ValidationReport, label: str) -> None:
        self.path = path
        self.report = report
        self.label = label
        self.f: h5py.File | None = None
        self.n = 0
        self.ids: list[str] | None = None
        self.selection: list[str] | None = None
        self.fingerprint: dict[str, Any] | None = None
        self.shard = (0, 1)
        self.n_nodes: np.ndarray | None = None
        self.n_tokens: np.ndarray | None = None
        self.models: list[str] = []
        self.sites: dict[str, dict[str, Any]] = {}  # model -> site -> attrs
        self.scanned_tail: dict[str, int] = {}  # dataset -> where the checksum pass starts
        self.dtype = "float16"
        self.has_gold = False
        self.config: dict[str, Any] | None = None
        self.targets: list[str] = []
        # datasets whose 0/1 values the checksum pass also checks: path -> (lo, hi)
        self.value_checks: dict[str, tuple[int, int]] = {}
        self.bad_chunks: dict[str, set[int]] = {}  # path -> chunk starts already reported

    # -- bookkeeping ----------------------------------------------------------------------------
    def problem(self, kind: str, path: str, message: str, sample_id: str | None = None, count=1):
        self.report.problems.append(
            Problem(kind, path, sample_id, message, int(count), file=self.label)
        )

    def ids_problem(self, kind: str, path: str, ids: Sequence[str], what: str) -> None:
        self.report.problems.append(_ids_problem(kind, path, ids, what, file=self.label))

    def note(self, text: str) -> None:
        self.report.notes.append(f"{self.label}: {text}" if self.label else text)

    @contextmanager
    def guard(self, path: str) -> Iterator[None]:
        """Turn any unexpected exception while checking ``path`` into a problem."""
        try:
            yield
        except _Stop:
            raise
        except _Reported:
            pass
        except Exception as e:  # noqa: BLE001 - a damaged file can fail anywhere
            kind = "checksum" if _is_filter_error(e) else "read"
            self.problem(kind, path, f"could not be read: {one_line(e)}")

    # -- entry ----------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self.f = self._open()
            with self.f:
                self._header()
                self._root_attrs()
                self._commit()
                for where, check in (
                    ("/selection", self._selection),
                    ("/samples", self._samples),
                    ("/nodes", self._items),
                    ("/models", self._models),
                    ("/gold", self._gold),
                    ("/", self._fingerprint_check),
                ):
                    with self.guard(where):  # a failure here is reported; the rest still run
                        check()
                self._attention_sanity()
                self._checksums()
        except (_Stop, _Reported):
            pass
        except Exception as e:  # noqa: BLE001 - last resort: a report, never a traceback
            kind = "checksum" if _is_filter_error(e) else "read"
            self.problem(kind, "", f"validation stopped: {one_line(e)}")

    def _open(self) -> h5py.File:
        """Open as the reader does (same checks, same one-line messages), as a problem."""
        p = self.path
        sb = superblock_info(p) if p.is_file() else None
        if sb is not None and sb.writing and not sb.truncated:
            self.note(
                "the file is marked as open for writing: a writer is still running, or one was "
                "killed (only committed samples count; the writer recovers the rest on reopen)"
            )
        try:
            return _open_h5(p)
        except StoreError as e:
            self.problem("open", "", str(e))
            raise _Stop from None

    # -- header and root attributes -------------------------------------------------------------
    def _header(self) -> None:
        a = self.f.attrs
        schema = _attr_str(a.get("schema"))
        if schema != S.SCHEMA_NAME:
            self.problem(
                "not-a-store",
                "/",
                f"not an attncmp store (root attribute schema is {schema!r}, "
                f"expected {S.SCHEMA_NAME!r})",
            )
            raise _Stop
        raw = a.get("schema_version")
        try:
            major, minor = S.parse_version(_attr_str(raw))
        except (TypeError, ValueError):
            self.problem("version", "/", f"schema_version {raw!r} is missing or not 'MAJOR.MINOR'")
            raise _Stop from None
        if major > S.SCHEMA_MAJOR:
            self.problem(
                "version",
                "/",
                f"store schema version {major}.{minor} is newer than this attncmp reads "
                f"({S.SCHEMA_VERSION}); upgrade attncmp",
            )
            raise _Stop
        self._stamp("/", E.ROOT)

    def _stamp(self, path: str, enc: E.Encoding) -> bool:
        """Report a missing, foreign or newer stamp; False when the element is a newer major
        version (its content is then not checked against this version's rules)."""
        p = E.stamp_problem(self.f[path], enc)
        if p is not None:
            self.problem("encoding", path, p.message)
        return p is None or not p.newer

    def _root_attrs(self) -> None:
        a = self.f.attrs
        text_attrs = ("created", "tool_version", "baseline", "split", "attention_dtype")
        for name in text_attrs + ("compression",):
            if _attr_str(a.get(name)) is None:
                self.problem("structure", "/", f"root attribute {name!r} (string) is missing")
        for name in ("selection_seed", "shard_index", "shard_count"):
            if not _is_int(a.get(name)):
                self.problem("structure", "/", f"root attribute {name!r} (integer) is missing")
        if a.get("has_gold") is None:
            self.problem("structure", "/", "root attribute 'has_gold' (boolean) is missing")
        self.has_gold = bool(a.get("has_gold", False))
        self.config = self._json_attr("/", "config", dict)
        self.fingerprint = self._json_attr("/", "fingerprint", dict)
        models = self._json_attr("/", "models", list)
        targets = self._json_attr("/", "targets", list)
        self.models = [str(m) for m in models] if models else []
        self.targets = [str(t) for t in targets] if targets else []
        if models is not None and not self.models:
            self.problem("structure", "/", "root attribute 'models' lists no model")
        baseline = _attr_str(a.get("baseline"))
        if baseline is not None and self.models and baseline not in self.models:
            self.problem("structure", "/", f"baseline {baseline!r} is not one of {self.models}")
        dt = _attr_str(a.get("attention_dtype"))
        if dt is not None and dt not in S.ATTENTION_DTYPES:
            self.problem(
                "dtype", "/", f"attention_dtype {dt!r} is not one of {list(S.ATTENTION_DTYPES)}"
            )
        self.dtype = dt if dt in S.ATTENTION_DTYPES else "float16"
        si, sc = a.get("shard_index"), a.get("shard_count")
        if _is_int(si) and _is_int(sc):
            if not (0 <= int(si) < int(sc)):
                self.problem("shard", "/", f"shard_index {si} is not in [0, shard_count={sc})")
            else:
                self.shard = (int(si), int(sc))

    def _json_attr(self, path: str, name: str, typ: type) -> Any:
        raw = _attr_str(self.f[path].attrs.get(name))
        if raw is None:
            self.problem("structure", path, f"attribute {name!r} (JSON {typ.__name__}) is missing")
            return None
        try:
            val = json.loads(raw)
        except ValueError:
            self.problem("structure", path, f"attribute {name!r} is not valid JSON")
            return None
        if not isinstance(val, typ):
            self.problem("structure", path, f"attribute {name!r} is not a JSON {typ.__name__}")
            return None
        return val

    # -- elements ------------------------------------------------------------------------------
    def _get(self, path: str) -> Any:
        """The object at ``path``, None when no such link exists; a link whose object cannot be
        opened (damaged metadata) is reported and raises :class:`_Reported`."""
        try:
            return self.f[path]
        except (KeyError, OSError, RuntimeError) as e:
            parent, _, name = path.rstrip("/").rpartition("/")
            try:
                exists = name in self.f[parent or "/"]
            except Exception:  # noqa: BLE001 - the parent is damaged: report at the parent
                exists = False
            if not exists:
                return None
            self.problem(
                "checksum",
                path,
                f"cannot be opened: its HDF5 metadata is damaged ({one_line(e)}); the file is "
                "corrupted: restore a copy or re-extract",
            )
            raise _Reported from None

    def _dataset(
        self, path: str, kinds: str, ndim: int = 1, dtype: Any = None, required: bool = True
    ) -> h5py.Dataset | None:
        """The dataset at ``path`` if it exists with a dtype kind in ``kinds`` and rank ``ndim``."""
        obj = self._get(path)
        if obj is None:
            if required:
                self.problem("structure", path, f"required dataset {path} is missing")
            return None
        if not isinstance(obj, h5py.Dataset):
            self.problem("structure", path, f"{path} must be a dataset, found a group")
            return None
        if obj.dtype.kind not in kinds or (dtype is not None and obj.dtype != np.dtype(dtype)):
            want = np.dtype(dtype).name if dtype is not None else _KIND_NAMES.get(kinds, kinds)
            self.problem("dtype", path, f"dtype is {obj.dtype}, expected {want}")
            return None
        if obj.ndim != ndim:
            self.problem("dtype", path, f"rank is {obj.ndim} (shape {obj.shape}), expected {ndim}")
            return None
        return obj

    def _group(self, path: str, enc: E.Encoding | None) -> h5py.Group | None:
        obj = self._get(path)
        if obj is None:
            self.problem("structure", path, f"required group {path} is missing")
            return None
        if not isinstance(obj, h5py.Group):
            self.problem("structure", path, f"{path} must be a group, found a dataset")
            return None
        if enc is not None:
            self._stamp(path, enc)
        return obj

    def _commit(self) -> None:
        ds = self._dataset("/commit", "iu", dtype=np.int64)
        if ds is None:
            raise _Stop
        if ds.shape != (1,):
            self.problem("commit", "/commit", f"shape is {ds.shape}, expected (1,)")
            raise _Stop
        n = int(ds[0])
        if n < 0:
            self.problem("commit", "/commit", f"committed sample count {n} is negative")
            raise _Stop
        self.n = n
        self.report.n_samples += n

    def _offsets(
        self, path: str, n_entries: int, sizes: np.ndarray | None, what: str, ids=None
    ) -> np.ndarray | None:
        """Read ``n_entries + 1`` offsets at ``path`` and check start, monotonicity and sizes.

        Returns the offsets when consistent, else None (a problem has been recorded).
        """
        ds = self._dataset(path, "i", dtype=np.int64)
        if ds is None:
            return None
        if ds.shape[0] < n_entries + 1:
            self.problem(
                "count",
                path,
                f"has {ds.shape[0]} entries, expected at least {n_entries + 1} "
                f"(one more than the committed {what})",
            )
            return None
        off = self._read(ds, 0, n_entries + 1)
        if off[0] != 0:
            self.problem("offsets", path, f"offsets[0] is {int(off[0])}, must be 0")
            return None
        d = np.diff(off)
        bad = np.flatnonzero(d < 0)
        if len(bad):
            self.problem(
                "offsets",
                path,
                f"offsets decrease at {len(bad)} position(s) (first at entry {int(bad[0])})",
                sample_id=_id_at(ids, bad[0]),
                count=len(bad),
            )
            return None
        if sizes is not None:
            wrong = np.flatnonzero(d != sizes)
            if len(wrong):
                j = int(wrong[0])
                self.problem(
                    "offsets",
                    path,
                    f"{len(wrong)} {what} have a block size that disagrees with their shape "
                    f"(first: entry {j} has {int(d[j])} elements, expected {int(sizes[j])})"
                    + _first_ids(ids, wrong),
                    sample_id=_id_at(ids, j),
                    count=len(wrong),
                )
                return None
        return off

    def _flat_length(self, path: str, need: int, what: str) -> None:
        ds = self._get(path)
        if isinstance(ds, h5py.Dataset) and ds.shape[0] < need:
            self.problem(
                "count",
                path,
                f"has {ds.shape[0]} elements but the committed {what} need {need}",
            )

    def _string_array(
        self, path: str, n: int, what: str, decode: bool = False
    ) -> list[str] | None | bool:
        """Check a string-array group holding at least ``n`` strings; return them if ``decode``."""
        g = self._group(path, E.STRING_ARRAY)
        if g is None:
            return None
        data = self._dataset(f"{path}/data", "u", dtype=np.uint8)
        off = self._offsets(f"{path}/offsets", n, None, what)
        if data is None or off is None:
            return None
        if data.shape[0] < off[-1]:
            self.problem(
                "count",
                f"{path}/data",
                f"has {data.shape[0]} bytes but the committed {what} need {int(off[-1])}",
            )
            return None
        if decode:
            raw = self._read(data, 0, int(off[-1])).tobytes()
            try:
                return [raw[off[i] : off[i + 1]].decode("utf-8") for i in range(n)]
            except UnicodeDecodeError:
                self.problem("encoding", f"{path}/data", f"{what} are not valid UTF-8")
                return None
        self._check_utf8(data, off, path, what)
        return True

    def _check_utf8(self, data: h5py.Dataset, off: np.ndarray, path: str, what: str) -> None:
        """Decode the committed bytes in slices cut at string boundaries (bounded memory)."""
        total = int(off[-1])
        lo = 0
        while lo < total:
            j = int(np.searchsorted(off, lo + SPAN, side="right")) - 1
            if off[j] <= lo:  # one string longer than SPAN: take it whole
                j = int(np.searchsorted(off, lo, side="right"))
            hi = int(off[j])
            try:
                self._read(data, lo, hi).tobytes().decode("utf-8")
            except UnicodeDecodeError:
                self.problem("encoding", f"{path}/data", f"{what} are not valid UTF-8")
                return
            lo = hi

    def _selection(self) -> None:
        if self._group("/selection", None) is None:
            return
        n_sel = None
        off = self._get("/selection/ids/offsets")
        if isinstance(off, h5py.Dataset) and off.ndim == 1 and off.shape[0] >= 1:
            n_sel = off.shape[0] - 1
        if n_sel is None:
            self._string_array("/selection/ids", 0, "selection ids")
            return
        sel = self._string_array("/selection/ids", n_sel, "selection ids", decode=True)
        if not isinstance(sel, list):
            return
        self.selection = sel
        dup = _duplicates(sel)
        if dup:
            self.ids_problem(
                "ids", "/selection/ids", dup, "sample id(s) appear more than once in the selection"
            )
        if self.n > len(sel):
            self.problem(
                "commit",
                "/commit",
                f"{self.n} samples committed but the selection plans only {len(sel)}",
            )

    def _samples(self) -> None:
        if self._group("/samples", E.SAMPLES) is None:
            return
        n = self.n
        ids = self._string_array("/samples/id", n, "sample ids", decode=True)
        if isinstance(ids, list):
            self.ids = ids
            dup = _duplicates(ids)
            if dup:
                self.ids_problem(
                    "ids", "/samples/id", dup, "sample id(s) are committed more than once"
                )
            if self.selection is not None:
                sel = set(self.selection)
                out = [i for i in ids if i not in sel]
                if out:
                    self.ids_problem(
                        "ids",
                        "/samples/id",
                        out,
                        "committed sample id(s) are not in the recorded selection",
                    )
                elif self.shard[1] > 1:
                    block = set(S.shard_ids(self.selection, *self.shard))
                    foreign = [i for i in ids if i not in block]
                    if foreign:
                        self.ids_problem(
                            "shard",
                            "/samples/id",
                            foreign,
                            f"sample id(s) lie outside shard {self.shard[0]}/{self.shard[1]}'s "
                            "block of the selection",
                        )
        self._string_array("/samples/split", n, "sample splits")
        for name in ("n_nodes", "n_tokens"):
            path = f"/samples/{name}"
            ds = self._dataset(path, "iu")
            if ds is None:
                continue
            if ds.shape[0] < n:
                self.problem("count", path, f"has {ds.shape[0]} entries for {n} committed samples")
                continue
            vals = self._read(ds, 0, n).astype(np.int64)
            bad = np.flatnonzero(vals < 1)
            if len(bad):
                self.problem(
                    "count",
                    path,
                    f"{len(bad)} sample(s) have {name} < 1 (every sample needs at least one "
                    "node and one token)" + _first_ids(self.ids, bad),
                    sample_id=_id_at(self.ids, bad[0]),
                    count=len(bad),
                )
                continue
            setattr(self, name, vals)
        n_t = len(self.targets) if self.targets else None
        tgt = self._dataset("/samples/target", "f", ndim=2)
        if tgt is not None:
            if tgt.shape[0] < n:
                self.problem("count", "/samples/target", f"has {tgt.shape[0]} rows for {n} samples")
            if n_t is not None and tgt.shape[1] != n_t:
                self.problem(
                    "count",
                    "/samples/target",
                    f"has {tgt.shape[1]} columns but the root attribute targets names {n_t}",
                )
        meta = self._group("/samples/meta", None)
        if meta is None:
            return
        for name, obj in meta.items():
            path = f"/samples/meta/{name}"
            kind = _attr_str(obj.attrs.get("kind"))
            if kind not in S.META_KINDS:
                self.problem(
                    "structure", path, f"attribute kind is {kind!r}, expected one of {S.META_KINDS}"
                )
                continue
            if kind == "str":
                self._string_array(path, n, f"values of metadata column {name!r}")
                continue
            ds = self._dataset(path, "f" if kind == "float" else "iu")
            if ds is not None and ds.shape[0] < n:
                self.problem("count", path, f"has {ds.shape[0]} entries for {n} committed samples")

    def _items(self) -> None:
        n = self.n
        for group, strings, what in (
            ("nodes", "label", "node labels"),
            ("tokens", "text", "token strings"),
        ):
            if self._group(f"/{group}", E.ITEMS) is None:
                continue
            counts = self.n_nodes if group == "nodes" else self.n_tokens
            off = self._offsets(f"/{group}/offsets", n, counts, "samples", self.ids)
            if off is None:
                continue
            self._string_array(f"/{group}/{strings}", int(off[-1]), what)
            if group == "tokens":
                ds = self._dataset("/tokens/special", "u", dtype=np.uint8)
                if ds is not None:
                    self._flat_length("/tokens/special", int(off[-1]), "tokens")
                    self.value_checks["/tokens/special"] = (0, int(off[-1]))

    def _models(self) -> None:
        g = self._group("/models", None)
        if g is None:
            return
        present = list(g.keys())
        for m in present:
            if m not in self.models:
                self.problem(
                    "structure", f"/models/{m}", f"model {m!r} is not listed in the root 'models'"
                )
        n_t = len(self.targets) if self.targets else None
        site_sets = {}
        for m in self.models:
            base = f"/models/{m}"
            if self._group(base, E.MODEL) is None:
                continue
            with self.guard(base):
                self._json_attr(base, "provenance", dict)
            pred = self._dataset(f"{base}/prediction", "f", ndim=2)
            if pred is not None:
                if pred.shape[0] < self.n:
                    self.problem(
                        "count",
                        f"{base}/prediction",
                        f"model {m!r} has {pred.shape[0]} predictions for {self.n} committed "
                        "samples (every model must cover every sample)",
                    )
                if n_t is not None and pred.shape[1] != n_t:
                    self.problem(
                        "count",
                        f"{base}/prediction",
                        f"has {pred.shape[1]} columns but the root attribute targets names {n_t}",
                    )
            att = self._group(f"{base}/attention", None)
            if att is None:
                continue
            self.sites[m] = {}
            for s in att:
                with self.guard(f"{base}/attention/{s}"):
                    self._site(m, s)
            site_sets[m] = sorted(att.keys())
        if len({tuple(v) for v in site_sets.values()}) > 1:
            self.problem(
                "structure",
                "/models",
                "models record different attention sites: "
                + "; ".join(f"{m}: {v}" for m, v in site_sets.items()),
            )
        keys = ("query_axis", "key_axis", "n_layers", "n_heads")
        first = next(iter(self.sites), None)
        for m, sites in self.sites.items():
            for name, info in sites.items():
                ref = self.sites[first].get(name)
                if ref is not None and any(info[k] != ref[k] for k in keys):
                    self.problem(
                        "structure",
                        f"/models/{m}/attention/{name}",
                        f"site {name!r} of model {m!r} has "
                        + ", ".join(f"{k}={info[k]}" for k in keys)
                        + f" but model {first!r} has "
                        + ", ".join(f"{k}={ref[k]}" for k in keys),
                    )

    def _site(self, m: str, s: str) -> None:
        path = f"/models/{m}/attention/{s}"
        if not self._stamp(path, E.ATTENTION):
            return
        a = self.f[path].attrs
        qa, ka = _attr_str(a.get("query_axis")), _attr_str(a.get("key_axis"))
        nl, nh = a.get("n_layers"), a.get("n_heads")
        ok = True
        for name, v in (("query_axis", qa), ("key_axis", ka)):
            if v not in S.AXES:
                self.problem(
                    "structure", path, f"attribute {name} is {v!r}, expected one of {S.AXES}"
                )
                ok = False
        for name, v in (("n_layers", nl), ("n_heads", nh)):
            if not _is_int(v) or int(v) < 1:
                self.problem(
                    "structure", path, f"attribute {name} is {v!r}, expected an integer >= 1"
                )
                ok = False
        layout = _attr_str(a.get("layout"))
        if layout != "layer,head,query,key":
            self.problem(
                "structure",
                path,
                f"attribute layout is {layout!r}, expected 'layer,head,query,key'",
            )
        data = self._dataset(f"{path}/data", "f", dtype=None)
        if data is not None:
            if data.dtype.name != self.dtype:
                self.problem(
                    "dtype",
                    f"{path}/data",
                    f"dtype is {data.dtype}, but the root attention_dtype is {self.dtype}",
                )
            if data.fletcher32 is False:
                self.problem(
                    "dtype",
                    f"{path}/data",
                    "has no Fletcher-32 checksum filter (attention data MUST be checksummed)",
                )
        if not ok:
            return
        info = {
            "query_axis": qa,
            "key_axis": ka,
            "n_layers": int(nl),
            "n_heads": int(nh),
            "tol": self._row_sum_tolerance(path, a),
        }
        self.sites[m][s] = info
        sizes = None
        if self.n_nodes is not None and self.n_tokens is not None:
            q = _axis_len(qa, self.n_nodes, self.n_tokens)
            k = _axis_len(ka, self.n_nodes, self.n_tokens)
            sizes = info["n_layers"] * info["n_heads"] * q * k
        off = self._offsets(f"{path}/offsets", self.n, sizes, "samples", self.ids)
        if off is None or data is None:
            return
        if data.shape[0] < off[-1]:
            self.problem(
                "count",
                f"{path}/data",
                f"has {data.shape[0]} weights but the committed samples need {int(off[-1])}",
            )
            return
        if sizes is not None:
            info["offsets"] = off
            info["q"] = q
            info["k"] = k

    def _gold(self) -> None:
        if "gold" not in self.f:
            if self.has_gold:
                self.problem("structure", "/gold", "has_gold is true but /gold is missing")
            return
        if not self.has_gold:
            self.note("/gold exists although has_gold is false; readers ignore it")
        if self._group("/gold", E.GOLD) is None:
            return
        present = self._dataset("/gold/present", "u", dtype=np.uint8)
        data = self._dataset("/gold/data", "u", dtype=np.uint8)
        sizes = None
        if present is not None:
            if present.shape[0] < self.n:
                self.problem(
                    "count", "/gold/present", f"has {present.shape[0]} entries for {self.n} samples"
                )
                return
            pres = self._read(present, 0, self.n)
            bad = np.flatnonzero(pres > 1)
            if len(bad):
                self.problem(
                    "gold",
                    "/gold/present",
                    f"{len(bad)} entries are not 0/1" + _first_ids(self.ids, bad),
                    sample_id=_id_at(self.ids, bad[0]),
                    count=len(bad),
                )
            if self.n_nodes is not None and self.n_tokens is not None:
                sizes = np.where(pres.astype(bool), self.n_nodes * self.n_tokens, 0)
        off = self._offsets("/gold/offsets", self.n, sizes, "gold masks", self.ids)
        if off is not None and data is not None:
            if data.shape[0] < off[-1]:
                self.problem(
                    "count",
                    "/gold/data",
                    f"has {data.shape[0]} cells but the committed masks need {int(off[-1])}",
                )
            else:
                self.value_checks["/gold/data"] = (0, int(off[-1]))

    def _fingerprint_check(self) -> None:
        """The fingerprint must describe the file's own layout (readers compare shards by it)."""
        fp = self.fingerprint
        if fp is None:
            return
        own: dict[str, Any] = {
            "models": self.models,
            "targets": self.targets,
            "baseline": _attr_str(self.f.attrs.get("baseline")),
            "dtype": _attr_str(self.f.attrs.get("attention_dtype")),
            "has_gold": bool(self.f.attrs.get("has_gold", False)),
            "shard": f"{self.shard[0]}/{self.shard[1]}",
            "config": self.config,
            "split": _attr_str(self.f.attrs.get("split")),
        }
        seed = self.f.attrs.get("selection_seed")
        if _is_int(seed):
            own["selection_seed"] = None if int(seed) < 0 else int(seed)
        if self.selection is not None:
            own["n_selected"] = len(self.selection)
        missing = [k for k in _FINGERPRINT_KEYS if k not in fp]
        if missing:
            self.problem(
                "fingerprint", "/", f"fingerprint lacks key(s) {missing} (see store_schema.md)"
            )
        for k, v in own.items():
            if k in fp and fp[k] != v:
                self.problem(
                    "fingerprint", "/", f"fingerprint {k} is {fp[k]!r} but the file says {v!r}"
                )
        b = self.models[0] if self.models else None
        if b in self.sites and "sites" in fp and isinstance(fp["sites"], list):
            fsites = {d.get("name"): d for d in fp["sites"] if isinstance(d, dict)}
            for name, info in self.sites[b].items():
                d = fsites.get(name)
                if d is None:
                    self.problem(
                        "fingerprint", "/", f"fingerprint sites lack the recorded site {name!r}"
                    )
                    continue
                for key in ("query_axis", "key_axis", "n_layers", "n_heads"):
                    if d.get(key) != info[key]:
                        self.problem(
                            "fingerprint",
                            "/",
                            f"fingerprint site {name!r} {key} is {d.get(key)!r} but the site "
                            f"group says {info[key]!r}",
                        )
            extra = sorted(set(fsites) - set(self.sites[b]))
            if extra:
                self.problem("fingerprint", "/", f"fingerprint lists sites {extra} with no group")
        meta = self._get("/samples/meta")
        if isinstance(meta, h5py.Group) and isinstance(fp.get("meta_columns"), list):
            have = sorted((k, _attr_str(v.attrs.get("kind"))) for k, v in meta.items())
            want = sorted(tuple(c) for c in fp["meta_columns"] if isinstance(c, list))
            if have != want:
                self.problem(
                    "fingerprint",
                    "/",
                    f"fingerprint meta_columns are {want} but /samples/meta holds {have}",
                )

    # -- data passes ----------------------------------------------------------------------------
    def _attention_sanity(self) -> None:
        for m, sites in self.sites.items():
            for s, info in sites.items():
                path = f"/models/{m}/attention/{s}/data"
                if "offsets" not in info:
                    if self.n:
                        self.note(f"{path}: attention sanity not checked (see the problems above)")
                    continue
                with self.guard(path):
                    self._sanity_one(path, info)

    def _row_sum_tolerance(self, path: str, a) -> float:
        """The site's recorded row-sum tolerance (section 7.2), else the table's for the store
        dtype; a recorded value looser than the table allows for any dtype is a problem."""
        default = S.row_sum_tolerance(self.dtype)
        raw = a.get("row_sum_tolerance")
        if raw is None:
            return default
        try:
            tol = float(raw)
        except (TypeError, ValueError):
            tol = float("nan")
        if not 0 < tol <= max(S.ROW_SUM_TOL.values()):
            self.problem(
                "structure",
                path,
                f"attribute row_sum_tolerance is {raw!r}, expected a number in "
                f"(0, {max(S.ROW_SUM_TOL.values()):g}]",
            )
            return default
        return max(tol, default)

    def _sanity_one(self, path: str, info: dict[str, Any]) -> None:
        ds = self.f[path]
        off = info["offsets"]
        k = info["k"]
        rows_per = info["n_layers"] * info["n_heads"] * info["q"]
        tol = info["tol"]
        acc = {kind: _Acc() for kind in ("nan", "negative", "row-sum")}
        n = self.n
        a = 0
        while a < n:
            b = int(np.searchsorted(off, off[a] + SPAN, side="right")) - 1
            b = min(max(b, a + 1), n)
            lo, hi = int(off[a]), int(off[b])
            x = self._read_checked(ds, path, lo, hi)
            self.scanned_tail[path] = hi
            if x is None:
                self.note(f"{path}: samples {a}..{b - 1} not sanity-checked (unreadable chunks)")
                a = b
                continue
            r = rows_per[a:b]
            row_len = np.repeat(k[a:b], r)
            row_start = np.zeros(len(row_len), dtype=np.int64)
            np.cumsum(row_len[:-1], out=row_start[1:])
            row_sample = np.repeat(np.arange(a, b), r)
            self.report.rows_checked += len(row_len)

            for kind, elements in (("nan", ~np.isfinite(x)), ("negative", x < 0)):
                bad_el = np.flatnonzero(elements)
                if len(bad_el):
                    rows = np.unique(np.searchsorted(row_start, bad_el, side="right") - 1)
                    acc[kind].add(len(rows), row_sample[rows])
            sums = np.add.reduceat(x, row_start, dtype=np.float64)
            bad_rows = np.flatnonzero(np.isfinite(sums) & (np.abs(sums - 1.0) > tol))
            if len(bad_rows):
                acc["row-sum"].add(len(bad_rows), row_sample[bad_rows], sums[bad_rows[0]])
            a = b
        what = {
            "nan": "contain NaN or Inf",
            "negative": "contain negative weights",
            "row-sum": f"do not sum to 1 within {tol:g} (stored {self.dtype})",
        }
        for kind, ac in acc.items():
            if not ac.rows:
                continue
            extra = f"; first row sums to {ac.first_value:.6g}" if kind == "row-sum" else ""
            self.problem(
                kind,
                path,
                f"{ac.rows} attention row(s) in {ac.n_samples} sample(s) {what[kind]}{extra}"
                + _first_ids(self.ids, np.asarray(ac.samples)),
                sample_id=_id_at(self.ids, ac.samples[0]),
                count=ac.rows,
            )

    def _read(self, ds: h5py.Dataset, lo: int, hi: int) -> np.ndarray:
        """``ds[lo:hi]``; an unreadable chunk is reported (once) and raises :class:`_Reported`."""
        if hi <= lo:
            return np.zeros((0, *ds.shape[1:]), dtype=ds.dtype)
        x = self._read_checked(ds, ds.name, lo, hi, count=False)
        if x is None:
            raise _Reported
        return x

    def _read_checked(
        self, ds: h5py.Dataset, path: str, lo: int, hi: int, count: bool = True
    ) -> np.ndarray | None:
        """Read ``ds[lo:hi]``; on failure, find and report the bad chunks and return None."""
        try:
            x = ds[lo:hi]
        except Exception as e:  # noqa: BLE001
            self._locate_bad_chunks(ds, path, lo, hi, e)
            return None
        if count:
            self.report.chunks_read += _n_chunks(ds, lo, hi)
        return x

    def _locate_bad_chunks(self, ds: h5py.Dataset, path: str, lo: int, hi: int, err) -> None:
        step = ds.chunks[0] if ds.chunks else hi - lo
        bad: list[tuple[int, int]] = []
        kind = "checksum" if _is_filter_error(err) else "read"
        first_err = err
        start = (lo // step) * step
        for c0 in range(start, hi, step):
            a, b = max(lo, c0), min(hi, c0 + step)
            try:
                ds[a:b]
            except Exception as e:  # noqa: BLE001
                bad.append((c0, min(c0 + step, ds.shape[0])))
                first_err = e
        if not bad:  # transient or not chunk-local: report the span
            bad = [(lo, hi)]
        seen = self.bad_chunks.setdefault(path, set())
        bad = [c for c in bad if c[0] not in seen]
        if not bad:
            return
        seen.update(c[0] for c in bad)
        c0, c1 = bad[0]
        if kind == "checksum":
            msg = (
                f"{len(bad)} chunk(s) fail the Fletcher-32 checksum or cannot be decompressed "
                f"(first covers elements {c0}..{c1 - 1}); the file is corrupted: restore a copy "
                "or re-extract"
            )
        else:
            msg = f"{len(bad)} chunk(s) cannot be read (first covers {c0}..{c1 - 1}): "
            msg += one_line(first_err)
        self.problem(kind, path, msg, count=len(bad))

    def _checksums(self) -> None:
        """Read every chunk of every dataset not already read by the sanity pass."""
        datasets: list[tuple[str, h5py.Dataset]] = []

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                datasets.append(("/" + name, obj))

        try:
            self.f.visititems(visit)
        except Exception as e:  # noqa: BLE001
            kind = "checksum" if "checksum" in str(e).lower() else "read"
            self.problem(
                kind, "/", f"the file's HDF5 metadata is damaged, listing failed: {one_line(e)}"
            )
            return
        for path, ds in datasets:
            self.report.datasets_read += 1
            if ds.shape is None or ds.ndim == 0:
                with self.guard(path):
                    ds[()]
                continue
            start = self.scanned_tail.get(path, 0)
            check = self.value_checks.get(path)
            with self.guard(path):
                self._scan(ds, path, start, check)

    def _scan(self, ds: h5py.Dataset, path: str, start: int, check) -> None:
        total = ds.shape[0]
        width = int(np.prod(ds.shape[1:])) if ds.ndim > 1 else 1
        chunk = ds.chunks[0] if ds.chunks else max(1, total)
        step = max(chunk, (SPAN // max(width, 1)) // chunk * chunk)
        lo = start
        bad_values = 0
        first_bad = None
        while lo < total:
            hi = min(total, (lo // step + 1) * step)
            x = self._read_checked(ds, path, lo, hi)
            if x is not None and check is not None and lo < check[1]:
                part = x[: max(0, min(hi, check[1]) - lo)]
                wrong = np.flatnonzero(part > 1)
                if len(wrong):
                    bad_values += len(wrong)
                    first_bad = lo + int(wrong[0]) if first_bad is None else first_bad
            lo = hi
        if bad_values:
            kind = "gold" if path.startswith("/gold") else "structure"
            self.problem(
                kind,
                path,
                f"{bad_values} value(s) are not 0/1 (first at element {first_bad})",
                count=bad_values,
            )


# ------------------------------------------------------------------------------------------------
_FINGERPRINT_KEYS = (
    "models",
    "sites",
    "targets",
    "meta_columns",
    "selection_seed",
    "split",
    "baseline",
    "dtype",
    "has_gold",
    "shard",
    "n_selected",
    "config",
)
_KIND_NAMES = {
    "iu": "an integer type",
    "i": "a signed integer type",
    "f": "a float type",
    "u": "an unsigned integer type",
}


class _Acc:
    def __init__(self) -> None:
        self.rows = 0
        self.n_samples = 0
        self.samples: list[int] = []
        self.first_value = float("nan")

    def add(self, rows: int, row_samples: np.ndarray, value: float | None = None) -> None:
        if not self.rows and value is not None:
            self.first_value = float(value)
        self.rows += rows
        u = np.unique(row_samples)
        self.n_samples += len(u)
        if len(self.samples) < MAX_IDS:
            self.samples += u[: MAX_IDS - len(self.samples)].tolist()


def _cross_check(results: list[_FileValidator], report: ValidationReport) -> None:
    """Shard files must belong to one run: same fingerprint apart from the shard, same selection,
    distinct shard indices, no sample in two files."""
    good = [v for v in results if v.fingerprint is not None]
    if len(good) < 2:
        return
    first = good[0]
    fp0 = {k: v for k, v in first.fingerprint.items() if k != "shard"}
    for v in good[1:]:
        fp = {k: x for k, x in v.fingerprint.items() if k != "shard"}
        if fp != fp0:
            key = next(k for k in sorted(set(fp) | set(fp0)) if fp.get(k) != fp0.get(k))
            report.problems.append(
                Problem(
                    "shard",
                    "/",
                    None,
                    f"incompatible with {first.path}: {key} is {fp.get(key)!r} here but "
                    f"{fp0.get(key)!r} there; only shards of one extraction run belong together",
                    file=v.label,
                )
            )
        elif v.selection is not None and first.selection is not None:
            if v.selection != first.selection:
                report.problems.append(
                    Problem(
                        "shard",
                        "/selection/ids",
                        None,
                        f"the recorded selection differs from {first.path}'s",
                        file=v.label,
                    )
                )
    counts = {v.shard[1] for v in good}
    if len(counts) > 1:
        report.problems.append(
            Problem("shard", "/", None, f"files disagree on shard_count: {sorted(counts)}")
        )
    seen_idx: dict[int, Path] = {}
    for v in good:
        if v.shard[0] in seen_idx:
            report.problems.append(
                Problem(
                    "shard",
                    "/",
                    None,
                    f"shard index {v.shard[0]} is also {seen_idx[v.shard[0]]}'s; is the same "
                    "shard given twice?",
                    file=v.label,
                )
            )
        seen_idx[v.shard[0]] = v.path
    seen: dict[str, Path] = {}
    overlap: list[str] = []
    for v in good:
        for i in v.ids or []:
            if i in seen:
                overlap.append(i)
            else:
                seen[i] = v.path
    if overlap:
        report.problems.append(
            _ids_problem(
                "shard", "/samples/id", overlap, "sample id(s) appear in more than one file"
            )
        )
    if {v.shard[0] for v in good} != set(range(first.shard[1])) and len(counts) == 1:
        missing = sorted(set(range(first.shard[1])) - {v.shard[0] for v in good})
        if missing:
            report.notes.append(
                f"shards {missing} of {first.shard[1]} not given: the store is partial"
            )


def _reader_check(paths: list[Path], report: ValidationReport) -> None:
    """Last line of defence: the reader itself must accept what validation accepted."""
    from .errors import StoreError
    from .reader import open_store

    try:
        with open_store(paths):
            pass
    except StoreError as e:
        report.problems.append(Problem("structure", "", None, f"the reader refuses it: {e}"))
    except Exception as e:  # noqa: BLE001
        report.problems.append(Problem("read", "", None, f"the reader fails on it: {one_line(e)}"))


# -- small helpers --------------------------------------------------------------------------------
def _attr_str(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bytes | np.bytes_):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if isinstance(v, str):
        return v
    if isinstance(v, np.ndarray) and v.shape == () and v.dtype.kind in "OSU":
        return _attr_str(v.item())
    return None


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)


def _axis_len(axis: str, n_nodes: np.ndarray, n_tokens: np.ndarray) -> np.ndarray:
    if axis == "nodes":
        return n_nodes
    if axis == "tokens":
        return n_tokens
    return np.ones_like(n_nodes)


def _n_chunks(ds: h5py.Dataset, lo: int, hi: int) -> int:
    if not ds.chunks or hi <= lo:
        return 0
    c = ds.chunks[0]
    return (hi - 1) // c - lo // c + 1


def _duplicates(values: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    dup: list[str] = []
    for v in values:
        if v in seen and v not in dup:
            dup.append(v)
        seen.add(v)
    return dup


def _id_at(ids: Sequence[str] | None, i: Any) -> str | None:
    if ids is None or i is None:
        return None
    i = int(i)
    return ids[i] if 0 <= i < len(ids) else None


def _ids_problem(kind: str, path: str, ids: Sequence[str], what: str, file: str = "") -> Problem:
    """One problem about the sample ids ``ids`` (not empty): how many, ``what`` is wrong with
    them, the first few; ``sample_id`` is the first."""
    first = ", ".join(map(repr, ids[:MAX_IDS]))
    return Problem(kind, path, ids[0], f"{len(ids)} {what} (first: {first})", len(ids), file=file)


def _first_ids(ids: Sequence[str] | None, idx: np.ndarray | Sequence[int]) -> str:
    if ids is None or len(idx) == 0:
        return ""
    names = [repr(ids[int(i)]) for i in list(idx)[:MAX_IDS] if 0 <= int(i) < len(ids)]
    return f" (first: {', '.join(names)})" if names else ""


def _is_filter_error(e: BaseException) -> bool:
    text = str(e).lower()
    return "filter" in text or "checksum" in text or "fletcher" in text or "inflate" in text
