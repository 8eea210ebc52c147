// What the app knows of each channel: its messages (by id, ordered by seq), head, read
// positions (ours and, in households, the others'), who is typing. Fed by the live client
// and by `history`; views listen to "change" ({channel}).

const HISTORY_PAGE = 50;
const TYPING_MS = 6000;
export const GROUPS = ["child", "family", "group", "structure"];

export class Store extends EventTarget {
  constructor(me, live) {
    super();
    this.me = me;
    this.live = live;
    this.open = null; // the channel shown in the conversation view
    this.staffOf = new Set(me.roles.filter((r) => r.role !== "guardian").map((r) => r.structure_id));
    this.channels = new Map();
    for (const { channel, title } of me.channels) {
      const [kind, id] = channel.split(":");
      if (!GROUPS.includes(kind)) continue; // user:<id> carries server notices, not a conversation
      this.channels.set(channel, {
        name: channel,
        title,
        kind,
        id: Number(id),
        messages: new Map(),
        head: 0,
        baseline: null, // the head when the session first saw the channel
        readPos: null, // our read position, as the server tells it on subscribe
        acked: 0, // announcements acknowledged in this session, before the server confirms
        loaded: false,
        loading: null,
        more: false,
        gap: false,
        gone: false,
        positions: new Map(), // others' read positions: user id → {name, seq}
        typing: new Map(),
      });
    }
    const on = (type, handler) => live.addEventListener(type, (event) => handler(event.detail));
    on("subscribed", (d) => this.subscribed(d));
    on("message", (m) => this.add(m, true));
    on("withdrawn", (f) => this.withdrawn(f));
    on("reset", (d) => this.reset(d.channel));
    on("gap", (d) => this.update(d.channel, (ch) => (ch.gap = true)));
    on("unsubscribed", (d) => this.update(d.channel, (ch) => (ch.gone = true)));
    on("read", (f) => this.read(f));
    on("typing", (f) => this.typing(f));
  }

  get isStaff() {
    return this.staffOf.size > 0;
  }

  watchAll() {
    for (const name of this.channels.keys()) this.live.watch(name).catch(() => {});
  }

  get(name) {
    return this.channels.get(name);
  }

  list(name) {
    const ch = this.channels.get(name);
    return ch ? [...ch.messages.values()].sort((a, b) => a.seq - b.seq) : [];
  }

  changed(channel, detail = {}) {
    this.dispatchEvent(new CustomEvent("change", { detail: { channel, ...detail } }));
  }

  update(name, fn) {
    const ch = this.channels.get(name);
    if (!ch) return;
    fn(ch);
    this.changed(name);
  }

  subscribed({ channel, head, fresh, read }) {
    const ch = this.channels.get(channel);
    if (!ch) return;
    ch.head = Math.max(ch.head, head);
    // The server tells each subscriber its own read position (protocol.md §4.2).
    if (read !== undefined) ch.readPos = Math.max(ch.readPos ?? 0, read);
    if (!fresh) return;
    if (ch.baseline === null) {
      ch.baseline = head;
      if (ch.kind === "family") this.loadReceipts(ch);
      // What arrived since our last visit is fetched now, to be counted and shown.
      if ((ch.readPos ?? head) < head && !ch.loaded) this.loadHistory(channel);
    }
    if (this.open === channel && !ch.loaded) this.loadHistory(channel);
    this.changed(channel);
  }

  add(message, live = false) {
    const ch = this.channels.get(message.channel);
    if (!ch) return;
    ch.messages.set(message.id, message);
    ch.head = Math.max(ch.head, message.seq);
    this.changed(message.channel, live ? { message } : {});
  }

  withdrawn({ channel, id }) {
    const ch = this.channels.get(channel);
    if (!ch?.messages.has(id)) return;
    // Families no longer see it; staff keep it, marked (protocol.md §5.2).
    if (this.staffOf.size) ch.messages.get(id).withdrawn = true;
    else ch.messages.delete(id);
    this.changed(channel);
  }

  reset(name) {
    this.update(name, (ch) => {
      ch.messages.clear();
      ch.loaded = false;
      ch.more = false;
    });
  }

  read({ channel, user, seq }) {
    this.update(channel, (ch) => {
      if (user.id === this.me.user.id) ch.readPos = Math.max(ch.readPos ?? 0, seq);
      else ch.positions.set(user.id, { name: user.name, seq: Math.max(seq, ch.positions.get(user.id)?.seq ?? 0) });
    });
  }

  typing({ channel, user }) {
    if (user.id === this.me.user.id) return;
    this.update(channel, (ch) => ch.typing.set(user.id, { name: user.name, until: Date.now() + TYPING_MS }));
    setTimeout(() => this.changed(channel), TYPING_MS + 50);
  }

  async loadReceipts(ch) {
    try {
      const reply = await this.live.request("receipts", { channel: ch.name });
      for (const { user, seq } of reply.receipts) this.read({ channel: ch.name, user, seq });
    } catch {
      // Without positions the badge counts what arrives live only.
    }
  }

  // The newest page on first opening, then older pages on demand (§4.5).
  loadHistory(name, older = false) {
    const ch = this.channels.get(name);
    if (!ch) return Promise.resolve();
    ch.loading ??= (async () => {
      try {
        await this.live.watch(name); // the head is known once subscribed
        const seqs = [...ch.messages.values()].map((m) => m.seq);
        const before = older && seqs.length ? Math.min(...seqs) : ch.head + 1;
        if (before <= 1) {
          ch.more = false;
        } else {
          const reply = await this.live.request("history", { channel: name, before, limit: HISTORY_PAGE });
          for (const message of reply.messages) if (!ch.messages.has(message.id)) ch.messages.set(message.id, message);
          ch.more = reply.more;
        }
        ch.loaded = true;
      } catch {
        // Shown as it is; opening the channel again retries.
      } finally {
        ch.loading = null;
        this.changed(name);
      }
    })();
    return ch.loading;
  }

  mine(message) {
    return message.author.id === this.me.user.id;
  }

  unread(name) {
    const ch = this.channels.get(name);
    if (!ch) return 0;
    const from = ch.readPos ?? ch.baseline ?? Infinity;
    let count = 0;
    for (const m of ch.messages.values()) if (m.seq > from && !this.mine(m) && !m.withdrawn) count++;
    return count;
  }

  // Guardians acknowledge announcements explicitly: reading the channel does not move the
  // position past one they have not acknowledged, so staff's "who has read" stays true.
  readLimit(ch) {
    if (this.isStaff || (ch.kind !== "group" && ch.kind !== "structure")) return Infinity;
    const pending = this.list(ch.name).filter((m) => m.body.kind === "announcement" && m.seq > this.ackedUpTo(ch));
    return pending.length ? pending[0].seq - 1 : Infinity;
  }

  ackedUpTo(ch) {
    return Math.max(ch.acked, ch.readPos ?? 0);
  }

  markRead(name, upTo = Infinity) {
    const ch = this.channels.get(name);
    if (!ch) return;
    const seqs = this.list(name).map((m) => m.seq);
    if (!seqs.length) return;
    const seq = Math.min(Math.max(...seqs), upTo, this.readLimit(ch));
    if (seq < 1 || seq <= (ch.readPos ?? 0)) return;
    ch.readPos = seq;
    this.live.request("read", { channel: name, seq }).catch(() => {});
    this.changed(name);
  }

  acknowledge(name, seq) {
    const ch = this.channels.get(name);
    if (!ch) return Promise.resolve();
    ch.acked = Math.max(ch.acked, seq);
    ch.readPos = Math.max(ch.readPos ?? 0, seq);
    this.changed(name);
    return this.live.request("read", { channel: name, seq });
  }
}
