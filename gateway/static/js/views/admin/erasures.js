// Erasure (protocol.md §1.7): the accounts whose owners asked for their erasure, the oldest
// request first, each erased for good after a confirmation. The outcome (messages and media
// erased) or the refusal (member_elsewhere, holds_parental_authority, last_admin) is shown.
// A child or a household is erased from its own page (children.js, households.js).
import { h } from "../../dom.js";
import { formatDateTime, t } from "../../i18n.js";
import { feedback, heading, keeper, loading, personName, redraw } from "./common.js";

export function erasuresSection(ctx, call) {
  const keep = keeper();
  const listFb = feedback();
  const list = h("ul", { class: "admin-list", "aria-labelledby": "erasures-list-title" }, h("li", null, loading()));

  const load = async () => {
    try {
      const { items } = await call("GET", "/erasure-requests");
      redraw(list, items.length ? items.map(item) : [h("li", { class: "muted" }, t("admin.erasures_none"))]);
    } catch (e) {
      listFb.fail(e);
    }
  };

  const item = ({ user, requested_at: requestedAt }) => {
    const fb = keep(`user-${user.id}`, feedback);
    const name = personName(user);
    const erase = h(
      "button",
      { type: "button", class: "danger", id: `erase-user-${user.id}`, "aria-label": t("admin.erase_account_of", { name }) },
      t("admin.erase_account"),
    );
    erase.addEventListener("click", async () => {
      if (!(await ctx.confirm(t("admin.erase_account_confirm", { name }), t("admin.erase_account")))) return;
      let erased;
      const done = await fb.run(erase, async () => {
        try {
          erased = await call("POST", "/erasures", { subject: "user", id: user.id });
        } catch (e) {
          // The generic last_admin text speaks of removing a role.
          throw e.code === "last_admin" ? t("admin.erase_last_admin") : e;
        }
      });
      if (!done) return;
      listFb.ok(t("admin.erased_account", { name, messages: erased.messages, media: erased.media }));
      await load();
      document.getElementById("erasures-list-title")?.focus();
    });
    return h(
      "li",
      { class: "card" },
      h("h3", null, name),
      h("p", { class: "muted" }, user.email),
      h("p", null, t("admin.erasures_requested", { date: formatDateTime(requestedAt) })),
      h("div", { class: "row" }, erase),
      fb.el,
    );
  };

  load();
  return {
    el: [
      heading(t("admin.erasures")),
      h("p", { class: "muted" }, t("admin.erasures_explain")),
      h("h3", { id: "erasures-list-title", tabindex: "-1" }, t("admin.erasures_list")),
      listFb.el,
      list,
    ],
  };
}
