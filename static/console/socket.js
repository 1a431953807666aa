// One WebSocket to /ws (PROTOCOL.md, "WebSocket (/ws)"), shared by the live
// stats and the tail panel. Reconnects with a growing delay; `request()` sends
// a frame with an id and resolves with the reply carrying that id.

const REPLIES = new Set(["watching", "unwatched", "subscribed", "unsubscribed", "confirm", "pong", "error"]);

export class BrokerSocket {
  constructor(url) {
    this.url = url;
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map(); // id -> {resolve, reject}
    this.handlers = new Map(); // frame type -> [fn]
    this.delay = 500;
  }

  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, []);
    this.handlers.get(type).push(fn);
  }

  emit(type, value) {
    for (const fn of this.handlers.get(type) || []) fn(value);
  }

  connect() {
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.addEventListener("open", () => {
      this.delay = 500;
      this.emit("open");
    });
    ws.addEventListener("message", (event) => this.receive(event.data));
    ws.addEventListener("close", () => {
      if (this.ws !== ws) return;
      this.ws = null;
      for (const { reject } of this.pending.values()) reject(new Error("connection closed"));
      this.pending.clear();
      this.emit("close");
      setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, 10000);
    });
  }

  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (REPLIES.has(frame.type) && frame.id != null && this.pending.has(frame.id)) {
      const { resolve } = this.pending.get(frame.id);
      this.pending.delete(frame.id);
      resolve(frame);
      return;
    }
    this.emit(frame.type, frame);
  }

  send(frame) {
    if (!this.open) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  newId(prefix) {
    return `${prefix}${this.nextId++}`;
  }

  // Resolves with the reply (which may be an `error` frame); rejects when the socket is down.
  request(frame) {
    const id = frame.id ?? this.newId("c");
    return new Promise((resolve, reject) => {
      if (!this.send({ ...frame, id })) {
        reject(new Error("not connected"));
        return;
      }
      this.pending.set(id, { resolve, reject });
    });
  }
}
