// The tail panel: one subscription through the console's browser client (a
// queue, or an exchange with a binding key through a private queue), its
// messages newest first. With client acks each message gets Ack / Nack
// (requeue) / Reject buttons. The client resubscribes after a reconnection.

import { clearErrors, showError } from "./forms.js";

const MAX_MESSAGES = 200;

export class Tail {
  constructor(client, form, list, state) {
    this.client = client;
    this.form = form;
    this.list = list;
    this.state = state;
    this.subscription = null; // {sub, ack, describe}
    // True from a submit until its subscribe is answered: another submit meanwhile (a double click, or a
    // click while the socket reconnects) would subscribe a second time, and the first subscription, no
    // longer this.subscription, would go on taking the queue's messages unseen, resubscribed on reconnects.
    this.starting = false;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!this.starting) this.start();
    });
    form.elements.stop.addEventListener("click", () => this.stop());
    form.elements.clear.addEventListener("click", () => this.list.replaceChildren());
    for (const radio of form.querySelectorAll('input[name="source"]')) {
      radio.addEventListener("change", () => this.showSource());
    }
    const mine = (event) => this.subscription && event.detail.subscription === this.subscription.sub;
    client.addEventListener("cancelled", (event) => {
      if (mine(event)) this.ended(`ended by the broker: ${event.detail.reason}`);
    });
    client.addEventListener("error", (event) => {
      const { error } = event.detail;
      if (mine(event)) this.ended(`ended: resubscribing failed (${error.code}: ${error.message})`);
    });
    client.addEventListener("close", (event) => {
      if (!this.subscription) return;
      if (!event.detail.reconnecting) return this.ended("connection closed: subscription ended, unacknowledged messages requeued");
      this.setState("connection lost · resubscribing when it is back", true);
      this.disableButtons("requeued"); // the broker requeues what the connection had unacknowledged
    });
    client.addEventListener("reconnect", () => {
      if (this.subscription) this.showSubscribed(); // an exchange's private queue has a new name
    });
  }

  showSource() {
    const source = this.form.elements.source.value;
    for (const part of this.form.querySelectorAll("[data-source]")) part.hidden = part.dataset.source !== source;
  }

  async start() {
    this.starting = true;
    this.form.elements.start.disabled = true;
    try {
      await this.subscribe();
    } finally {
      this.starting = false;
      this.form.elements.start.disabled = false;
    }
  }

  async subscribe() {
    if (this.subscription) await this.stop();
    const f = this.form.elements;
    const ack = f.ack.value;
    const source = f.source.value === "queue" ? { queue: f.queue.value } : { exchange: f.exchange.value, bindingKey: f.binding_key.value };
    clearErrors(this.form);
    let sub;
    try {
      sub = await this.client.subscribe(source, (message) => this.receive(message), { ack });
    } catch (error) {
      // WebSocket errors carry no `fields`: the message names the field ("queue: ...").
      const field = /^(\w+):/.exec(error.message)?.[1];
      showError(this.form, { code: error.code, message: error.message, fields: field ? { [field]: [error.message] } : {} });
      return;
    }
    this.subscription = { sub, ack };
    this.showSubscribed();
  }

  showSubscribed() {
    const { sub, ack } = this.subscription;
    const what = sub.source.queue ? `queue ${sub.queue}` : `${sub.source.exchange} “${sub.source.bindingKey}” via ${sub.queue}`;
    this.setState(`subscribed to ${what} · ${ack} acks`, true);
  }

  async stop() {
    const sub = this.subscription;
    if (!sub) return;
    this.subscription = null;
    this.setState("not subscribed", false);
    this.disableButtons("unacknowledged: requeued");
    await sub.sub.unsubscribe(); // without a connection, the broker ended it already
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

  receive(message) {
    if (!this.subscription || message.subscription !== this.subscription.sub.id) return;
    this.list.prepend(this.render(message, this.subscription.ack === "client"));
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
      const button = (label, settle, note) => {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = label;
        b.addEventListener("click", () => {
          if (settle()) this.settle(li, note);
        });
        bar.append(b);
      };
      button("Ack", () => m.ack(), "acknowledged");
      button("Nack (requeue)", () => m.nack({ requeue: true }), "requeued");
      button("Reject", () => m.nack({ requeue: false }), "rejected");
      bar.append(outcome);
      li.append(bar);
    } else {
      li.append(outcome);
    }
    return li;
  }
}
