// The tail panel: one subscription over the shared WebSocket, to a queue or to
// an exchange with a binding key (a private queue), its messages newest first.
// With client acks each message gets Ack / Nack (requeue) / Reject buttons.

import { clearErrors, showError } from "./forms.js";

const MAX_MESSAGES = 200;

export class Tail {
  constructor(socket, form, list, state) {
    this.socket = socket;
    this.form = form;
    this.list = list;
    this.state = state;
    this.subscription = null; // {id, ack, queue}
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.start();
    });
    form.elements.stop.addEventListener("click", () => this.stop());
    form.elements.clear.addEventListener("click", () => this.list.replaceChildren());
    for (const radio of form.querySelectorAll('input[name="source"]')) {
      radio.addEventListener("change", () => this.showSource());
    }
    socket.on("message", (frame) => this.receive(frame));
    socket.on("cancelled", (frame) => {
      if (this.subscription && frame.subscription === this.subscription.id) this.ended(`ended by the broker: ${frame.reason}`);
    });
    socket.on("close", () => {
      if (this.subscription) this.ended("connection lost: subscription ended, unacknowledged messages requeued");
    });
  }

  showSource() {
    const source = this.form.elements.source.value;
    for (const part of this.form.querySelectorAll("[data-source]")) part.hidden = part.dataset.source !== source;
  }

  async start() {
    if (this.subscription) await this.stop();
    const f = this.form.elements;
    const id = this.socket.newId("tail");
    const frame = { type: "subscribe", id, ack: f.ack.value };
    if (f.source.value === "queue") {
      frame.queue = f.queue.value;
    } else {
      frame.exchange = f.exchange.value;
      frame.binding_key = f.binding_key.value;
    }
    clearErrors(this.form);
    let reply;
    try {
      reply = await this.socket.request(frame);
    } catch (err) {
      showError(this.form, { code: "unavailable", message: err.message });
      return;
    }
    if (reply.type === "error") {
      // WebSocket errors carry no `fields`: the message names the field ("queue: ...").
      const field = /^(\w+):/.exec(reply.message)?.[1];
      showError(this.form, { code: reply.code, message: reply.message, fields: field ? { [field]: [reply.message] } : {} });
      return;
    }
    this.subscription = { id: reply.subscription, ack: frame.ack, queue: reply.queue };
    const what = frame.queue ? `queue ${reply.queue}` : `${frame.exchange} “${frame.binding_key}” via ${reply.queue}`;
    this.setState(`subscribed to ${what} · ${frame.ack} acks`, true);
  }

  async stop() {
    const sub = this.subscription;
    if (!sub) return;
    this.subscription = null;
    this.setState("not subscribed", false);
    this.disableButtons("unacknowledged: requeued");
    try {
      await this.socket.request({ type: "unsubscribe", id: sub.id });
    } catch {
      // The connection is gone: the broker ended the subscription already.
    }
  }

  ended(reason) {
    this.subscription = null;
    this.setState(reason, false);
    this.disableButtons("requeued");
  }

  setState(text, active) {
    this.state.textContent = text;
    this.state.classList.toggle("active", active);
    this.form.elements.stop.disabled = !active;
  }

  disableButtons(note) {
    for (const li of this.list.querySelectorAll("li.pending")) this.settle(li, note);
  }

  settle(li, note) {
    li.classList.remove("pending");
    for (const button of li.querySelectorAll("button")) button.disabled = true;
    li.querySelector(".outcome").textContent = note;
  }

  receive(frame) {
    if (!this.subscription || frame.subscription !== this.subscription.id) return;
    this.list.prepend(this.render(frame, this.subscription.ack === "client"));
    while (this.list.children.length > MAX_MESSAGES) this.list.lastElementChild.remove();
  }

  render(m, manual) {
    const li = document.createElement("li");
    li.dataset.deliveryTag = m.delivery_tag;
    li.dataset.messageId = m.message_id;
    const head = document.createElement("div");
    head.className = "head";
    const add = (cls, text) => {
      const span = document.createElement("span");
      span.className = cls;
      span.textContent = text;
      head.append(span);
      return span;
    };
    add("rk", m.routing_key || '""');
    add("meta", `${m.exchange || "(default)"} · #${m.delivery_tag}${m.persistent ? "" : " · transient"}`);
    if (m.redelivered) add("tag warn", "redelivered");
    add("meta time", (m.published_at || "").replace("T", " ").replace(/\.\d+Z$/, "Z"));
    const body = document.createElement("pre");
    body.className = "body";
    const compact = JSON.stringify(m.body);
    body.textContent = compact.length <= 80 ? compact : JSON.stringify(m.body, null, 2);
    li.append(head, body);
    if (m.headers && Object.keys(m.headers).length) {
      const headers = document.createElement("pre");
      headers.className = "headers";
      headers.textContent = `headers ${JSON.stringify(m.headers)}`;
      li.append(headers);
    }
    const outcome = document.createElement("span");
    outcome.className = "outcome";
    if (manual) {
      li.classList.add("pending");
      const bar = document.createElement("div");
      bar.className = "buttons";
      const button = (label, frame, note) => {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = label;
        b.addEventListener("click", () => {
          if (this.socket.send({ ...frame, delivery_tag: m.delivery_tag })) this.settle(li, note);
        });
        bar.append(b);
      };
      button("Ack", { type: "ack" }, "acknowledged");
      button("Nack (requeue)", { type: "nack", requeue: true }, "requeued");
      button("Reject", { type: "nack", requeue: false }, "rejected");
      bar.append(outcome);
      li.append(bar);
    } else {
      li.append(outcome);
    }
    return li;
  }
}
