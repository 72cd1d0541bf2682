"""explorer.html: the embedded data (decoded here independently of the page's script), the
numbers read from the analysis, the sample cap, and the page itself driven in headless Chromium.

The browser tests need Chromium and its driver from the system (Debian: ``apt-get install
chromium chromium-driver``; ``.ci/run`` installs them) and selenium (the ``test`` extra); without
them they skip and say what is missing. ``ATTNCMP_SCREENSHOTS=DIR`` keeps the screenshots.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import math
import os
import re
import shutil
import struct
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from attncmp.analyze.explorer import (
    ExplorerError,
    choose_embedded,
    markdown_to_html,
    write_explorer,
)
from attncmp.analyze.outputs import AnalysisOptions, run_analysis
from attncmp.store import open_store
from attncmp.store.synthetic import synthetic_spec, write_synthetic_store

from ._stores import study_store

FAST = dict(n_boot=200, quiet=True, examples=2)


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    root = tmp_path_factory.mktemp("explorer")
    store = study_store(root / "store.h5", n=12, n_heads=2, n_layers=2, max_nodes=12, max_tokens=24)
    res = run_analysis([store], root / "analysis", AnalysisOptions(**FAST))
    return store, res


# ---------------------------------------------------------------------------------------------
# an independent reader of the file
# ---------------------------------------------------------------------------------------------
def page_data(path: Path) -> tuple[dict, dict[int, str], str]:
    page = path.read_text(encoding="utf-8")
    m = re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', page, re.S)
    blobs = {
        int(p): b
        for p, b in re.findall(
            r'<script type="application/x-attncmp-sample" id="a(\d+)">([^<]*)</script>', page
        )
    }
    return json.loads(m.group(1)), blobs, page


def decode_blob(b64: str) -> tuple[dict, np.ndarray]:
    raw = gzip.decompress(base64.b64decode(b64))
    (n,) = struct.unpack("<I", raw[:4])
    header = json.loads(raw[4 : 4 + n].decode("utf-8"))
    body = np.frombuffer(raw[4 + n :], dtype=np.uint8)
    half = body.size // 2
    u16 = body[:half].astype(np.uint16) | (body[half:].astype(np.uint16) << 8)
    return header, u16.view("<f2")


def parts(header: dict, vals: np.ndarray) -> dict[tuple[str, str], np.ndarray]:
    out = {}
    for p in header["layout"]:
        size = int(np.prod(p["shape"]))
        out[(p["site"], p["model"])] = vals[p["offset"] : p["offset"] + size].reshape(p["shape"])
    return out


# ---------------------------------------------------------------------------------------------
# file contents
# ---------------------------------------------------------------------------------------------
def test_analyze_writes_a_self_contained_explorer(analysed):
    _, res = analysed
    path = res.save_dir / "explorer.html"
    assert path in res.files and path.is_file()
    data, blobs, page = page_data(path)
    assert data["n_samples"] == data["n_embedded"] == len(blobs) == 12
    # nothing can be loaded from elsewhere: a CSP that forbids it, and no URL to load
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    assert "default-src 'none'" in csp and "connect-src 'none'" in csp
    assert re.search(r"(?i)\b(src|href)\s*=\s*[\"']?(https?:)?//", page) is None
    assert re.search(r"(?i)@import|url\(\s*[\"']?(https?:)?//", page) is None
    assert "<script src" not in page and "<link" not in page


def test_embedded_weights_are_the_stored_values(analysed):
    store, res = analysed
    data, blobs, _ = page_data(res.save_dir / "explorer.html")
    # the degenerate single-key site is not embedded; the headline site comes first
    assert data["site_order"][0] == "atom_to_text" and "text_pool" not in data["site_order"]
    with open_store(store) as st:
        for pos, b64 in blobs.items():
            header, vals = decode_blob(b64)
            smp = st.sample(pos)
            assert header["id"] == smp.id
            assert header["nodes"] == smp.node_labels and header["tokens"] == smp.tokens
            assert header["special"] == smp.special.tolist()
            assert header["gold"] == np.flatnonzero(smp.gold.ravel()).tolist()
            labels = smp.node_labels
            want = [
                [e, f"{e} (n={labels.count(e)})", [j for j, x in enumerate(labels) if x == e]]
                for e in dict.fromkeys(labels)
                if labels.count(e) > 1
            ]
            assert header["groups"] == want
            got = parts(header, vals)
            assert set(got) == {(s, m) for s in data["site_order"] for m in data["models"]}
            for (site, model), a in got.items():
                # a float16 store: the embedded weights are exactly the stored ones
                np.testing.assert_array_equal(a.astype(np.float32), smp.attention[model][site])


def test_sample_list_reads_the_analysis_outputs(analysed):
    store, res = analysed
    d = res.save_dir
    data, _, _ = page_data(d / "explorer.html")
    summary = json.loads((d / "summary.json").read_text())
    sel = summary["selection"]
    ps = pl.read_parquet(d / "per_sample_metrics.parquet").filter(
        (pl.col("site") == sel["site"]) & (pl.col("layer") == sel["layer"]) & (pl.col("head") == -1)
    )
    pw = pl.read_parquet(d / "pairwise.parquet").filter(
        (pl.col("site") == sel["site"]) & (pl.col("layer") == sel["layer"]) & (pl.col("head") == -1)
    )
    assert data["verdict"]["overall"] == summary["verdict"]["overall"]
    examples = [e["sample_id"] for e in summary["examples"]]
    assert [r["id"] for r in data["samples"] if r["ex"]] == sorted(
        examples, key=lambda s: [r["id"] for r in data["samples"]].index(s)
    )
    with open_store(store) as st:
        for r in data["samples"]:
            smp = st.sample(r["id"], with_attention=False)
            assert (r["nn"], r["nt"]) == (smp.n_nodes, smp.n_tokens)
            assert r["y"] == pytest.approx(float(smp.target[0]))
            for m in ("full", "no_middle"):
                p = float(smp.predictions[m][0])
                assert r["pred"][m] == pytest.approx(p)
                assert r["err"][m] == pytest.approx(abs(p - float(smp.target[0])))
            for metric in ("entropy", "max_weight", "effective_tokens", "gini"):
                b = ps.filter((pl.col("sample_id") == r["id"]) & (pl.col("model") == "full"))
                v = ps.filter((pl.col("sample_id") == r["id"]) & (pl.col("model") == "no_middle"))
                assert r["d"]["no_middle"][metric] == pytest.approx(v[metric][0] - b[metric][0])
            jsd = pw.filter(pl.col("sample_id") == r["id"])["jsd"][0]
            assert r["d"]["no_middle"]["jsd"] == pytest.approx(jsd)


def _numbers(text: str) -> list[str]:
    return re.findall(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?%?", text)


def test_report_panel_shows_report_md_numbers(analysed):
    _, res = analysed
    d = res.save_dir
    data, _, _ = page_data(d / "explorer.html")
    md = (d / "report.md").read_text(encoding="utf-8")
    md_text = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", md)  # figures: inlined, not text
    md_text = re.sub(r"(?m)^\s*(\d+\.|[-*])\s+", "", md_text)  # list markers: <ol>/<ul>
    page_text = html.unescape(re.sub(r"<[^>]+>", " ", data["report_html"]))
    assert _numbers(page_text) == _numbers(md_text)
    # every figure of the report is inlined as an image
    figs = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)
    assert figs and data["report_html"].count('src="data:image/png;base64,') == len(figs)


def test_markdown_subset_escapes_and_renders_tables():
    out = markdown_to_html(
        "# T <b>\n\n| a | b \\| c |\n|---|---|\n| `x<y` | **bold** |\n\n- one\n- two *it*\n"
    )
    assert "<h1>T &lt;b&gt;</h1>" in out
    assert "<th>b | c</th>" in out and "<td><code>x&lt;y</code></td>" in out
    assert "<strong>bold</strong>" in out and "<em>it</em>" in out
    assert "<ul><li>one</li>" in out.replace("\n", "")
    assert "<script" not in markdown_to_html("<script>alert(1)</script>")


def test_choose_embedded_cap_keeps_examples_and_is_seeded():
    ids = [f"s{i}" for i in range(50)]
    assert choose_embedded(ids, [], None) == list(range(50))
    assert choose_embedded(ids, [], 0) == list(range(50))
    a = choose_embedded(ids, ["s40", "s7"], 10, seed=3)
    assert len(a) == 10 and {40, 7} <= set(a) and a == sorted(a)
    assert a == choose_embedded(ids, ["s40", "s7"], 10, seed=3)
    assert a != choose_embedded(ids, ["s40", "s7"], 10, seed=4)
    assert choose_embedded(ids, ["s1", "s2", "s3"], 2) == [1, 2]
    with pytest.raises(ExplorerError, match="max-samples"):
        choose_embedded(ids, [], -1)


def test_choose_embedded_size_budget_is_a_random_prefix_not_the_smallest():
    ids = [f"s{i}" for i in range(20)]
    sizes = [10.0] * 10 + [1.0] * 10
    a = choose_embedded(ids, ["s5"], None, seed=0, sizes=sizes, max_bytes=40)
    assert 5 in a and sum(sizes[i] for i in a) <= 40
    order = [5, *np.random.default_rng(0).permutation(np.setdiff1d(np.arange(20), [5])).tolist()]
    k = len(a)
    assert sorted(order[:k]) == a and sum(sizes[i] for i in order[: k + 1]) > 40
    assert choose_embedded(ids, [], None, sizes=sizes, max_bytes=110) == list(range(20))
    assert choose_embedded(ids, ["s1", "s2"], None, sizes=sizes, max_bytes=5) == [1, 2]
    assert len(choose_embedded(ids, [], 3, sizes=sizes, max_bytes=1e9)) == 3
    with pytest.raises(ExplorerError, match="max-mb"):
        choose_embedded(ids, [], None, sizes=sizes, max_bytes=0)


def test_max_samples_lists_every_sample_but_embeds_the_cap(analysed, tmp_path):
    store, res = analysed
    out = tmp_path / "capped.html"
    r = write_explorer(out, save_dir=res.save_dir, max_samples=4, seed=1)
    data, blobs, _ = page_data(out)
    assert (r.n_samples, r.n_embedded) == (12, 4) and len(blobs) == 4
    assert len(data["samples"]) == 12
    assert {r["pos"] for r in data["samples"] if r["emb"]} == set(blobs)
    for e in res.summary["examples"]:
        assert next(r for r in data["samples"] if r["id"] == e["sample_id"])["emb"]


def test_store_alone_and_float32_display_precision(tmp_path):
    spec = synthetic_spec(5, dtype="float32")
    store = write_synthetic_store(tmp_path / "f32.h5", spec)
    r = write_explorer(tmp_path / "x.html", stores=store)
    data, blobs, _ = page_data(r.path)
    assert not data["analysed"] and data["report_html"] is None
    assert data["store_dtype"] == "float32" and data["precision"] == "float16"
    with open_store(store) as st:
        for pos, b64 in blobs.items():
            header, vals = decode_blob(b64)
            a = parts(header, vals)[("fine_grained", "full")]
            stored = st.attention("full", "fine_grained", pos)
            np.testing.assert_array_equal(a, stored.astype(np.float16))


def test_one_line_errors(analysed, tmp_path):
    store, _ = analysed
    with pytest.raises(ExplorerError, match="no summary.json"):
        write_explorer(tmp_path / "x.html", save_dir=tmp_path)
    with pytest.raises(ExplorerError, match="does not exist"):
        write_explorer(tmp_path / "nope" / "x.html", stores=store)
    with pytest.raises(ExplorerError, match="not an attention site"):
        write_explorer(tmp_path / "x.html", stores=store, sites=["nope"])
    moved = tmp_path / "moved"
    moved.mkdir()
    summ = json.loads((_ := analysed[1].save_dir / "summary.json").read_text())
    summ["store"]["paths"] = [str(tmp_path / "gone.h5")]
    (moved / "summary.json").write_text(json.dumps(summ))
    with pytest.raises(ExplorerError, match="is gone; pass its current path with --store"):
        write_explorer(moved / "explorer.html", save_dir=moved)


# ---------------------------------------------------------------------------------------------
# the page in a real browser
# ---------------------------------------------------------------------------------------------
CHROMIUM = next(
    (p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and Path(p).exists()),
    None,
)
DRIVER = next(
    (
        p
        for p in ("/usr/bin/chromedriver", shutil.which("chromedriver") or "")
        if p and Path(p).exists()
    ),
    None,
)


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("browser tests: selenium is not installed (pip install -e '.[test]')")
    if CHROMIUM is None or DRIVER is None:
        pytest.skip(
            "browser tests: Chromium and chromedriver not found (Debian: apt-get install chromium "
            "chromium-driver; .ci/run installs them)"
        )
    o = webdriver.ChromeOptions()
    o.binary_location = CHROMIUM
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1500,1000",
        "--force-device-scale-factor=1",
    ):
        o.add_argument(a)
    o.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    drv = webdriver.Chrome(service=Service(DRIVER), options=o)
    drv.set_page_load_timeout(30)
    yield drv
    drv.quit()


def _shot(drv, name: str, tmp_path: Path) -> None:
    p = tmp_path / f"{name}.png"
    drv.save_screenshot(str(p))
    keep = os.environ.get("ATTNCMP_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, Path(keep) / p.name)


def _wait(drv, cond, timeout: float = 10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the page")


def _close(shown: str, value: float, digits: int = 3) -> bool:
    """``shown`` is ``value`` to ``digits`` significant digits (half a unit of the last one)."""
    if value == 0:
        return float(shown) == 0
    unit = 10 ** (math.floor(math.log10(abs(value))) - digits + 1)
    return abs(float(shown) - value) <= unit / 2 + 1e-9


def _show_all(drv) -> None:
    from selenium.webdriver.common.by import By

    for b in drv.find_elements(By.ID, "show-all"):  # absent when every token is listed
        b.click()


def _weights_table(drv) -> dict[int, tuple[str, str]]:
    from selenium.webdriver.common.by import By

    out = {}
    for tr in drv.find_elements(By.CSS_SELECTOR, "#weights-table tbody tr"):
        out[int(tr.get_attribute("data-pos"))] = (
            tr.find_element(By.CSS_SELECTOR, ".w-base").text,
            tr.find_element(By.CSS_SELECTOR, ".w-variant").text,
        )
    return out


def test_browser_shows_the_stored_weights_offline(analysed, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    store, res = analysed
    drv = browser
    path = res.save_dir / "explorer.html"
    drv.get(path.resolve().as_uri())
    _wait(drv, lambda: drv.execute_script("return document.body.dataset.loaded"))
    _shot(drv, "explorer_1_start", tmp_path)
    sel = res.summary["selection"]
    layer = sel["layer"]
    with open_store(store) as st:
        # a sample with two or more atoms of one element (a node group) that have gold cells
        def gold_group(i: int) -> str | None:
            lab, g = st.node_labels(i), st.gold(i)
            for e in sorted(set(lab)):
                rows = [j for j, x in enumerate(lab) if x == e]
                if len(rows) > 1 and g is not None and g[rows].any():
                    return e
            return None

        pick = next(i for i in range(st.n_samples) if gold_group(i))
        el = gold_group(pick)
        sid = st.ids[pick]
        labels = st.node_labels(pick)
        att = {m: st.attention(m, "atom_to_text", pick)[layer] for m in ("full", "no_middle")}
    drv.find_element(By.CSS_SELECTOR, f'#sample-table tr[data-id="{sid}"]').click()
    _wait(drv, lambda: drv.execute_script("return document.body.dataset.loaded") == sid)

    # click a node: the weights shown are the store's head-mean row of that node
    node = 1
    drv.find_element(By.CSS_SELECTOR, f'#node-bar [data-node="{node}"]').click()
    _show_all(drv)
    shown = _weights_table(drv)
    assert len(shown) == att["full"].shape[-1]
    for k, (wb, wv) in shown.items():
        assert _close(wb, float(att["full"][:, node, k].astype(np.float64).mean())), (k, wb)
        assert _close(wv, float(att["no_middle"][:, node, k].astype(np.float64).mean())), (k, wv)
    assert f"{labels[node]}{node}" in drv.find_element(By.ID, "text-selection").text
    _shot(drv, "explorer_2_node", tmp_path)

    # one head
    Select(drv.find_element(By.ID, "sel-head")).select_by_value("1")
    _show_all(drv)
    for k, (wb, wv) in _weights_table(drv).items():
        assert _close(wb, float(att["full"][1, node, k])) and _close(
            wv, float(att["no_middle"][1, node, k])
        )
    Select(drv.find_element(By.ID, "sel-head")).select_by_value("mean")

    # a node group (all atoms of one element): the mean of their rows
    rows = [i for i, x in enumerate(labels) if x == el]
    drv.find_element(By.CSS_SELECTOR, f'#node-bar [data-group="{el}"]').click()
    _show_all(drv)
    for k, (wb, wv) in _weights_table(drv).items():
        ref_b = att["full"][:, rows, k].astype(np.float64).mean(axis=0).mean()
        ref_v = att["no_middle"][:, rows, k].astype(np.float64).mean(axis=0).mean()
        assert _close(wb, float(ref_b)) and _close(wv, float(ref_v))
    # gold tokens of the group are marked in the text
    with open_store(store) as st:
        gold_k = set(np.flatnonzero(st.gold(pick)[rows].any(axis=0)).tolist())
    marked = {
        int(s.get_attribute("data-pos"))
        for s in drv.find_elements(By.CSS_SELECTOR, '#textview [data-series="full"] .tok.gold')
    }
    assert marked == gold_k and gold_k
    _shot(drv, "explorer_3_group", tmp_path)

    # hovering a token shows the token, its position and both models' weights
    k = 2
    span = drv.find_element(By.CSS_SELECTOR, f'#textview [data-series="full"] .tok[data-pos="{k}"]')
    ActionChains(drv).move_to_element(span).perform()
    tip = _wait(drv, lambda: drv.find_element(By.ID, "tooltip").text)
    assert f"(position {k})" in tip
    wb = re.search(r"full: (\S+)", tip).group(1)
    wv = re.search(r"no_middle: (\S+)", tip).group(1)
    assert _close(wb, float(att["full"][:, rows, k].astype(np.float64).mean()))
    assert _close(wv, float(att["no_middle"][:, rows, k].astype(np.float64).mean()))
    _shot(drv, "explorer_4_hover", tmp_path)

    # sorting: "largest JSD" puts the sample with the largest headline JSD first
    pw = pl.read_parquet(res.save_dir / "pairwise.parquet").filter(
        (pl.col("site") == sel["site"]) & (pl.col("layer") == layer) & (pl.col("head") == -1)
    )
    top = pw.sort("jsd", descending=True)["sample_id"][0]
    drv.find_element(By.ID, "sort-jsd").click()
    first = drv.find_element(By.CSS_SELECTOR, "#sample-table tbody tr")
    assert first.get_attribute("data-id") == top
    # filter by id
    drv.find_element(By.ID, "filter-id").send_keys(sid)
    assert [
        r.get_attribute("data-id")
        for r in drv.find_elements(By.CSS_SELECTOR, "#sample-table tbody tr")
    ] == [sid]

    # the report tab: the headline table and the verdict of report.md
    drv.find_element(By.ID, "tab-report").click()
    report = drv.find_element(By.ID, "report").text
    md = (res.save_dir / "report.md").read_text(encoding="utf-8")
    for line in md.splitlines():
        if line.startswith("| Entropy") or line.startswith("| Max weight"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert " ".join(cells) in report.replace("\n", " ")
    assert (
        res.summary["verdict"]["overall"].upper() in drv.find_element(By.ID, "verdict").text.upper()
    )
    _shot(drv, "explorer_5_report", tmp_path)

    # nothing was fetched from the network, and the page logged no error
    urls = []
    for entry in drv.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    assert urls and all(u.split(":", 1)[0] in ("file", "data", "blob") for u in urls), urls
    resources = drv.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert all(u.split(":", 1)[0] in ("file", "data", "blob") for u in resources), resources
    severe = [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe
