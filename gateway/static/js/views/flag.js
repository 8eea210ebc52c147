// Reporting a message to the structure's staff, with a reason (protocol.md §1.5). The
// outcome reaches the reporter later, live (`report` event) and in their account page.
import { api } from "../api.js";
import { h } from "../dom.js";
import { errorText, t } from "../i18n.js";

const MAX_REASON = 2000;

export function flagButton(message, status) {
  const button = h("button", { type: "button" }, t("flag.action"));
  button.addEventListener("click", async () => {
    if (await flagDialog(message)) {
      status.textContent = t("flag.sent");
      button.disabled = true;
    }
  });
  return button;
}

// Resolves true once the report is filed, false if the user gave up.
function flagDialog(message) {
  return new Promise((resolve) => {
    const reason = h("textarea", { id: "flag-reason", required: true, maxlength: MAX_REASON, rows: 4 });
    const error = h("p", { class: "error", role: "alert" });
    const send = h("button", { type: "submit", class: "primary" }, t("flag.send"));
    const cancel = h("button", { type: "button" }, t("common.cancel"));
    // Our own message for an empty reason, rather than the browser's bubble.
    const form = h(
      "form",
      { novalidate: true },
      h("h3", { id: "flag-title" }, t("flag.title")),
      h("p", { class: "muted", id: "flag-explain" }, t("flag.explain")),
      h("label", { for: "flag-reason" }, t("flag.reason")),
      reason,
      error,
      h("div", { class: "row" }, send, cancel),
    );
    reason.setAttribute("aria-describedby", "flag-explain");
    const dialog = h("dialog", { class: "confirm", "aria-labelledby": "flag-title" }, form);
    let filed = false;
    const opener = document.activeElement;
    cancel.addEventListener("click", () => dialog.close());
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.textContent = "";
      if (!reason.value.trim()) return (error.textContent = t("flag.reason_required"));
      send.disabled = true;
      try {
        await api("POST", "/api/reports", { channel: message.channel, id: message.id, reason: reason.value });
        filed = true;
        dialog.close();
      } catch (e) {
        send.disabled = false;
        error.textContent = errorText(e.code);
      }
    });
    dialog.addEventListener("close", () => {
      dialog.remove();
      opener?.focus?.();
      resolve(filed);
    });
    document.body.append(dialog);
    dialog.showModal();
    reason.focus();
  });
}
