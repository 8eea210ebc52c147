// The WebSocket client of protocol.md §2–§10. One connection; replies matched by rid; every
// watched channel keeps its last seq and epoch, so that after any reconnection it is
// resubscribed with `since` and nothing is lost or shown twice.
//
// Events (CustomEvent, detail = the frame unless said otherwise): state (online |
// reconnecting | offline), subscribed ({channel, head, fresh}), reset ({channel}), gap
// ({channel}), message, withdrawn, unsubscribed, read, typing, presence, media, consent,
// moderation, report, export, denied ({code}: the session is refused, do something before reconnecting),
// maintenance ({message, since}: the deployment entered maintenance mode).
import { sleep, uuid } from "./dom.js";

const SUBPROTOCOL = "procreche.v1.json";
const REQUEST_TIMEOUT = 15000;
const MAX_BACKOFF = 30000;
// §9: these mean "come back at once and resume" (the first time; then back off).
const RESUME_AT_ONCE = new Set([1012, 4000, 4001]);
const PUSHES = new Set([
  "message",
  "withdrawn",
  "unsubscribed",
  "read",
  "typing",
  "presence",
  "media",
  "consent",
  "moderation",
  "report",
  "export",
]);
// §10.7: a publish whose outcome is unknown is sent again with the same msg_id.
const RETRYABLE = new Set(["unavailable", "internal", "timeout", "disconnected"]);

export class LiveError extends Error {
  constructor(code, message, details) {
    super(message || code);
    this.code = code;
    this.details = details ?? null;
  }
}

export class Live extends EventTarget {
  constructor(token) {
    super();
    this.token = token;
    this.state = "reconnecting";
    this.channels = new Map();
    this.ws = null;
    this.retiring = null;
    this.rid = 0;
    this.attempt = 0;
    this.timer = null;
    this.stopped = false;
    this.waiters = new Set();
    this.onBrowserOnline = () => this.resumeNow();
    addEventListener("online", this.onBrowserOnline);
  }

  start() {
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    removeEventListener("online", this.onBrowserOnline);
    for (const ws of [this.ws, this.retiring]) ws?.close(1000);
    this.ws = null;
    this.setState("offline");
    for (const waiter of this.waiters) waiter.reject(new LiveError("disconnected"));
    this.waiters.clear();
  }

  // Watch a channel for as long as the session lasts: subscribed now if connected, and
  // again after every reconnection. Resolves with the first subscribe reply.
  watch(channel) {
    let ch = this.channels.get(channel);
    if (ch) return ch.ready;
    ch = { lastSeq: null, epoch: null, resetting: false };
    ch.ready = new Promise((resolve, reject) => {
      ch.resolve = resolve;
      ch.reject = reject;
    });
    ch.ready.catch(() => {});
    this.channels.set(channel, ch);
    if (this.ws?.ready) this.subscribe(this.ws, channel, ch);
    return ch.ready;
  }

  async request(op, fields) {
    await this.online();
    return this.send(this.ws, op, fields);
  }

  async publish(channel, body, children = [], msgId = uuid()) {
    const fields = { channel, msg_id: msgId, body };
    if (children.length) fields.children = children;
    let last;
    for (let attempt = 0; attempt < 6; attempt++) {
      try {
        return await this.request("publish", fields);
      } catch (error) {
        last = error;
        if (!RETRYABLE.has(error.code)) throw error;
        await sleep(Math.min(8000, 500 * 2 ** attempt));
      }
    }
    throw last;
  }

  // -- connection ---------------------------------------------------------------------

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.emit("state", state);
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  online() {
    if (this.ws?.ready) return Promise.resolve();
    if (this.stopped) return Promise.reject(new LiveError("disconnected"));
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      waiter.timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new LiveError("timeout"));
      }, REQUEST_TIMEOUT);
      this.waiters.add(waiter);
    });
  }

  // Whatever the backoff says: the network or the server is back.
  resumeNow() {
    if (!this.stopped && !this.ws) this.connectSoon(0);
  }

  connectSoon(delay) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  backoff() {
    const base = Math.min(MAX_BACKOFF, 500 * 2 ** this.attempt++);
    return base / 2 + (Math.random() * base) / 2;
  }

  connect() {
    clearTimeout(this.timer);
    if (this.stopped) return;
    if (!navigator.onLine) {
      // The "online" event brings us back at once; the timer in case the browser is wrong.
      this.setState("reconnecting");
      this.connectSoon(this.backoff());
      return;
    }
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws`, [SUBPROTOCOL]);
    ws.pending = new Map();
    ws.subscribed = new Set();
    ws.ready = false;
    this.ws = ws;
    ws.addEventListener("open", () => this.authenticate(ws));
    ws.addEventListener("message", (event) => this.receive(ws, event.data));
    ws.addEventListener("close", (event) => this.closed(ws, event));
  }

  async authenticate(ws) {
    try {
      await this.send(ws, "auth", { token: this.token });
    } catch {
      return; // the server closes the connection: closed() decides what to do
    }
    this.attempt = 0;
    // Channels watched while these replies were awaited are subscribed in the next round.
    let round;
    do {
      round = [...this.channels].filter(([name]) => !ws.subscribed.has(name));
      await Promise.allSettled(round.map(([name, ch]) => this.subscribe(ws, name, ch)));
    } while (round.length && ws === this.ws && ws.readyState === WebSocket.OPEN);
    if (ws !== this.ws || ws.readyState !== WebSocket.OPEN) return;
    ws.ready = true;
    this.setState("online");
    for (const waiter of this.waiters) {
      clearTimeout(waiter.timer);
      waiter.resolve();
    }
    this.waiters.clear();
    // After a `reconnect` frame the old connection served until the new one took over.
    this.retiring?.close(1000);
    this.retiring = null;
  }

  // §10.3–4: resume with since/epoch, or reload the channel when its numbering changed.
  // Runs synchronously when the reply arrives, before the backlog that follows it.
  subscribe(ws, name, ch, fresh = false) {
    const resuming = ch.lastSeq !== null && !fresh;
    const fields = { channel: name };
    if (resuming) {
      fields.since = ch.lastSeq;
      if (ch.epoch) fields.epoch = ch.epoch;
    }
    ws.subscribed.add(name);
    const done = this.send(ws, "subscribe", fields, (reply) => {
      if (!reply.ok) return;
      if (resuming && ((ch.epoch && reply.epoch !== ch.epoch) || reply.seq < ch.lastSeq)) {
        this.reload(ws, name, ch);
        return;
      }
      ch.epoch = reply.epoch;
      ch.resetting = false;
      if (!resuming) ch.lastSeq = reply.seq;
      this.emit("subscribed", { channel: name, head: reply.seq, fresh: !resuming, read: reply.read });
      if (resuming && !reply.recovered) this.emit("gap", { channel: name });
      ch.resolve(reply);
    });
    done.catch((error) => {
      if (error.code === "disconnected" || error.code === "timeout") return;
      if (error.code === "unavailable" || error.code === "internal") {
        ws.close(1000); // the server is in trouble: reconnect with backoff, resume everything
        return;
      }
      // Not (or no longer) allowed: stop watching it.
      this.channels.delete(name);
      ch.reject(error);
      this.emit("unsubscribed", { channel: name, reason: error.code });
    });
    return done;
  }

  reload(ws, name, ch) {
    ch.resetting = true;
    this.emit("reset", { channel: name });
    this.send(ws, "unsubscribe", { channel: name }).catch(() => {});
    this.subscribe(ws, name, ch, true);
  }

  send(ws, op, fields, onReply) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject(new LiveError("disconnected"));
    const rid = ++this.rid;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        ws.pending.delete(rid);
        reject(new LiveError("timeout"));
      }, REQUEST_TIMEOUT);
      ws.pending.set(rid, { resolve, reject, timer, onReply });
      ws.send(JSON.stringify({ op, rid, ...fields }));
    });
  }

  receive(ws, data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame.op === "reply") {
      const entry = ws.pending.get(frame.rid);
      if (!entry) return;
      ws.pending.delete(frame.rid);
      clearTimeout(entry.timer);
      entry.onReply?.(frame);
      if (frame.ok) entry.resolve(frame);
      else entry.reject(new LiveError(frame.error.code, frame.error.message, frame.error.details));
      return;
    }
    if (frame.op === "reconnect") {
      // In maintenance no gateway takes us: the server closes this one after its grace,
      // and the reconnection backs off until the maintenance is over.
      if (frame.maintenance) this.emit("maintenance", frame.maintenance);
      else this.handover();
      return;
    }
    if (!PUSHES.has(frame.op)) return; // §3.2: ignore what a later version may add
    if (frame.op === "message") {
      const ch = this.channels.get(frame.channel);
      // §10.5: a seq at or below the last one was already shown (a resume overlaps).
      if (!ch || ch.resetting || ch.lastSeq === null || frame.seq <= ch.lastSeq) return;
      ch.lastSeq = frame.seq;
    }
    if (frame.op === "unsubscribed") this.channels.delete(frame.channel);
    this.emit(frame.op, frame);
  }

  // §5.4: the gateway is draining. A new connection takes over; the old one is closed
  // once the new one is subscribed, so nothing is missed in between.
  handover() {
    if (this.retiring || (this.ws !== null && !this.ws.ready)) return;
    this.retiring = this.ws;
    this.setState("reconnecting");
    this.connect();
  }

  closed(ws, event) {
    for (const entry of ws.pending.values()) {
      clearTimeout(entry.timer);
      entry.reject(new LiveError("disconnected"));
    }
    ws.pending.clear();
    if (ws === this.retiring) this.retiring = null;
    if (ws !== this.ws || this.stopped) return;
    this.ws = null;
    // §9: 4400–4499 ask for something first (log in again, accept the terms).
    if (event.code === 4403 || event.code === 4406) {
      this.stopped = true;
      this.setState("offline");
      this.emit("denied", { code: event.code === 4406 ? "terms_not_accepted" : event.reason || "invalid_token" });
      return;
    }
    this.setState("reconnecting");
    const atOnce = RESUME_AT_ONCE.has(event.code) && this.attempt === 0;
    if (atOnce) this.attempt++;
    this.connectSoon(atOnce ? Math.random() * 250 : this.backoff());
  }
}
