// The tables of exchanges, queues and bindings and the totals, kept in step
// with the `stats` frames. Rows are keyed and updated in place, so a frame a
// second neither flickers nor steals the focus from a row's button.

export const fmt = (value) => {
  if (value === null || value === undefined) return "—";
  if (typeof value !== "number") return String(value);
  return Number.isInteger(value) ? String(value) : value.toFixed(value < 10 ? 1 : 0);
};

function cell(text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  if (text !== undefined) td.textContent = text;
  return td;
}

function tag(text) {
  const span = document.createElement("span");
  span.className = "tag";
  span.textContent = text;
  return span;
}

function deleteButton(kind, data) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "delete";
  button.textContent = "Delete";
  button.dataset.kind = kind;
  Object.assign(button.dataset, data);
  return button;
}

// A row deleted from the page (dimmed, its button off) whose item a frame lists again: it was
// declared again (a client redeclaring on reconnect) before a frame left it out.
function revive(row) {
  if (!row.classList.contains("gone")) return;
  row.classList.remove("gone");
  for (const button of row.querySelectorAll("button.delete")) button.disabled = false;
}

// A JSON value's text with every object's keys sorted: the page's own state and the stats
// frames may list the same arguments in another order (PostgreSQL's jsonb reorders them).
export function canonicalJSON(value) {
  if (Array.isArray(value)) return `[${value.map(canonicalJSON).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value).sort();
    return `{${keys.map((key) => `${JSON.stringify(key)}:${canonicalJSON(value[key])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

// Make tbody's rows match `items` (in order), reusing rows by key. A row is built again when
// its item's `shape` (what `create` drew: tags, durability, the Delete button) has changed:
// a queue or exchange deleted and declared again with other properties between two frames.
function syncRows(tbody, items, key, create, update, shape = () => "") {
  // Server-rendered rows have no key: the first frame replaces them.
  for (const row of [...tbody.rows]) if (row.dataset.key === undefined) row.remove();
  const old = new Map([...tbody.rows].map((row) => [row.dataset.key, row]));
  let previous = null;
  for (const item of items) {
    const k = key(item);
    const s = shape(item);
    let row = old.get(k);
    if (row) old.delete(k);
    if (row && row.dataset.shape !== s) {
      const rebuilt = create(item);
      row.replaceWith(rebuilt);
      row = rebuilt;
    } else if (row) {
      revive(row);
    } else {
      row = create(item);
    }
    Object.assign(row.dataset, { key: k, shape: s });
    update(row, item);
    const next = previous ? previous.nextSibling : tbody.firstChild;
    if (row !== next) tbody.insertBefore(row, next);
    previous = row;
  }
  for (const row of old.values()) row.remove();
  const empty = tbody.closest("section").querySelector("p.empty");
  if (empty) empty.hidden = items.length > 0;
}

const QUEUE_FIELDS = ["messages_ready", "messages_unacknowledged", "consumers", "publish_rate", "deliver_rate", "ack_rate"];

// RabbitMQ features a queue's arguments turn on, as labels (console/features.py says the same).
const QUEUE_FEATURES = [
  ["x-queue-type", "queue_type", (v) => `${v}`],
  ["x-max-priority", "max_priority", (v) => `priority 0-${v}`],
  ["x-message-ttl", "message_ttl", (v) => `ttl ${v} ms`],
  ["x-max-length", "max_length", (v) => `max ${v}`],
  ["x-max-length-bytes", "max_length_bytes", (v) => `max ${v} bytes`],
  ["x-overflow", "overflow", (v) => `${v}`],
  ["x-delivery-limit", "delivery_limit", (v) => `delivery limit ${v}`],
  ["x-dead-letter-exchange", "dead_letter_exchange", (v) => `dlx ${v === "" ? "(default)" : v}`],
  ["x-expires", "expires", (v) => `expires ${v} ms`],
];

function queueFeatures(args) {
  const labels = [];
  for (const [rabbit, ours, label] of QUEUE_FEATURES) {
    const value = rabbit in args ? args[rabbit] : args[ours];
    if (value !== undefined && value !== null && value !== "classic" && value !== "drop-head") labels.push(label(value));
  }
  const sac = "x-single-active-consumer" in args ? args["x-single-active-consumer"] : args.single_active_consumer;
  if (sac === true) labels.push("single active consumer");
  return labels;
}

function exchangeFeatures(args) {
  const labels = [];
  if (typeof args["x-delayed-type"] === "string") labels.push(`delayed, as ${args["x-delayed-type"]}`);
  if (typeof args["alternate-exchange"] === "string") labels.push(`alternate ${args["alternate-exchange"]}`);
  return labels;
}

function queueRow(q) {
  const tr = document.createElement("tr");
  tr.dataset.name = q.name;
  const name = cell(q.name, "name");
  if (q.exclusive) name.append(" ", tag("private"));
  for (const label of queueFeatures(q.arguments || {})) name.append(" ", tag(label));
  tr.append(name, cell(q.durable ? "yes" : "no"));
  for (const field of QUEUE_FIELDS) {
    const td = cell("", "n");
    td.dataset.field = field;
    tr.append(td);
  }
  const actions = cell(undefined, "actions");
  if (!q.exclusive) actions.append(deleteButton("queue", { name: q.name }));
  tr.append(actions);
  return tr;
}

function exchangeRow(x) {
  const tr = document.createElement("tr");
  tr.dataset.name = x.name;
  const name = cell(x.name, "name");
  if (!x.name) {
    name.replaceChildren(Object.assign(document.createElement("em"), { textContent: "(default)" }), " ", tag("amq.default"));
  }
  for (const label of exchangeFeatures(x.arguments || {})) name.append(" ", tag(label));
  const actions = cell(undefined, "actions");
  if (x.name && !x.name.startsWith("amq.")) actions.append(deleteButton("exchange", { name: x.name }));
  tr.append(name, cell(x.type), cell(x.durable ? "yes" : "no"), actions);
  return tr;
}

function code(text) {
  const c = document.createElement("code");
  c.textContent = text;
  return c;
}

// A binding's destination: a queue, or (destination_exchange set) another exchange.
function destinationCell(b) {
  if (b.destination_exchange == null) return cell(b.queue);
  const td = cell();
  td.append(tag("exchange"), " ", b.destination_exchange);
  return td;
}

function bindingRow(b) {
  const tr = document.createElement("tr");
  // One of data-queue / data-destination-exchange, never "null".
  const to = b.destination_exchange == null ? { queue: b.queue } : { destinationExchange: b.destination_exchange };
  Object.assign(tr.dataset, { exchange: b.exchange, ...to, bindingKey: b.binding_key });
  const args = Object.keys(b.arguments || {}).length ? code(JSON.stringify(b.arguments)) : "";
  const actions = cell(undefined, "actions");
  actions.append(deleteButton("binding", { exchange: b.exchange, ...to, bindingKey: b.binding_key, arguments: JSON.stringify(b.arguments || {}) }));
  const key = cell();
  key.append(code(b.binding_key));
  const argCell = cell();
  argCell.append(args);
  tr.append(cell(b.exchange), destinationCell(b), key, argCell, actions);
  return tr;
}

const HANDLER_FIELDS = ["concurrency", "running", "handled_rate", "handled", "failed", "retried", "dead_lettered"];

function handlerRow(h) {
  const tr = document.createElement("tr");
  tr.append(cell(h.queue, "name"), cell(h.handler), cell(h.process));
  for (const field of HANDLER_FIELDS) {
    const td = cell("", "n");
    td.dataset.field = field;
    tr.append(td);
  }
  return tr;
}

export function renderOverview(frame) {
  syncRows(
    document.querySelector("#handlers tbody"),
    frame.handlers || [],
    (h) => `${h.process}\u0000${h.handler}`,
    handlerRow,
    (row, h) => {
      for (const field of HANDLER_FIELDS) {
        const td = row.querySelector(`[data-field="${field}"]`);
        const text = fmt(h[field]);
        if (td.textContent !== text) td.textContent = text;
      }
    },
  );
  syncRows(
    document.querySelector("#queues tbody"),
    frame.queues || [],
    (q) => q.name,
    queueRow,
    (row, q) => {
      for (const field of QUEUE_FIELDS) {
        const td = row.querySelector(`[data-field="${field}"]`);
        const text = fmt(q[field]);
        if (td.textContent !== text) td.textContent = text;
      }
    },
    (q) => canonicalJSON([Boolean(q.durable), Boolean(q.exclusive), q.arguments || {}]),
  );
  syncRows(
    document.querySelector("#exchanges tbody"),
    [...(frame.exchanges || [])].sort((a, b) => a.name.localeCompare(b.name)),
    (x) => `${x.name}\u0000${x.type}`,
    exchangeRow,
    () => {},
    (x) => canonicalJSON([Boolean(x.durable), x.arguments || {}]),
  );
  syncRows(
    document.querySelector("#bindings tbody"),
    frame.bindings || [],
    (b) => JSON.stringify([b.exchange, b.queue, b.destination_exchange, b.binding_key, b.arguments]),
    bindingRow,
    () => {},
  );
  if (frame.totals) {
    for (const el of document.querySelectorAll("[data-total]")) {
      el.textContent = fmt(frame.totals[el.dataset.total]);
    }
    // The broker lists at most 500 of each (the queues holding the most messages); the totals count them all.
    for (const el of document.querySelectorAll("[data-listed]")) {
      const all = frame.totals[el.dataset.listed];
      const shown = (frame[el.dataset.listed] || []).length;
      el.textContent = all > shown ? `${fmt(shown)} of ${fmt(all)} listed` : "";
    }
  }
  const memory = frame.memory;
  const memoryTile = document.getElementById("memory");
  if (memory && memory.limit && memoryTile) {
    const mib = (bytes) => Math.round(bytes / 1048576);
    memoryTile.querySelector("[data-memory]").textContent =
      `${mib(memory.used)} / ${mib(memory.limit)}${memory.alarm ? " — publishers held back" : ""}`;
    memoryTile.classList.toggle("alarm", Boolean(memory.alarm));
  }
}
