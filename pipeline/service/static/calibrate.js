// The calibration page: click floor points on a camera's frame, give their ground positions in metres (typed, or
// clicked on a floor plan), see the fit (errors per point, the frame warped onto the ground, the camera's footprint
// beside the other calibrated cameras'), save it next to the pipeline config. Plain DOM and canvas, no framework.
// Image points are kept in the camera's own pixels (GET /api/calibration gives its size), whatever size the frame
// is displayed at.
"use strict";

const $ = (id) => document.getElementById(id);
const COLOURS = ["#1f77b4", "#e6550d", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
const OK = "#1a9850", LEFT_OUT = "#d7191c", PENDING = "#fdae61";
const state = {
  site: null, // GET /api/calibration
  camera: null, // the selected camera's entry of site.cameras
  points: {}, // camera id -> [{u, v, x, y}], x and y as typed (strings)
  selected: -1, // index of the selected point
  fit: null, // the latest fit of the selected camera (POST .../fit), with the point indices it was fitted on
  fitSeq: 0, // answers to older fit requests are dropped
  fitTimer: null,
  plan: null, // the floor plan's <img>, loaded
  pickOrigin: false,
  groundToCanvas: null, // the ground panel's mapping, for clicks on a floor plan
};

async function getJSON(url, options) {
  const r = await fetch(url, options);
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
  return body;
}

const postJSON = (url, body) => getJSON(url, {
  method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

function el(tag, attrs = {}, children = []) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

const points = () => state.points[state.camera.id];
const complete = (p) => p.x !== "" && p.y !== "" && Number.isFinite(Number(p.x)) && Number.isFinite(Number(p.y));
const colourOf = (id) => COLOURS[state.site.cameras.findIndex((c) => c.id === id) % COLOURS.length];
const metres = (e) => (e == null ? "–" : e < 1 ? `${(100 * e).toFixed(1)} cm` : `${e.toFixed(2)} m`);

function niceStep(span, lines) {
  const raw = span / lines, p = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw);
}

// -- the site and the selected camera ------------------------------------------------------------------------

async function loadSite(cameraId) {
  state.site = await getJSON("/api/calibration");
  const select = $("camera-select");
  select.replaceChildren(...state.site.cameras.map((c) =>
    el("option", { value: c.id, text: `${c.id}${c.calibrated ? " (calibrated)" : ""}` })));
  const asked = cameraId || new URLSearchParams(location.search).get("camera");
  select.value = state.site.cameras.some((c) => c.id === asked) ? asked : state.site.cameras[0].id;
  $("status").textContent = state.site.config_file
    ? `config ${state.site.config_file}${state.site.writable ? "" : " (folder not writable: saves are downloads)"}`
    : "no config file: saves are downloads";
  const others = state.site.cameras.filter((c) => c.calibrated).length;
  if (others && state.site.config_units !== "m") {
    // Points of all cameras live in one ground frame: metres here, whatever the config's other matrices use.
    $("status").textContent += ` · the config's calibrations are in ${state.site.config_units || "free units"}, ` +
      "this page works in metres: calibrate every camera here, then set geometry.units: m";
  }
  showPlanSettings();
  selectCamera(select.value, Boolean(cameraId));
}

function selectCamera(id, keepFit) {
  const cam = state.site.cameras.find((c) => c.id === id);
  const changed = !state.camera || state.camera.id !== id;
  state.camera = cam;
  if (!(id in state.points)) {
    state.points[id] = cam.points.map((p) => ({ u: p.u, v: p.v, x: String(p.x), y: String(p.y) }));
  }
  if (changed) {
    state.selected = -1;
    state.fit = null;
    $("top-view").removeAttribute("src");
    $("save-result").hidden = true;
    if (cam.frame) $("frame").src = `${cam.frame}?t=${Date.now()}`; else $("frame").removeAttribute("src");
  }
  $("camera-info").textContent = cam.width ? `${cam.frame_origin}, ${cam.width}×${cam.height} px · ` +
    (cam.calibrated ? `calibrated (${cam.matrix_from})` : "not calibrated") : cam.frame_error;
  $("replace-note").textContent = cam.file_exists ? `will replace ${cam.file}`
    : state.site.writable ? `writes ${cam.file} next to the config` : "";
  $("replace-note").className = cam.file_exists ? "warning" : "";
  renderTable();
  if (!keepFit) scheduleFit(0); else drawAll();
}

// -- the points table ------------------------------------------------------------------------------------------

function renderTable() {
  const rows = points().map((p, i) => {
    const input = (axis) => el("input", { class: axis, type: "number", step: "any", value: p[axis],
      oninput: (e) => { p[axis] = e.target.value; scheduleFit(); drawAll(); },
      onfocus: () => select(i, false) });
    return el("tr", { class: "point-row", "data-n": i + 1, onclick: () => select(i, false) }, [
      el("td", { text: i + 1 }), el("td", { text: p.u.toFixed(1) }), el("td", { text: p.v.toFixed(1) }),
      el("td", {}, [input("x")]), el("td", {}, [input("y")]),
      el("td", { class: "point-error ground" }), el("td", { class: "point-error image" }),
      el("td", {}, [el("button", { type: "button", class: "delete", title: "delete this point", text: "✕",
        onclick: (e) => { e.stopPropagation(); removePoint(i); } })]),
    ]);
  });
  $("points").tBodies[0].replaceChildren(...rows);
  updateRows();
}

function fitOf(i) {
  if (!state.fit) return null;
  const k = state.fit.indices.indexOf(i);
  return k >= 0 ? state.fit.points[k] : null;
}

function updateRows() {
  [...$("points").tBodies[0].rows].forEach((row, i) => {
    const f = fitOf(i);
    row.classList.toggle("selected", i === state.selected);
    row.classList.toggle("outlier", Boolean(f && !f.inlier));
    row.cells[5].textContent = f ? metres(f.ground_error) : "";
    row.cells[6].textContent = f ? (f.image_error == null ? "–" : `${f.image_error.toFixed(1)} px`) +
      (f.inlier ? "" : " left out") : "";
  });
}

function select(i, focus = true) {
  state.selected = i;
  updateRows();
  drawAll();
  if (focus && i >= 0) $("points").tBodies[0].rows[i].querySelector("input.x").focus();
}

function removePoint(i) {
  points().splice(i, 1);
  state.selected = Math.min(state.selected, points().length - 1);
  renderTable();
  scheduleFit();
}

function frameClick(ev) {
  const cam = state.camera, r = $("frame").getBoundingClientRect();
  if (!cam.width) return;
  const sx = cam.width / r.width, sy = cam.height / r.height;
  const u = (ev.clientX - r.left) * sx, v = (ev.clientY - r.top) * sy;
  const near = points().findIndex((p) => Math.hypot((p.u - u) / sx, (p.v - v) / sy) < 8);
  if (near >= 0) { select(near); return; }
  points().push({ u: Math.round(u * 10) / 10, v: Math.round(v * 10) / 10, x: "", y: "" });
  renderTable();
  select(points().length - 1);
}

// -- fitting and saving ------------------------------------------------------------------------------------------

function request() {
  const indices = points().flatMap((p, i) => (complete(p) ? [i] : []));
  const body = { points: indices.map((i) => ({ n: i + 1, u: points()[i].u, v: points()[i].v,
    x: Number(points()[i].x), y: Number(points()[i].y) })), ransac_px: Number($("ransac").value) || 5 };
  return { indices, body };
}

function scheduleFit(delay = 300) {
  clearTimeout(state.fitTimer);
  state.fitTimer = setTimeout(() => runFit(false), delay);
}

async function runFit(asked) {
  const cam = state.camera, seq = ++state.fitSeq;
  const { indices, body } = request();
  const summary = $("fit-summary");
  if (indices.length < 4 && !asked) {
    state.fit = null;
    summary.className = "";
    summary.textContent = `${4 - indices.length} more point${indices.length === 3 ? "" : "s"} with a ground ` +
      "position to fit (four at least; from six, each is checked against the others)";
    updateRows();
    drawAll();
    return;
  }
  try {
    const fit = await postJSON(`/api/calibration/${cam.id}/fit`, body);
    if (seq !== state.fitSeq || cam !== state.camera) return;
    state.fit = { ...fit, indices };
    const s = fit.summary;
    summary.className = "";
    summary.textContent = `${s.inliers} of ${s.points} points used · image error mean ` +
      `${s.image_error_mean_px.toFixed(2)} px, max ${s.image_error_max_px.toFixed(2)} px · ground error mean ` +
      `${metres(s.ground_error_mean)}, max ${metres(s.ground_error_max)}` +
      (s.points === 4 ? " (exact with four points: add more to measure the error)" : "") +
      (fit.outliers.length ? ` · left out: ${fit.outliers.join(", ")}` : "");
    $("top-view").src = fit.top_view.image;
  } catch (e) {
    if (seq !== state.fitSeq) return;
    state.fit = null;
    summary.className = "error";
    summary.textContent = e.message;
  }
  updateRows();
  drawAll();
}

function download(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
  return el("a", { href: url, download: name, class: "download", text: `download ${name}` });
}

async function save() {
  const cam = state.camera, out = $("save-message");
  const { body } = request();
  $("save-result").hidden = false;
  $("config-lines").textContent = "";
  try {
    const ans = await postJSON(`/api/calibration/${cam.id}/save`, { ...body, replace: cam.file_exists });
    if (ans.saved) {
      out.replaceChildren("Wrote ", el("code", { id: "saved-path", text: ans.path }),
        ` and its points${ans.replaced ? " (the previous calibration replaced)" : ""}. ${ans.config_note}:`);
    } else {
      out.replaceChildren(`Not written: ${ans.reason}. `,
        ...Object.entries(ans.download).map(([name, text]) => download(name, text)), ` ${ans.config_note}:`);
    }
    out.className = "";
    $("config-lines").textContent = ans.config_lines;
    await loadSite(cam.id);
  } catch (e) {
    out.className = "error";
    out.textContent = e.message;
  }
}

// -- drawing -----------------------------------------------------------------------------------------------------

function fitCanvas(canvas, img) {
  const r = img.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
  canvas.style.width = `${r.width}px`;
  canvas.style.height = `${r.height}px`;
  canvas.width = Math.round(r.width * dpr);
  canvas.height = Math.round(r.height * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, r.width, r.height);
  return { ctx, w: r.width, h: r.height };
}

function marker(ctx, x, y, label, colour, selected) {
  ctx.beginPath();
  ctx.arc(x, y, selected ? 9 : 7, 0, 2 * Math.PI);
  ctx.fillStyle = colour;
  ctx.fill();
  ctx.lineWidth = selected ? 3 : 1.5;
  ctx.strokeStyle = selected ? "#000" : "#fff";
  ctx.stroke();
  ctx.fillStyle = "#fff";
  ctx.font = "bold 10px system-ui, sans-serif";
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  ctx.fillText(label, x, y + 0.5);
}

function pointColour(i) {
  const f = fitOf(i);
  return f ? (f.inlier ? OK : LEFT_OUT) : PENDING;
}

// Ground (x, y) -> camera pixel through the fit's inverse; null beyond the horizon.
function toImage(x, y) {
  const m = state.fit.inverse, w = m[2][0] * x + m[2][1] * y + m[2][2];
  if (w * state.fit.ground_sign <= 1e-9) return null;
  return [(m[0][0] * x + m[0][1] * y + m[0][2]) / w, (m[1][0] * x + m[1][1] * y + m[1][2]) / w];
}

function drawGrid(ctx, sx, sy) {
  const [x0, y0, x1, y1] = state.fit.top_view.bounds;
  const step = niceStep(Math.max(x1 - x0, y1 - y0), 12);
  $("grid-step").textContent = step >= 1 ? `${step} m` : `${step * 100} cm`;
  ctx.strokeStyle = "rgba(255,255,255,0.55)";
  ctx.lineWidth = 1;
  const line = (from, to) => {
    ctx.beginPath();
    let open = false;
    for (let k = 0; k <= 60; k += 1) {
      const t = k / 60, p = toImage(from[0] + t * (to[0] - from[0]), from[1] + t * (to[1] - from[1]));
      if (!p) { open = false; continue; }
      if (open) ctx.lineTo(p[0] * sx, p[1] * sy); else ctx.moveTo(p[0] * sx, p[1] * sy);
      open = true;
    }
    ctx.stroke();
  };
  for (let x = Math.ceil(x0 / step) * step; x <= x1; x += step) line([x, y0], [x, y1]);
  for (let y = Math.ceil(y0 / step) * step; y <= y1; y += step) line([x0, y], [x1, y]);
}

function drawFrame() {
  const cam = state.camera, img = $("frame");
  if (!cam.width || !img.complete || !img.naturalWidth) return;
  const { ctx, w, h } = fitCanvas($("frame-marks"), img);
  const sx = w / cam.width, sy = h / cam.height;
  if (state.fit) drawGrid(ctx, sx, sy);
  points().forEach((p, i) => {
    const f = fitOf(i);
    if (f && f.image_xy) { // where the typed ground position falls in the image, through the fit
      const [bu, bv] = [f.image_xy[0] * sx, f.image_xy[1] * sy];
      ctx.strokeStyle = "#ffe000";
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.moveTo(p.u * sx, p.v * sy);
      ctx.lineTo(bu, bv);
      ctx.moveTo(bu - 4, bv - 4); ctx.lineTo(bu + 4, bv + 4);
      ctx.moveTo(bu - 4, bv + 4); ctx.lineTo(bu + 4, bv - 4);
      ctx.stroke();
    }
  });
  points().forEach((p, i) => marker(ctx, p.u * sx, p.v * sy, String(i + 1), pointColour(i), i === state.selected));
}

function drawTopView() {
  const img = $("top-view");
  $("top-box").hidden = !state.fit;
  $("top-empty").hidden = Boolean(state.fit);
  if (!state.fit || !img.complete || !img.naturalWidth) return;
  const { ctx, w, h } = fitCanvas($("top-marks"), img);
  const [x0, y0, x1, y1] = state.fit.top_view.bounds;
  points().forEach((p, i) => {
    if (!complete(p)) return;
    marker(ctx, (Number(p.x) - x0) / (x1 - x0) * w, (Number(p.y) - y0) / (y1 - y0) * h, String(i + 1),
      pointColour(i), i === state.selected);
  });
}

function groundShapes() {
  return state.site.cameras.flatMap((c) => {
    const fp = c.id === state.camera.id && state.fit ? state.fit.footprint : c.footprint;
    return fp && fp.length > 2 ? [{ id: c.id, polygon: fp, current: c.id === state.camera.id }] : [];
  });
}

function drawGround() {
  const canvas = $("ground"), plan = state.site.floor_plan;
  const shapes = groundShapes();
  const typed = points().map((p, i) => [p, i]).filter(([p]) => complete(p));
  const width = canvas.clientWidth || 320;
  let height = width, toCanvas;
  if (plan && state.plan) { // the plan fills the panel; ground -> plan pixel -> canvas
    const k = width / plan.width;
    height = plan.height * k;
    toCanvas = (x, y) => [(plan.origin_px[0] + plan.pixels_per_metre * x) * k,
      (plan.origin_px[1] + plan.pixels_per_metre * y) * k];
  } else { // auto-scaled to the footprints and the points
    const all = shapes.flatMap((s) => s.polygon).concat(typed.map(([p]) => [Number(p.x), Number(p.y)]));
    if (!all.length) all.push([0, 0], [10, 10]);
    const xs = all.map((q) => q[0]), ys = all.map((q) => q[1]);
    const lo = [Math.min(...xs), Math.min(...ys)], hi = [Math.max(...xs), Math.max(...ys)];
    const span = Math.max(hi[0] - lo[0], hi[1] - lo[1], 1), pad = 0.08 * span;
    const scale = (width - 2) / (span + 2 * pad);
    const off = [lo[0] - pad - ((span - (hi[0] - lo[0])) / 2), lo[1] - pad - ((span - (hi[1] - lo[1])) / 2)];
    toCanvas = (x, y) => [(x - off[0]) * scale, (y - off[1]) * scale];
    toCanvas.grid = { off, scale, span: span + 2 * pad };
  }
  const dpr = window.devicePixelRatio || 1;
  canvas.style.height = `${height}px`;
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, width, height);
  if (plan && state.plan) ctx.drawImage(state.plan, 0, 0, width, height);
  else drawGroundGrid(ctx, toCanvas.grid, width, height);
  for (const s of shapes) {
    const colour = colourOf(s.id);
    ctx.beginPath();
    s.polygon.forEach(([x, y], k) => { const [cx, cy] = toCanvas(x, y); if (k) ctx.lineTo(cx, cy); else ctx.moveTo(cx, cy); });
    ctx.closePath();
    ctx.fillStyle = `${colour}${s.current ? "40" : "22"}`;
    ctx.fill();
    ctx.strokeStyle = colour;
    ctx.lineWidth = s.current ? 2.5 : 1.5;
    ctx.setLineDash(s.current && !state.fit ? [4, 3] : []); // dashed: the saved calibration, not a fit here
    ctx.stroke();
    ctx.setLineDash([]);
  }
  drawLegend(ctx, shapes, width);
  for (const [p, i] of typed) {
    const [cx, cy] = toCanvas(Number(p.x), Number(p.y));
    marker(ctx, cx, cy, String(i + 1), pointColour(i), i === state.selected);
  }
  state.groundToCanvas = toCanvas;
  $("ground-caption").textContent = plan && state.plan
    ? "Floor plan: footprints and points (click: the selected point's x, y)"
    : "Ground: footprints of the calibrated cameras";
}

function drawLegend(ctx, shapes, width) {
  const lines = shapes.map((s) => [colourOf(s.id), s.current ? `${s.id}: ${state.fit ? "this fit" : "saved"}` : s.id]);
  ctx.font = "12px system-ui, sans-serif";
  const w = Math.max(0, ...lines.map(([, t]) => ctx.measureText(t).width)) + 30;
  ctx.fillStyle = "rgba(255,255,255,0.85)";
  ctx.fillRect(width - w - 6, 18, w, 18 * lines.length + 6);
  ctx.textAlign = "left";
  ctx.textBaseline = "middle";
  lines.forEach(([colour, text], k) => {
    const y = 30 + 18 * k;
    ctx.fillStyle = colour;
    ctx.fillRect(width - w + 2, y - 5, 14, 10);
    ctx.fillStyle = "#333";
    ctx.fillText(text, width - w + 22, y);
  });
}

function drawGroundGrid(ctx, grid, width, height) {
  const step = niceStep(grid.span, 8);
  ctx.strokeStyle = "#e4e6ea";
  ctx.fillStyle = "#889";
  ctx.lineWidth = 1;
  ctx.font = "10px system-ui, sans-serif";
  ctx.textAlign = "left";
  ctx.textBaseline = "top";
  for (let x = Math.ceil(grid.off[0] / step) * step; (x - grid.off[0]) * grid.scale < width; x += step) {
    const cx = (x - grid.off[0]) * grid.scale;
    ctx.beginPath(); ctx.moveTo(cx, 0); ctx.lineTo(cx, height); ctx.stroke();
    ctx.fillText(`${+x.toFixed(2)}`, cx + 2, 2);
  }
  for (let y = Math.ceil(grid.off[1] / step) * step; (y - grid.off[1]) * grid.scale < height; y += step) {
    const cy = (y - grid.off[1]) * grid.scale;
    ctx.beginPath(); ctx.moveTo(0, cy); ctx.lineTo(width, cy); ctx.stroke();
    ctx.fillText(`${+y.toFixed(2)}`, 2, cy + 2);
  }
  ctx.textAlign = "right";
  ctx.textBaseline = "bottom";
  ctx.fillText(`x → , y ↓ (m; grid ${step} m)`, width - 4, height - 3);
}

function drawAll() {
  if (!state.camera) return;
  drawFrame();
  drawTopView();
  drawGround();
}

// -- the floor plan ----------------------------------------------------------------------------------------------

function showPlanSettings() {
  const plan = state.site.floor_plan;
  if (!plan) { state.plan = null; return; }
  $("plan-ppm").value = plan.pixels_per_metre;
  [$("plan-origin-x").value, $("plan-origin-y").value] = plan.origin_px;
  if (!state.plan || state.plan.dataset.url !== plan.url) {
    const img = new Image();
    img.dataset.url = plan.url;
    img.onload = () => { state.plan = img; drawAll(); };
    img.src = plan.url;
  }
}

async function uploadPlan(event) {
  if (event) event.preventDefault();
  const form = new FormData(), file = $("plan-file").files[0];
  if (file) form.append("image", file);
  form.append("pixels_per_metre", $("plan-ppm").value);
  form.append("origin_x", $("plan-origin-x").value || "0");
  form.append("origin_y", $("plan-origin-y").value || "0");
  try {
    const { floor_plan } = await getJSON("/api/calibration/floor_plan", { method: "POST", body: form });
    state.site.floor_plan = floor_plan;
    showPlanSettings();
    $("status").textContent = "floor plan saved";
  } catch (e) {
    $("status").textContent = `floor plan: ${e.message}`;
  }
}

function groundClick(ev) {
  const plan = state.site.floor_plan;
  if (!plan || !state.plan) return;
  const r = $("ground").getBoundingClientRect(), k = r.width / plan.width;
  const px = (ev.clientX - r.left) / k, py = (ev.clientY - r.top) / k;
  if (state.pickOrigin) {
    state.pickOrigin = false;
    $("plan-origin-x").value = px.toFixed(1);
    $("plan-origin-y").value = py.toFixed(1);
    uploadPlan(null);
    return;
  }
  const p = points()[state.selected];
  if (!p) { $("status").textContent = "select a point (click the frame or a row) before clicking the plan"; return; }
  p.x = ((px - plan.origin_px[0]) / plan.pixels_per_metre).toFixed(2);
  p.y = ((py - plan.origin_px[1]) / plan.pixels_per_metre).toFixed(2);
  renderTable();
  scheduleFit(0);
}

async function loadSiteCheck() {
  // The run's latest `python -m pipeline.site_check`: its suggestions, warnings and plots (404: none yet).
  const r = await fetch("/api/calibration/site_check");
  const body = await r.json();
  if (!r.ok) { $("site-check-empty").textContent = body.error || `HTTP ${r.status}`; return; }
  const unit = body.units;
  const rows = $("site-check-table").querySelector("tbody");
  const row = (name, value, configured, why) => el("tr", {}, [el("td", { text: name }), el("td", { text: value }),
    el("td", { text: configured }), el("td", { text: why })]);
  const settings = Object.entries(body.suggestions).map(([k, s]) => {
    const u = k === "threshold" ? "" : k === "max_speed" ? ` ${unit}/s` : ` ${unit}`;
    const name = k === "threshold" ? "matcher.threshold" : `geometry.${k}`;
    return row(name, s.value == null ? "–" : `${s.value}${u}`, s.configured == null ? "–" : `${s.configured}${u}`,
      s.why);
  });
  // A camera whose floor lies a constant shift from the first calibrated camera's (reports before offsets: none).
  const offsets = Object.entries(body.ground_offsets || {}).map(([cam, o]) => row(`cameras.${cam}.ground_offset`,
    o.value == null ? "keep" : `[${o.value.join(", ")}] ${unit}`,
    o.configured == null ? "–" : `[${o.configured.join(", ")}] ${unit}`, o.why));
  rows.replaceChildren(...settings, ...offsets);
  $("site-check-warnings").replaceChildren(...body.warnings.map((w) => el("li", { class: "warning", text: w })));
  $("site-check-plot").src = `/api/calibration/site_check.png?t=${Date.now()}`;
  $("site-check-empty").hidden = true;
  $("site-check").hidden = false;
}

$("camera-select").addEventListener("change", (e) => selectCamera(e.target.value, false));
$("frame").addEventListener("click", frameClick);
$("frame").addEventListener("load", drawAll);
$("top-view").addEventListener("load", drawTopView);
$("ground").addEventListener("click", groundClick);
$("fit").addEventListener("click", () => runFit(true));
$("save").addEventListener("click", save);
$("ransac").addEventListener("change", () => scheduleFit(0));
$("floor-plan-form").addEventListener("submit", uploadPlan);
$("plan-pick-origin").addEventListener("click", () => {
  state.pickOrigin = true;
  $("status").textContent = "click the plan where ground (0, 0) lies";
});
window.addEventListener("resize", drawAll);
loadSite().catch((e) => { $("status").textContent = `error: ${e.message}`; });
loadSiteCheck().catch((e) => { $("site-check-empty").textContent = `site check: ${e.message}`; });
