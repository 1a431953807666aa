// The console's entry point: starts from the server-rendered state, then
// follows the broker live over one WebSocket (`watch` → a `stats` frame a
// second, through the browser client /static/pubsub/client.js) and changes it
// through the HTTP API. No HTTP polling.

import { connect } from "../pubsub/client.js";
import { api } from "./api.js";
import { RateChart, RateHistory } from "./chart.js";
import { finding, showFinders, startFinders } from "./find.js";
import { clearErrors, jsonField, setOptions, showError, showOk } from "./forms.js";
import { canonicalJSON, renderOverview } from "./overview.js";
import { Tail } from "./tail.js";
import { drawTopology, topologyKey, updateTopologyCounts } from "./topology.js";

const $ = (selector) => document.querySelector(selector);

const status = $("#status");
const setStatus = (state, text) => {
  status.dataset.state = state;
  status.textContent = text;
};

const history = new RateHistory();
const chart = new RateChart($("#rates-chart"));
const rateSource = $("#rates-source");
const topologyView = $("#topology-view");
let shownTopology = null;

let lastFrame = null;

function updateSelects(frame) {
  lastFrame = frame;
  // Names sorted with the broker's own (the default, amq.*) after the user's.
  const own = (name) => name === "" || name.startsWith("amq.");
  const exchanges = (frame.exchanges || []).map((x) => x.name).sort((a, b) => own(a) - own(b) || a.localeCompare(b));
  const queues = (frame.queues || []).filter((q) => !q.exclusive).map((q) => q.name);
  const named = exchanges.filter((name) => name !== "");
  // A select whose find field holds a text offers what was found instead (find.js).
  for (const select of document.querySelectorAll('select[data-options="exchanges"]')) {
    if (!finding(select)) setOptions(select, named.map((name) => ({ value: name, label: name })));
  }
  for (const select of document.querySelectorAll('select[data-options="exchanges-all"]')) {
    if (!finding(select)) {
      setOptions(select, exchanges.map((name) => ({ value: name || "amq.default", label: name || "(default)" })));
    }
  }
  for (const select of document.querySelectorAll('select[data-options="queues"]')) {
    if (!finding(select)) setOptions(select, queues.map((name) => ({ value: name, label: name })));
  }
  showFinders(frame);
  const all = (frame.queues || []).map((q) => ({ value: q.name, label: `queue ${q.name}` }));
  // The queue whose rates are shown stays a choice while it has a history, listed or not.
  const shown = rateSource.value;
  if (shown && history.has(shown) && !all.some((o) => o.value === shown)) {
    all.push({ value: shown, label: `queue ${shown} (not listed now)` });
  }
  setOptions(rateSource, [{ value: "", label: "the whole broker" }, ...all]);
}

function apply(frame) {
  renderOverview(frame);
  updateSelects(frame);
  const key = topologyKey(frame);
  if (key !== shownTopology) {
    shownTopology = key;
    drawTopology(topologyView, frame);
  } else {
    updateTopologyCounts(topologyView, frame);
  }
}

// --- live stats over the WebSocket -------------------------------------------

// The client reconnects by itself and renews the watch; `reconnect` comes once it has.
const client = connect("/ws");

function onStats(frame) {
  history.add(frame, Date.now());
  apply(frame);
  chart.show(history.of(rateSource.value));
}

async function watchStats() {
  try {
    await client.watch(onStats);
    setStatus("live", "live");
  } catch (error) {
    if (!client.closed) setStatus("degraded", `connected · no live stats (${error.code})`);
  }
}

client.addEventListener("open", () => setStatus("connecting", "connecting…"));
client.addEventListener("close", (event) => {
  const { reconnecting, code } = event.detail;
  setStatus("offline", reconnecting ? "disconnected · retrying" : `disconnected (${code === 4401 ? "log in again" : code})`);
});
client.addEventListener("reconnect", () => {
  if (client.watching) setStatus("live", "live");
  else watchStats(); // refused before: ask again on the new connection
});
rateSource.addEventListener("change", () => chart.show(history.of(rateSource.value)));

// --- create forms ------------------------------------------------------------

function onSubmit(form, action) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    clearErrors(form);
    try {
      showOk(form, await action(form.elements));
    } catch (error) {
      showError(form, error);
    } finally {
      button.disabled = false;
    }
  });
}

const verb = (status) => (status === 201 ? "created" : "already exists");

onSubmit($("#queue-form"), async (f) => {
  const { status, data } = await api.createQueue({ name: f.name.value, durable: f.durable.checked, auto_delete: f.auto_delete.checked });
  f.name.value = "";
  return `queue ${data.name} ${verb(status)}`;
});

onSubmit($("#exchange-form"), async (f) => {
  const { status, data } = await api.createExchange({ name: f.name.value, type: f.type.value, durable: f.durable.checked });
  f.name.value = "";
  return `exchange ${data.name} (${data.type}) ${verb(status)}`;
});

// A binding's destination is a queue or another exchange: the form shows the chosen one's names.
const bindingForm = $("#binding-form");
const showDestination = () => {
  const to = bindingForm.elements.destination.value;
  for (const part of bindingForm.querySelectorAll("[data-destination]")) part.hidden = part.dataset.destination !== to;
};
bindingForm.elements.destination.addEventListener("change", showDestination);
showDestination(); // the browser may have kept the choice over a reload

onSubmit(bindingForm, async (f) => {
  const to = f.destination.value === "exchange" ? { destination_exchange: f.destination_exchange.value } : { queue: f.queue.value };
  const { status, data } = await api.createBinding({ exchange: f.exchange.value, ...to, binding_key: f.binding_key.value });
  const destination = data.destination_exchange == null ? data.queue : `exchange ${data.destination_exchange}`;
  return `binding ${data.exchange} → ${destination} “${data.binding_key}” ${verb(status)}`;
});

onSubmit($("#publish-form"), async (f) => {
  const message = {
    routing_key: f.routing_key.value,
    headers: jsonField(f.headers, { object: true }),
    body: jsonField(f.body),
    persistent: f.persistent.checked,
  };
  const { data } = await api.publish(f.exchange.value, message);
  const queues = data.routed === 1 ? "queue" : "queues";
  return `routed to ${data.routed} ${queues} · message_id ${data.message_id}`;
});

// --- delete buttons (a second click within 3 s confirms) ---------------------

async function remove(button) {
  const d = button.dataset;
  if (d.kind === "queue") return api.deleteQueue(d.name);
  if (d.kind === "exchange") return api.deleteExchange(d.name);
  // `stats` bindings carry no id: find it among the pair's bindings.
  const to = d.destinationExchange === undefined ? { queue: d.queue } : { destination_exchange: d.destinationExchange };
  const { data } = await api.listBindings(d.exchange, to);
  // The stats frame keeps a binding's arguments in the order they were sent, the API in the
  // database's: the same arguments are compared in canonical form.
  const args = canonicalJSON(JSON.parse(d.arguments || "{}"));
  const match = data.find((b) => b.binding_key === d.bindingKey && canonicalJSON(b.arguments || {}) === args);
  if (!match) throw { code: "not_found", message: "this binding no longer exists" };
  return api.deleteBinding(match.id);
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button.delete");
  if (!button) return;
  const section = button.closest("section");
  const slot = section.querySelector('[data-error-for="__delete__"]');
  if (!button.classList.contains("armed")) {
    button.classList.add("armed");
    button.textContent = "Confirm";
    setTimeout(() => {
      button.classList.remove("armed");
      button.textContent = "Delete";
    }, 3000);
    return;
  }
  button.disabled = true;
  slot.textContent = "";
  try {
    await remove(button);
    button.closest("tr").classList.add("gone");
  } catch (error) {
    slot.textContent = `${error.code}: ${error.message}`;
    button.disabled = false;
  }
});

// --- start -------------------------------------------------------------------

new Tail(client, $("#tail-form"), $("#tail-messages"), $("#tail-state"));
startFinders(() => updateSelects(lastFrame));
apply(JSON.parse($("#initial-state").textContent));
watchStats();
