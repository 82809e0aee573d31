// The live page: camera tiles refreshed every second, the identities refreshed every 2 s, a click shows an
// identity's timeline, and a photo upload runs POST /api/search. Plain DOM, no framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const fmt = (t) => (t == null ? "?" : `${Number(t).toFixed(1)} s`);

async function getJSON(url, options) {
  const r = await fetch(url, options);
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
  return body;
}

function el(tag, attrs = {}, children = []) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v; else if (k === "onclick") e.onclick = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.appendChild(c);
  return e;
}

async function loadCameras() {
  const { cameras } = await getJSON("/api/cameras");
  const box = $("cameras");
  for (const cam of cameras) {
    let tile = document.querySelector(`.camera[data-camera="${cam.id}"]`);
    if (!tile) {
      tile = el("figure", { class: "camera", "data-camera": cam.id },
        [el("img", { alt: `camera ${cam.id}` }), el("figcaption", { text: cam.id })]);
      box.appendChild(tile);
    }
    if (cam.snapshot) tile.querySelector("img").src = `${cam.snapshot}?t=${Date.now()}`;
    tile.querySelector("figcaption").textContent =
      `${cam.id}${cam.live ? " (live)" : ""}${cam.snapshot_age_s != null ? ` · ${cam.snapshot_age_s.toFixed(1)} s ago` : " · no frame yet"}`;
  }
}

function identityRow(item, cls) {
  const thumb = item.thumbnails.length ? el("img", { src: item.thumbnails[0], alt: `identity ${item.global_id}` })
                                       : el("span", { text: "no image" });
  const sim = item.similarity != null ? ` · similarity ${item.similarity.toFixed(3)}` : "";
  return el("li", { class: cls, "data-gid": item.global_id, onclick: () => showTimeline(item.global_id) }, [
    thumb,
    el("div", { class: "meta" }, [
      el("div", { class: "gid", text: `#${item.global_id}${sim}` }),
      el("div", { text: `cameras ${item.cameras.join(", ")}` }),
      el("div", { text: `last seen ${fmt(item.last_seen_ts)}` }),
    ]),
  ]);
}

async function loadIdentities() {
  const page = await getJSON("/api/identities?limit=100");
  $("identity-count").textContent = `(${page.total})`;
  $("identities").replaceChildren(...page.items.map((i) => identityRow(i, "identity")));
}

async function showTimeline(gid) {
  const ident = await getJSON(`/api/identities/${gid}`);
  $("timeline-section").hidden = false;
  $("timeline-title").textContent = `Timeline of #${gid}`;
  const thumbs = el("div", {}, ident.thumbnails.map((src) => el("img", { src, alt: "thumbnail", height: 64 })));
  const rows = ident.timeline.map((a) => el("div", { class: "appearance" }, [
    el("span", { text: `${a.camera_id} · track ${a.track_id} · ${fmt(a.first_seen_ts)} → ${fmt(a.last_seen_ts)}` +
      (a.ground_xy ? ` · ground (${a.ground_xy[0]}, ${a.ground_xy[1]})` : "") }),
  ]));
  $("timeline").replaceChildren(thumbs, ...rows);
}

async function search(event) {
  event.preventDefault();
  const file = $("photo").files[0];
  const out = $("search-results");
  if (!file) { out.replaceChildren(el("p", { class: "error", text: "choose a photo first" })); return; }
  const form = new FormData();
  form.append("photo", file);
  out.replaceChildren(el("p", { text: "searching…" }));
  try {
    const { results, search_ms } = await getJSON("/api/search?top=5", { method: "POST", body: form });
    out.replaceChildren(el("p", { text: `${results.length} best matches (${search_ms} ms)` }),
      el("ul", { id: "hits" }, results.map((r) => identityRow(r, "hit"))));
  } catch (e) {
    out.replaceChildren(el("p", { class: "error", text: e.message }));
  }
}

async function tick(fn, every) {
  try { await fn(); $("status").textContent = `updated ${new Date().toLocaleTimeString()}`; }
  catch (e) { $("status").textContent = `error: ${e.message}`; }
  setTimeout(() => tick(fn, every), every);
}

$("search-form").addEventListener("submit", search);
tick(loadCameras, 1000);
tick(loadIdentities, 2000);
