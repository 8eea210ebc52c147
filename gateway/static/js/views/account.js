// The account: who is logged in, my profile (name and email, protocol.md §1.2), password
// change, notifications, my reports and their outcome, export of my data, asking for the
// erasure of my account (§1.7), logout.
import { api } from "../api.js";
import { h, listen } from "../dom.js";
import { errorText, formatDateTime, N_, t } from "../i18n.js";
import { notificationButton } from "../notify.js";
import { feedback, field } from "./admin/common.js";
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

// Rectification of my name and email. The email is the login: changing it takes my
// password, whose field is shown (and required) only then. `shown`: the name and email
// written at the top of the page, kept true.
function profileCard(ctx, shown) {
  const { user } = ctx.me;
  const fb = feedback();
  const name = h("input", { id: "profile-name", type: "text", value: user.name, required: true, maxlength: 200, autocomplete: "name" });
  const email = h("input", { id: "profile-email", type: "email", value: user.email, required: true, maxlength: 254, autocomplete: "email" });
  const password = h("input", { id: "profile-password", type: "password", autocomplete: "current-password" });
  const passwordField = field(t("account.profile_password"), password, t("account.profile_password_hint"));
  const save = h("button", { type: "submit", class: "primary", id: "profile-save" }, t("account.profile_save"));
  const newEmail = () => email.value.trim().toLowerCase();
  const paintPassword = () => {
    const needed = newEmail() !== user.email;
    passwordField.hidden = !needed;
    password.required = needed;
    if (!needed) password.value = "";
  };
  email.addEventListener("input", paintPassword);
  paintPassword();
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "profile-title" },
    h("h3", { id: "profile-title" }, t("account.profile")),
    field(t("account.name"), name),
    field(t("account.email"), email, t("account.email_hint")),
    passwordField,
    h("div", { class: "row" }, save),
    fb.el,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {};
    if (name.value.trim() !== user.name) body.name = name.value.trim();
    if (newEmail() !== user.email) Object.assign(body, { email: email.value.trim(), password: password.value });
    if (!Object.keys(body).length) return fb.ok(t("admin.unchanged"));
    let reply;
    const done = await fb.run(save, async () => {
      try {
        reply = await api("PATCH", "/api/me", body);
      } catch (e) {
        // Here only the password can be wrong, not "the email or the password".
        throw e.code === "invalid_credentials" ? t("account.wrong_password") : e;
      }
    }, t("account.profile_saved"));
    if (!done) return;
    Object.assign(user, reply.user);
    name.value = user.name;
    email.value = user.email;
    paintPassword();
    shown.name.textContent = user.name;
    shown.email.textContent = user.email;
  });
  return form;
}

// Asking for the erasure of my account: the structure's admins confirm it (admin/erasures.js).
function erasureCard(ctx) {
  const fb = feedback();
  const state = h("div", null, h("p", { class: "muted" }, t("common.loading")));
  const ask = h("button", { type: "button", class: "danger", id: "erasure-request" }, t("account.erasure_request"));
  const asked = (at, focus = false) => {
    const note = h("p", { class: "notice", tabindex: "-1" }, t("account.erasure_requested", { date: formatDateTime(at) }));
    state.replaceChildren(note, h("p", { class: "muted" }, t("account.erasure_pending")));
    if (focus) note.focus();
  };
  ask.addEventListener("click", async () => {
    if (!(await ctx.confirm(t("account.erasure_confirm"), t("account.erasure_confirm_action")))) return;
    let reply;
    if (!(await fb.run(ask, async () => (reply = await api("POST", "/api/me/erasure"))))) return;
    asked(reply.requested_at, true);
    ctx.announce(t("account.erasure_requested", { date: formatDateTime(reply.requested_at) }));
  });
  api("GET", "/api/me/erasure").then(
    (reply) => (reply.requested_at ? asked(reply.requested_at) : state.replaceChildren(h("div", { class: "row" }, ask))),
    (e) => {
      state.replaceChildren(h("div", { class: "row" }, ask));
      fb.fail(e);
    },
  );
  return h(
    "section",
    { class: "card danger-zone", "aria-labelledby": "erasure-title" },
    h("h3", { id: "erasure-title" }, t("account.erasure")),
    h("p", null, t("account.erasure_explain")),
    h("p", { class: "muted" }, t("account.erasure_authority")),
    state,
    fb.el,
  );
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
  const shown = { name: h("strong", null, me.user.name), email: h("span", null, me.user.email) };
  return {
    destroy: () => cleanups.forEach((c) => c()),
    el: h(
      "section",
      { class: "page", "aria-labelledby": "account-title" },
      h("h2", { id: "account-title" }, t("account.title")),
      h(
        "div",
        { class: "card" },
        h("p", { class: "account-name" }, shown.name),
        h("p", { class: "muted account-email" }, shown.email),
        h("ul", null, me.roles.map((r) => h("li", null, `${t(ROLES[r.role])} — ${r.structure}`))),
      ),
      profileCard(ctx, shown),
      form,
      h("div", { class: "card" }, h("h3", null, t("account.notifications")), notificationButton()),
      h("div", { class: "card" }, h("h3", null, t("flag.mine")), myReports(ctx, cleanups)),
      h("div", { class: "card" }, h("h3", null, t("export.title")), h("p", { class: "muted" }, t("export.explain")), exports.el),
      erasureCard(ctx),
      h("div", { class: "card" }, h("button", { type: "button", class: "danger", onclick: ctx.logout }, t("account.logout"))),
    ),
  };
}
