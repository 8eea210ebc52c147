// The audit log, newest first, a page at a time ("older entries" asks with `before`), and
// filtered by the beginning of the action ("family.", "consent.revoke"). The ids the
// entries hold are shown by name where the structure still knows them.
import { h } from "../../dom.js";
import { formatDateTime, N_, t } from "../../i18n.js";
import { feedback, FLAGS, heading, loading, personName } from "./common.js";

const PAGE = 50;

const ACTIONS = {
  "structure.update": N_("audit.structure.update"),
  "user.create": N_("audit.user.create"),
  "staff.add": N_("audit.staff.add"),
  "staff.remove": N_("audit.staff.remove"),
  "group.create": N_("audit.group.create"),
  "group.update": N_("audit.group.update"),
  "group.delete": N_("audit.group.delete"),
  "group.staff.set": N_("audit.group.staff.set"),
  "child.create": N_("audit.child.create"),
  "child.update": N_("audit.child.update"),
  "family.create": N_("audit.family.create"),
  "family.update": N_("audit.family.update"),
  "family.delete": N_("audit.family.delete"),
  "family.member.add": N_("audit.family.member.add"),
  "family.member.remove": N_("audit.family.member.remove"),
  "family.child.add": N_("audit.family.child.add"),
  "family.child.remove": N_("audit.family.child.remove"),
  "guardianship.set": N_("audit.guardianship.set"),
  "guardianship.remove": N_("audit.guardianship.remove"),
  "consent.grant": N_("audit.consent.grant"),
  "consent.revoke": N_("audit.consent.revoke"),
  "invitation.create": N_("audit.invitation.create"),
  "invitation.accept": N_("audit.invitation.accept"),
  "media.no_child_identifiable": N_("audit.media.no_child_identifiable"),
  "report.file": N_("audit.report.file"),
  "moderation.withdraw": N_("audit.moderation.withdraw"),
  "moderation.dismiss": N_("audit.moderation.dismiss"),
  "media.view": N_("audit.media.view"),
  "export.request": N_("audit.export.request"),
  "export.ready": N_("audit.export.ready"),
  "export.download": N_("audit.export.download"),
  "erasure.request": N_("audit.erasure.request"),
  "erasure.user": N_("audit.erasure.user"),
  "erasure.child": N_("audit.erasure.child"),
  "erasure.household": N_("audit.erasure.household"),
  "profile.update": N_("audit.profile.update"),
};

const FIELDS = {
  ...FLAGS,
  name: N_("admin.name"),
  email: N_("admin.email"),
  messages: N_("audit.field.messages"),
  media: N_("audit.field.media"),
  guardians_may_post: N_("admin.settings_may_post"),
  retention_months: N_("admin.settings_retention"),
  first_name: N_("admin.first_name"),
  last_name: N_("admin.last_name"),
  group_id: N_("admin.group"),
  group: N_("admin.group"),
  birth_date: N_("admin.birth_date"),
  enrolled_on: N_("admin.enrolled_on"),
  left_on: N_("admin.left_on"),
  role: N_("admin.role"),
  new_user: N_("audit.field.new_user"),
  user_id: N_("admin.person"),
  child_id: N_("admin.child"),
  added: N_("audit.field.added"),
  removed: N_("audit.field.removed"),
  members: N_("audit.field.members"),
  children: N_("admin.children"),
  groups_left: N_("audit.field.groups_left"),
  fields: N_("audit.field.fields"),
  channel: N_("audit.field.channel"),
  consent_id: N_("audit.field.consent_id"),
};

// Which kind of id each key of `details` holds.
const ID_KINDS = {
  user_id: "user",
  added: "user",
  removed: "user",
  members: "user",
  child_id: "child",
  children: "child",
  group_id: "group",
  group: "group",
  groups_left: "group",
};

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

export function auditSection(ctx, call) {
  const fb = feedback();
  const list = h("ol", { class: "audit", "aria-labelledby": "audit-list-title" });
  const more = h("button", { type: "button", class: "older", hidden: true }, t("audit.more"));
  const count = h("p", { class: "muted", role: "status" });
  const action = h("input", { id: "audit-action", type: "text", list: "audit-actions", autocomplete: "off", maxlength: 100 });
  const actions = h("datalist", { id: "audit-actions" }, Object.keys(ACTIONS).map((a) => h("option", { value: a })));
  const filter = h("button", { type: "submit", class: "primary" }, t("audit.filter"));
  const reset = h("button", { type: "button" }, t("audit.clear"));
  const form = h(
    "form",
    { class: "card", role: "search", "aria-label": t("audit.filter_label") },
    h(
      "div",
      { class: "row inline-form" },
      h(
        "div",
        { class: "field" },
        h("label", { for: "audit-action" }, t("audit.action")),
        action,
        h("p", { class: "muted hint", id: "audit-action-hint" }, t("audit.action_hint")),
      ),
      filter,
      reset,
    ),
    actions,
  );
  action.setAttribute("aria-describedby", "audit-action-hint");

  const names = { user: new Map(), child: new Map(), group: new Map(), family: new Map(), structure: new Map() };
  const namesLoaded = Promise.allSettled([
    call("GET").then((s) => names.structure.set(s.id, s.name)),
    call("GET", "/staff").then((staff) => staff.forEach((m) => names.user.set(m.id, personName(m)))),
    call("GET", "/groups").then((groups) => groups.forEach((g) => names.group.set(g.id, g.name))),
    call("GET", "/children").then((children) => children.forEach((c) => names.child.set(c.id, `${c.first_name} ${c.last_name}`))),
    call("GET", "/families").then((families) =>
      families.forEach((f) => {
        names.family.set(f.id, f.name);
        f.members.forEach((m) => names.user.set(m.id, personName(m)));
      }),
    ),
  ]);
  const nameOf = (kind, id) => names[kind]?.get(Number(id)) ?? `#${id}`;

  const value = (key, v) => {
    if (typeof v === "boolean") return v ? t("common.yes") : t("common.no");
    if (v === null || v === undefined) return "–";
    if (key === "fields" && Array.isArray(v)) return v.map((f) => (FIELDS[f] ? t(FIELDS[f]) : f)).join(", ");
    if (key === "role") return v === "admin" ? t("role.admin") : v === "staff" ? t("role.staff") : String(v);
    const kind = ID_KINDS[key];
    if (kind && Array.isArray(v)) return v.length ? v.map((id) => nameOf(kind, id)).join(", ") : "–";
    if (kind && (typeof v === "number" || typeof v === "string")) return nameOf(kind, v);
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  };
  const label = (key) => (FIELDS[key] ? t(FIELDS[key]) : key);
  const change = (key, from, to) => t("audit.change", { field: label(key), from: value(key, from), to: value(key, to) });
  const fact = (key, v) => t("audit.value", { field: label(key), value: value(key, v) });

  const describe = (details) => {
    if (!isObject(details)) return [];
    const lines = [];
    for (const [key, v] of Object.entries(details)) {
      if (key === "changes" && isObject(v)) {
        for (const [f, c] of Object.entries(v)) lines.push(change(f, c?.from, c?.to));
      } else if (key === "group" && isObject(v)) {
        lines.push(change("group", v.from, v.to));
      } else if (key === "from" && "to" in details) {
        if (isObject(v) && isObject(details.to)) {
          for (const f of new Set([...Object.keys(v), ...Object.keys(details.to)])) {
            if (v[f] !== details.to[f]) lines.push(change(f, v[f], details.to[f]));
          }
        } else if (!isObject(v)) {
          lines.push(change("name", v, details.to));
        }
      } else if (key === "to" && "from" in details) {
        // Shown with `from`.
      } else if (isObject(v)) {
        for (const [f, inner] of Object.entries(v)) lines.push(fact(f, inner));
      } else {
        lines.push(fact(key, v));
      }
    }
    return lines;
  };

  const subject = (entry) => {
    const kind = { user: "user", child: "child", group: "group", family: "family", structure: "structure" }[entry.subject_type];
    if (kind) return nameOf(kind, entry.subject_id);
    return `${entry.subject_type} ${entry.subject_id}`;
  };

  const render = (entry) =>
    h(
      "li",
      { class: "audit-entry" },
      h(
        "p",
        { class: "audit-head" },
        h("time", { datetime: entry.at }, formatDateTime(entry.at)),
        " ",
        h("strong", null, ACTIONS[entry.action] ? t(ACTIONS[entry.action]) : entry.action),
        " ",
        h("code", null, entry.action),
      ),
      h(
        "p",
        null,
        t("audit.line", { actor: entry.actor ? entry.actor.name : t("audit.system"), subject: subject(entry) }),
      ),
      (() => {
        const lines = describe(entry.details);
        return lines.length ? h("ul", { class: "audit-details" }, lines.map((line) => h("li", null, line))) : null;
      })(),
    );

  let shown = 0;
  let oldest = null;
  let prefix = "";
  const fetchPage = async (fresh) => {
    fb.clear();
    more.disabled = true;
    filter.disabled = true;
    if (fresh) {
      list.replaceChildren(h("li", null, loading()));
      shown = 0;
      oldest = null;
    }
    const params = new URLSearchParams({ limit: String(PAGE) });
    if (oldest !== null) params.set("before", String(oldest));
    if (prefix) params.set("action", prefix);
    try {
      const [entries] = await Promise.all([call("GET", `/audit?${params}`), namesLoaded]);
      if (fresh) list.replaceChildren();
      list.append(...entries.map(render));
      shown += entries.length;
      if (entries.length) oldest = entries[entries.length - 1].id;
      more.hidden = entries.length < PAGE;
      count.textContent = shown ? t("audit.count", { n: shown }) : t("audit.none");
      if (!fresh && entries.length) list.children[shown - entries.length]?.setAttribute("tabindex", "-1");
      if (!fresh && entries.length) list.children[shown - entries.length]?.focus();
    } catch (e) {
      if (fresh) list.replaceChildren();
      fb.fail(e);
    } finally {
      more.disabled = false;
      filter.disabled = false;
    }
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    prefix = action.value.trim();
    fetchPage(true);
  });
  reset.addEventListener("click", () => {
    action.value = "";
    prefix = "";
    fetchPage(true);
  });
  more.addEventListener("click", () => fetchPage(false));
  fetchPage(true);
  return {
    el: [heading(t("admin.audit")), form, h("h3", { id: "audit-list-title" }, t("audit.entries")), count, fb.el, list, more],
  };
}
