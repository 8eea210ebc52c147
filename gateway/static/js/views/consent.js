// A child's publication consent (protocol.md §1.3): every holder's state, the declaration,
// and for a holder of parental authority, signing (after ticking the declaration) or
// revoking (after confirming).
import { api } from "../api.js";
import { h } from "../dom.js";
import { errorText, formatDateTime, t } from "../i18n.js";

export function consentView(ctx, childId) {
  const page = h("section", { class: "page", "aria-labelledby": "consent-title" });
  const mineChild = ctx.me.children.find((c) => c.id === childId);
  const holder = mineChild?.parental_authority === true;
  const status = h("p", { role: "status", class: "action-status" });
  const error = h("p", { class: "error", role: "alert" });

  const render = (state) => {
    const parts = [
      h("p", null, h("a", { href: "#/children" }, h("span", { "aria-hidden": "true" }, "← "), t("children.title"))),
      h("h2", { id: "consent-title" }, t("consent.title", { child: state.child.name })),
      h("p", { class: "muted" }, t("consent.structure", { structure: state.structure.name })),
      h("p", { class: `consent-summary ${state.complete ? "ok" : "missing"}` }, state.complete ? t("consent.complete") : t("consent.incomplete")),
      h("h3", null, t("consent.holders")),
      h(
        "ul",
        { class: "holders" },
        state.holders.map((holderState) =>
          h("li", null, holderState.consented
            ? t("consent.holder_yes", { name: holderState.name })
            : t("consent.holder_no", { name: holderState.name })),
        ),
      ),
    ];
    if (state.mine) {
      const revoke = h("button", { type: "button", class: "danger" }, t("consent.revoke"));
      revoke.addEventListener("click", async () => {
        if (!(await ctx.confirm(t("consent.revoke_confirm", { child: state.child.name }), t("consent.revoke")))) return;
        revoke.disabled = true;
        try {
          const next = await api("DELETE", `/api/children/${childId}/consent`);
          render(next);
          status.textContent = t("consent.revoked", { n: next.withdrawn });
        } catch (e) {
          revoke.disabled = false;
          error.textContent = errorText(e.code);
        }
      });
      parts.push(
        h("h3", null, t("consent.mine")),
        h("p", null, t("consent.signed_on", { date: formatDateTime(state.mine.granted_at) })),
        h("blockquote", { class: "declaration" }, state.mine.declaration),
        revoke,
      );
    } else if (holder) {
      const box = h("input", { type: "checkbox", id: "consent-declare", "aria-describedby": "consent-declaration" });
      const sign = h("button", { type: "submit", class: "primary", disabled: true }, t("consent.sign"));
      box.addEventListener("change", () => (sign.disabled = !box.checked));
      const form = h(
        "form",
        { class: "sign" },
        h("h3", null, t("consent.declaration")),
        h("blockquote", { class: "declaration", id: "consent-declaration" }, state.declaration),
        h("div", { class: "check" }, box, h("label", { for: "consent-declare" }, t("consent.declare"))),
        sign,
      );
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        if (!box.checked) return;
        sign.disabled = true;
        try {
          render(await api("POST", `/api/children/${childId}/consent`, { declare: true }));
          status.textContent = t("consent.signed");
        } catch (e) {
          sign.disabled = false;
          error.textContent = errorText(e.code);
        }
      });
      parts.push(form);
    } else {
      parts.push(h("p", { class: "notice" }, t("consent.not_holder")));
    }
    page.replaceChildren(...parts, status, error);
  };

  page.append(h("p", { class: "muted" }, t("common.loading")), error);
  api("GET", `/api/children/${childId}/consent`)
    .then(render)
    .catch((e) => (error.textContent = errorText(e.code)));
  return { el: page };
}
