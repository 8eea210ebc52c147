// Maintenance mode (protocol.md §1.2, §5.4): the operator's message in a banner under the
// top bar while it lasts, found by an API answer `503 maintenance` or a `reconnect` frame
// carrying it; the state is asked every RETRY seconds and, once it is over, `onEnd` brings
// the app back (the live connection resumes from its last seq: nothing is missed).
import { api } from "./api.js";
import { h } from "./dom.js";
import { t } from "./i18n.js";

const RETRY = 30000;

export class MaintenanceBanner {
  constructor(anchor, onEnd) {
    this.onEnd = onEnd;
    this.text = h("span");
    this.el = h("div", { class: "notice maintenance", role: "alert", hidden: true }, h("strong", null, t("maintenance.title")), " ", this.text);
    anchor.after(this.el);
    this.timer = null;
  }

  show(message) {
    this.text.textContent = message || "";
    this.el.hidden = false;
    if (this.timer === null) this.timer = setTimeout(() => this.check(), RETRY);
  }

  async check() {
    this.timer = null;
    let state;
    try {
      state = await api("GET", "/api/maintenance");
    } catch {
      state = { active: true, message: this.text.textContent }; // unreachable: ask again later
    }
    if (state.active) return this.show(state.message);
    this.over();
  }

  // Also when the live connection got through again: it is over.
  over() {
    if (this.el.hidden) return;
    clearTimeout(this.timer);
    this.timer = null;
    this.el.hidden = true;
    this.onEnd();
  }
}
