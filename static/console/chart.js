// A small line chart of rates on a <canvas>: the last WINDOW seconds, one line
// per series, y axis from 0 to a rounded maximum. Redrawn on every sample.

const WINDOW_MS = 60_000;

// Widths decrease and the last line is dashed, so equal rates (the usual case:
// every message delivered and acked) stay visible on top of each other.
export const SERIES = [
  { key: "published", color: "#2563eb", width: 5, alpha: 0.35, dash: [] },
  { key: "delivered", color: "#16a34a", width: 2.5, alpha: 1, dash: [] },
  { key: "acknowledged", color: "#d97706", width: 1.5, alpha: 1, dash: [5, 3] },
];

function niceMax(value) {
  if (value <= 1) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= value) return m * step;
  return 10 * step;
}

export class RateChart {
  constructor(canvas) {
    this.canvas = canvas;
    this.samples = [];
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  // samples: [{t (ms), published, delivered, acknowledged}], oldest first.
  show(samples) {
    this.samples = samples;
    this.draw();
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);

    const pad = { left: 44, right: 10, top: 10, bottom: 22 };
    const w = width - pad.left - pad.right;
    const h = height - pad.top - pad.bottom;
    // A queue not in the frames now (its history ends with a gap): its lines move on with time.
    const last = this.samples[this.samples.length - 1];
    const now = last && !last.gap ? last.t : Date.now();
    const x = (t) => pad.left + w * (1 - (now - t) / WINDOW_MS);
    let top = 0;
    for (const s of this.samples) for (const { key } of SERIES) top = Math.max(top, s[key] || 0);
    top = niceMax(top);
    const y = (v) => pad.top + h * (1 - v / top);

    g.font = "11px system-ui, sans-serif";
    g.fillStyle = "#6b7280";
    g.strokeStyle = "#e5e7eb";
    g.lineWidth = 1;
    g.textAlign = "right";
    g.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const v = (top * i) / 4;
      const yy = Math.round(y(v)) + 0.5;
      g.beginPath();
      g.moveTo(pad.left, yy);
      g.lineTo(pad.left + w, yy);
      g.stroke();
      g.fillText(String(+v.toFixed(2)), pad.left - 6, yy);
    }
    g.textAlign = "center";
    g.textBaseline = "top";
    for (const s of [60, 45, 30, 15, 0]) {
      g.fillText(s ? `−${s}s` : "now", x(now - s * 1000), pad.top + h + 6);
    }

    g.save();
    g.beginPath();
    g.rect(pad.left, pad.top - 2, w, h + 4);
    g.clip();
    g.lineJoin = "round";
    for (const { key, color, width, alpha, dash } of SERIES) {
      g.strokeStyle = color;
      g.lineWidth = width;
      g.globalAlpha = alpha;
      g.setLineDash(dash);
      g.beginPath();
      // Runs of samples between gaps (a queue left out of the frames for a while): no line
      // across a gap, and a run of one sample is a short dash, not nothing.
      let run = 0;
      let latest = null;
      const endRun = () => {
        if (run === 1) {
          g.moveTo(latest.px - 2, latest.py);
          g.lineTo(latest.px + 2, latest.py);
        }
        run = 0;
      };
      for (const s of this.samples) {
        if (s.gap) {
          endRun();
          continue;
        }
        const point = { px: x(s.t), py: y(s[key] || 0) };
        if (run === 0) g.moveTo(point.px, point.py);
        else g.lineTo(point.px, point.py);
        run += 1;
        latest = point;
      }
      endRun();
      g.stroke();
    }
    g.restore();
  }
}

// Rolling histories: one for the broker, one per queue, each at most WINDOW long.
// A queue left out of a frame that leaves some out (the frames list 500, the fullest)
// keeps its history, marked with a gap, until its last sample is older than the window;
// then it is forgotten, so what is kept grows with the queues seen within the window
// only. Left out of a frame that lists every queue, it is gone: forgotten at once.
export class RateHistory {
  constructor() {
    this.broker = [];
    this.queues = new Map();
  }

  add(frame, t) {
    const keep = (list) => {
      while (list.length && (list[0].gap || t - list[0].t > WINDOW_MS + 2000)) list.shift();
    };
    const totals = frame.totals || {};
    this.broker.push({ t, published: totals.published, delivered: totals.delivered, acknowledged: totals.acknowledged });
    keep(this.broker);
    const seen = new Set();
    for (const q of frame.queues || []) {
      seen.add(q.name);
      if (!this.queues.has(q.name)) this.queues.set(q.name, []);
      const list = this.queues.get(q.name);
      list.push({ t, published: q.publish_rate, delivered: q.deliver_rate, acknowledged: q.ack_rate });
      keep(list);
    }
    // A frame that lists every queue (`totals.queues`) says that those it does not list are gone.
    const complete = !(totals.queues > seen.size);
    for (const [name, list] of this.queues) {
      if (seen.has(name)) continue;
      keep(list);
      if (complete || !list.length) this.queues.delete(name);
      else if (!list[list.length - 1].gap) list.push({ t, gap: true });
    }
  }

  of(queue) {
    return queue ? this.queues.get(queue) || [] : this.broker;
  }

  // Queues with a history, the frame's or not.
  has(queue) {
    return this.queues.has(queue);
  }
}
