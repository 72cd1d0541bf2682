"""Seed-to-seed noise floor: how much do replicates of one configuration differ?

When a store holds replicates of a variant (the same configuration trained with other seeds),
declare them as groups, e.g. ``{"full": ["full_s1", "full_s2"], "no_middle": ["nm_s1", "nm_s2"]}``
(CLI: ``--group full=full_s1,full_s2``). For every pair of models *within* a group and every pair
*between* groups, :func:`noise_floor` reports on the head-mean distribution of one site:

* per metric: mean per-sample difference (``b - a``) and mean absolute per-sample difference;
* ``jsd`` / ``tv``: mean per-sample Jensen-Shannon divergence and total variation between the two
  models' attention (from ``MetricTables.pairwise``; compute the tables with ``pairs="all"``).

``summary()`` puts the between-group values next to the within-group (seed-to-seed) ones, with
their ratio: an ablation effect that does not clearly exceed the noise floor (ratio near 1) is
not evidence of an effect of the ablation.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from .compare import MAIN_METRICS, _values
from .errors import AnalysisInputError
from .table import HEAD_MEAN, MetricTables

__all__ = ["NoiseFloor", "noise_floor", "parse_groups"]


@dataclass
class NoiseFloor:
    """Within-group (seed-to-seed) and between-group differences; see the module docstring.

    ``frame``: one row per (metric, model pair): ``site, layer, metric, comparison ("within" |
    "between"), group_a, group_b, model_a, model_b, n, mean_diff, mean_abs_diff``.
    """

    groups: dict[str, list[str]]
    site: str
    frame: pl.DataFrame

    def summary(self) -> pl.DataFrame:
        """Per layer, metric and group pair: mean |difference| between groups, the pooled
        within-group value of the two groups, and ``ratio = between / within`` (NaN without
        replicates).

        Every (layer, metric, group) with within-group pairs but no between-group row (a single
        declared group, or a group with no partner at that layer) gets its own row with
        ``group_a == group_b``, ``within`` set and ``between``/``ratio`` NaN, so no layer or
        metric of the frame is left out. Rows keep the frame's order (layer, then metric).
        """
        f = self.frame
        if len(f) == 0:
            return pl.DataFrame()
        within = (
            f.filter(pl.col("comparison") == "within")
            .group_by(["layer", "metric", "group_a"], maintain_order=True)
            .agg(pl.col("mean_abs_diff").mean().alias("within"))
        )
        wmap = {
            (r["layer"], r["metric"], r["group_a"]): r["within"]
            for r in within.iter_rows(named=True)
        }
        rows = []
        between = (
            f.filter(pl.col("comparison") == "between")
            .group_by(["layer", "metric", "group_a", "group_b"], maintain_order=True)
            .agg(pl.col("mean_abs_diff").mean().alias("between"), pl.col("mean_diff").mean())
        )
        covered: set[tuple] = set()
        for r in between.iter_rows(named=True):
            ws = [wmap.get((r["layer"], r["metric"], g)) for g in (r["group_a"], r["group_b"])]
            ws = [w for w in ws if w is not None and np.isfinite(w)]
            w = float(np.mean(ws)) if ws else float("nan")
            rows.append(
                {
                    **r,
                    "within": w,
                    "ratio": r["between"] / w if ws and w > 0 else float("nan"),
                }
            )
            covered.update((r["layer"], r["metric"], g) for g in (r["group_a"], r["group_b"]))
        for (layer, metric, g), w in wmap.items():
            if (layer, metric, g) not in covered:
                rows.append(
                    {
                        "layer": layer,
                        "metric": metric,
                        "group_a": g,
                        "group_b": g,
                        "between": float("nan"),
                        "mean_diff": float("nan"),
                        "within": w,
                        "ratio": float("nan"),
                    }
                )
        keys = dict.fromkeys(zip(f["layer"], f["metric"], strict=True))
        order = {k: i for i, k in enumerate(keys)}
        rows.sort(key=lambda r: order.get((r["layer"], r["metric"]), len(order)))
        return pl.DataFrame(rows)


def parse_groups(specs: Sequence[str] | str) -> dict[str, list[str]]:
    """Parse ``--group`` values ``["full=full_s1,full_s2", "nm=nm_s1,nm_s2"]`` into
    ``{"full": [...], ...}``: each group names two or more replicates (the same configuration
    trained with other seeds), since one model has no seed-to-seed spread. The one parser of
    ``--group`` (the CLI calls it too)."""
    if isinstance(specs, str):
        specs = [specs]
    out: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, members = spec.partition("=")
        name = name.strip()
        models = [m.strip() for m in members.split(",") if m.strip()]
        if not sep or not name or len(models) < 2:
            raise AnalysisInputError(
                f"group {spec!r}: expected NAME=MODEL1,MODEL2[,...] (two or more replicates), "
                "e.g. full=full_s1,full_s2"
            )
        if name in out:
            raise AnalysisInputError(f"group {name!r} is declared twice")
        out[name] = models
    return out


def _pair_frame(tables: MetricTables, site: str, a: str, b: str) -> pl.DataFrame | None:
    pw = tables.pairwise.filter((pl.col("site") == site) & (pl.col("head_kind") == HEAD_MEAN))
    f = pw.filter((pl.col("baseline") == a) & (pl.col("variant") == b))
    if len(f) == 0:
        f = pw.filter((pl.col("baseline") == b) & (pl.col("variant") == a))
    return f if len(f) else None


def noise_floor(
    tables: MetricTables,
    groups: Mapping[str, Sequence[str]],
    *,
    metrics: Sequence[str] | None = None,
    site: str | None = None,
) -> NoiseFloor:
    """Seed-to-seed versus between-variant differences (see the module docstring)."""
    groups = {g: list(ms) for g, ms in groups.items()}
    seen: dict[str, str] = {}
    for g, ms in groups.items():
        for m in ms:
            if m not in tables.models:
                raise AnalysisInputError(
                    f"group {g!r}: model {m!r} is not in the store ({tables.models})"
                )
            if m in seen:
                raise AnalysisInputError(f"model {m!r} is in groups {seen[m]!r} and {g!r}")
            seen[m] = g
    metrics = list(metrics) if metrics is not None else list(MAIN_METRICS)
    site = site or tables.main_site()
    if site not in tables.sites:
        raise AnalysisInputError(f"`site` {site!r} not in the tables; have {list(tables.sites)}")
    vals = _values(tables, site, metrics)
    n_layers = int(tables.sites[site]["n_layers"])
    rows = []
    pairs = []
    for g, ms in groups.items():
        pairs += [("within", g, g, a, b) for a, b in itertools.combinations(ms, 2)]
    for (g1, m1), (g2, m2) in itertools.combinations(list(groups.items()), 2):
        pairs += [("between", g1, g2, a, b) for a in m1 for b in m2]
    for kind, g1, g2, a, b in pairs:
        for layer in range(n_layers):
            va = vals.get((a, HEAD_MEAN, layer, -1))
            vb = vals.get((b, HEAD_MEAN, layer, -1))
            if va is None or vb is None:
                continue
            base = {
                "site": site,
                "layer": layer,
                "comparison": kind,
                "group_a": g1,
                "group_b": g2,
                "model_a": a,
                "model_b": b,
            }
            for metric in metrics:
                d = vb[metric] - va[metric]
                d = d[np.isfinite(d)]
                rows.append(
                    {
                        **base,
                        "metric": metric,
                        "n": len(d),
                        "mean_diff": float(d.mean()) if len(d) else float("nan"),
                        "mean_abs_diff": float(np.abs(d).mean()) if len(d) else float("nan"),
                    }
                )
            pf = _pair_frame(tables, site, a, b)
            if pf is not None:
                pf = pf.filter(pl.col("layer") == layer)
                for col in ("jsd", "tv"):
                    v = pf[col].drop_nans().drop_nulls().to_numpy()
                    rows.append(
                        {
                            **base,
                            "metric": col,
                            "n": len(v),
                            "mean_diff": float(v.mean()) if len(v) else float("nan"),
                            "mean_abs_diff": float(v.mean()) if len(v) else float("nan"),
                        }
                    )
    return NoiseFloor(groups, site, pl.DataFrame(rows) if rows else pl.DataFrame())
