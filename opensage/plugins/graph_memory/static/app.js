// opensage ui: talks to the JSON API of webui.py; every text from memory goes through textContent.
"use strict";
const $ = (id) => document.getElementById(id);
let current = null;
let cy = null;
let searchSeq = 0;  // only the newest search may fill the list (an older answer arriving late is dropped)

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  };
  const resp = await fetch(path, opts);
  const data = await resp.json().catch(() => ({error: resp.statusText}));
  if (!resp.ok) throw new Error(data.error || resp.statusText);
  return data;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

async function search(ev) {
  if (ev) ev.preventDefault();
  const params = new URLSearchParams({
    q: $("q").value, type: $("type").value, limit: "30", since: $("f-since").value, until: $("f-until").value,
    tags: $("f-tags").value, tagsMode: $("f-tags-mode").value, session: $("f-session").value,
    source: $("f-source").value, includeSuperseded: $("f-superseded").checked ? "1" : "",
  });
  $("status").textContent = "searching…";
  const seq = ++searchSeq;
  try {
    const data = await api("/api/search?" + params);
    if (seq !== searchSeq) return;
    const list = $("results");
    list.replaceChildren();
    for (const n of data.results) {
      const li = el("li");
      li.dataset.id = n.id;
      li.append(el("span", n.type, "type"), " ", el("span", n.label));
      for (const t of n.tags) li.append(el("span", t, "tag"));
      if (n.validTo) { li.classList.add("superseded"); li.append(el("span", "superseded", "tag")); }
      li.addEventListener("click", () => openNode(n.id));
      list.append(li);
    }
    $("status").textContent = data.results.length + " results" + (data.filter ? " (" + data.filter + ")" : "");
  } catch (e) { if (seq === searchSeq) $("status").textContent = "error: " + e.message; }
}

async function openNode(id) {
  const data = await api("/api/node/" + encodeURIComponent(id));
  current = data.node;
  $("empty").hidden = true;
  $("node").hidden = false;
  $("node").dataset.id = current.id;
  $("node-type").textContent = current.type;
  $("node-label").textContent = current.label;
  $("node-id").textContent = current.id;
  $("node-tags").value = current.tags.join(", ");
  $("node-content").value = current.content;
  const iso = (t) => new Date(t * 1000).toISOString().replace("T", " ").slice(0, 16);
  const validity = [];
  if (current.validFrom) validity.push("valid from " + iso(current.validFrom));
  if (current.validTo) validity.push("superseded " + iso(current.validTo) + (current.supersededBy ? " by " + current.supersededBy : ""));
  if (current.source) validity.push("source " + current.source);
  if (current.sessionId) validity.push("session " + current.sessionId);
  $("node-validity").textContent = validity.join(" · ");
  $("node-validity").className = current.validTo ? "superseded" : "";
  $("save-status").textContent = "";
  const rel = $("relations");
  rel.replaceChildren();
  for (const r of data.relations) {
    const li = el("li");
    const arrow = r.direction === "out" ? "→ " + r.type + " → " : "← " + r.type + " ← ";
    const a = el("a", r.label || r.id);
    a.href = "#";
    a.addEventListener("click", (ev) => { ev.preventDefault(); openNode(r.id); });
    li.append(arrow, a, " ", el("span", r.nodeType, "type"));
    rel.append(li);
  }
  const prov = $("provenance");
  prov.replaceChildren();
  for (const p of data.provenance) {
    const when = new Date(p.timestamp * 1000).toISOString().replace("T", " ").slice(0, 19);
    prov.append(el("li", `${when} session ${p.session_id} #${p.seq} ${p.kind}${p.role ? " (" + p.role + ")" : ""}: ${p.text}`));
  }
  if (!data.provenance.length) prov.append(el("li", "none recorded (added by hand or by ingest)"));
  for (const li of $("results").children) li.classList.toggle("active", li.dataset.id === current.id);
  drawGraph(current.id);
}

async function drawGraph(id) {
  const data = await api("/api/node/" + encodeURIComponent(id) + "/graph?radius=1");
  const elements = data.nodes.map((n) => ({data: {id: n.id, label: n.label, type: n.type, center: n.center ? 1 : 0}}))
    .concat(data.edges.map((e) => ({data: {id: e.id, source: e.source, target: e.target, label: e.type}})));
  if (cy) cy.destroy();
  cy = cytoscape({
    container: $("graph"), elements,
    style: [
      {selector: "node", style: {label: "data(label)", "font-size": 9, "background-color": "#6b8fb3",
        "text-wrap": "ellipsis", "text-max-width": 120, width: 14, height: 14}},
      {selector: "node[center = 1]", style: {"background-color": "#d9822b", width: 22, height: 22}},
      {selector: "edge", style: {label: "data(label)", "font-size": 7, width: 1, "curve-style": "bezier",
        "target-arrow-shape": "triangle", "line-color": "#99a", "target-arrow-color": "#99a", color: "#555"}},
    ],
    layout: {name: "breadthfirst", roots: [id], directed: false, spacingFactor: 1.1, animate: false},
  });
  cy.on("tap", "node", (ev) => { if (ev.target.id() !== current.id) openNode(ev.target.id()); });
}

async function save() {
  const tags = $("node-tags").value.split(/[,\s]+/).filter(Boolean);
  try {
    const data = await api("/api/node/" + encodeURIComponent(current.id) + "/edit",
      {content: $("node-content").value, tags});
    current = data.node;
    $("node-tags").value = current.tags.join(", ");
    $("save-status").textContent = "saved";
  } catch (e) { $("save-status").textContent = "error: " + e.message; }
}

async function forget() {
  if (!confirm("Forget " + current.label + "? It is removed from memory.")) return;
  try {
    const data = await api("/api/node/" + encodeURIComponent(current.id) + "/forget", {});
    $("node").hidden = true;
    $("empty").hidden = false;
    $("empty").textContent = data.text;
    search();
  } catch (e) { $("save-status").textContent = "error: " + e.message; }
}

async function supersede() {
  const by = prompt("Which node replaces it (id such as n12, or exact label)?");
  if (!by) return;
  try {
    const data = await api("/api/node/" + encodeURIComponent(current.id) + "/supersede", {by});
    $("save-status").textContent = data.text;
    openNode(current.id);
  } catch (e) { $("save-status").textContent = "error: " + e.message; }
}

async function init() {
  $("search-form").addEventListener("submit", search);
  $("save-btn").addEventListener("click", save);
  $("forget-btn").addEventListener("click", forget);
  $("supersede-btn").addEventListener("click", supersede);
  const info = await api("/api/info");
  $("workspace").textContent = info.workspace + " — " + info.counts.nodes + " nodes, " + info.counts.edges + " edges";
  $("supersede-btn").hidden = !info.canSupersede;
  $("forget-btn").hidden = !info.canForget;
  search();
}
init();
