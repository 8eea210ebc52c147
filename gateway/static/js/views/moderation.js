// The moderation queue (staff): one case per reported message, with every reason given,
// and two decisions — withdraw the message for everyone, or dismiss the reports. Each
// reporter is told the outcome by the server.
import { h, listen } from "../dom.js";
import { errorText, formatTime, t } from "../i18n.js";
import { messageContent } from "./message.js";

export function moderationView(ctx) {
  const { moderation } = ctx;
  const title = h("h2", { id: "moderation-title", tabindex: "-1" }, t("moderation.title"));
  if (!moderation) {
    return {
      el: h("section", { class: "page" }, title, h("p", { class: "notice", role: "alert" }, t("moderation.refused"))),
    };
  }
  const cleanups = [];
  const body = h("div");
  const paint = () => {
    if (moderation.error && !moderation.loaded) {
      return body.replaceChildren(h("p", { class: "error", role: "alert" }, errorText(moderation.error.code)));
    }
    if (!moderation.loaded) return body.replaceChildren(h("p", { class: "muted" }, t("common.loading")));
    if (!moderation.count) return body.replaceChildren(h("p", { class: "muted" }, t("moderation.empty")));
    body.replaceChildren(h("ul", { class: "admin-list" }, moderation.cases.map((c) => caseCard(ctx, c))));
  };
  listen(moderation, "change", paint, cleanups);
  paint();
  moderation.load();
  return {
    el: h(
      "section",
      { class: "page", "aria-labelledby": "moderation-title" },
      title,
      h("p", { class: "muted" }, t("moderation.explain")),
      body,
    ),
    destroy: () => cleanups.forEach((c) => c()),
  };
}

function caseCard(ctx, item) {
  const { moderation } = ctx;
  const message = item.message;
  const where = ctx.store.get(item.channel)?.title ?? item.channel;
  const headingId = `case-${item.message_id}`;
  const status = h("p", { class: "action-status", role: "status" });
  const decide = async (decision, buttons) => {
    buttons.forEach((b) => (b.disabled = true));
    status.textContent = "";
    try {
      await moderation.decide(item.message_id, decision);
      ctx.announce(t(decision === "withdraw" ? "moderation.withdrawn" : "moderation.dismissed"));
    } catch (e) {
      buttons.forEach((b) => (b.disabled = false));
      status.textContent = errorText(e.code);
    }
  };
  const withdraw = h(
    "button",
    { type: "button", class: "danger" },
    t(message?.withdrawn ? "moderation.confirm_withdrawal" : "moderation.withdraw"),
  );
  const dismiss = h("button", { type: "button" }, t("moderation.dismiss"));
  withdraw.addEventListener("click", async () => {
    if (!message?.withdrawn && !(await ctx.confirm(t("message.withdraw_confirm"), t("moderation.withdraw")))) return;
    decide("withdraw", [withdraw, dismiss]);
  });
  dismiss.addEventListener("click", () => decide("dismiss", [withdraw, dismiss]));
  return h(
    "li",
    { class: "card case", "aria-labelledby": headingId },
    h("h3", { id: headingId }, t("moderation.case", { count: item.reports.length, channel: where })),
    message
      ? h(
          "article",
          { class: `message kind-${message.body.kind}${message.withdrawn ? " withdrawn" : ""}` },
          ...messageContent(ctx, message),
        )
      : h("p", { class: "muted" }, t("moderation.message_gone")),
    h(
      "ul",
      { class: "reasons", "aria-label": t("moderation.reasons") },
      item.reports.map((r) =>
        h(
          "li",
          null,
          h("q", null, r.reason),
          " — ",
          r.reporter?.name ?? t("message.unknown_author"),
          ", ",
          h("time", { datetime: r.created_at }, formatTime(r.created_at)),
        ),
      ),
    ),
    h("div", { class: "actions" }, withdraw, dismiss),
    status,
  );
}
