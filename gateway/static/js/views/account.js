// The account: who is logged in, password change, notifications, my reports and their
// outcome, export of my data, logout.
import { api } from "../api.js";
import { h, listen } from "../dom.js";
import { errorText, formatDateTime, N_, t } from "../i18n.js";
import { notificationButton } from "../notify.js";
import { exportPanel } from "./exports.js";

const ROLES = { admin: N_("role.admin"), staff: N_("role.staff"), guardian: N_("role.guardian") };
const FLAG_STATES = { open: N_("flag.state.open"), withdrawn: N_("flag.state.withdrawn"), dismissed: N_("flag.state.dismissed") };

// My reports of messages, the newest first, updated when staff decide (`report` events).
function myReports(ctx, cleanups) {
  const holder = h("div", { "aria-live": "polite" });
  const load = async () => {
    try {
      const { items } = await api("GET", "/api/reports");
      if (!items.length) return holder.replaceChildren(h("p", { class: "muted" }, t("flag.none")));
      holder.replaceChildren(
        h(
          "ul",
          { class: "my-reports" },
          items.map((r) =>
            h(
              "li",
              { dataset: { state: r.state } },
              h("q", null, r.reason),
              " — ",
              h("strong", null, t(FLAG_STATES[r.state])),
              h("span", { class: "muted" }, ` · ${formatDateTime(r.created_at)}`),
            ),
          ),
        ),
      );
    } catch (e) {
      holder.replaceChildren(h("p", { class: "error" }, errorText(e.code)));
    }
  };
  listen(ctx.live, "report", load, cleanups);
  load();
  return holder;
}

export function accountView(ctx) {
  const { me } = ctx;
  const field = (id, label, autocomplete) => [
    h("label", { for: id }, label),
    h("input", { id, type: "password", autocomplete, required: true }),
  ];
  const error = h("p", { class: "error", role: "alert" });
  const status = h("p", { role: "status" });
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "password-title" },
    h("h3", { id: "password-title" }, t("account.password")),
    field("password-old", t("account.old_password"), "current-password"),
    field("password-new", t("account.new_password"), "new-password"),
    h("p", { class: "muted", id: "password-rules" }, t("account.password_rules")),
    field("password-confirm", t("account.confirm_password"), "new-password"),
    h("button", { type: "submit", class: "primary" }, t("account.change_password")),
    error,
    status,
  );
  form.querySelector("#password-new").setAttribute("aria-describedby", "password-rules");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = (id) => form.querySelector(`#${id}`).value;
    error.textContent = "";
    status.textContent = "";
    if (value("password-new") !== value("password-confirm")) return (error.textContent = t("account.mismatch"));
    try {
      await api("POST", "/api/password", { old_password: value("password-old"), new_password: value("password-new") });
      form.reset();
      status.textContent = t("account.password_changed");
    } catch (e) {
      error.textContent = errorText(e.code);
    }
  });
  const cleanups = [];
  const exports = exportPanel(ctx, "me", null, t("export.mine"));
  cleanups.push(() => exports.destroy());
  return {
    destroy: () => cleanups.forEach((c) => c()),
    el: h(
      "section",
      { class: "page", "aria-labelledby": "account-title" },
      h("h2", { id: "account-title" }, t("account.title")),
      h(
        "div",
        { class: "card" },
        h("p", null, h("strong", null, me.user.name)),
        h("p", { class: "muted" }, me.user.email),
        h("ul", null, me.roles.map((r) => h("li", null, `${t(ROLES[r.role])} — ${r.structure}`))),
      ),
      form,
      h("div", { class: "card" }, h("h3", null, t("account.notifications")), notificationButton()),
      h("div", { class: "card" }, h("h3", null, t("flag.mine")), myReports(ctx, cleanups)),
      h("div", { class: "card" }, h("h3", null, t("export.title")), h("p", { class: "muted" }, t("export.explain")), exports.el),
      h("div", { class: "card" }, h("button", { type: "button", class: "danger", onclick: ctx.logout }, t("account.logout"))),
    ),
  };
}
