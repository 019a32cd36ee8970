// The fleet page: the data from api/fleet, then live from api/stream (server-sent events); each
// camera's picture fetched every 2 s while the page is visible; the sparklines from api/history.
// Text goes in with textContent only: nothing from the server is ever read as HTML.
"use strict";

const PICTURE_EVERY_MS = 2000;      // the server encodes a camera's picture at most this often anyway
const STALE_MS = 5000;              // no data for this long: the link is shown as lost
const tiles = new Map();            // camera name -> its elements
let histories = {};
let historyStep = 60;
let lastData = 0;
let shownEvents = "";

// Only what changed is written: a page left open all day costs its browser next to nothing.
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function el(tag, className, parent) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (parent) parent.appendChild(node);
  return node;
}

function duration(seconds) {
  if (seconds == null) return "";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${String(Math.floor(s % 3600 / 60)).padStart(2, "0")} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor(s % 86400 / 3600)} h`;
}

function clock(iso) {
  const t = new Date(iso);
  return isNaN(t) ? "" : t.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", second: "2-digit"});
}

function number(value, digits = 2) {
  return value == null ? "-" : Number(value).toFixed(digits);
}

// What an event says, in words: the watch's own reason where it gave one.
function detail(e) {
  if (e.reason) return e.reason;
  switch (e.event) {
    case "degraded": return e.threshold != null ? `smoothed score ${number(e.smoothed)} below ${number(e.threshold)}`
                                                : `smoothed score ${number(e.smoothed)} below its normal`;
    case "recovered": return `smoothed score ${number(e.smoothed)}`;
    case "covered": return `picture nearly uniform (contrast ${number(e.contrast, 1)})`;
    case "frozen": return "the picture stopped changing";
    case "source_back": return e.gap_s != null ? `back after ${number(e.gap_s, 1)} s` : "";
    default: return "";
  }
}

function tile(name) {
  if (tiles.has(name)) return tiles.get(name);
  const root = el("article", "tile", document.getElementById("tiles"));
  root.dataset.camera = name;
  const picture = el("div", "picture", root);
  const img = el("img", "", picture);
  img.alt = `${name}: latest picture`;
  img.hidden = true;
  const nopic = el("span", "nopic", picture);
  nopic.textContent = "no picture yet";
  const body = el("div", "body", root);
  const line1 = el("div", "line1", body);
  el("span", "name", line1).textContent = name;
  const parts = {root, img, nopic, badge: el("span", "badge", line1), since: el("div", "since", body),
                 why: el("div", "why", body)};
  const score = el("div", "score", body);
  parts.value = el("span", "value", score);
  parts.label = el("span", "label", score);
  parts.spark = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  parts.spark.setAttribute("class", "spark");
  parts.spark.setAttribute("viewBox", "0 0 100 38");
  parts.spark.setAttribute("preserveAspectRatio", "none");
  score.appendChild(parts.spark);
  parts.frame = el("div", "frame", body);
  tiles.set(name, parts);
  sight.observe(root);
  return parts;
}

function sparkline(svg, camera) {
  const history = histories[camera.name] || {values: []};
  const values = history.values.slice();
  if (camera.smoothed != null) values.push(camera.smoothed);
  const key = `${values.length},${values[values.length - 1]},${values[0]},${camera.threshold}`;
  if (svg.dataset.key === key) return;
  svg.dataset.key = key;
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const y = v => (38 - 2 - v * 34).toFixed(2);          // scores 0..1, the same scale on every tile
  if (camera.threshold != null) {
    const line = document.createElementNS(svg.namespaceURI, "line");
    line.setAttribute("x1", "0"); line.setAttribute("x2", "100");
    line.setAttribute("y1", y(camera.threshold)); line.setAttribute("y2", y(camera.threshold));
    svg.appendChild(line);
  }
  const span = Math.max(values.length - 1, 1);
  let points = [];
  const flush = () => {
    if (points.length) {
      const poly = document.createElementNS(svg.namespaceURI, "polyline");
      poly.setAttribute("points", (points.length === 1 ? [points[0], points[0].replace(/^[^,]+/, "100")] : points).join(" "));
      svg.appendChild(poly);
    }
    points = [];
  };
  values.forEach((v, i) => { if (v == null) flush(); else points.push(`${(i / span * 100).toFixed(2)},${y(v)}`); });
  flush();
  const hours = history.values.length * (history.step_s || historyStep) / 3600;
  svg.setAttribute("aria-label", `smoothed score over the last ${hours < 1 ? Math.round(hours * 60) + " min" : hours.toFixed(1) + " h"}`);
}

function renderCamera(camera) {
  const t = tile(camera.name);
  if (t.root.dataset.state !== camera.state) {
    t.root.className = `tile state-${camera.state}`;
    t.root.dataset.state = camera.state;
  }
  setText(t.badge, camera.state);
  setText(t.since, `${camera.state} for ${duration(camera.state_for_s)}`);
  const alert = camera.alert;
  setText(t.why, alert ? `${alert.event.replace("_", " ")} at ${clock(alert.time)}${detail(alert) ? ": " + detail(alert) : ""}`
                       : "no alert since the start");
  t.why.classList.toggle("quiet", !alert || camera.state === "ok");
  setText(t.value, number(camera.smoothed));
  setText(t.label, "smoothed\nscore");
  setText(t.frame, `last frame ${duration(camera.seconds_since_frame)} ago`);
  sparkline(t.spark, camera);
}

function renderEvents(events) {
  const key = `${events.length} ${JSON.stringify(events[0] || null)}`;
  if (key === shownEvents) return;
  shownEvents = key;
  const body = document.getElementById("events");
  body.replaceChildren();
  if (!events.length) {
    const cell = el("td", "none", el("tr", "", body));
    cell.colSpan = 4;
    cell.textContent = "no events yet";
    return;
  }
  for (const e of events) {
    const row = el("tr", `state-${e.state}`, body);
    el("td", "", row).textContent = clock(e.time);
    el("td", "", row).textContent = e.camera;
    const name = el("td", "", row);
    el("span", "dot", name);
    name.appendChild(document.createTextNode(e.event.replace("_", " ")));
    el("td", "", row).textContent = detail(e);
  }
}

function render(data) {
  lastData = Date.now();
  historyStep = data.history_step_s || historyStep;
  const counts = {};
  for (const camera of data.cameras) {
    if (camera.history) histories[camera.name] = camera.history;
    counts[camera.state] = (counts[camera.state] || 0) + 1;
    renderCamera(camera);
  }
  const order = ["lost", "covered", "frozen", "degraded", "starting", "ok"];
  setText(document.getElementById("summary"), `${data.cameras.length} camera${data.cameras.length === 1 ? "" : "s"}: ` +
    order.filter(s => counts[s]).map(s => `${counts[s]} ${s}`).join(", "));
  renderHost(data.host, data.uptime_s);
  renderEvents(data.events);
}

function renderHost(h, uptime) {
  const host = document.getElementById("host");
  if (!host.firstChild) {
    const facts = [["host", h.host], ["model", `${h.model}${h.backbone ? " (" + h.backbone + ")" : ""}, scenes ${h.scenes.join(", ")}, crops ${h.crops}`],
                   ["engine", h.engine], ["precision", h.precision], ["up", ""]];
    facts.forEach(([label, value], i) => {
      if (i) host.appendChild(document.createTextNode("  \u00b7  "));
      el("b", "", host).textContent = `${label} `;
      host.appendChild(document.createTextNode(value));
    });
  }
  setText(host.lastChild, duration(uptime));
}

async function getJSON(path) {
  const response = await fetch(path, {cache: "no-store"});
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

async function refreshHistory() {
  try { histories = await getJSON("api/history"); } catch (e) { /* the next try will do */ }
  setTimeout(refreshHistory, Math.min(Math.max(historyStep, 2), 60) * 1000);
}

// Tiles scrolled out of sight fetch no picture: decoding and painting pictures is most of what the
// page costs its browser, and a fleet of 30 cameras seldom fits on one screen.
const inSight = new Set();
const sight = new IntersectionObserver(entries => {
  for (const entry of entries) {
    const name = entry.target.dataset.camera;
    if (!entry.isIntersecting) { inSight.delete(name); continue; }
    inSight.add(name);
    if (tiles.get(name).img.hidden) fetchPicture(name);      // a tile coming into sight needs no wait
  }
});

async function fetchPicture(name) {
  const t = tiles.get(name);
  if (t.busy) return;
  t.busy = true;
  try {
    const response = await fetch(`api/snapshot/${encodeURIComponent(name)}.jpg`, {cache: "no-store"});
    if (response.ok) {
      const url = URL.createObjectURL(await response.blob());
      const old = t.img.src;
      t.img.src = url;
      await t.img.decode().catch(() => {});
      if (old.startsWith("blob:")) URL.revokeObjectURL(old);
      t.img.hidden = false;
      t.nopic.hidden = true;
    }
  } catch (e) {
    /* shown again at the next try */
  } finally {
    t.busy = false;
  }
}

// A picture every PICTURE_EVERY_MS per camera while its tile is in sight and the page visible.
function refreshPicture(name) {
  if (document.visibilityState === "visible" && inSight.has(name)) fetchPicture(name);
  setTimeout(() => refreshPicture(name), PICTURE_EVERY_MS);
}

function setLink(text, kind) {
  const link = document.getElementById("link");
  link.textContent = text;
  link.className = `link ${kind}`;
}

async function start() {
  try {
    render(await getJSON("api/fleet"));
  } catch (e) {
    setLink("no answer", "away");
  }
  for (const name of tiles.keys()) refreshPicture(name);
  setTimeout(refreshHistory, Math.min(Math.max(historyStep, 2), 60) * 1000);
  const stream = new EventSource("api/stream");
  stream.addEventListener("fleet", e => {
    const known = tiles.size;
    render(JSON.parse(e.data));
    for (const name of [...tiles.keys()].slice(known)) refreshPicture(name);
    setLink("live", "live");
  });
  stream.onerror = () => setLink("reconnecting", "away");
  setInterval(() => { if (Date.now() - lastData > STALE_MS) setLink("no data", "away"); }, 1000);
}

start();
