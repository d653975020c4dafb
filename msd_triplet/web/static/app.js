// msd-triplet serve: the page's behaviour. Plain JavaScript, no libraries, no network beyond this server.
// Views are chosen by the URL fragment: #tracks, #track/<id>, #map, #run.
"use strict";

const state = { run: null, mapFacet: null, map: null, playOnLoad: false };
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                 "#bcbd22", "#393b79", "#637939", "#843c39", "#b0b4bd"];

const UNITS = { query: "queries", artist: "artists", album: "albums" };
const $ = (id) => document.getElementById(id);

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "className") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

function showMessage(text) {
  const box = $("message");
  box.textContent = text || "";
  box.hidden = !text;
}

async function getJSON(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  }
  if (body === null) throw new Error(`${url}: the server's answer is not JSON`);
  return body;
}

// ------------------------------------------------------------------ views

function showView(name) {
  for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== `view-${name}`;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.view === name);
}

async function route() {
  let hash;
  try {
    hash = decodeURIComponent(location.hash.slice(1));
  } catch (_) {
    showView("tracks");
    showMessage(`The address ends in a malformed fragment (${location.hash.slice(0, 60)}); pick a track below.`);
    return;
  }
  showMessage("");
  if (hash === "upload" && state.upload) {
    showView("tracks");
    renderNeighbours(state.upload.query, state.upload.neighbours, false);
  } else if (hash.startsWith("track/") && hash.length > 6) {
    showView("tracks");
    await openTrack(hash.slice(6));
  } else if (hash === "map") {
    showView("map");
    await drawMap();
  } else if (hash === "run") {
    showView("run");
    renderRun();
  } else {
    showView("tracks");
  }
}

// ------------------------------------------------------------------ tracks

function trackLine(t) {
  return `${t.title} — ${t.artist} (${t.album})`;
}

async function search(text) {
  try {
    const body = await getJSON(`/api/search?q=${encodeURIComponent(text)}&limit=50`);
    const list = $("results");
    list.replaceChildren(...body.tracks.map((t) => {
      const item = el("li", { tabindex: "0", "data-track": t.track_id }, trackLine(t), " ",
                      el("small", {}, `${t.track_id} · ${Object.values(t.tags).flat().slice(0, 6).join(", ")}`));
      item.addEventListener("click", () => { location.hash = `#track/${t.track_id}`; });
      item.addEventListener("keydown", (e) => { if (e.key === "Enter") location.hash = `#track/${t.track_id}`; });
      return item;
    }));
    if (!body.tracks.length) list.replaceChildren(el("li", {}, `no track matches “${text}”`));
  } catch (error) {
    showMessage(error.message);
  }
}

function player(trackId, part, label) {
  const audio = el("audio", { controls: "", preload: "none", src: `/audio/${encodeURIComponent(trackId)}/${part}`,
                              title: label, "data-part": part });
  return audio;
}

function tagCells(tags, shared) {
  return state.run.facets.map((facet) => {
    const common = new Set((shared && shared[facet]) || []);
    return el("td", {}, ...(tags[facet] || []).map((t) => el("span", { className: common.has(t) ? "tag shared" : "tag" }, t)));
  });
}

function renderNeighbours(query, neighbours, isTrack) {
  $("query").hidden = false;
  $("query-title").textContent = isTrack ? trackLine(query) : `Uploaded: ${query.label}`;
  const details = $("query-details");
  if (isTrack) {
    details.replaceChildren(`${query.track_id} · `, ...state.run.facets.flatMap((f) =>
      (query.tags[f] || []).map((t) => el("span", { className: "tag" }, t))), " ",
      el("label", {}, "segment ", player(query.track_id, "segment", "segment the model saw")),
      el("label", {}, " whole file ", player(query.track_id, "file", "whole file")));
  } else {
    details.replaceChildren("Tags are unknown for uploaded audio; shared tags are not marked.");
  }
  const head = ["#", "squared distance", "track", ...state.run.facets, "artist", "album", "segment", "whole file"];
  $("neighbours").tHead.replaceChildren(el("tr", {}, ...head.map((h) => el("th", {}, h))));
  $("neighbours").tBodies[0].replaceChildren(...neighbours.map((n) => {
    const link = el("a", { href: `#track/${n.track_id}` }, trackLine(n));
    const same = (flag) => el("td", {}, n.shared && flag in n.shared ? (n.shared[flag] ? el("span", { className: "same" }, "same") : "–") : "");
    return el("tr", { "data-track": n.track_id },
      el("td", { className: "num" }, n.rank), el("td", { className: "num" }, n.distance.toFixed(3)),
      el("td", {}, link, el("br"), el("small", {}, n.track_id)), ...tagCells(n.tags, n.shared),
      same("artist"), same("album"),
      el("td", {}, player(n.track_id, "segment", "segment the model saw")),
      el("td", {}, player(n.track_id, "file", "whole file")));
  }));
}

async function openTrack(trackId) {
  try {
    const body = await getJSON(`/api/tracks/${encodeURIComponent(trackId)}?n=${state.run.neighbours}`);
    renderNeighbours(body.query, body.neighbours, true);
    document.body.dataset.loaded = trackId;
    if (state.playOnLoad) {
      state.playOnLoad = false;
      const first = document.querySelector("#query-details audio");
      if (first) first.play().catch(() => {});
    }
  } catch (error) {
    $("query").hidden = true;
    showMessage(error.message);
  }
}

async function upload(event) {
  event.preventDefault();
  const file = $("upload").files[0];
  showMessage("");
  if (!file) { showMessage("Choose an audio file first."); return; }
  const form = new FormData();
  form.append("audio", file, file.name);
  try {
    const body = await getJSON(`/api/query?n=${state.run.neighbours}`, { method: "POST", body: form });
    state.upload = body;  // kept so that Back to #upload shows these results again
    history.pushState(null, "", "#upload");
    showView("tracks");
    renderNeighbours(body.query, body.neighbours, false);
    document.body.dataset.loaded = `upload:${body.query.label}`;
  } catch (error) {
    $("query").hidden = true;
    showMessage(error.message);
  }
}

// ------------------------------------------------------------------ map

async function drawMap() {
  const facet = $("facet").value || state.run.facets[0];
  try {
    if (!state.map || state.mapFacet !== facet) {
      state.map = await getJSON(`/api/map?facet=${encodeURIComponent(facet)}`);
      state.mapFacet = facet;
    }
  } catch (error) {
    showMessage(error.message);
    return;
  }
  const canvas = $("map-canvas");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, width, height);
  const pad = 14;
  state.screen = state.map.points.map((p) => [pad + p[0] * (width - 2 * pad), pad + (1 - p[1]) * (height - 2 * pad)]);
  const others = state.map.labels.indexOf("other");  // -1 when every point has a named label
  // "other" first, so that named labels are drawn on top
  const order = [...state.map.points.keys()].sort((a, b) => (state.map.points[b][2] === others) - (state.map.points[a][2] === others));
  for (const i of order) {
    const [x, y] = state.screen[i];
    context.beginPath();
    context.arc(x, y, 3.5, 0, 2 * Math.PI);
    context.fillStyle = PALETTE[Math.min(state.map.points[i][2], PALETTE.length - 1)];
    context.globalAlpha = 0.8;
    context.fill();
  }
  context.globalAlpha = 1;
  canvas.dataset.points = String(state.map.points.length);
  $("legend").replaceChildren(...state.map.labels.map((label, i) => {
    const swatch = el("i");
    swatch.style.background = PALETTE[Math.min(i, PALETTE.length - 1)];  // CSSOM: allowed by the page's CSP
    return el("li", {}, swatch, `${label} (${state.map.counts[i]})`);
  }));
  $("map-info").textContent = `${state.map.points.length} tracks, t-SNE of the embeddings; click a point to open and play it`;
}

function nearestPoint(event) {
  if (!state.screen) return -1;
  const box = $("map-canvas").getBoundingClientRect();
  const x = event.clientX - box.left, y = event.clientY - box.top;
  let best = -1, bestDistance = 64;  // within 8 px
  state.screen.forEach(([px, py], i) => {
    const d = (px - x) ** 2 + (py - y) ** 2;
    if (d < bestDistance) { best = i; bestDistance = d; }
  });
  return best;
}

function hover(event) {
  const i = nearestPoint(event);
  const tip = $("tooltip");
  if (i < 0) { tip.hidden = true; return; }
  const p = state.map.points[i];
  tip.textContent = `${p[4]} — ${p[5]} · ${state.map.labels[p[2]]}`;
  tip.style.left = `${state.screen[i][0] + 10}px`;
  tip.style.top = `${state.screen[i][1] + 10}px`;
  tip.hidden = false;
}

function clickPoint(event) {
  const i = nearestPoint(event);
  if (i < 0) return;
  state.playOnLoad = true;
  location.hash = `#track/${state.map.points[i][3]}`;
}

// ------------------------------------------------------------------ run

function figure(entry, key = "precision", signed = false) {
  if (!entry || entry[key] === null || entry[key] === undefined) return "";
  const value = entry[key];
  const text = (v) => (signed && v >= 0 ? "+" : "") + v.toFixed(3);
  return entry.ci_low === undefined || entry.ci_low === null ? text(value)
    : `${text(value)} [${text(entry.ci_low)}, ${text(entry.ci_high)}]`;
}

function renderRun() {
  const metrics = state.run.metrics;
  const table = $("metrics");
  if (!metrics) {
    $("metrics-caption").textContent = "Not evaluated yet: run `msd-triplet evaluate " + state.run.run + "`.";
    table.hidden = true;
  } else {
    const level = Math.round(100 * metrics.bootstrap.level);
    $("metrics-caption").textContent = `P@${metrics.k} on the ${metrics.split} split (${metrics.tracks} tracks, ` +
      `${metrics.checkpoint}); ${level} % bootstrap intervals (resampling ${UNITS[metrics.bootstrap.unit] || metrics.bootstrap.unit}); ` +
      "the difference is paired; * its interval excludes 0.";
    const head = ["facet", `P@${metrics.k} [${level} % CI]`, "untrained [CI]", "trained − untrained [paired CI]", "chance",
                  "queries"];
    table.tHead.replaceChildren(el("tr", {}, ...head.map((h) => el("th", {}, h))));
    table.tBodies[0].replaceChildren(...Object.entries(metrics.facets).map(([facet, r]) => {
      const d = metrics.difference && metrics.difference[facet];
      const separated = d && (d.ci_low > 0 || d.ci_high < 0);
      return el("tr", {}, el("td", {}, facet), el("td", { className: "num" }, figure(r)),
        el("td", { className: "num" }, figure(metrics.untrained && metrics.untrained[facet])),
        el("td", { className: "num" }, figure(d, "difference", true), separated ? el("span", { className: "star" }, " *") : ""),
        el("td", { className: "num" }, r.chance === undefined || r.chance === null ? "" : r.chance.toFixed(3)),
        el("td", { className: "num" }, r.queries));
    }));
    table.hidden = false;
  }
  const curves = $("curves");
  if (!curves.getAttribute("src")) curves.src = "/curves.svg";
}

// ------------------------------------------------------------------ start

async function start() {
  try {
    state.run = await getJSON("/api/run");
  } catch (error) {
    showMessage(error.message);
    return;
  }
  $("run-name").textContent = `${state.run.run} · ${state.run.tracks} ${state.run.split} tracks`;
  $("facet").replaceChildren(...state.run.facets.map((f) => el("option", { value: f }, f)));
  $("facet").addEventListener("change", () => { state.map = null; drawMap(); });
  let timer = null;
  $("search").addEventListener("input", (e) => {
    clearTimeout(timer);
    timer = setTimeout(() => search(e.target.value), 150);
  });
  $("search-form").addEventListener("submit", (e) => { e.preventDefault(); search($("search").value); });
  $("upload-form").addEventListener("submit", upload);
  $("map-canvas").addEventListener("mousemove", hover);
  $("map-canvas").addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
  $("map-canvas").addEventListener("click", clickPoint);
  window.addEventListener("hashchange", route);
  await route();
  if (!location.hash || location.hash === "#tracks") await search("");
  document.body.dataset.ready = "1";
}

document.addEventListener("DOMContentLoaded", start);
