// The topology as an SVG picture: exchanges on the left, queues on the right,
// one curve per binding labelled with its binding key. A binding to another
// exchange is a dashed loop from the source's right side back to the
// destination's. The default exchange ("") is left out: it is implicitly bound
// to every queue by its name.

const NS = "http://www.w3.org/2000/svg";
const WIDTH = 640;
const BOX_W = 170;
const BOX_H = 36;
const ROW = 48;
const PAD = 12;
const TYPE_COLOR = { direct: "#2563eb", fanout: "#7c3aed", topic: "#0d9488", headers: "#c2410c" };

function el(name, attrs = {}, text) {
  const node = document.createElementNS(NS, name);
  for (const [key, value] of Object.entries(attrs)) if (value != null) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

const clip = (text, n = 20) => (text.length > n ? `${text.slice(0, n - 1)}…` : text);

function edgeLabel(binding, type) {
  if (binding.binding_key) return binding.binding_key;
  const args = Object.entries(binding.arguments || {});
  if (args.length) return args.map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(" ");
  return type === "fanout" ? "(all)" : '""';
}

// The key that decides whether the picture must be redrawn.
export function topologyKey(frame) {
  return JSON.stringify([
    (frame.exchanges || []).map((x) => [x.name, x.type]),
    (frame.queues || []).map((q) => q.name),
    (frame.bindings || []).map((b) => [b.exchange, b.queue, b.destination_exchange, b.binding_key, b.arguments]),
  ]);
}

function bezier(p0, p1, p2, p3, t) {
  const u = 1 - t;
  const f = (a, b, c, d) => u * u * u * a + 3 * u * u * t * b + 3 * u * t * t * c + t * t * t * d;
  return [f(p0[0], p1[0], p2[0], p3[0]), f(p0[1], p1[1], p2[1], p3[1])];
}

export function drawTopology(container, frame) {
  const bindings = (frame.bindings || []).filter((b) => b.exchange !== "");
  // The broker's own amq.* exchanges only when something is bound to them (or they to another).
  const bound = new Set(bindings.flatMap((b) => [b.exchange, b.destination_exchange]));
  const exchanges = (frame.exchanges || [])
    .filter((x) => x.name !== "" && (!x.name.startsWith("amq.") || bound.has(x.name)))
    .sort((a, b) => a.name.localeCompare(b.name));
  const exIndex = new Map(exchanges.map((x, i) => [x.name, i]));
  // Queues ordered by the mean row of the exchanges that feed them: fewer crossings.
  const feeds = new Map();
  for (const b of bindings) {
    if (b.destination_exchange != null) continue;
    if (!feeds.has(b.queue)) feeds.set(b.queue, []);
    if (exIndex.has(b.exchange)) feeds.get(b.queue).push(exIndex.get(b.exchange));
  }
  const rank = (q) => {
    const rows = feeds.get(q.name) || [];
    return rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : Infinity;
  };
  const queues = [...(frame.queues || [])].sort((a, b) => rank(a) - rank(b) || a.name.localeCompare(b.name));

  container.replaceChildren();
  if (!exchanges.length && !queues.length) {
    const p = document.createElement("p");
    p.className = "empty";
    p.textContent = "Nothing to draw yet: create an exchange, a queue and a binding.";
    container.append(p);
    return;
  }
  const rows = Math.max(exchanges.length, queues.length, 1);
  const height = PAD * 2 + 18 + rows * ROW;
  const svg = el("svg", { viewBox: `0 0 ${WIDTH} ${height}`, role: "img", "aria-label": "topology" });
  svg.append(
    el("text", { x: PAD, y: PAD + 8, class: "heading" }, "exchanges"),
    el("text", { x: WIDTH - PAD, y: PAD + 8, class: "heading", "text-anchor": "end" }, "queues"),
  );
  const top = PAD + 18;
  const exPos = new Map(exchanges.map((x, i) => [x.name, [PAD, top + i * ROW]]));
  const qPos = new Map(queues.map((q, i) => [q.name, [WIDTH - PAD - BOX_W, top + i * ROW]]));

  const edges = el("g", { class: "edges" });
  const labels = el("g", { class: "labels" });
  const placed = [];
  const types = new Map(exchanges.map((x) => [x.name, x.type]));
  for (const b of bindings) {
    const toExchange = b.destination_exchange != null;
    const from = exPos.get(b.exchange);
    const to = toExchange ? exPos.get(b.destination_exchange) : qPos.get(b.queue);
    if (!from || !to) continue;
    let p0, p1, p2, p3;
    if (toExchange) {
      // Both in the left column: a loop out to the right, wider the further apart they are,
      // from the upper quarter to the lower one (clear of the queue edges, and an exchange
      // bound to itself is a loop too).
      p0 = [from[0] + BOX_W, from[1] + BOX_H / 4];
      p3 = [to[0] + BOX_W, to[1] + (BOX_H * 3) / 4];
      const out = p0[0] + Math.min(40 + (Math.abs(p3[1] - p0[1]) / ROW) * 16, 200);
      p1 = [out, p0[1]];
      p2 = [out, p3[1]];
    } else {
      p0 = [from[0] + BOX_W, from[1] + BOX_H / 2];
      p3 = [to[0], to[1] + BOX_H / 2];
      const mid = (p0[0] + p3[0]) / 2;
      p1 = [mid, p0[1]];
      p2 = [mid, p3[1]];
    }
    const color = TYPE_COLOR[types.get(b.exchange)] || "#64748b";
    const g = el("g", {
      class: toExchange ? "edge to-exchange" : "edge",
      "data-exchange": b.exchange,
      "data-queue": b.queue,
      "data-destination-exchange": b.destination_exchange,
      "data-binding-key": b.binding_key,
    });
    g.append(
      el("path", {
        d: `M${p0} C${p1} ${p2} ${p3}`,
        fill: "none",
        stroke: color,
        "stroke-width": 1.5,
        "stroke-dasharray": toExchange ? "5 3" : null,
        "marker-end": "url(#arrow)",
      }),
    );
    edges.append(g);
    // Label on the curve where it overlaps no other label (first free spot).
    const text = clip(edgeLabel(b, types.get(b.exchange)), 28);
    const w = text.length * 6.6 + 8;
    let spot = bezier(p0, p1, p2, p3, 0.5);
    for (const t of [0.5, 0.38, 0.62, 0.28, 0.72, 0.44, 0.56]) {
      const [cx, cy] = bezier(p0, p1, p2, p3, t);
      if (!placed.some(([px, py, pw]) => Math.abs(px - cx) < (pw + w) / 2 && Math.abs(py - cy) < 14)) {
        spot = [cx, cy];
        break;
      }
    }
    placed.push([spot[0], spot[1], w]);
    // Labels go in their own group, drawn above the nodes.
    const label = el("text", { x: spot[0], y: spot[1] + 4, class: "edge-label", "text-anchor": "middle", fill: color, "data-exchange": b.exchange, "data-queue": b.queue, "data-destination-exchange": b.destination_exchange }, text);
    labels.append(label);
    const destination = toExchange ? `exchange ${b.destination_exchange}` : b.queue;
    g.append(el("title", {}, `${b.exchange} → ${destination}: ${edgeLabel(b, types.get(b.exchange))}`));
  }

  const nodes = el("g", { class: "nodes" });
  for (const x of exchanges) {
    const [px, py] = exPos.get(x.name);
    const g = el("g", { class: "node exchange", "data-name": x.name, transform: `translate(${px},${py})` });
    g.append(
      el("rect", { width: BOX_W, height: BOX_H, rx: 6, stroke: TYPE_COLOR[x.type] || "#64748b" }),
      el("text", { x: 10, y: 15, class: "name" }, clip(x.name)),
      el("text", { x: 10, y: 29, class: "sub" }, x.type),
      el("title", {}, `${x.name} (${x.type})`),
    );
    nodes.append(g);
  }
  for (const q of queues) {
    const [px, py] = qPos.get(q.name);
    const g = el("g", { class: `node queue${q.exclusive ? " private" : ""}`, "data-name": q.name, transform: `translate(${px},${py})` });
    g.append(
      el("rect", { width: BOX_W, height: BOX_H, rx: 6 }),
      el("text", { x: 10, y: 15, class: "name" }, clip(q.name)),
      el("text", { x: 10, y: 29, class: "sub", "data-counts": q.name }, ""),
      el("title", {}, q.exclusive ? `${q.name} (private, of a WebSocket subscription)` : q.name),
    );
    nodes.append(g);
  }
  const defs = el("defs");
  const marker = el("marker", { id: "arrow", viewBox: "0 0 8 8", refX: 8, refY: 4, markerWidth: 7, markerHeight: 7, orient: "auto" });
  marker.append(el("path", { d: "M0,0 L8,4 L0,8 z", fill: "#94a3b8" }));
  defs.append(marker);
  svg.append(defs, edges, nodes, labels);
  container.append(svg);
  updateTopologyCounts(container, frame);
}

// Live counts in the queue boxes, without redrawing the picture.
export function updateTopologyCounts(container, frame) {
  const byName = new Map((frame.queues || []).map((q) => [q.name, q]));
  for (const text of container.querySelectorAll("text[data-counts]")) {
    const q = byName.get(text.dataset.counts);
    if (!q || q.messages_ready == null) continue;
    const parts = [`${q.messages_ready} ready`, `${q.messages_unacknowledged} unacked`, `${q.consumers} cons.`];
    text.textContent = parts.join(" · "); // a private queue's box is dashed
  }
}
