/* attncmp explorer: vanilla JS, no library, no network.
 * Data: #explorer-data (JSON: sample list, report, verdict) and one <script id="a{pos}"> per
 * embedded sample: base64(gzip(u32 header length | header JSON | shuffled float16 weights)),
 * decoded only when the sample is selected. */
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("explorer-data").textContent);
  const $ = (id) => document.getElementById(id);
  const models = D.models;
  const base = D.baseline;
  const DIG = D.digits || 3;
  const S = {
    rows: [], sel: null, sortKey: "pos", sortDir: 1, site: D.site_order[0] || null,
    variant: models[1] || models[0], layer: null, head: "mean", nodes: null, nodeLabel: null,
    showAll: false,
  };
  const cache = new Map(); // pos -> decoded sample (a few kept)

  // ---------------------------------------------------------------- formatting
  const isNum = (x) => typeof x === "number" && isFinite(x);
  function w3(x) { return isNum(x) ? x.toPrecision(DIG) : "n/a"; }
  function f3(x) { return isNum(x) ? x.toFixed(3) : "n/a"; }
  function sgn(x, digits) {
    if (!isNum(x)) return "n/a";
    const s = Math.abs(x).toPrecision(digits || DIG);
    return (x > 0 ? "+" : x < 0 ? "\u2212" : "") + s;
  }
  function esc(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) {
      if (k === "class") e.className = attrs[k]; else e.setAttribute(k, attrs[k]);
    }
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // ---------------------------------------------------------------- float16 + lazy decoding
  let F16 = null;
  function f16table() {
    if (F16) return F16;
    F16 = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) {
      const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
      let v;
      if (e === 0) v = f * Math.pow(2, -24);
      else if (e === 31) v = f ? NaN : Infinity;
      else v = (1 + f / 1024) * Math.pow(2, e - 15);
      F16[h] = s * v;
    }
    return F16;
  }
  async function decode(pos) {
    if (cache.has(pos)) return cache.get(pos);
    const node = document.getElementById("a" + pos);
    if (!node) return null;
    const bin = atob(node.textContent.trim());
    const u8 = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) u8[i] = bin.charCodeAt(i);
    const stream = new Blob([u8]).stream().pipeThrough(new DecompressionStream("gzip"));
    const buf = new Uint8Array(await new Response(stream).arrayBuffer());
    const hlen = new DataView(buf.buffer, buf.byteOffset, 4).getUint32(0, true);
    const header = JSON.parse(new TextDecoder().decode(buf.subarray(4, 4 + hlen)));
    const rest = buf.subarray(4 + hlen);
    const n = rest.length >> 1, lo = rest.subarray(0, n), hi = rest.subarray(n), T = f16table();
    const vals = new Float32Array(n);
    for (let i = 0; i < n; i++) vals[i] = T[lo[i] | (hi[i] << 8)];
    const parts = {};
    for (const p of header.layout) parts[p.site + "|" + p.model] = p;
    const gold = new Set(header.gold || []);
    const smp = { h: header, vals, parts, gold, mats: new Map() };
    cache.set(pos, smp);
    if (cache.size > 12) cache.delete(cache.keys().next().value);
    return smp;
  }
  /** [Q*K] weights of one model at (site, layer, head); head "mean": mean over heads. */
  function matrix(smp, site, model, layer, head) {
    const key = [site, model, layer, head].join("|");
    if (smp.mats.has(key)) return smp.mats.get(key);
    const p = smp.parts[site + "|" + model];
    if (!p) return null;
    const [L, H, Q, K] = p.shape, QK = Q * K;
    if (layer >= L) return null;
    const o = p.offset + layer * H * QK;
    let out;
    if (head === "mean") {
      const acc = new Float64Array(QK);
      for (let h = 0; h < H; h++) for (let i = 0; i < QK; i++) acc[i] += smp.vals[o + h * QK + i];
      out = new Float32Array(QK);
      for (let i = 0; i < QK; i++) out[i] = acc[i] / H;
    } else {
      if (head >= H) return null;
      out = smp.vals.subarray(o + head * QK, o + (head + 1) * QK);
    }
    const m = { v: out, Q, K };
    smp.mats.set(key, m);
    return m;
  }

  // ---------------------------------------------------------------- header, tabs, report
  function renderTop() {
    $("title").textContent = D.title;
    const v = D.verdict || {};
    const sel = D.selection || {};
    if (v.overall) {
      $("verdict").innerHTML = "Verdict: <b>" + esc(v.overall) + "</b> <span class=\"muted\">(" +
        esc(sel.site) + ", layer " + esc(sel.layer) + ", head-mean)</span> " + esc(v.explanation || "");
    } else {
      $("verdict").innerHTML = "<span class=\"warn\">No analysis in this file (made from the store alone): run <code>attncmp analyze</code> for statistics.</span>";
    }
    const emb = D.n_embedded === D.n_samples ? "attention of every sample embedded" :
      "attention of " + D.n_embedded + " embedded (examples + seeded random selection, seed " + D.seed + ")";
    $("facts").textContent = D.n_samples + " samples (" + emb + ") \u00b7 models: " + models.join(", ") +
      " (baseline " + base + ") \u00b7 store: " + D.store_paths.join(", ") + " \u00b7 created " + D.created;
    $("report").innerHTML = D.report_html || "<p class=\"muted\">No report: this explorer was made from the store alone. Run <code>attncmp analyze STORE --save-dir DIR</code>, then <code>attncmp view DIR</code>.</p>";
    for (const b of document.querySelectorAll(".tab")) {
      b.addEventListener("click", () => {
        for (const x of document.querySelectorAll(".tab")) x.classList.toggle("active", x === b);
        for (const p of document.querySelectorAll(".tabpane")) p.classList.toggle("active", p.id === b.dataset.tab);
      });
    }
  }

  // ---------------------------------------------------------------- sample list
  function errOf(r, m) { return r.err ? r.err[m] : null; }
  function dOf(r, k) { const d = r.d && r.d[S.variant]; return d ? d[k] : null; }
  const METRIC_SHORT = { entropy: "\u0394H", max_weight: "\u0394max", effective_tokens: "\u0394eff", gini: "\u0394gini",
    norm_entropy: "\u0394Hn", node_specificity: "\u0394spec", gold_mass: "\u0394gold" };
  function columns() {
    const v = S.variant;
    const cols = [
      { key: "id", label: "id", get: (r) => r.id, html: (r) => esc(r.id) + (r.ex ? "<span class=\"ex\" title=\"heatmap example " + r.ex + " of the report\">ex" + r.ex + "</span>" : "") },
      { key: "nn", label: "nodes", get: (r) => r.nn },
      { key: "nt", label: "tokens", get: (r) => r.nt },
      { key: "y", label: "target", get: (r) => r.y, fmt: f3 },
    ];
    for (const m of [base, v]) cols.push({ key: "pred_" + m, label: "pred " + m, get: (r) => (r.pred || {})[m], fmt: f3 });
    for (const m of [base, v]) cols.push({ key: "err_" + m, label: "|err| " + m, get: (r) => errOf(r, m), fmt: f3 });
    cols.push({ key: "derr", label: "\u0394|err|", title: "|err| " + v + " \u2212 |err| " + base, get: (r) => { const a = errOf(r, v), b = errOf(r, base); return isNum(a) && isNum(b) ? a - b : null; }, fmt: (x) => sgn(x, 3), cls: true });
    if (D.analysed) {
      cols.push({ key: "jsd", label: "JSD", title: "mean row Jensen-Shannon divergence (nats) between " + base + " and " + v + " at the headline cell", get: (r) => dOf(r, "jsd"), fmt: w3 });
      for (const m of D.diff_metrics) {
        cols.push({ key: "d_" + m, label: METRIC_SHORT[m] || m, title: m + ": " + v + " \u2212 " + base + " (headline cell, per-sample value of the analysis)", get: (r) => dOf(r, m), fmt: (x) => sgn(x, 3), cls: true });
      }
    }
    return cols;
  }
  function passes(r) {
    const q = $("filter-id").value.trim().toLowerCase();
    if (q && r.id.toLowerCase().indexOf(q) < 0) return false;
    if ($("only-examples").checked && !r.ex) return false;
    if ($("only-embedded").checked && !r.emb) return false;
    const st = $("filter-stratum").value;
    if (st) {
      const [kind, val] = st.split("\t");
      if (kind === "split") { if (r.split !== val) return false; }
      else if (kind === "example") { if (!r.ex) return false; }
      else if (!r.strata || r.strata[kind] !== val) return false;
    }
    return true;
  }
  function sortRows(rows) {
    const col = columns().find((c) => c.key === S.sortKey);
    const get = S.sortKey === "pos" ? (r) => r.pos : S.sortKey === "maxerr" ? (r) => {
      const a = errOf(r, base), b = errOf(r, S.variant);
      return isNum(a) || isNum(b) ? Math.max(isNum(a) ? a : -Infinity, isNum(b) ? b : -Infinity) : null;
    } : S.sortKey === "absderr" ? (r) => { const a = errOf(r, S.variant), b = errOf(r, base); return isNum(a) && isNum(b) ? Math.abs(a - b) : null; }
      : col ? col.get : (r) => r.pos;
    const dir = S.sortDir;
    return rows.slice().sort((a, b) => {
      const x = get(a), y = get(b);
      const nx = x === null || x === undefined || (typeof x === "number" && !isFinite(x));
      const ny = y === null || y === undefined || (typeof y === "number" && !isFinite(y));
      if (nx || ny) return nx === ny ? a.pos - b.pos : nx ? 1 : -1; // missing last
      if (x < y) return -dir;
      if (x > y) return dir;
      return a.pos - b.pos;
    });
  }
  function renderList() {
    const cols = columns();
    const thead = $("sample-table").tHead;
    thead.innerHTML = "";
    const tr = el("tr");
    for (const c of cols) {
      const th = el("th", { "data-key": c.key, title: c.title || c.label }, c.label);
      if (S.sortKey === c.key) th.className = "sorted" + (S.sortDir > 0 ? " asc" : "");
      th.addEventListener("click", () => {
        if (S.sortKey === c.key) S.sortDir = -S.sortDir; else { S.sortKey = c.key; S.sortDir = c.key === "id" ? 1 : -1; }
        renderList();
      });
      tr.appendChild(th);
    }
    thead.appendChild(tr);
    S.rows = sortRows(D.samples.filter(passes));
    const tb = $("sample-table").tBodies[0];
    const html = [];
    for (const r of S.rows) {
      const cls = (r.pos === S.sel ? "selected " : "") + (r.emb ? "" : "noemb");
      html.push("<tr data-pos=\"" + r.pos + "\" data-id=\"" + esc(r.id) + "\" class=\"" + cls + "\"" +
        (r.emb ? "" : " title=\"attention not embedded in this file\"") + ">");
      for (const c of cols) {
        const x = c.get(r);
        const t = c.html ? c.html(r) : esc(c.fmt ? c.fmt(x) : x === null || x === undefined ? "n/a" : x);
        const k = c.cls && isNum(x) ? (x > 0 ? " class=\"pos\"" : x < 0 ? " class=\"neg\"" : "") : "";
        html.push("<td" + k + ">" + t + "</td>");
      }
      html.push("</tr>");
    }
    tb.innerHTML = html.join("");
    $("list-count").textContent = S.rows.length + " of " + D.n_samples + " samples shown" +
      (D.n_embedded < D.n_samples ? " \u00b7 grey rows: attention not embedded (" + (D.max_samples ? "cap " + D.max_samples + " samples" : "") + (D.max_samples && D.max_mb ? ", " : "") + (D.max_mb ? "budget " + D.max_mb + " MiB" : "") + ")" : "");
  }
  function setupList() {
    const fs = $("filter-stratum");
    const splits = [...new Set(D.samples.map((r) => r.split))];
    if (splits.length > 1) {
      const g = el("optgroup", { label: "split" });
      for (const s of splits) g.appendChild(el("option", { value: "split\t" + s }, s));
      fs.appendChild(g);
    }
    for (const name of D.strata_names) {
      const vals = [...new Set(D.samples.map((r) => r.strata[name]).filter((x) => x !== null && x !== undefined))];
      vals.sort((a, b) => (String(a) < String(b) ? -1 : 1));
      const g = el("optgroup", { label: name === "baseline_error" ? "baseline error (easy \u2192 hard)" : name });
      for (const v of vals) g.appendChild(el("option", { value: name + "\t" + v }, name + ": " + v));
      fs.appendChild(g);
    }
    $("filter-id").addEventListener("input", renderList);
    for (const id of ["filter-stratum", "only-examples", "only-embedded"]) $(id).addEventListener("change", renderList);
    const sortBy = (key, dir) => () => { S.sortKey = key; S.sortDir = dir; renderList(); };
    $("sort-jsd").addEventListener("click", sortBy("jsd", -1));
    $("sort-error").addEventListener("click", sortBy("maxerr", -1));
    $("sort-diff").addEventListener("click", sortBy("absderr", -1));
    $("sort-id").addEventListener("click", sortBy("pos", 1));
    if (!D.analysed) $("sort-jsd").disabled = true;
    $("sample-table").tBodies[0].addEventListener("click", (ev) => {
      const tr = ev.target.closest("tr");
      if (tr) select(Number(tr.dataset.pos));
    });
    document.addEventListener("keydown", (ev) => {
      if (ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT") return;
      if (ev.key !== "ArrowDown" && ev.key !== "ArrowUp") return;
      const i = S.rows.findIndex((r) => r.pos === S.sel);
      const j = Math.max(0, Math.min(S.rows.length - 1, i + (ev.key === "ArrowDown" ? 1 : -1)));
      if (S.rows[j]) { ev.preventDefault(); select(S.rows[j].pos); }
    });
  }

  // ---------------------------------------------------------------- the selected sample
  let current = null; // { r, smp }
  async function select(pos) {
    S.sel = pos;
    for (const tr of $("sample-table").tBodies[0].rows) tr.classList.toggle("selected", Number(tr.dataset.pos) === pos);
    const tr = $("sample-table").querySelector("tr[data-pos=\"" + pos + "\"]");
    const wrap = $("table-wrap");
    if (tr) { // keep the row in view vertically only (the id column stays visible)
      const head = $("sample-table").tHead.offsetHeight;
      if (tr.offsetTop - head < wrap.scrollTop || tr.offsetTop + tr.offsetHeight > wrap.scrollTop + wrap.clientHeight) {
        wrap.scrollTop = Math.max(0, tr.offsetTop - wrap.clientHeight / 2);
      }
    }
    const r = D.samples[pos];
    S.nodes = null; S.nodeLabel = null; S.showAll = false;
    renderHead(r);
    const smp = r.emb ? await decode(pos) : null;
    if (S.sel !== pos) return; // another sample was chosen meanwhile
    current = { r, smp };
    document.body.dataset.loaded = r.id;
    setupViewControls();
    renderSample();
  }
  function renderHead(r) {
    const h = $("sample-head");
    const v = S.variant;
    let t = "<h2>" + esc(r.id) + (r.ex ? " <span class=\"ex\">heatmap example " + r.ex + "</span>" : "") + "</h2>";
    t += "<div class=\"muted\">" + r.nn + " nodes \u00d7 " + r.nt + " tokens \u00b7 split " + esc(r.split) +
      (D.target ? " \u00b7 " + esc(D.target) + " = " + f3(r.y) : "") + "</div>";
    t += "<table><tr><th></th>";
    for (const m of models) t += "<th>" + esc(m) + (m === base ? " (baseline)" : "") + "</th>";
    t += "</tr><tr><td>prediction</td>";
    for (const m of models) t += "<td>" + f3((r.pred || {})[m]) + "</td>";
    t += "</tr><tr><td>|error|</td>";
    for (const m of models) t += "<td>" + f3(errOf(r, m)) + "</td>";
    t += "</tr></table>";
    const d = r.d && r.d[v];
    if (d) {
      const sel = D.selection;
      t += "<div class=\"note\">analysis, " + esc(sel.site) + " layer " + sel.layer + " head-mean, " + esc(v) + " \u2212 " + esc(base) + ": ";
      t += Object.keys(d).map((k) => esc(k) + " " + (k === "jsd" ? w3(d[k]) : sgn(d[k], 3))).join(" \u00b7 ") + "</div>";
    }
    const meta = Object.entries(r.meta || {}).filter(([, x]) => x !== null && x !== "");
    if (meta.length) t += "<div class=\"note\">" + meta.map(([k, x]) => esc(k) + ": " + esc(x)).join(" \u00b7 ") + "</div>";
    if (!r.emb) {
      t += "<p class=\"warn\">The attention of this sample is not embedded in this file (" + D.n_embedded + " of " + D.n_samples +
        " are: the heatmap examples plus a seeded random selection). Run <code>attncmp view SAVE_DIR</code> (no cap by default) to embed every sample.</p>";
      $("view-controls").hidden = true; $("node-bar").hidden = true;
      $("matrices").innerHTML = ""; $("textview").innerHTML = ""; $("node-detail").innerHTML = "";
    }
    h.innerHTML = t;
  }
  function siteShape(site, model) { return (D.sites[site] || {})[model] || null; }
  function setupViewControls() {
    if (!current || !current.smp) return;
    $("view-controls").hidden = false;
    const ss = $("sel-site");
    if (!ss.options.length) {
      for (const s of D.site_order) {
        const i = siteShape(s, base);
        ss.appendChild(el("option", { value: s }, s + " (" + i.query_axis + " \u2192 " + i.key_axis + ")"));
      }
      ss.value = S.site;
      ss.addEventListener("change", () => { S.site = ss.value; S.layer = null; S.nodes = null; S.nodeLabel = null; setupViewControls(); renderSample(); });
      const sv = $("sel-variant");
      for (const m of models.slice(1)) sv.appendChild(el("option", { value: m }, m + " vs " + base));
      if (models.length < 2) sv.appendChild(el("option", { value: base }, base));
      sv.value = S.variant;
      sv.addEventListener("change", () => { S.variant = sv.value; setupViewControls(); renderList(); renderHead(current.r); renderSample(); });
      $("sel-layer").addEventListener("change", () => { S.layer = Number($("sel-layer").value); renderSample(); });
      $("sel-head").addEventListener("change", () => { const x = $("sel-head").value; S.head = x === "mean" ? "mean" : Number(x); renderSample(); });
    }
    const a = siteShape(S.site, base), b = siteShape(S.site, S.variant);
    const L = Math.min(a.n_layers, b.n_layers), H = Math.min(a.n_heads, b.n_heads);
    if (S.layer === null || S.layer >= L) S.layer = S.site === D.selection.site && isNum(D.selection.layer) ? D.selection.layer : L - 1;
    if (S.head !== "mean" && S.head >= H) S.head = "mean";
    const sl = $("sel-layer"); sl.innerHTML = "";
    for (let l = 0; l < L; l++) sl.appendChild(el("option", { value: l }, String(l)));
    sl.value = S.layer;
    const sh = $("sel-head"); sh.innerHTML = "";
    sh.appendChild(el("option", { value: "mean" }, "mean of " + H + " heads"));
    for (let h = 0; h < H; h++) sh.appendChild(el("option", { value: h }, "head " + h));
    sh.value = S.head;
    $("precision-note").textContent = "weights at display precision: " + D.precision + " (" + DIG +
      " significant digits shown; store " + D.store_dtype + "), as stored: special tokens included, not renormalised";
  }

  // ---------------------------------------------------------------- drawing
  const BLUES = [[247, 251, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]];
  const RDBU = [[33, 102, 172], [146, 197, 222], [247, 247, 247], [244, 165, 130], [178, 24, 43]];
  function ramp(stops, t) {
    t = Math.max(0, Math.min(1, t)) * (stops.length - 1);
    const i = Math.min(stops.length - 2, Math.floor(t)), f = t - i, a = stops[i], b = stops[i + 1];
    return [a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1]), a[2] + f * (b[2] - a[2])];
  }
  function axisLabels(axis, h) {
    if (axis === "nodes") return h.nodes.map((l, i) => l + i);
    if (axis === "tokens") return h.tokens.slice();
    return ["(pooled)"];
  }

  function renderSample() {
    if (!current || !current.smp) return;
    const { smp } = current;
    const site = S.site, info = siteShape(site, base);
    const A = matrix(smp, site, base, S.layer, S.head), B = matrix(smp, site, S.variant, S.layer, S.head);
    if (!A || !B) { $("matrices").textContent = "no attention for this selection"; return; }
    const Q = A.Q, K = A.K;
    const qlab = axisLabels(info.query_axis, smp.h), klab = axisLabels(info.key_axis, smp.h);
    const goldOn = info.query_axis === "nodes" && info.key_axis === "tokens" && smp.gold.size > 0;
    const diff = new Float32Array(Q * K);
    let vmax = 0, dmax = 0;
    for (let i = 0; i < Q * K; i++) {
      diff[i] = B.v[i] - A.v[i];
      vmax = Math.max(vmax, A.v[i], B.v[i]);
      dmax = Math.max(dmax, Math.abs(diff[i]));
    }
    renderNodeBar(qlab, info);
    const where = "layer " + S.layer + ", " + (S.head === "mean" ? "head-mean" : "head " + S.head);
    const panels = [
      { name: base, v: A.v, kind: "seq", max: vmax, title: base + " (baseline)" },
      { name: S.variant, v: B.v, kind: "seq", max: vmax, title: S.variant },
      { name: "diff", v: diff, kind: "div", max: dmax, title: "difference " + S.variant + " \u2212 " + base },
    ];
    const box = $("matrices");
    box.innerHTML = "";
    box.appendChild(el("div", { class: "note", id: "matrix-where" }, site + " \u00b7 " + where + " \u00b7 rows: " + info.query_axis + ", columns: " + info.key_axis + " \u00b7 hover a cell for its weights" + (info.query_axis === "nodes" ? ", click a row to select the node" : "")));
    const avail = Math.max(300, box.clientWidth || 900);
    const labW = 64;
    // three panels in a row when the cells stay readable, else two (the difference below), else one
    const fit = (n) => Math.floor((avail / n - labW - 44) / K);
    const cw = fit(3) >= 12 ? Math.min(22, fit(3)) : fit(2) >= 7 ? Math.min(22, fit(2)) : Math.max(1, Math.min(22, fit(1)));
    const ch = Q <= 40 ? Math.max(12, Math.min(16, cw)) : Q <= 80 ? 9 : Math.max(3, Math.floor(720 / Q));
    const rowLabels = ch >= 9, colLabels = cw >= 9;
    const top = colLabels ? 64 : 4;
    for (const p of panels) {
      const div = el("div", { class: "panel" });
      div.appendChild(el("h3", {}, p.title));
      const cv = el("canvas", { "data-panel": p.name });
      const W = labW + K * cw + 2, Hh = top + Q * ch + 2;
      const dpr = window.devicePixelRatio || 1;
      div.style.width = W + "px"; // legend and title wrap under the canvas
      cv.width = W * dpr; cv.height = Hh * dpr; cv.style.width = W + "px"; cv.style.height = Hh + "px";
      const g = cv.getContext("2d");
      g.scale(dpr, dpr);
      g.fillStyle = "#fff"; g.fillRect(0, 0, W, Hh);
      for (let q = 0; q < Q; q++) {
        for (let k = 0; k < K; k++) {
          const x = p.v[q * K + k];
          const c = p.kind === "seq" ? ramp(BLUES, p.max > 0 ? x / p.max : 0) : ramp(RDBU, p.max > 0 ? 0.5 + 0.5 * x / p.max : 0.5);
          g.fillStyle = "rgb(" + (c[0] | 0) + "," + (c[1] | 0) + "," + (c[2] | 0) + ")";
          g.fillRect(labW + k * cw, top + q * ch, cw, ch);
        }
      }
      if (goldOn) {
        g.strokeStyle = "#d4a017"; g.lineWidth = Math.max(1, Math.min(2, cw / 5));
        for (const idx of smp.gold) {
          const q = Math.floor(idx / K), k = idx % K;
          g.strokeRect(labW + k * cw + 0.5, top + q * ch + 0.5, Math.max(1, cw - 1), Math.max(1, ch - 1));
        }
      }
      if (S.nodes && info.query_axis === "nodes") {
        g.strokeStyle = "#e6007e"; g.lineWidth = 1.5;
        for (const q of S.nodes) g.strokeRect(labW - 0.5, top + q * ch, K * cw + 1, ch);
      }
      g.fillStyle = "#333"; g.font = Math.min(11, Math.max(8, ch - 2)) + "px system-ui, sans-serif"; g.textBaseline = "middle";
      if (rowLabels) {
        g.textAlign = "right";
        for (let q = 0; q < Q; q++) g.fillText(qlab[q].slice(0, 10), labW - 3, top + q * ch + ch / 2);
      } else {
        g.textAlign = "left"; g.fillText(Q + " rows", 2, top + 8);
      }
      if (colLabels) {
        g.save(); g.textAlign = "left";
        for (let k = 0; k < K; k++) {
          g.save(); g.translate(labW + k * cw + cw / 2, top - 3); g.rotate(-Math.PI / 2.6);
          g.fillStyle = smp.h.special[k] && info.key_axis === "tokens" ? "#999" : "#333";
          g.fillText(klab[k].slice(0, 12), 0, 0); g.restore();
        }
        g.restore();
      }
      cv.addEventListener("mousemove", (ev) => {
        const rect = cv.getBoundingClientRect();
        const k = Math.floor((ev.clientX - rect.left - labW) / cw), q = Math.floor((ev.clientY - rect.top - top) / ch);
        if (k < 0 || k >= K || q < 0 || q >= Q) { hideTip(); return; }
        showTip(ev, cellText(q, k, qlab, klab, info, A, B, smp, goldOn));
      });
      cv.addEventListener("mouseleave", hideTip);
      cv.addEventListener("click", (ev) => {
        if (info.query_axis !== "nodes") return;
        const rect = cv.getBoundingClientRect();
        const q = Math.floor((ev.clientY - rect.top - top) / ch);
        if (q >= 0 && q < Q) selectNodes([q], qlab[q]);
      });
      div.appendChild(cv);
      const leg = el("div", { class: "legend" });
      const lc = el("canvas", { width: 90, height: 8 });
      const lg = lc.getContext("2d");
      for (let i = 0; i < 90; i++) {
        const c = p.kind === "seq" ? ramp(BLUES, i / 89) : ramp(RDBU, i / 89);
        lg.fillStyle = "rgb(" + (c[0] | 0) + "," + (c[1] | 0) + "," + (c[2] | 0) + ")"; lg.fillRect(i, 0, 1, 8);
      }
      leg.appendChild(document.createTextNode(p.kind === "seq" ? "0 " : sgn(-p.max) + " "));
      leg.appendChild(lc);
      leg.appendChild(document.createTextNode(" " + (p.kind === "seq" ? w3(p.max) + " (scale shared by both models)" : sgn(p.max))));
      if (goldOn && p.kind === "seq") leg.appendChild(document.createTextNode(" \u00b7 gold outline: gold alignment cells"));
      div.appendChild(leg);
      box.appendChild(div);
    }
    renderText(A, B, Q, K, info, smp, goldOn);
  }
  function cellText(q, k, qlab, klab, info, A, B, smp, goldOn) {
    const i = q * A.K + k, a = A.v[i], b = B.v[i];
    const lines = [];
    lines.push((info.query_axis === "nodes" ? "node " : info.query_axis === "tokens" ? "token " : "") + qlab[q] + "  (query position " + q + ")");
    lines.push((info.key_axis === "tokens" ? "token \u201c" + klab[k] + "\u201d" : (info.key_axis === "nodes" ? "node " : "") + klab[k]) +
      "  (key position " + k + ")" + (info.key_axis === "tokens" && smp.h.special[k] ? ", special" : "") + (goldOn && smp.gold.has(i) ? ", gold" : ""));
    lines.push(base + ": " + w3(a));
    lines.push(S.variant + ": " + w3(b));
    lines.push("difference: " + sgn(b - a));
    return lines.join("\n");
  }

  // ---------------------------------------------------------------- nodes and groups
  function renderNodeBar(qlab, info) {
    const bar = $("node-bar");
    bar.innerHTML = "";
    if (info.query_axis !== "nodes") { bar.hidden = true; return; }
    bar.hidden = false;
    const labels = current.smp.h.nodes;
    bar.appendChild(el("span", { class: "muted" }, "shade the text by:"));
    const all = el("button", { type: "button", "data-group": "*", class: "grp" + (S.nodes ? "" : " active") }, "all nodes (mean)");
    all.addEventListener("click", () => selectNodes(null, null));
    bar.appendChild(all);
    // node groups: nodes with equal labels (analyze.groups), the file lists those of 2+ nodes
    for (const [lbl, display, idx] of current.smp.h.groups || []) {
      const lab = "all " + display;
      const b = el("button", { type: "button", "data-group": lbl, class: "grp" + (S.nodeLabel === lab ? " active" : "") }, lab);
      b.addEventListener("click", () => selectNodes(idx, lab));
      bar.appendChild(b);
    }
    labels.forEach((l, i) => {
      const lab = qlab[i];
      const b = el("button", { type: "button", "data-node": i, class: S.nodes && S.nodes.length === 1 && S.nodes[0] === i ? "active" : "" }, lab);
      b.addEventListener("click", () => selectNodes([i], lab));
      bar.appendChild(b);
    });
  }
  function selectNodes(idx, label) {
    S.nodes = idx; S.nodeLabel = label; S.showAll = false;
    renderSample();
  }

  // ---------------------------------------------------------------- text view
  function tokenStyle(tokens) {
    const wp = tokens.some((t) => t.startsWith("##"));
    const bpe = tokens.some((t) => t.startsWith("\u0120") || t.startsWith("\u2581"));
    return tokens.map((t, i) => {
      if (wp) return t.startsWith("##") ? [t.slice(2), false] : [t, i > 0];
      if (bpe) return t.startsWith("\u0120") || t.startsWith("\u2581") ? [t.slice(1), i > 0] : [t, false];
      return [t, i > 0];
    });
  }
  function rowOf(M, rows, K) {
    const out = new Float64Array(K);
    for (const q of rows) for (let k = 0; k < K; k++) out[k] += M.v[q * K + k];
    for (let k = 0; k < K; k++) out[k] /= rows.length;
    return out;
  }
  function renderText(A, B, Q, K, info, smp, goldOn) {
    const tv = $("textview"), nd = $("node-detail");
    tv.innerHTML = ""; nd.innerHTML = "";
    if (info.key_axis !== "tokens") { tv.appendChild(el("p", { class: "note" }, "The key axis of this site is " + info.key_axis + ": no text to shade.")); return; }
    const rows = S.nodes || [...Array(Q).keys()];
    const label = S.nodes ? S.nodeLabel : "all " + Q + " " + (info.query_axis === "nodes" ? "nodes" : "rows") + " (mean)";
    const a = rowOf(A, rows, K), b = rowOf(B, rows, K);
    const d = b.map((x, k) => x - a[k]);
    let vmax = 0, dmax = 0;
    for (let k = 0; k < K; k++) { vmax = Math.max(vmax, a[k], b[k]); dmax = Math.max(dmax, Math.abs(d[k])); }
    const goldK = new Set();
    if (goldOn) for (const q of rows) for (let k = 0; k < K; k++) if (smp.gold.has(q * K + k)) goldK.add(k);
    const where = "layer " + S.layer + ", " + (S.head === "mean" ? "head-mean" : "head " + S.head);
    tv.appendChild(el("div", { class: "note", id: "text-selection" }, "Text shaded by the attention of " + label + " \u00b7 " + S.site + ", " + where +
      (rows.length > 1 ? " (mean of the rows)" : "") + " \u00b7 shared scale 0\u2013" + w3(vmax) + "; difference scale \u00b1" + w3(dmax) + (goldK.size ? " \u00b7 underlined: gold tokens" : "")));
    const toks = tokenStyle(smp.h.tokens);
    const series = [
      { name: base, v: a, kind: "seq" }, { name: S.variant, v: b, kind: "seq" }, { name: "difference", v: d, kind: "div" },
    ];
    for (const s of series) {
      const row = el("div", { class: "trow", "data-series": s.name });
      row.appendChild(el("div", { class: "tlabel" }, s.kind === "div" ? "difference " + S.variant + " \u2212 " + base : s.name));
      const text = el("div", { class: "text" });
      for (let k = 0; k < K; k++) {
        const [t, ws] = toks[k];
        const x = s.v[k];
        let bg, alpha;
        if (s.kind === "seq") { alpha = vmax > 0 ? x / vmax : 0; bg = "rgba(33,113,181," + alpha.toFixed(3) + ")"; }
        else { alpha = dmax > 0 ? Math.abs(x) / dmax : 0; bg = (x >= 0 ? "rgba(178,24,43," : "rgba(33,102,172,") + alpha.toFixed(3) + ")"; }
        const span = el("span", { class: "tok" + (ws ? " ws" : "") + (smp.h.special[k] ? " special" : "") + (goldK.has(k) ? " gold" : ""), "data-pos": k }, t);
        span.style.background = bg;
        if (alpha > 0.55) span.style.color = "#fff";
        text.appendChild(span);
      }
      text.addEventListener("mousemove", (ev) => {
        const sp = ev.target.closest(".tok");
        if (!sp) { hideTip(); return; }
        const k = Number(sp.dataset.pos);
        showTip(ev, "attention of " + label + "\ntoken \u201c" + smp.h.tokens[k] + "\u201d  (position " + k + ")" +
          (smp.h.special[k] ? ", special" : "") + (goldK.has(k) ? ", gold" : "") + "\n" + base + ": " + w3(a[k]) + "\n" + S.variant + ": " + w3(b[k]) + "\ndifference: " + sgn(d[k]));
      });
      text.addEventListener("mouseleave", hideTip);
      row.appendChild(text);
      tv.appendChild(row);
    }
    // the weights themselves: tokens of the selection, largest first
    const order = [...Array(K).keys()].sort((x, y) => Math.max(b[y], a[y]) - Math.max(b[x], a[x]) || x - y);
    const n = S.showAll ? K : Math.min(K, 15);
    const tbl = el("table", { id: "weights-table", "data-label": label });
    tbl.innerHTML = "<thead><tr><th>position</th><th>token</th><th>" + esc(base) + "</th><th>" + esc(S.variant) + "</th><th>difference</th><th>gold</th></tr></thead>";
    const tb = el("tbody");
    for (const k of order.slice(0, n)) {
      const tr = el("tr", { "data-pos": k });
      tr.innerHTML = "<td>" + k + "</td><td>" + esc(smp.h.tokens[k]) + "</td><td class=\"w-base\">" + w3(a[k]) + "</td><td class=\"w-variant\">" + w3(b[k]) +
        "</td><td class=\"" + (d[k] > 0 ? "pos" : d[k] < 0 ? "neg" : "") + "\">" + sgn(d[k]) + "</td><td>" + (goldK.has(k) ? "\u2605" : "") + "</td>";
      tb.appendChild(tr);
    }
    tbl.appendChild(tb);
    nd.appendChild(el("div", { class: "note" }, "Weights of " + label + " (" + where + "), " + (n < K ? "top " + n + " of " + K + " tokens" : "all " + K + " tokens") + ", display precision"));
    nd.appendChild(tbl);
    if (n < K) {
      const more = el("button", { type: "button", id: "show-all" }, "show all " + K + " tokens");
      more.addEventListener("click", () => { S.showAll = true; renderSample(); });
      nd.appendChild(more);
    }
  }

  // ---------------------------------------------------------------- tooltip
  function showTip(ev, text) {
    const t = $("tooltip");
    t.textContent = text; t.hidden = false;
    const x = Math.min(window.innerWidth - 390, ev.clientX + 14), y = Math.min(window.innerHeight - 120, ev.clientY + 14);
    t.style.left = x + "px"; t.style.top = y + "px";
  }
  function hideTip() { $("tooltip").hidden = true; }

  // ---------------------------------------------------------------- start
  renderTop();
  setupList();
  renderList();
  const want = decodeURIComponent((location.hash.match(/sample=([^&]+)/) || [])[1] || "");
  const first = D.samples.find((r) => r.id === want) || D.samples.find((r) => r.ex === 1 && r.emb) || D.samples.find((r) => r.emb) || D.samples[0];
  if (typeof DecompressionStream === "undefined") {
    $("sample-head").innerHTML = "<p class=\"warn\">This browser lacks DecompressionStream (Chrome 80+, Firefox 113+, Safari 16.4+ have it); the sample list works, the attention cannot be decoded.</p>";
  } else if (first) {
    select(first.pos);
  }
  window.attncmpExplorer = { data: D, select, selectNodes, state: S };
})();
