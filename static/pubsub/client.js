// The broker's browser client: one WebSocket to /ws (docs/protocol.md, "WebSocket"),
// plain ES module, no build step, no dependency. Import it from
// `/static/pubsub/client.js`; docs/browser-client.md shows it at work.
//
// It owns the connection and what must survive it: subscriptions are resubscribed,
// publishes not yet confirmed are sent again (at-least-once: a consumer may see a
// message twice, with the same message_id), a `watch` is renewed. Objects from the
// broker (messages, confirms, stats) keep docs/protocol.md's field names.
//
// One file of about 600 lines on purpose: pages (of other origins too) import the
// client by one URL, with nothing else to fetch or keep in step.

const MIN_DELAY_MS = 250; // first retry: soon, a restart takes a second or two
const MAX_DELAY_MS = 10_000; // then at most every 10 s, so a fleet of pages does not hammer a broker coming back
// With nothing heard from the broker for this long a ping goes out; with nothing heard for as long
// again the socket is taken for dead, though the browser has not noticed (a laptop's sleep, a
// changed network, a proxy that dropped it): it is closed and the client reconnects.
const HEARTBEAT_MS = 20_000;
// After the page comes back (visible again, or the network online) a ping goes out at once, and
// its answer is awaited this long at most.
const WAKE_PROBE_MS = 5_000;
const CLOSE_TOO_BIG = 1009; // docs/protocol.md: a frame over the size limit closes the connection
const CLOSE_UNAUTHORIZED = 4401; // no (valid) credentials: reconnecting would not help
// Refusals that pass: a cluster's failover (`unavailable`), a frame over the connection's
// rate (`rate_limited`, the frame was not carried out). Sent again after a backoff.
const RETRYABLE = new Set(["unavailable", "rate_limited"]);

/** An error with the broker's stable code (docs/protocol.md, "Errors"), or `closed` after `close()`.
 * A connection refused for its credentials (close 4401) ends the client: its promises reject
 * with `unauthorized`, and it does not reconnect. */
export class BrokerError extends Error {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super(message);
    this.name = "BrokerError";
    /** @type {string} */
    this.code = code;
  }
}

/**
 * @typedef {object} Message  A delivery: docs/protocol.md's message fields, plus ack/nack.
 * @property {string} message_id
 * @property {string} exchange
 * @property {string} routing_key
 * @property {any} body
 * @property {Record<string, any>} headers
 * @property {boolean} persistent
 * @property {string} published_at
 * @property {boolean} redelivered
 * @property {number} delivery_tag
 * @property {string} subscription
 * @property {() => boolean} ack  With `ack: "client"`; false (nothing sent) when the message was
 *   settled already, the subscription acks automatically or has ended (unsubscribed, cancelled), or
 *   its connection is gone (the broker has requeued the message then: it comes again, redelivered).
 * @property {(options?: {requeue?: boolean}) => boolean} nack  `requeue` defaults to true.
 *
 * @typedef {{queue: string} | {exchange: string, bindingKey?: string, arguments?: Record<string, any>}} Source
 * @typedef {{ack?: "auto" | "client", prefetch?: number}} SubscribeOptions
 * @typedef {{exchange?: string, routingKey?: string, body: any, headers?: Record<string, any>,
 *   persistent?: boolean, messageId?: string}} PublishOptions
 * @typedef {{message_id: string, routed: number}} Confirm
 * @typedef {{token?: string, minDelay?: number, maxDelay?: number, heartbeat?: number}} ConnectOptions
 */

/** A live subscription; `queue` is the broker's queue (a new `amq.gen-` one after a reconnect). */
export class Subscription {
  /** @param {Client} client @param {string} id @param {Source} source @param {"auto"|"client"} ack */
  constructor(client, id, source, ack) {
    this.client = client;
    this.id = id;
    this.source = source;
    this.ack = ack;
    /** @type {string | null} */
    this.queue = null;
    /** False once unsubscribed, refused on a resubscribe, or cancelled by the broker. */
    this.active = true;
  }

  /** @returns {Promise<void>} */
  unsubscribe() {
    return this.client.unsubscribe(this);
  }
}

/**
 * Connect to the broker; the client connects (and reconnects) by itself, and what is
 * asked before the socket opens is sent once it does.
 * @param {string} [url]  `ws://host/ws`, `http://host/ws` or a path such as `/ws` (the default).
 * @param {ConnectOptions} [options]  `token` is sent as `?token=` (browsers cannot set WebSocket headers).
 * @returns {Client}
 */
export function connect(url = "/ws", options = {}) {
  return new Client(url, options);
}

/**
 * Events: `open` (detail {reconnect}; what waited for the socket has been sent), `close` (detail {code,
 * reason, reconnecting}), `reconnect` (after a reconnection, once every subscription and watch has its
 * answer or has ended; detail {resubscribed, republished, errors}), `cancelled` (the broker ended a
 * subscription; detail {subscription, reason}) and
 * `error` (an error no promise is waiting for; detail {error, subscription?}).
 */
export class Client extends EventTarget {
  /** @param {string} url @param {ConnectOptions} options */
  constructor(url, { token, minDelay = MIN_DELAY_MS, maxDelay = MAX_DELAY_MS, heartbeat = HEARTBEAT_MS } = {}) {
    super();
    const target = new URL(url, globalThis.location?.href);
    target.protocol = target.protocol.replace(/^http/, "ws");
    if (token) target.searchParams.set("token", token);
    this.url = target.href;
    this.minDelay = minDelay;
    this.maxDelay = maxDelay;
    this.heartbeat = heartbeat; // 0: none
    this.heardAt = 0; // when the current socket last brought a frame (performance.now())
    this.probe = null; // {at, within}: a heartbeat's ping sent, nothing heard since
    this.beat = null; // the heartbeat's interval while a socket is open
    // The page back from sleep or a network change: ask the broker at once whether the socket lives;
    // without one, connect now rather than at the end of a backoff, or of an attempt begun on the
    // network left behind (which could hang for the system's connect timeout, minutes).
    this.wake = () => {
      if (globalThis.document?.visibilityState === "hidden" || this.closed) return;
      if (this.ws === null || this.ws.readyState === WebSocket.CONNECTING) this.reconnectNow();
      else this.sendProbe(Math.min(WAKE_PROBE_MS, this.heartbeat));
    };
    this.reconnectTimer = null; // the backoff's timer before the next attempt
    this.connecting = null; // the timer that gives up an attempt not open within `heartbeat`
    if (this.heartbeat > 0) {
      globalThis.addEventListener?.("online", this.wake);
      globalThis.document?.addEventListener("visibilitychange", this.wake);
    }
    /** @type {WebSocket | null} */
    this.ws = null;
    this.generation = 0; // connections opened so far: delivery tags belong to one
    this.attempt = 0;
    this.closed = false;
    this.nextId = 1;
    this.openedAt = null; // when the current socket opened (performance.now())
    this.subs = new Map(); // id -> {sub, frame, callback, resolve, reject, answered, attempt}
    this.leaving = new Map(); // id -> the entry of an auto-ack subscription whose unsubscribe is unanswered
    this.publishes = new Map(); // id -> {frame, text, resolve, reject, attempt, timer, sentOn}
    this.pings = new Map(); // id -> {resolve, reject, attempt}: kept until answered, sent again on a reconnection
    this.requests = new Map(); // id -> {frame, resolve, attempt}: unsubscribe, unwatch
    this.watchers = new Set(); // the callbacks of `watch`, sharing the connection's one watch
    this.watchState = null; // {id, answered, waiters, attempt} while watching
    this.restoring = null; // {waiting: Set of ids, report} during a reconnection
    this.refusal = null; // the `unauthorized` error before a 4401 close
    this.ending = null; // why the client is closed: what later calls reject with
    this.open();
  }

  /** True while the socket is open. */
  get connected() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /** True while a `watch` is in place (or being renewed after a reconnection). */
  get watching() {
    return this.watchState !== null;
  }

  /**
   * Consume a queue, or an exchange through a private queue bound with `bindingKey`.
   * Resolves once the broker has subscribed; rejects with its error (e.g. `not_found`).
   * @param {Source} source
   * @param {(message: Message) => void} callback
   * @param {SubscribeOptions} [options]
   * @returns {Promise<Subscription>}
   */
  subscribe(source, callback, { ack = "auto", prefetch } = {}) {
    if (this.closed) return this.refused();
    const id = this.newId("s");
    const frame = { type: "subscribe", id, ack };
    if ("queue" in source) frame.queue = source.queue;
    else {
      frame.exchange = source.exchange;
      frame.binding_key = source.bindingKey ?? "";
      if (source.arguments) frame.arguments = source.arguments;
    }
    if (prefetch !== undefined) frame.prefetch = prefetch;
    const sub = new Subscription(this, id, source, ack);
    return new Promise((resolve, reject) => {
      this.subs.set(id, { sub, frame, callback, resolve, reject, answered: false, attempt: 0 });
      this.send(frame);
    });
  }

  /** Stop a subscription; its unacknowledged messages go back to the queue, and auto-ack deliveries already
   * on their way still reach the callback until the broker answers. @param {Subscription} sub */
  async unsubscribe(sub) {
    sub.active = false;
    const entry = this.subs.get(sub.id);
    if (!entry || entry.sub !== sub) return;
    this.subs.delete(sub.id);
    this.restored(sub.id); // a reconnection no longer waits for its resubscribe
    if (!this.connected) return; // a closed connection ended it already
    // Auto-ack deliveries on their way are settled already: they still reach the callback until the answer.
    if (sub.ack === "auto") this.leaving.set(sub.id, entry);
    try {
      await this.request({ type: "unsubscribe", id: sub.id });
    } finally {
      if (this.leaving.get(sub.id) === entry) this.leaving.delete(sub.id);
    }
  }

  /**
   * Publish; resolves with the broker's confirm once every durable copy is committed, rejects
   * with the broker's error (e.g. `not_found` for an unknown exchange). Kept until confirmed:
   * re-sent after a reconnection, or after a backoff when refused `unavailable` or `rate_limited`.
   * @param {PublishOptions} options
   * @returns {Promise<Confirm>}
   */
  publish({ exchange = "", routingKey = "", body, headers = {}, persistent = true, messageId }) {
    if (this.closed) return this.refused();
    if (body === undefined) return Promise.reject(new BrokerError("invalid", "body: this field is required"));
    const id = this.newId("p");
    // The same message_id on every attempt, so a consumer can tell a re-sent copy.
    const frame = { type: "publish", id, exchange, routing_key: routingKey, body, headers, persistent, message_id: messageId ?? uuid4() };
    const text = JSON.stringify(frame);
    return new Promise((resolve, reject) => {
      const entry = { frame, text, resolve, reject, attempt: 0, timer: 0, sentOn: 0 };
      this.publishes.set(id, entry);
      this.sendPublish(entry);
    });
  }

  /**
   * Receive the broker's `stats` frame every second (what the web console shows). Resolves once
   * watching; the returned function stops this callback.
   * @param {(stats: any) => void} callback
   * @returns {Promise<() => Promise<void>>}
   */
  watch(callback) {
    if (this.closed) return this.refused();
    this.watchers.add(callback);
    const stop = async () => {
      if (!this.watchers.delete(callback) || this.watchers.size || !this.watchState) return;
      const { id } = this.watchState;
      this.watchState = null;
      this.restored(id); // a reconnection no longer waits for the renewed watch
      if (this.connected) await this.request({ type: "unwatch" });
    };
    if (!this.watchState) {
      const state = { id: this.newId("w"), answered: false, waiters: [], attempt: 0 };
      this.watchState = state;
      this.send({ type: "watch", id: state.id });
    }
    const state = this.watchState;
    if (state.answered) return Promise.resolve(stop);
    return new Promise((resolve, reject) => state.waiters.push({ resolve: () => resolve(stop), reject }));
  }

  /** Round trip to the broker: waits for the connection (sent again after a reconnection) and its `pong`.
   * @returns {Promise<void>} */
  ping() {
    if (this.closed) return this.refused();
    const id = this.newId("c");
    return new Promise((resolve, reject) => {
      this.pings.set(id, { resolve, reject, attempt: 0 });
      this.send({ type: "ping", id });
    });
  }

  /** Close for good: no reconnection; what still waits is rejected with code `closed`. */
  close() {
    this.end(new BrokerError("closed", "the client was closed"));
    if (this.ws) this.ws.close(1000);
  }

  /** No more reconnections: reject whatever waits with `error`. */
  end(error) {
    this.closed = true;
    this.ending = error;
    clearInterval(this.beat);
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.connecting);
    globalThis.removeEventListener?.("online", this.wake);
    globalThis.document?.removeEventListener("visibilitychange", this.wake);
    for (const { sub, reject } of this.subs.values()) {
      sub.active = false;
      reject(error);
    }
    for (const { reject, timer } of this.publishes.values()) {
      clearTimeout(timer);
      reject(error);
    }
    for (const { reject } of this.watchState?.waiters || []) reject(error);
    for (const { reject } of this.pings.values()) reject(error);
    for (const { resolve } of this.requests.values()) resolve();
    this.subs.clear();
    this.publishes.clear();
    this.pings.clear();
    this.requests.clear();
    this.watchState = null;
    this.restoring = null;
  }

  refused() {
    return Promise.reject(this.ending);
  }

  // -- the connection --------------------------------------------------------

  open() {
    this.reconnectTimer = null;
    const ws = new WebSocket(this.url);
    this.ws = ws;
    // An attempt that neither opens nor fails (packets dropped on the way) is given up after a
    // heartbeat's time, as an open socket that falls silent is: the next attempt follows the backoff.
    if (this.heartbeat > 0) this.connecting = setTimeout(() => this.ws === ws && !this.connected && this.abandon(ws), this.heartbeat);
    ws.addEventListener("open", () => this.opened(ws));
    ws.addEventListener("message", (event) => {
      if (this.ws !== ws) return; // a socket given up for dead (`abandon`)
      this.heardAt = performance.now();
      this.probe = null;
      this.receive(event.data);
    });
    ws.addEventListener("close", (event) => this.lost(ws, event));
  }

  opened(ws) {
    if (this.ws !== ws) return;
    clearTimeout(this.connecting);
    const reconnect = this.generation > 0;
    this.generation += 1;
    this.openedAt = performance.now();
    this.heardAt = this.openedAt;
    this.probe = null;
    clearInterval(this.beat);
    if (this.heartbeat > 0) this.beat = setInterval(() => this.checkBeat(ws), Math.max(this.heartbeat / 4, 25));
    // What waited for this socket goes first, then `open`: a subscribe or publish of an `open`
    // listener is sent by that call, once (twice would subscribe twice: `conflict`).
    const waiting = new Set();
    for (const [id, { frame, sub }] of this.subs) {
      waiting.add(id);
      sub.queue = null;
      this.send(frame);
    }
    if (this.watchState) {
      waiting.add(this.watchState.id);
      this.send({ type: "watch", id: this.watchState.id });
    }
    for (const entry of this.publishes.values()) this.sendPublish(entry);
    for (const id of this.pings.keys()) this.send({ type: "ping", id });
    if (reconnect) this.restoring = { waiting, report: { resubscribed: 0, republished: this.publishes.size, errors: [] } };
    this.emit("open", { reconnect });
    if (this.ws === ws) this.restored(null);
  }

  lost(ws, event) {
    if (this.ws !== ws) return;
    this.ws = null;
    clearTimeout(this.connecting);
    clearInterval(this.beat);
    this.probe = null;
    this.restoring = null;
    // The backoff starts again only after a connection that proved itself by staying open as long as
    // the longest delay: one closed at once (1013 too_many_connections, 1011) keeps doubling it.
    if (this.openedAt !== null && performance.now() - this.openedAt >= this.maxDelay) this.attempt = 0;
    this.openedAt = null;
    for (const entry of this.publishes.values()) clearTimeout(entry.timer);
    // A frame over the size limit closes the connection: reject the largest publish of that
    // connection rather than re-sending it for ever; the others are sent again.
    const culprit = event.code === CLOSE_TOO_BIG ? this.largest() : null;
    if (culprit !== null) {
      this.publishes.get(culprit).reject(new BrokerError("too_large", "the broker closed the connection: message over its size limit"));
      this.publishes.delete(culprit);
    }
    for (const { resolve } of this.requests.values()) resolve(); // their subscription or watch ended with the socket
    this.requests.clear();
    if (event.code === CLOSE_UNAUTHORIZED && !this.closed) {
      this.end(this.refusal ?? new BrokerError("unauthorized", event.reason || "the broker refused the credentials"));
    }
    this.emit("close", { code: event.code, reason: event.reason, reconnecting: !this.closed });
    if (this.closed) return;
    this.reconnectTimer = setTimeout(() => {
      if (!this.closed) this.open(); // close() during the delay: no new socket
    }, this.backoff(this.attempt++));
  }

  /** Connect at once: the backoff's wait cut short, or an attempt under way given up for a new one. */
  reconnectNow() {
    if (this.ws !== null) {
      const ws = this.ws;
      this.ws = null; // its close, when it comes, is not this client's concern any more
      clearTimeout(this.connecting);
      ws.close();
    }
    clearTimeout(this.reconnectTimer);
    this.open();
  }

  /** The heartbeat, a few times per `heartbeat`: a ping after a quiet `heartbeat`, and the socket
   * given up when nothing, not even that ping's answer, came within its time. */
  checkBeat(ws) {
    if (this.ws !== ws || !this.connected) return;
    const now = performance.now();
    if (this.probe !== null) {
      if (now - this.probe.at >= this.probe.within) this.abandon(ws);
    } else if (now - this.heardAt >= this.heartbeat) {
      this.sendProbe(this.heartbeat);
    }
  }

  /** A ping whose answer (or any frame) is awaited `within` ms; its id (`h…`) is no `ping()`'s. */
  sendProbe(within) {
    if (!this.connected || this.heartbeat <= 0) return;
    const at = performance.now();
    if (this.probe !== null && this.probe.at + this.probe.within <= at + within) return; // one due sooner
    this.probe = { at, within };
    this.send({ type: "ping", id: this.newId("h") });
    const ws = this.ws;
    setTimeout(() => this.checkBeat(ws), within + 10); // sooner than the next beat, for a wake's ping
  }

  /** Nothing heard: the socket is dead though the browser has not said so (its close could take
   * minutes). Closed, and lost at once: the client reconnects as after any drop. */
  abandon(ws) {
    ws.close(4000, "no answer to a heartbeat");
    this.lost(ws, { code: 1006, reason: "no answer from the broker" });
  }

  /** The publish of this connection with the largest frame, in UTF-8 bytes as the broker counts them
   * (a string's length counts UTF-16 units: 400,000 CJK characters are 1.2 MB). */
  largest() {
    const encoder = new TextEncoder();
    let best = null;
    let size = -1;
    for (const [id, entry] of this.publishes) {
      if (entry.sentOn !== this.generation) continue;
      const bytes = encoder.encode(entry.text).length;
      if (bytes > size) [best, size] = [id, bytes];
    }
    return best;
  }

  /** @param {number} attempt */
  backoff(attempt) {
    const delay = Math.min(this.maxDelay, this.minDelay * 2 ** attempt);
    return delay / 2 + (Math.random() * delay) / 2; // jitter: pages reconnect at different moments
  }

  send(frame) {
    if (!this.connected) return false; // sent on the next open
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  sendPublish(entry) {
    if (!this.connected) return;
    this.ws.send(entry.text);
    entry.sentOn = this.generation;
  }

  /** A frame whose answer (or the connection's end) resolves; an unsubscribe's id names its subscription. */
  request(frame) {
    const id = frame.id ?? this.newId("c");
    return new Promise((resolve) => {
      if (!this.send({ ...frame, id })) return resolve();
      this.requests.set(id, { frame: { ...frame, id }, resolve, attempt: 0 });
    });
  }

  /** An ack (`a`), nack (`n`) or nack without requeue (`d`). No reply comes unless it is refused, so
   * its `id` tells all: `a3.17` is an ack of tag 17 on connection 3, `a3.17.2` its second retry, sent
   * again by `failed` alone when refused `rate_limited` or `unavailable` (not carried out), after a
   * backoff that grows with the retries. @param {"a"|"n"|"d"} kind @param {number} tag @param {number} [retry] */
  sendSettle(kind, tag, retry = 0) {
    const frame = kind === "a" ? { type: "ack" } : { type: "nack", requeue: kind === "n" };
    return this.send({ ...frame, delivery_tag: tag, id: `${kind}${this.generation}.${tag}${retry ? `.${retry}` : ""}` });
  }

  newId(prefix) {
    return `${prefix}${this.nextId++}`;
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  // -- frames from the broker ------------------------------------------------

  receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return; // the broker sends JSON only
    }
    switch (frame.type) {
      case "message":
        return this.deliver(frame);
      case "stats":
        for (const callback of [...this.watchers]) this.call(callback, frame);
        return;
      case "subscribed":
        return this.subscribed(frame);
      case "watching":
        return this.watched(frame);
      case "confirm":
        return this.confirmed(frame);
      case "cancelled":
        return this.cancelled(frame);
      case "blocked": // a publish held by the broker's memory alarm: nothing more is read meanwhile
        return this.emit("blocked", { reason: frame.reason });
      case "unblocked":
        return this.emit("unblocked", {});
      case "error":
        return this.failed(frame);
      case "pong": {
        const ping = this.pings.get(frame.id);
        if (ping) {
          this.pings.delete(frame.id);
          ping.resolve();
        }
        return;
      }
      default: {
        const request = this.requests.get(frame.id);
        if (request) {
          this.requests.delete(frame.id);
          request.resolve();
        }
      }
    }
  }

  deliver(frame) {
    const entry = this.subs.get(frame.subscription) ?? this.leaving.get(frame.subscription);
    if (!entry) return; // unsubscribed meanwhile (client acks): the broker requeues it
    const { type, unique_id, ...fields } = frame;
    const generation = this.generation;
    const manual = entry.sub.ack === "client";
    let settled = !manual;
    // Nothing to send once the subscription ended: the broker requeued (unsubscribed) or dropped
    // (cancelled) the message, and would refuse its tag as unknown.
    const settle = (kind) => {
      if (settled || !entry.sub.active || generation !== this.generation || !this.sendSettle(kind, frame.delivery_tag)) return false;
      settled = true;
      return true;
    };
    /** @type {Message} */
    const message = {
      ...fields,
      ack: () => settle("a"),
      nack: ({ requeue = true } = {}) => settle(requeue ? "n" : "d"),
    };
    this.call(entry.callback, message);
  }

  subscribed(frame) {
    const entry = this.subs.get(frame.id);
    if (!entry) return;
    entry.sub.queue = frame.queue;
    entry.attempt = 0;
    if (!entry.answered) {
      entry.answered = true;
      entry.resolve(entry.sub);
    }
    if (this.restoring?.waiting.has(frame.id)) this.restoring.report.resubscribed += 1;
    this.restored(frame.id);
  }

  watched(frame) {
    const state = this.watchState;
    if (!state || state.id !== frame.id) return;
    state.answered = true;
    for (const { resolve } of state.waiters.splice(0)) resolve();
    this.restored(frame.id);
  }

  confirmed(frame) {
    const entry = this.publishes.get(frame.id);
    if (!entry) return;
    this.publishes.delete(frame.id);
    entry.resolve({ message_id: frame.message_id, routed: frame.routed });
  }

  cancelled(frame) {
    const entry = this.subs.get(frame.subscription);
    if (!entry) return;
    this.subs.delete(frame.subscription);
    entry.sub.active = false;
    this.emit("cancelled", { subscription: entry.sub, reason: frame.reason });
    this.restored(frame.subscription);
  }

  failed(frame) {
    const error = new BrokerError(frame.code, frame.message);
    const id = frame.id;
    const publish = this.publishes.get(id);
    if (publish) {
      if (RETRYABLE.has(error.code)) {
        publish.timer = setTimeout(() => this.sendPublish(publish), this.backoff(publish.attempt++));
        return;
      }
      this.publishes.delete(id);
      return publish.reject(error);
    }
    const sub = this.subs.get(id);
    if (sub) {
      if (RETRYABLE.has(error.code)) return this.retry(sub, sub.frame, () => this.subs.get(id) === sub);
      this.subs.delete(id);
      sub.sub.active = false;
      if (!sub.answered) sub.reject(error);
      else this.reportError(error, { subscription: sub.sub });
      return this.restored(id);
    }
    const state = this.watchState;
    if (state && state.id === id) {
      if (RETRYABLE.has(error.code)) return this.retry(state, { type: "watch", id }, () => this.watchState === state);
      this.watchState = null;
      this.watchers.clear();
      if (!state.answered) for (const { reject } of state.waiters) reject(error);
      else this.reportError(error, {});
      return this.restored(id);
    }
    const ping = this.pings.get(id);
    if (ping) {
      if (RETRYABLE.has(error.code)) return this.retry(ping, { type: "ping", id }, () => this.pings.get(id) === ping);
      this.pings.delete(id);
      return ping.reject(error);
    }
    const request = this.requests.get(id);
    if (request) {
      // Not carried out: the subscription or watch is still there, so ask again.
      if (RETRYABLE.has(error.code)) return this.retry(request, request.frame, () => this.requests.get(id) === request);
      this.requests.delete(id);
      return request.resolve(); // unsubscribe or unwatch: gone either way
    }
    const settle = typeof id === "string" ? /^([and])(\d+)\.(\d+)(?:\.(\d+))?$/.exec(id) : null;
    if (settle && RETRYABLE.has(error.code)) {
      const [, kind, generation, tag, retry = "0"] = settle; // a connection gone since: the broker requeued the message
      const live = () => Number(generation) === this.generation;
      const attempt = Number(retry); // a sustained rate limit: each retry waits twice as long
      if (live()) setTimeout(() => live() && this.sendSettle(kind, Number(tag), attempt + 1), this.backoff(attempt));
      return;
    }
    if (typeof id === "string" && /^h\d+$/.test(id)) return; // a heartbeat's ping refused (`rate_limited`): an answer all the same
    if (error.code === "unauthorized") this.refusal = error; // the close (4401) that follows ends the client
    this.emit("error", { error }); // e.g. an ack of an unknown delivery tag
  }

  /** Send a frame refused `unavailable` or `rate_limited` again after a backoff, unless its connection is
   * gone (the next one sends what still waits) or `pending()` says it no longer waits (unsubscribed, stopped). */
  retry(entry, frame, pending) {
    const generation = this.generation;
    setTimeout(() => {
      if (generation === this.generation && pending()) this.send(frame);
    }, this.backoff(entry.attempt++));
  }

  reportError(error, detail) {
    if (this.restoring) this.restoring.report.errors.push(error);
    this.emit("error", { error, ...detail });
  }

  /** One answer of a reconnection in; `reconnect` goes out once all are. @param {string|null} id */
  restored(id) {
    const restoring = this.restoring;
    if (!restoring) return;
    restoring.waiting.delete(id);
    if (restoring.waiting.size) return;
    this.restoring = null;
    this.emit("reconnect", restoring.report);
  }

  call(callback, value) {
    try {
      callback(value);
    } catch (error) {
      globalThis.reportError ? globalThis.reportError(error) : setTimeout(() => { throw error; });
    }
  }
}

/** A random (version 4) UUID; `crypto.randomUUID` needs a secure context, `getRandomValues` does not. */
function uuid4() {
  if (globalThis.crypto?.randomUUID && globalThis.isSecureContext) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
