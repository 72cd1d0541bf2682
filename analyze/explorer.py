"""``explorer.html``: one self-contained, offline HTML file to browse every sample of a store.

The file needs no server, no network and no library: the page's script and style
(``explorer_assets/``) are inlined, a Content-Security-Policy meta tag forbids every fetch, and the
data travel inside the file:

* one JSON document (``<script type="application/json">``) with the sample list (id, sizes,
  target, every model's prediction and absolute error, the per-sample metric differences of the
  headline cell read from ``per_sample_metrics.parquet`` / ``pairwise.parquet``, strata, the
  heatmap examples), the report (``report.md`` rendered to HTML with its figures inlined, so the
  explorer shows exactly the report's numbers) and the verdict from ``summary.json``;
* one base64 block per embedded sample, decoded only when the sample is selected (lazy): gzip of
  a small JSON header (node labels, the model's own token strings, special-token flags, gold
  cells, the layout) followed by every model's and site's ``[layers, heads, query, key]`` weights
  as float16, byte-shuffled (low bytes, then high bytes) so that gzip compresses them well. The
  store keeps float16 by default, so for such stores the embedded weights are the stored values;
  a float32 store is rounded to float16 for display, which the page says ("display precision").

Large stores: ``max_samples`` / ``max_mb`` embed the attention of the heatmap examples plus a
seeded random selection of the others (the list still shows every sample; the others are marked "not
embedded"). Sizes are in the README (section "Explorer").

Notebook use::

    from attncmp.analyze.explorer import write_explorer
    write_explorer("attention_comparison/explorer.html", save_dir="attention_comparison")
"""

from __future__ import annotations

import base64
import datetime as _dt
import gzip
import html
import json
import math
import os
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from attncmp.store import open_store

from .errors import AnalysisError
from .registry import ORIGINAL_METRICS

__all__ = [
    "DEFAULT_MAX_MB",
    "ExplorerError",
    "ExplorerResult",
    "add_explorer",
    "choose_embedded",
    "markdown_to_html",
    "write_explorer",
]

#: size budget (MiB) of the embedded attention when ``analyze`` writes the explorer: beyond it,
#: the examples plus a seeded random selection (``attncmp view`` embeds every sample unless given
#: ``--max-samples`` / ``--max-mb``)
DEFAULT_MAX_MB = 64.0
#: estimated file bytes per embedded weight (float16, shuffled, gzip, base64), to apply the budget;
#: measured by benchmarks/bench_explorer.py
BYTES_PER_WEIGHT = 2.25
EXPLORER_FORMAT = "attncmp-explorer"
EXPLORER_VERSION = 1
#: the page's numbers are shown with this many significant digits (float16 holds ~3.3)
DISPLAY_DIGITS = 3
_DIFF_METRICS = (*ORIGINAL_METRICS, "norm_entropy", "node_specificity", "gold_mass")
_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data: blob:; connect-src 'none'; form-action 'none'; base-uri 'none'"
)


class ExplorerError(AnalysisError):
    """A user-correctable problem building an explorer (one line, names the fix)."""


@dataclass(frozen=True)
class ExplorerResult:
    """What :func:`write_explorer` wrote."""

    path: Path
    n_samples: int  # listed (every committed sample)
    n_embedded: int  # samples whose attention is in the file
    n_bytes: int
    precision: str  # "float16"

    def describe(self) -> str:
        mb = self.n_bytes / 2**20
        cap = (
            ""
            if self.n_embedded == self.n_samples
            else f" (attention of {self.n_embedded}: the examples + a seeded random selection)"
        )
        return f"{self.path}: {self.n_samples} samples{cap}, {mb:.1f} MiB"


# ---------------------------------------------------------------------------------------------
# selection
# ---------------------------------------------------------------------------------------------
def choose_embedded(
    ids: Sequence[str],
    examples: Sequence[str],
    max_samples: int | None,
    seed: int = 0,
    *,
    sizes: Sequence[float] | None = None,
    max_bytes: float | None = None,
) -> list[int]:
    """Positions (sorted) of the samples whose attention is embedded.

    Every sample when neither cap binds. Otherwise the heatmap ``examples`` (those in the store)
    first, then the other samples in the order of a permutation drawn with
    ``numpy.random.default_rng(seed)``, taken while fewer than ``max_samples`` (None or 0: no
    count cap) are chosen and their estimated ``sizes`` (bytes) stay within ``max_bytes``; the
    examples are kept even beyond ``max_bytes``. The selection is a seeded random subset: the
    budget stops it, it does not prefer small samples.
    """
    n = len(ids)
    if max_samples is not None and max_samples < 0:
        raise ExplorerError(f"--max-samples {max_samples}: must be >= 0 (0: every sample)")
    if max_bytes is not None and max_bytes <= 0:
        raise ExplorerError("--max-mb must be > 0 (0 on the command line: no size budget)")
    cap = max_samples or n
    budget = max_bytes if (max_bytes is not None and sizes is not None) else None
    if cap >= n and (budget is None or float(np.sum(sizes)) <= budget):
        return list(range(n))
    pos = {s: i for i, s in enumerate(ids)}
    ex = list(dict.fromkeys(pos[s] for s in examples if s in pos))[:cap]
    rest = np.setdiff1d(np.arange(n), np.asarray(ex, dtype=int))
    keep, total = list(ex), float(sum(sizes[i] for i in ex)) if budget is not None else 0.0
    for i in np.random.default_rng(seed).permutation(rest):
        if len(keep) >= cap:
            break
        if budget is not None:
            if total + sizes[int(i)] > budget:
                break
            total += sizes[int(i)]
        keep.append(int(i))
    return sorted(keep)


# ---------------------------------------------------------------------------------------------
# markdown (the subset report.md uses) -> HTML
# ---------------------------------------------------------------------------------------------
_IMG = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def _inline(s: str, images: Callable[[str], str | None]) -> str:
    """Escape ``s`` and render inline code, bold, italic, images and links (links become text:
    the page must not navigate)."""
    keep: list[str] = []

    def stash(m: re.Match) -> str:
        src = images(m.group(2))
        alt = html.escape(m.group(1).replace("`", ""))
        if src is None:
            keep.append(f'<span class="missing-fig">[figure {html.escape(m.group(2))}]</span>')
        else:
            keep.append(f'<img alt="{alt}" src="{src}">')
        return f"\0{len(keep) - 1}\0"

    out = []
    for p in re.split(r"(`[^`]*`)", _IMG.sub(stash, s)):
        if len(p) >= 2 and p.startswith("`") and p.endswith("`"):
            out.append(f"<code>{html.escape(p[1:-1])}</code>")
            continue
        t = html.escape(p, quote=False)
        t = _LINK.sub(lambda m: f'<span class="link">{m.group(1)}</span>', t)
        t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
        t = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", t)
        out.append(t)
    return re.sub(r"\0(\d+)\0", lambda m: keep[int(m.group(1))], "".join(out))


def _cells(line: str) -> list[str]:
    body = line.strip()
    if body.startswith("|"):
        body = body[1:]
    if body.endswith("|") and not body.endswith("\\|"):
        body = body[:-1]
    cells, cur, i = [], "", 0
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body) and body[i + 1] == "|":
            cur += "|"
            i += 2
            continue
        if body[i] == "|":
            cells.append(cur.strip())
            cur = ""
        else:
            cur += body[i]
        i += 1
    cells.append(cur.strip())
    return cells


def markdown_to_html(text: str, images: Callable[[str], str | None] = lambda _s: None) -> str:
    """HTML for the Markdown subset ``report.md`` is written in: ATX headings, pipe tables,
    paragraphs, ``-``/``1.`` lists, ``>`` quotes, inline code, bold, italic, images (``images``
    maps a file name to a ``data:`` URI, or None) and links (rendered as plain text)."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    para: list[str] = []

    def flush() -> None:
        if para:
            out.append("<p>" + " ".join(_inline(p, images) for p in para) + "</p>")
            para.clear()

    while i < len(lines):
        ln = lines[i]
        s = ln.strip()
        if not s:
            flush()
            i += 1
            continue
        m = re.match(r"^(#{1,6})\s+(.*)$", s)
        if m:
            flush()
            k = len(m.group(1))
            out.append(f"<h{k}>{_inline(m.group(2), images)}</h{k}>")
            i += 1
            continue
        if s.startswith("|") and i + 1 < len(lines) and re.match(r"^\|?\s*:?-", lines[i + 1]):
            flush()
            head = _cells(s)
            out.append('<table class="md"><thead><tr>')
            out += [f"<th>{_inline(c, images)}</th>" for c in head]
            out.append("</tr></thead><tbody>")
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                row = _cells(lines[i])
                if re.match(r"^\|?\s*:?-", lines[i].strip()):  # a second header separator
                    i += 1
                    continue
                out.append("<tr>" + "".join(f"<td>{_inline(c, images)}</td>" for c in row))
                out.append("</tr>")
                i += 1
            out.append("</tbody></table>")
            continue
        if s.startswith(">"):
            flush()
            quote = []
            while i < len(lines) and lines[i].strip().startswith(">"):
                quote.append(lines[i].strip()[1:].strip())
                i += 1
            out.append(f"<blockquote>{_inline(' '.join(quote), images)}</blockquote>")
            continue
        m = re.match(r"^([-*]|\d+\.)\s+(.*)$", s)
        if m:
            flush()
            tag = "ol" if m.group(1)[0].isdigit() else "ul"
            out.append(f"<{tag}>")
            while i < len(lines):
                mm = re.match(r"^\s*([-*]|\d+\.)\s+(.*)$", lines[i])
                if not mm:
                    if lines[i].startswith("  ") and lines[i].strip():  # continuation
                        out[-1] = out[-1][:-5] + " " + _inline(lines[i].strip(), images) + "</li>"
                        i += 1
                        continue
                    break
                out.append(f"<li>{_inline(mm.group(2), images)}</li>")
                i += 1
            out.append(f"</{tag}>")
            continue
        if s.startswith("```"):
            flush()
            i += 1
            block = []
            while i < len(lines) and not lines[i].strip().startswith("```"):
                block.append(lines[i])
                i += 1
            i += 1
            out.append(f"<pre>{html.escape(chr(10).join(block))}</pre>")
            continue
        para.append(s)
        i += 1
    flush()
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _image_uri(d: Path) -> Callable[[str], str | None]:
    kinds = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg"}

    def get(name: str) -> str | None:
        p = (d / name).resolve()
        if p.parent != d.resolve() or p.suffix.lower() not in kinds or not p.is_file():
            return None
        b64 = base64.b64encode(p.read_bytes()).decode("ascii")
        return f"data:{kinds[p.suffix.lower()]};base64,{b64}"

    return get


def _analysis(save_dir: Path | None) -> dict[str, Any]:
    """What the explorer reads from an analysis directory (nothing is recomputed)."""
    if save_dir is None:
        return {}
    d = Path(save_dir)
    summ = d / "summary.json"
    if not summ.is_file():
        raise ExplorerError(
            f"{d}: no summary.json; pass the --save-dir of `attncmp analyze`, or a store (.h5)"
        )
    try:
        summary = json.loads(summ.read_text())
    except (OSError, ValueError) as e:
        raise ExplorerError(f"{summ}: unreadable ({e}); re-run `attncmp analyze`") from None
    out: dict[str, Any] = {"summary": summary, "dir": d}
    for key, name in (
        ("per_sample", "per_sample_metrics.parquet"),
        ("pairwise", "pairwise.parquet"),
    ):
        p = d / name
        out[key] = pl.read_parquet(p) if p.is_file() else None
    rep = d / "report.md"
    if rep.is_file():
        out["report_html"] = markdown_to_html(rep.read_text(encoding="utf-8"), _image_uri(d))
    return out


def _headline_diffs(
    an: dict[str, Any], models: list[str], sel: dict[str, Any]
) -> dict[str, dict[str, dict[str, float | None]]]:
    """``{sample_id: {variant: {metric: variant - baseline, "jsd": ...}}}`` at the headline cell
    (site, layer, head-mean), read from the cached per-sample tables."""
    ps, pw = an.get("per_sample"), an.get("pairwise")
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    if ps is None or not sel:
        return out
    cell = (
        (pl.col("site") == sel["site"])
        & (pl.col("layer") == sel["layer"])
        & (pl.col("head") == sel.get("head", -1))
    )
    sub = ps.filter(cell)
    metrics = [m for m in _DIFF_METRICS if m in sub.columns]
    base = sub.filter(pl.col("model") == models[0]).select("sample_id", *metrics)
    for v in models[1:]:
        var = sub.filter(pl.col("model") == v).select("sample_id", *metrics)
        j = base.join(var, on="sample_id", suffix="_v")
        for r in j.iter_rows(named=True):
            out.setdefault(r["sample_id"], {})[v] = {
                m: (
                    None
                    if _finite(r[m]) is None or _finite(r[f"{m}_v"]) is None
                    else float(r[f"{m}_v"]) - float(r[m])
                )
                for m in metrics
            }
        if pw is not None and pw.height:
            p = pw.filter(
                cell & (pl.col("baseline") == models[0]) & (pl.col("variant") == v)
            ).select("sample_id", "jsd")
            for sid, jsd in p.iter_rows():
                out.setdefault(sid, {}).setdefault(v, {})["jsd"] = _finite(jsd)
    return out


def _strata(samples: pl.DataFrame, errors: np.ndarray, target: str | None) -> dict[str, list]:
    """``{stratifier: [label per position]}``: the quantile bins of :func:`analyze.strata.stratify`
    (the analysis' strata) for node count, token count, target and the baseline's error."""
    from .strata import stratify

    cols: dict[str, Any] = {
        "n_nodes": samples["n_nodes"].to_numpy().astype(float),
        "n_tokens": samples["n_tokens"].to_numpy().astype(float),
    }
    if target and target in samples.columns:
        cols["target"] = samples[target].to_numpy().astype(float)
    if errors.size:
        cols["baseline_error"] = errors
    for c in samples.columns:
        if c.startswith("meta_") and samples[c].dtype == pl.String:
            vals = samples[c].to_list()
            if 1 < len(set(vals)) <= 12:
                cols[c[5:]] = vals
    out: dict[str, list] = {}
    for name, v in cols.items():
        labels: list[str | None] = [None] * samples.height
        for label, mask, _lo, _hi in stratify(v if isinstance(v, list) else np.asarray(v)):
            for i in np.flatnonzero(mask):
                labels[int(i)] = label
        out[name] = labels
    return out


def _shuffle16(a: np.ndarray) -> bytes:
    """float16 values as their low bytes, then their high bytes (little-endian)."""
    u = np.ascontiguousarray(a, dtype="<f2").view(np.uint8).reshape(-1, 2)
    return u[:, 0].tobytes() + u[:, 1].tobytes()


def _sample_blob(header: dict[str, Any], arrays: list[np.ndarray]) -> str:
    """base64(gzip(u32 header length | header JSON | pad to 2 | shuffled float16 weights))."""
    h = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    pad = b" " * (len(h) % 2)
    flat = np.concatenate([a.ravel() for a in arrays]) if arrays else np.zeros(0, np.float16)
    raw = struct.pack("<I", len(h) + len(pad)) + h + pad + _shuffle16(flat)
    return base64.b64encode(gzip.compress(raw, compresslevel=6, mtime=0)).decode("ascii")


def _json_script(obj: Any) -> str:
    """JSON safe inside a ``<script>`` element (no ``<`` can end it)."""
    s = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return s.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return _finite(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def _asset(name: str) -> str:
    return resources.files("attncmp.analyze").joinpath("explorer_assets", name).read_text("utf-8")


# ---------------------------------------------------------------------------------------------
# the file
# ---------------------------------------------------------------------------------------------
def write_explorer(
    out: str | os.PathLike,
    *,
    save_dir: str | os.PathLike | None = None,
    stores: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    max_samples: int | None = None,
    max_mb: float | None = None,
    seed: int = 0,
    sites: Sequence[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> ExplorerResult:
    """Write ``explorer.html`` to ``out``.

    Parameters
    ----------
    out : the HTML file to write (its folder must exist).
    save_dir : an analysis directory (``attncmp analyze --save-dir``): its ``summary.json``,
        ``per_sample_metrics.parquet``, ``pairwise.parquet`` and ``report.md`` (figures inlined)
        are shown as they are. None: the store alone (sample list and attention, no statistics).
    stores : the store file(s); default: the paths recorded in ``summary.json``.
    max_samples : embed the attention of at most this many samples (the heatmap examples plus a
        seeded random selection, see :func:`choose_embedded`); None or 0: every sample.
    max_mb : and at most about this many MiB of attention (estimated, see
        :data:`BYTES_PER_WEIGHT`); None: no size budget.
    seed : seed of that random selection.
    sites : the attention sites to embed; default: every site whose key axis is not ``single``
        (a length-1 key carries no information), the headline site first.
    """
    log = log or (lambda _m: None)
    an = _analysis(Path(save_dir) if save_dir is not None else None)
    summary = an.get("summary", {})
    if stores is None:
        stores = (summary.get("store") or {}).get("paths") or []
        if not stores:
            raise ExplorerError("no store given; pass the attention store (.h5) as well")
        missing = [p for p in stores if not Path(p).exists()]
        if missing:
            raise ExplorerError(
                f"{missing[0]}: the store named in {Path(save_dir) / 'summary.json'} is gone; "
                "pass its current path with --store"
            )
    if isinstance(stores, (str, os.PathLike)):
        stores = [stores]
    out = Path(out)
    if not out.parent.is_dir():
        raise ExplorerError(f"{out}: folder {out.parent} does not exist; create it first")
    with open_store([Path(p) for p in stores]) as st:
        data, blobs, n_emb = _collect(st, an, summary, (max_samples, max_mb), seed, sites, log)
    page = _page(data, blobs)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    res = ExplorerResult(out, data["n_samples"], n_emb, out.stat().st_size, "float16")
    log(f"explorer: {res.describe()}")
    return res


def _collect(st, an, summary, caps, seed, sites, log):
    max_samples, max_mb = caps
    models = list(summary.get("models") or st.models)
    if len(models) < 1:
        raise ExplorerError(f"{st.paths[0]}: no models")
    sel = dict(summary.get("selection") or {})
    all_sites = st.sites(models[0])
    usable = [s for s, i in all_sites.items() if i.key_axis != "single"]
    if sites:
        bad = [s for s in sites if s not in all_sites]
        if bad:
            raise ExplorerError(
                f"site {bad[0]!r} is not an attention site of {st.paths[0]}; choose from "
                f"{', '.join(sorted(all_sites))}"
            )
        usable = list(sites)
    head_site = sel.get("site")
    if head_site not in usable:
        head_site = next(
            (s for s in usable if all_sites[s].query_axis == "nodes"), usable[0] if usable else None
        )
    usable = [head_site, *[s for s in usable if s != head_site]] if head_site else []
    if not sel and head_site:
        sel = {"site": head_site, "layer": all_sites[head_site].n_layers - 1, "head": -1}
    samples = st.samples_frame()
    ids = samples["sample_id"].to_list()
    targets = list(st.targets)
    tgt = targets[0] if targets else None
    examples = [e.get("sample_id") for e in summary.get("examples", []) or []]
    n_nodes = samples["n_nodes"].to_numpy().astype(float)
    n_tokens = samples["n_tokens"].to_numpy().astype(float)
    axis = {"nodes": n_nodes, "tokens": n_tokens, "single": np.ones_like(n_nodes)}
    n_weights = sum(
        axis[i.query_axis] * axis[i.key_axis] * i.n_layers * i.n_heads
        for s in usable
        for m in models
        for i in [st.sites(m)[s]]
    )
    sizes = BYTES_PER_WEIGHT * n_weights + 12.0 * n_tokens + 4.0 * n_nodes + 200.0
    emb = choose_embedded(
        ids,
        examples,
        max_samples,
        seed,
        sizes=sizes,
        max_bytes=None if max_mb is None else max_mb * 2**20,
    )
    log(f"explorer: {len(ids)} samples, attention of {len(emb)} embedded")

    # -- the sample list ------------------------------------------------------------------------
    suffix = (
        (lambda m: f"prediction_{m}") if len(targets) <= 1 else (lambda m: f"prediction_{m}_{tgt}")
    )
    tv = samples[tgt].to_numpy().astype(float) if tgt else np.full(len(ids), np.nan)
    preds = {
        m: samples[suffix(m)].to_numpy().astype(float)
        for m in models
        if suffix(m) in samples.columns
    }
    errs = {m: np.abs(p - tv) for m, p in preds.items()}
    diffs = _headline_diffs(an, models, sel)
    strata = _strata(samples, errs.get(models[0], np.zeros(0)), tgt)
    ex_index = {s: k for k, s in enumerate(examples, 1)}
    emb_set = set(emb)
    meta_cols = [c for c in samples.columns if c.startswith("meta_")]
    has_gold = bool(st.has_gold)
    rows = []
    for i, sid in enumerate(ids):
        rows.append(
            {
                "id": sid,
                "pos": i,
                "nn": int(samples["n_nodes"][i]),
                "nt": int(samples["n_tokens"][i]),
                "split": samples["split"][i],
                "y": _finite(tv[i]),
                "pred": {m: _finite(p[i]) for m, p in preds.items()},
                "err": {m: _finite(e[i]) for m, e in errs.items()},
                "d": diffs.get(sid, {}),
                "ex": ex_index.get(sid, 0),
                "emb": i in emb_set,
                "strata": {k: v[i] for k, v in strata.items()},
                "meta": {c[5:]: _clean(samples[c][i]) for c in meta_cols},
            }
        )

    # -- attention blocks -----------------------------------------------------------------------
    from .groups import node_groups  # (imports the text view, hence matplotlib: only when needed)

    blobs: dict[int, str] = {}
    site_info = {
        s: {
            m: {
                "query_axis": st.sites(m)[s].query_axis,
                "key_axis": st.sites(m)[s].key_axis,
                "n_layers": st.sites(m)[s].n_layers,
                "n_heads": st.sites(m)[s].n_heads,
            }
            for m in models
        }
        for s in usable
    }
    chunk = 128
    for lo in range(0, len(emb), chunk):
        part = emb[lo : lo + chunk]
        reads = {s: st.read_site(s, np.asarray(part), models) for s in usable}
        for j, pos in enumerate(part):
            smp = st.sample(int(pos), with_attention=False)
            layout, arrays, off = [], [], 0
            for s in usable:
                for m in models:
                    a = reads[s].matrix(m, j).astype(np.float16)  # [L, H, Q, K]
                    layout.append({"site": s, "model": m, "shape": list(a.shape), "offset": off})
                    off += a.size
                    arrays.append(a)
            gold = None
            if has_gold and smp.gold is not None:
                gold = np.flatnonzero(smp.gold.ravel()).tolist()
            header = {
                "id": smp.id,
                "nodes": list(smp.node_labels),
                # the node groups of the static outputs (analyze.groups): equal labels
                "groups": [
                    [g.label, g.display, list(g.members)]
                    for g in node_groups(smp.node_labels)
                    if g.size > 1
                ],
                "tokens": list(smp.tokens),
                "special": [bool(x) for x in smp.special],
                "gold": gold,
                "layout": layout,
            }
            blobs[int(pos)] = _sample_blob(header, arrays)
        log(f"  explorer: {min(lo + chunk, len(emb))}/{len(emb)} samples embedded")

    verdict = summary.get("verdict") or {}
    data = {
        "format": EXPLORER_FORMAT,
        "version": EXPLORER_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "title": f"attncmp explorer: {', '.join(models)}",
        "store_paths": [str(p) for p in st.paths],
        "store_dtype": str(st.attention_dtype),
        "precision": "float16",
        "digits": DISPLAY_DIGITS,
        "models": models,
        "baseline": models[0],
        "sites": site_info,
        "site_order": usable,
        "selection": sel,
        "targets": targets,
        "target": tgt,
        "has_gold": has_gold,
        "n_samples": len(ids),
        "n_embedded": len(emb),
        "max_samples": max_samples or 0,
        "max_mb": max_mb,
        "seed": seed,
        "examples": examples,
        "samples": rows,
        "diff_metrics": [
            m for m in _DIFF_METRICS if any(m in v for r in diffs.values() for v in r.values())
        ],
        "strata_names": list(strata),
        "analysed": bool(an),
        "verdict": {
            "overall": verdict.get("overall"),
            "explanation": verdict.get("explanation"),
            "per_metric": verdict.get("per_metric") or {},
        },
        "options": {
            k: (summary.get("options") or {}).get(k)
            for k in ("threshold", "exclude_special", "correction", "alpha")
        },
        "report_html": an.get("report_html"),
    }
    return _clean(data), blobs, len(emb)


def _page(data: dict[str, Any], blobs: dict[int, str]) -> str:
    title = html.escape(data["title"])
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="generator" content="attncmp {EXPLORER_FORMAT} v{EXPLORER_VERSION}">',
        f"<title>{title}</title>",
        f"<style>\n{_asset('explorer.css')}\n</style>",
        "</head><body>",
        _asset("explorer_body.html"),
        f'<script type="application/json" id="explorer-data">{_json_script(data)}</script>',
    ]
    for pos in sorted(blobs):
        parts.append(
            f'<script type="application/x-attncmp-sample" id="a{pos}">{blobs[pos]}</script>'
        )
    parts.append(f"<script>\n{_asset('explorer.js')}\n</script>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def add_explorer(
    result: Any,
    stores: Sequence[str | os.PathLike],
    *,
    max_samples: int | None = None,
    max_mb: float | None = DEFAULT_MAX_MB,
    log: Callable[[str], None] | None = None,
) -> Any:
    """Write ``explorer.html`` into an analysis' save directory (the last step of
    :func:`analyze.outputs.run_analysis`) and add it to ``result.files``. A failure here is a
    warning line: every other output is already written and stays valid."""
    log = log or (lambda _m: None)
    d = Path(result.save_dir)
    seed = int((result.summary.get("options") or {}).get("seed", 0) or 0)
    try:
        res = write_explorer(
            d / "explorer.html",
            save_dir=d,
            stores=stores,
            max_samples=max_samples,
            max_mb=max_mb,
            seed=seed,
        )
    except Exception as e:  # noqa: BLE001 - the explorer must not sink a finished analysis
        log(f"warning: explorer.html skipped: {type(e).__name__}: {' '.join(str(e).split())[:200]}")
        return result
    log(f"explorer: {res.describe()}")
    result.files.append(res.path)
    return result
