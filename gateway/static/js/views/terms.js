// The terms gate: nothing else works until the current version is accepted (§1.2).
import { api } from "../api.js";
import { h } from "../dom.js";
import { errorText, t } from "../i18n.js";

export function termsView({ onAccepted, onLogout }) {
  const text = h("div", { class: "terms-text", tabindex: "0", "aria-labelledby": "terms-title" }, t("common.loading"));
  const error = h("p", { class: "error", role: "alert" });
  const accept = h("button", { type: "submit", class: "primary", disabled: true }, t("terms.accept"));
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "terms-title" },
    h("h2", { id: "terms-title" }, t("terms.title")),
    h("p", { class: "muted" }, t("terms.intro")),
    text,
    h("div", { class: "row" }, accept, h("button", { type: "button", onclick: onLogout }, t("account.logout"))),
    error,
  );
  let version = null;
  api("GET", "/api/terms")
    .then((terms) => {
      version = terms.version;
      text.textContent = terms.text;
      accept.disabled = false;
    })
    .catch((e) => (error.textContent = errorText(e.code)));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    accept.disabled = true;
    try {
      await api("POST", "/api/terms/accept", { version });
      await onAccepted();
    } catch (e) {
      error.textContent = errorText(e.code);
      accept.disabled = false;
    }
  });
  return { el: form };
}
