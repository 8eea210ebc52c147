// The invitation page #/invite/<token> (protocol.md §1.2): whoever an admin invited chooses
// their first password here, without logging in. The reply opens a session, as a login
// does; the terms gate comes next. A link used, replaced or expired says so.
import { api, session } from "../api.js";
import { h } from "../dom.js";
import { errorText, t } from "../i18n.js";

export function inviteView({ token, onLoggedIn }) {
  const card = h(
    "section",
    { class: "card narrow", "aria-labelledby": "invite-title" },
    h("h2", { id: "invite-title", tabindex: "-1" }, t("invite.title")),
    h("p", { class: "muted" }, t("common.loading")),
  );
  const path = `/api/invitations/${encodeURIComponent(token)}`;

  const invalid = () => {
    card.replaceChildren(
      h("h2", { id: "invite-title", tabindex: "-1" }, t("invite.title")),
      h("p", { class: "notice", role: "alert" }, errorText("invitation_invalid")),
      h("p", null, h("a", { href: "#/", class: "button" }, t("invite.to_login"))),
    );
  };

  const failed = (e) => {
    if (e.code === "invitation_invalid" || e.status === 404) return invalid();
    const retry = h("button", { type: "button", onclick: () => location.reload() }, t("common.retry"));
    card.replaceChildren(h("h2", { id: "invite-title" }, t("invite.title")), h("p", { role: "alert", class: "error" }, errorText(e.code)), retry);
  };

  const render = (invitation) => {
    const error = h("p", { class: "error", role: "alert", id: "invite-error" });
    // The email, for the browser's password manager to store the new password with.
    const email = h("input", { id: "invite-email", type: "email", value: invitation.email, readonly: true, autocomplete: "username" });
    const password = h("input", { id: "invite-password", type: "password", autocomplete: "new-password", required: true, "aria-describedby": "invite-rules" });
    const confirm = h("input", { id: "invite-confirm", type: "password", autocomplete: "new-password", required: true });
    const submit = h("button", { type: "submit", class: "primary" }, t("invite.submit"));
    const form = h(
      "form",
      { "aria-describedby": "invite-error" },
      h("label", { for: "invite-email" }, t("login.email")),
      email,
      h("label", { for: "invite-password" }, t("account.new_password")),
      password,
      h("p", { class: "muted", id: "invite-rules" }, t("account.password_rules")),
      h("label", { for: "invite-confirm" }, t("account.confirm_password")),
      confirm,
      submit,
      error,
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.textContent = "";
      if (password.value !== confirm.value) return (error.textContent = t("account.mismatch"));
      submit.disabled = true;
      try {
        const reply = await api("POST", path, { password: password.value });
        // Someone else's session on this device ends: the new account takes over.
        if (session.token) await api("POST", "/api/logout").catch(() => {});
        session.save(reply.token);
        await onLoggedIn(reply);
      } catch (e) {
        if (e.code === "invitation_invalid") return invalid();
        error.textContent = errorText(e.code);
        password.select();
      } finally {
        submit.disabled = false;
      }
    });
    card.replaceChildren(
      h("h2", { id: "invite-title", tabindex: "-1" }, t("invite.welcome", { name: invitation.name })),
      h("p", null, t("invite.structure", { structure: invitation.structure })),
      h("p", { class: "muted" }, t("invite.intro")),
      form,
    );
    password.focus();
  };

  api("GET", path).then(render, failed);
  return { el: card };
}
