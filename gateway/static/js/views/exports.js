// Exporting data (portability; docs/export.md): ask for an export, follow its progress live
// (`export` events on user:<id>), download the zip while its link is valid. The same panel
// serves a user's own data and, for admins, a child's, a household's or the structure's.
import { api } from "../api.js";
import { h, listen } from "../dom.js";
import { errorText, formatDateTime, N_, t } from "../i18n.js";

const STATES = {
  queued: N_("export.state.queued"),
  running: N_("export.state.running"),
  ready: N_("export.state.ready"),
  failed: N_("export.state.failed"),
  expired: N_("export.state.expired"),
};
const SHOWN = 3;

export function exportPanel(ctx, scope, subject = null, label = t("export.request")) {
  const cleanups = [];
  const list = h("ul", { class: "exports", "aria-label": t("export.list") });
  const error = h("p", { class: "error", role: "alert" });
  const button = h("button", { type: "button" }, label);
  let items = [];
  const ours = (x) => x.scope === scope && (x.subject ?? null) === subject;
  const paint = () => list.replaceChildren(...items.slice(0, SHOWN).map((x) => row(x, error)));
  // The list is the reference, read at the start, after a request and at each `export`
  // event: the worker records a state before telling it, so a read that follows the event
  // shows that state or a later one. Only the latest read is painted (answers may cross).
  let round = 0;
  const reload = async () => {
    const mine = ++round;
    try {
      const reply = await api("GET", "/api/exports");
      if (mine !== round) return;
      items = reply.items.filter(ours);
      paint();
    } catch (e) {
      error.textContent = errorText(e.code);
    }
  };
  const upsert = (x) => {
    items = [x, ...items.filter((y) => y.id !== x.id)].sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
    paint();
  };
  button.addEventListener("click", async () => {
    error.textContent = "";
    button.disabled = true;
    try {
      const body = subject === null ? { scope } : { scope, id: subject };
      upsert(await api("POST", "/api/exports", body));
      reload();
    } catch (e) {
      error.textContent = errorText(e.code);
    } finally {
      button.disabled = false;
    }
  });
  listen(
    ctx.live,
    "export",
    (event) => {
      const known = items.find((x) => x.id === event.detail.id);
      if (known) {
        // Shown at once; the list read next brings the size and the expiry.
        Object.assign(known, { state: event.detail.state, progress: event.detail.progress });
        paint();
      }
      reload();
    },
    cleanups,
  );
  reload();
  return { el: h("div", { class: "export-panel" }, button, list, error), destroy: () => cleanups.forEach((c) => c()) };
}

function row(x, error) {
  const parts = [h("span", null, t(STATES[x.state] ?? STATES.failed)), " "];
  if (x.state === "queued" || x.state === "running") {
    parts.push(h("progress", { max: "100", value: String(x.progress ?? 0), "aria-label": t("export.progress") }));
  }
  if (x.state === "ready") {
    // The link lives minutes: ask for a fresh one at the click.
    const download = h("button", { type: "button", class: "primary" }, t("export.download"));
    download.addEventListener("click", async () => {
      try {
        const fresh = await api("GET", `/api/exports/${x.id}`);
        if (!fresh.url) throw { code: "not_found" };
        location.assign(fresh.url);
      } catch (e) {
        error.textContent = errorText(e.code);
      }
    });
    parts.push(download);
    if (x.expires_at) parts.push(" ", h("span", { class: "muted" }, t("export.until", { at: formatDateTime(x.expires_at) })));
  }
  return h("li", { dataset: { state: x.state } }, h("span", { class: "muted" }, formatDateTime(x.created_at)), " · ", ...parts);
}
