// What the administration screens share (protocol.md §1.4): the structure's API, the
// outcome of an action (an error in role=alert, a success in role=status), the outcome
// carried back to a list, form fields, the lists redrawn without losing keyboard focus, the
// invitation link, the danger card of an erasure, and the export card.
import { api } from "../../api.js";
import { h } from "../../dom.js";
import { errorText, formatDateTime, N_, t } from "../../i18n.js";
import { exportPanel } from "../exports.js";

export const ROLES = { admin: N_("role.admin"), staff: N_("role.staff"), guardian: N_("role.guardian") };
export const FLAGS = {
  parental_authority: N_("admin.flag.parental_authority"),
  consultation: N_("admin.flag.consultation"),
  may_post: N_("admin.flag.may_post"),
};

export function structureApi(sid) {
  const base = `/api/structures/${sid}`;
  return (method, path = "", body) => api(method, `${base}${path}`, body);
}

// The heading of a section: the target of focus when the route changes (app.js).
export function heading(text) {
  return h("h2", { id: "admin-title", tabindex: "-1" }, text);
}

export function backLink(href, text) {
  return h("p", { class: "back-link" }, h("a", { href }, h("span", { "aria-hidden": "true" }, "← "), text));
}

// An action's outcome next to its controls. `run` disables the button while the action
// runs, shows the error's translated code, or the success text; it says whether it worked.
export function feedback() {
  const error = h("p", { class: "error", role: "alert" });
  const status = h("p", { class: "action-status ok", role: "status" });
  const clear = () => {
    error.textContent = "";
    status.textContent = "";
  };
  const fail = (e) => {
    status.textContent = "";
    error.textContent = typeof e === "string" ? e : errorText(e.code);
  };
  const ok = (text) => {
    error.textContent = "";
    status.textContent = text;
  };
  const run = async (button, action, success) => {
    clear();
    if (button) button.disabled = true;
    try {
      const result = await action();
      if (success) ok(typeof success === "function" ? success(result) : success);
      return true;
    } catch (e) {
      fail(e);
      return false;
    } finally {
      if (button) button.disabled = false;
    }
  };
  return { el: [error, status], error, status, clear, fail, ok, run };
}

// After an action that ends a page (a deletion, an erasure), the list it goes back to says
// what happened: `leave` keeps the text on ctx and goes, `carried` shows it there once.
export function leave(ctx, hash, text) {
  ctx.carried = text;
  ctx.announce(text);
  location.hash = hash;
}

export function carried(ctx) {
  const text = ctx.carried;
  ctx.carried = null;
  return text ? h("p", { class: "action-status ok carried" }, text) : null;
}

// Erasure for good of a child or a household from its page (protocol.md §1.7): what it
// does, a confirmation, then back to the list, which says what was erased.
const ERASURE_TEXTS = {
  child: { hint: N_("admin.erase_child_hint"), confirm: N_("admin.erase_child_confirm"), done: N_("admin.erased_child") },
  household: {
    hint: N_("admin.erase_household_hint"),
    confirm: N_("admin.erase_household_confirm"),
    done: N_("admin.erased_household"),
  },
};

export function eraseCard(ctx, call, { subject, id, name, list, fb }) {
  const texts = ERASURE_TEXTS[subject];
  const erase = h("button", { type: "button", class: "danger", id: `${subject}-erase` }, t("admin.erase"));
  erase.addEventListener("click", async () => {
    if (!(await ctx.confirm(t(texts.confirm, { name }), t("admin.erase")))) return;
    let erased;
    if (await fb.run(erase, async () => (erased = await call("POST", "/erasures", { subject, id })))) {
      leave(ctx, list, t(texts.done, { name, messages: erased.messages, media: erased.media }));
    }
  });
  return h(
    "section",
    { class: "card danger-zone", "aria-labelledby": `${subject}-erase-title` },
    h("h3", { id: `${subject}-erase-title` }, t("admin.erase")),
    h("p", { class: "muted" }, t(texts.hint)),
    h("div", { class: "row" }, erase),
    fb.el,
  );
}

// One object per key for as long as the section lives: a list redrawn after a change keeps
// each row's messages and invitation link.
export function keeper() {
  const kept = new Map();
  return (key, make) => {
    if (!kept.has(key)) kept.set(key, make());
    return kept.get(key);
  };
}

// Redraw a container; the element that had focus (found again by its id) keeps it.
export function redraw(container, children) {
  const active = document.activeElement;
  const id = active && container.contains(active) ? active.id : null;
  container.replaceChildren(...children);
  if (id && document.activeElement !== document.getElementById(id)) document.getElementById(id)?.focus();
}

// A form to add something, folded away until wanted: the list comes first.
export function addPanel(id, title, form) {
  return h("details", { class: "card add-panel" }, h("summary", { id }, title), form);
}

export function field(label, input, hint) {
  const hintId = hint ? `${input.id}-hint` : null;
  if (hintId) input.setAttribute("aria-describedby", hintId);
  return h(
    "div",
    { class: "field" },
    h("label", { for: input.id }, label),
    input,
    hint ? h("p", { class: "muted hint", id: hintId }, hint) : null,
  );
}

export function checkbox(id, label, checked = false) {
  const input = h("input", { type: "checkbox", id, checked });
  return { input, el: h("div", { class: "check" }, input, h("label", { for: id }, label)) };
}

export function textInput(id, value = "", props = {}) {
  return h("input", { id, type: "text", value, maxlength: 200, autocomplete: "off", ...props });
}

export function dateInput(id, value = null, props = {}) {
  return h("input", { id, type: "date", value: value ?? "", ...props });
}

// A <select> of [value, label] pairs; `value` is the one selected.
export function select(id, options, value = "") {
  return h(
    "select",
    { id },
    options.map(([v, label]) => h("option", { value: String(v), selected: String(v) === String(value ?? "") }, label)),
  );
}

export function loading() {
  return h("p", { class: "muted" }, t("common.loading"));
}

export function personName(user) {
  return user.name || user.email;
}

// The link by which a member without a password sets it (§1.4): created on demand, shown
// in full with a copy button. An account that has a password answers already_active.
export function invitation(call, user) {
  const fb = feedback();
  const output = h("div", { class: "invitation", hidden: true });
  const button = h(
    "button",
    { type: "button", id: `invite-${user.id}`, "aria-label": t("admin.invite_for", { name: personName(user) }) },
    t("admin.invite"),
  );
  button.addEventListener("click", () =>
    fb.run(
      button,
      async () => {
        const reply = await call("POST", `/users/${user.id}/invitation`);
        show(location.origin + reply.link, reply.expires_at);
      },
      t("admin.invite_created"),
    ),
  );
  const show = (link, expires) => {
    const id = `invite-${user.id}-link`;
    const input = h("input", { id, type: "text", readonly: true, value: link, spellcheck: "false" });
    const copy = h("button", { type: "button", id: `invite-${user.id}-copy` }, t("admin.copy"));
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(link);
      } catch {
        // Plain http on a LAN has no clipboard API: the selection and the old command.
        input.select();
        if (!document.execCommand("copy")) return fb.fail(t("admin.copy_failed"));
      }
      fb.ok(t("admin.copied"));
    });
    output.replaceChildren(
      h("label", { for: id }, t("admin.invite_link", { name: personName(user) })),
      h("div", { class: "row copy-row" }, input, copy),
      h("p", { class: "muted" }, t("admin.invite_expires", { date: formatDateTime(expires), name: personName(user) })),
    );
    output.hidden = false;
    input.focus();
    input.select();
  };
  return { button, el: [output, fb.el] };
}

// The card that exports a subject's data (docs/export.md): {el, destroy}.
export function exportCard(ctx, scope, id, label, hint = null) {
  const panel = exportPanel(ctx, scope, id, label);
  const el = h("div", { class: "card" }, h("h3", null, t("admin.export")), hint ? h("p", { class: "muted" }, hint) : null, panel.el);
  return { el, destroy: panel.destroy };
}
