// Staff side: the publication consent of every child of the structure (§1.4), kept fresh by
// the `consent` events of structure:<sid> (§5.5), so a compose screen enables or disables a
// child's tag without reloading.
import { api } from "./api.js";

export class Consents extends EventTarget {
  constructor(structureId, live) {
    super();
    this.sid = structureId;
    this.live = live;
    this.children = new Map(); // child id → consent summary
    this.circles = new Map(); // channel → child ids, or null when not knowable
    this.loaded = null;
    live.addEventListener("consent", (event) => this.refresh(event.detail.child.id, event.detail.complete));
    // Consents may have changed while the connection was away: read them again.
    let connectedBefore = false;
    live.addEventListener("state", (event) => {
      if (event.detail !== "online") return;
      if (connectedBefore) this.load(true);
      connectedBefore = true;
    });
  }

  load(force = false) {
    if (!this.loaded || force) {
      this.loaded = api("GET", `/api/structures/${this.sid}/consents`).then((list) => {
        this.children = new Map(list.map((s) => [s.child.id, s]));
        this.dispatchEvent(new CustomEvent("change", { detail: { all: true } }));
      });
      this.loaded.catch(() => (this.loaded = null));
    }
    return this.loaded;
  }

  async refresh(childId, complete) {
    const known = this.children.get(childId);
    if (known) known.complete = complete; // shown at once; the holders follow
    this.dispatchEvent(new CustomEvent("change", { detail: { child: childId } }));
    try {
      const summary = await api("GET", `/api/structures/${this.sid}/children/${childId}/consent`);
      this.children.set(childId, summary);
      this.dispatchEvent(new CustomEvent("change", { detail: { child: childId } }));
    } catch {
      // The event's `complete` stands until the next reload.
    }
  }

  name(childId) {
    return this.children.get(childId)?.child.name;
  }

  // The children a message of this channel may tag (protocol.md §4.4). Staff can read a
  // group's or a household's children only through the admin routes; without them the
  // whole structure is offered and the server refuses a child outside the channel.
  async circle(channel) {
    if (this.circles.has(channel)) return this.circles.get(channel);
    await this.load();
    const [kind, raw] = channel.split(":");
    const id = Number(raw);
    let ids = null;
    if (kind === "child") ids = [id];
    else if (kind === "structure") ids = [...this.children.keys()];
    else {
      try {
        const list = await api("GET", `/api/structures/${this.sid}/${kind === "group" ? "groups" : "families"}`);
        ids = list.find((x) => x.id === id)?.children ?? [];
      } catch {
        ids = null;
      }
    }
    this.circles.set(channel, ids);
    return ids;
  }
}
