// The account: who is logged in, password change, notifications, logout.
import { api } from "../api.js";
import { h } from "../dom.js";
import { errorText, N_, t } from "../i18n.js";
import { notificationButton } from "../notify.js";

const ROLES = { admin: N_("role.admin"), staff: N_("role.staff"), guardian: N_("role.guardian") };

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
  return {
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
      h("div", { class: "card" }, h("button", { type: "button", class: "danger", onclick: ctx.logout }, t("account.logout"))),
    ),
  };
}
