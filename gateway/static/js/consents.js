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
      // The summary of one child lacks its group and households: keep those of the list.
      this.children.set(childId, { ...this.children.get(childId), ...summary });
      this.dispatchEvent(new CustomEvent("change", { detail: { child: childId } }));
    } catch {
      // The event's `complete` stands until the next reload.
    }
  }

  name(childId) {
    return this.children.get(childId)?.child.name;
  }

  // The children a message of this channel may tag (protocol.md §4.4): the consent
  // summaries carry each child's group and households.
  async circle(channel) {
    await this.load();
    const [kind, raw] = channel.split(":");
    const id = Number(raw);
    const all = [...this.children.values()];
    if (kind === "child") return all.filter((s) => s.child.id === id).map((s) => s.child.id);
    if (kind === "group") return all.filter((s) => s.group_id === id).map((s) => s.child.id);
    if (kind === "family") return all.filter((s) => s.families?.includes(id)).map((s) => s.child.id);
    return all.map((s) => s.child.id);
  }
}
