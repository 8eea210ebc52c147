// The login form (protocol.md §1.2). The terms gate comes next when the server says so.
import { api, session } from "../api.js";
import { h } from "../dom.js";
import { errorText, t } from "../i18n.js";

export function loginView({ onLoggedIn, notice }) {
  const error = h("p", { class: "error", role: "alert", id: "login-error" }, notice ?? "");
  const email = h("input", { id: "login-email", name: "email", type: "email", autocomplete: "username", required: true });
  const password = h("input", {
    id: "login-password",
    name: "password",
    type: "password",
    autocomplete: "current-password",
    required: true,
  });
  const submit = h("button", { type: "submit", class: "primary" }, t("login.submit"));
  const form = h(
    "form",
    { class: "card narrow", "aria-labelledby": "login-title", "aria-describedby": "login-error" },
    h("h2", { id: "login-title" }, t("login.title")),
    h("p", { class: "muted" }, t("login.intro")),
    h("label", { for: "login-email" }, t("login.email")),
    email,
    h("label", { for: "login-password" }, t("login.password")),
    password,
    submit,
    error,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    error.textContent = "";
    try {
      const reply = await api("POST", "/api/login", { email: email.value, password: password.value });
      session.save(reply.token);
      await onLoggedIn(reply);
    } catch (e) {
      error.textContent = errorText(e.code);
      password.select();
    } finally {
      submit.disabled = false;
    }
  });
  queueMicrotask(() => email.focus());
  return { el: form };
}
