// The channel list of /api/me, grouped by kind, with unread badges. Built once; a change
// only touches the badge of its channel, so keyboard focus in the list is never lost.
import { h, listen } from "../dom.js";
import { N_, t } from "../i18n.js";
import { GROUPS } from "../store.js";

const HEADINGS = {
  child: N_("channels.children"),
  family: N_("channels.households"),
  group: N_("channels.groups"),
  structure: N_("channels.structure"),
};

export function channelsView({ store }, current) {
  const nav = h("nav", { class: "channels", "aria-label": t("channels.label") });
  const badges = new Map();
  for (const kind of GROUPS) {
    const channels = [...store.channels.values()].filter((ch) => ch.kind === kind);
    if (!channels.length) continue;
    const id = `channels-${kind}`;
    const items = channels.map((ch) => {
      const badge = h("span", { class: "badge-slot" });
      badges.set(ch.name, badge);
      const link = h(
        "a",
        { href: `#/c/${ch.name}`, "aria-current": ch.name === current ? "page" : null },
        h("span", { class: "title" }, ch.title),
        badge,
      );
      return h("li", null, link);
    });
    nav.append(h("section", { "aria-labelledby": id }, h("h2", { id }, t(HEADINGS[kind])), h("ul", null, items)));
  }
  const paint = (name) => {
    const slot = badges.get(name);
    if (!slot) return;
    const unread = store.unread(name);
    slot.closest("a").classList.toggle("gone", store.get(name).gone);
    slot.replaceChildren(
      ...(unread
        ? [
            h(
              "span",
              { class: "badge" },
              h("span", { "aria-hidden": "true" }, unread > 99 ? "99+" : String(unread)),
              h("span", { class: "visually-hidden" }, t("channels.unread", { n: unread })),
            ),
          ]
        : []),
    );
  };
  badges.forEach((_, name) => paint(name));
  const cleanups = [];
  listen(store, "change", (event) => paint(event.detail.channel), cleanups);
  return { el: nav, destroy: () => cleanups.forEach((f) => f()) };
}
