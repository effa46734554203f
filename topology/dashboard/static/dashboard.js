// The dashboard page: one EventSource, one snapshot per message (GET /api/snapshot has
// the same JSON). Every text from the server goes through textContent, never innerHTML;
// the diagram is mermaid's SVG (securityLevel strict sanitises its labels).
"use strict";

const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";
let lastMessage = 0;
let interval = 1;
let shownText = null;   // mermaid text on screen
let wantedText = null;  // newest mermaid text received
let rendering = false;
let renderCount = 0;

mermaid.initialize({
  startOnLoad: false,
  securityLevel: "strict",
  theme: "default",
  flowchart: { htmlLabels: true, useMaxWidth: true },
});

function fmtRate(v) {
  if (v == null) return "–";
  return v >= 10 || v === 0 ? v.toFixed(0) : v.toFixed(1);
}

function fmtNum(v) {
  return v == null ? "?" : String(v);
}

function fmtAge(seconds) {
  if (seconds == null) return "?";
  return seconds < 60 ? `${seconds.toFixed(1)} s ago` : `${(seconds / 60).toFixed(1)} min ago`;
}

function fmtTime(t) {
  return new Date(t * 1000).toLocaleTimeString();
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function fill(tableId, rows) {
  const body = $(tableId).querySelector("tbody");
  body.replaceChildren(...rows);
}

// ``span``: points across the full width, the same for every sink so their times line up.
function sparkline(history, span) {
  const w = 160, h = 28, pad = 2;
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  const handled = history.handled_per_s || [];
  const failed = history.failed_per_s || [];
  const top = Math.max(1, ...handled, ...failed);
  const keep = Math.max(span, handled.length, 2);
  const line = (values, color) => {
    if (values.length < 2) return;
    const step = (w - 2 * pad) / (keep - 1);
    const offset = keep - values.length;
    const points = values.map((v, i) =>
      `${(pad + (i + offset) * step).toFixed(1)},${(h - pad - (v / top) * (h - 2 * pad)).toFixed(1)}`);
    const pl = document.createElementNS(SVG_NS, "polyline");
    pl.setAttribute("points", points.join(" "));
    pl.setAttribute("fill", "none");
    pl.setAttribute("stroke", color);
    pl.setAttribute("stroke-width", "1.5");
    svg.appendChild(pl);
  };
  const base = document.createElementNS(SVG_NS, "line");
  base.setAttribute("x1", pad); base.setAttribute("x2", w - pad);
  base.setAttribute("y1", h - pad); base.setAttribute("y2", h - pad);
  base.setAttribute("stroke", "#dde2ea");
  svg.appendChild(base);
  line(handled, "#2b6cb0");
  if (failed.some((v) => v > 0)) line(failed, "#c0392b");
  const title = document.createElementNS(SVG_NS, "title");
  title.textContent = `max ${fmtRate(top)}/s over the last ${Math.round(handled.length * (history.step || 1))} s`;
  svg.appendChild(title);
  return svg;
}

async function renderGraph() {
  if (rendering) return;
  rendering = true;
  try {
    while (wantedText !== null && wantedText !== shownText) {
      const text = wantedText;
      const { svg } = await mermaid.render(`topology-${++renderCount}`, text);
      $("graph").innerHTML = svg;  // mermaid's own (sanitised) output
      shownText = text;
      $("graph").dataset.renders = String(renderCount);
      markHot();
    }
  } catch (err) {
    $("graph").textContent = `cannot draw the graph: ${err}`;
    shownText = wantedText;
  } finally {
    rendering = false;
  }
}

// Sinks failing now, or with dead letters, are outlined in red in the diagram.
let hotSinks = new Set();
let mermaidIds = {};

function markHot() {
  const svg = $("graph").querySelector("svg");
  if (!svg) return;
  for (const g of svg.querySelectorAll("g.cluster, g.node")) {
    const hot = [...hotSinks].some((name) => {
      const id = mermaidIds[`sink:${name}`];
      return id && (g.id.endsWith(`-${id}`) || g.id.includes(`-flowchart-${id}-`));
    });
    g.classList.toggle("hot", hot);
    // mermaid styles the shape inline (classDef): only an inline !important outranks it.
    const shape = g.querySelector(":scope > rect, :scope > .label-container");
    if (!shape) continue;
    if (hot && !("stroke" in shape.dataset)) {
      shape.dataset.stroke = shape.style.getPropertyValue("stroke");
      shape.style.setProperty("stroke", "#c0392b", "important");
      shape.style.setProperty("stroke-width", "2px", "important");
    } else if (!hot && "stroke" in shape.dataset) {
      shape.style.setProperty("stroke", shape.dataset.stroke, "important");
      shape.style.removeProperty("stroke-width");
      delete shape.dataset.stroke;
    }
  }
}

function showSinks(snap) {
  let extras = false;
  const span = Math.max(0, ...Object.values(snap.sinks).map(
    (s) => ((s.history || {}).handled_per_s || []).length));
  const rows = Object.entries(snap.sinks).map(([name, s]) => {
    const tr = document.createElement("tr");
    tr.dataset.sink = name;
    const dead = s.dead_letter ? s.dead_letter.count : null;  // this sink's own
    if (s.failed_per_s > 0 || (dead || 0) > 0) tr.className = "hot";
    cell(tr, name, "name");
    cell(tr, fmtRate(s.handled_per_s), "num handled-rate");
    cell(tr, fmtRate(s.failed_per_s), "num failed-rate" + (s.failed_per_s > 0 ? " bad" : ""));
    cell(tr, dead == null ? "–" : String(dead), "num dead" + (dead > 0 ? " bad" : ""));
    cell(tr, fmtNum(s.pending), "num pending");
    cell(tr, fmtNum(s.lag), "num lag");
    cell(tr, fmtNum(s.handled), "num handled");
    cell(tr, fmtNum(s.failed), "num failed");
    cell(tr, fmtNum(s.consumers), "num");
    extras = extras || s.conflicts > 0 || s.state_keys != null;
    cell(tr, fmtNum(s.conflicts), "num opt conflicts");
    cell(tr, s.state_keys == null ? "–" : String(s.state_keys), "num opt keys");
    const td = cell(tr, "", "spark-cell");
    td.appendChild(sparkline(s.history || {}, span));
    return tr;
  });
  $("sinks").classList.toggle("hidden-col", !extras);
  mermaidIds = snap.graph.ids || {};
  hotSinks = new Set(Object.entries(snap.sinks)
    .filter(([, s]) => s.failed_per_s > 0 || (s.dead_letter && s.dead_letter.count > 0))
    .map(([name]) => name));
  markHot();
  fill("sinks", rows);
}

function showTables(snap) {
  fill("streams", Object.entries(snap.streams).map(([name, s]) => {
    const tr = document.createElement("tr");
    tr.dataset.stream = name;
    cell(tr, name, "name");
    cell(tr, String(s.length), "num length");
    cell(tr, `${fmtRate(s.per_s)}/s`, "num rate");
    return tr;
  }));
  fill("reads", snap.reads.map((r) => {
    const tr = document.createElement("tr");
    cell(tr, r.stream);
    cell(tr, r.sink);
    cell(tr, r.group ? String(r.pending) : "no group yet", "num");
    cell(tr, r.group ? fmtNum(r.lag) : "", "num");
    return tr;
  }));
  fill("workers", Object.entries(snap.workers).map(([id, w]) => {
    const tr = document.createElement("tr");
    if (!w.live) tr.className = "stale";
    cell(tr, id);
    cell(tr, fmtNum(w.version));
    cell(tr, fmtNum(w.generation), "num");
    cell(tr, w.deployment_version != null ? `v${w.deployment_version}` : "file");
    cell(tr, `${fmtAge(w.age)}${w.live ? "" : " (stale)"}`);
    return tr;
  }));
  fill("sources", Object.entries(snap.sources).map(([name, s]) => {
    const tr = document.createElement("tr");
    cell(tr, name);
    cell(tr, s.state);
    return tr;
  }));
  const items = snap.reloads.map((r) => {
    const li = document.createElement("li");
    li.textContent = r.what === "published"
      ? `${fmtTime(r.time)}: version ${r.version} published (sha256 ${r.sha256})`
      : `${fmtTime(r.time)}: ${r.worker} now runs generation ${r.generation}`;
    return li;
  });
  if (!items.length) {
    const li = document.createElement("li");
    li.className = "stale";
    li.textContent = "none seen since this page's server started";
    items.push(li);
  }
  $("reloads").replaceChildren(...items);
}

function setState(cls, text, banner) {
  const pill = $("state");
  pill.className = `pill ${cls}`;
  pill.textContent = text;
  $("banner").hidden = !banner;
  $("banner").textContent = banner || "";
}

function show(snap) {
  lastMessage = Date.now();
  interval = snap.interval || 1;
  document.body.dataset.seq = String(snap.seq);
  $("deployment").textContent = snap.deployment;
  document.title = `${snap.deployment} · ponos-topology`;
  $("redis").textContent = snap.redis;
  const pub = snap.published;
  $("version").textContent = pub ? `version ${pub.version} (applied ${fmtTime(pub.applied_at)})` : "";
  $("updated").textContent = `updated ${fmtTime(snap.time)}`;
  if (snap.ok) setState("ok", "live", null);
  else setState("bad", "Redis unreachable", snap.error);
  document.body.classList.toggle("down", !snap.ok);  // the figures shown are the last read
  $("problem").hidden = !snap.config.problem;
  $("problem").textContent = snap.config.problem ? `config not shown: ${snap.config.problem}` : "";
  showSinks(snap);
  showTables(snap);
  if (snap.graph.mermaid) {
    wantedText = snap.graph.mermaid;
    renderGraph();
  }
}

function connect() {
  const events = new EventSource("/events");
  events.onmessage = (msg) => show(JSON.parse(msg.data));
  events.onerror = () => {
    if (events.readyState !== EventSource.OPEN) {
      setState("bad", "dashboard unreachable", "Lost the dashboard server: reconnecting…");
    }
  };
}

setInterval(() => {
  const quiet = (Date.now() - lastMessage) / 1000;
  if (lastMessage && quiet > 3 * interval + 2 && $("state").classList.contains("ok")) {
    setState("wait", `no update for ${quiet.toFixed(0)} s`, null);
  }
}, 1000);

connect();
