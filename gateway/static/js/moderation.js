// Staff side: the structure's moderation queue (protocol.md §1.5), kept fresh by the
// `moderation` events of structure:<sid> (§5.5), so that the top bar counts the cases
// waiting and the queue screen changes as reports come in and colleagues decide.
import { api } from "./api.js";

export class Moderation extends EventTarget {
  constructor(structureId, live) {
    super();
    this.sid = structureId;
    this.cases = [];
    this.loaded = false;
    this.error = null;
    this.round = 0;
    live.addEventListener("moderation", () => this.load());
    // Reports may have come in while the connection was away: read the queue again.
    let connectedBefore = false;
    live.addEventListener("state", (event) => {
      if (event.detail !== "online") return;
      if (connectedBefore) this.load();
      connectedBefore = true;
    });
  }

  get count() {
    return this.cases.length;
  }

  async load() {
    const round = ++this.round;
    try {
      const reply = await api("GET", `/api/structures/${this.sid}/moderation`);
      if (round !== this.round) return; // a later load answers for the newer state
      this.cases = reply.items;
      this.loaded = true;
      this.error = null;
    } catch (e) {
      if (round !== this.round) return;
      this.error = e;
    }
    this.dispatchEvent(new CustomEvent("change"));
  }

  async decide(messageId, decision) {
    try {
      await api("POST", `/api/structures/${this.sid}/moderation/${messageId}`, { decision });
    } finally {
      // Decided by us or, on 404, by a colleague first: either way the queue changed.
      await this.load();
    }
  }
}
