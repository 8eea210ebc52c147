// Children's records, for staff and admins (protocol.md §1.4, permissions.md D1–D3):
//   #/records          the children of the structure, current ones first, those who left apart
//   #/records/<id>     one child's record: first name, last name and birth date corrected here;
//                      the group and enrolment dates shown, which an admin changes
// Staff of several structures choose the one they work on, as admins do (admin.js).
import { h } from "../dom.js";
import { formatDate, formatDay, t, today } from "../i18n.js";
import { backLink, dateInput, feedback, field, keeper, loading, redraw, structureApi, textInput } from "./admin/common.js";

const fullName = (child) => `${child.first_name} ${child.last_name}`;
const hasLeft = (child) => Boolean(child.left_on && child.left_on < today());

// The structures where the user is staff or admin, each once.
export function recordStructures(me) {
  const seen = new Map();
  for (const role of me.roles) {
    if (role.role !== "guardian" && !seen.has(role.structure_id)) seen.set(role.structure_id, role);
  }
  return [...seen.values()];
}

export function recordsView(ctx, childId = null) {
  const title = h("h2", { id: "records-title", tabindex: "-1" }, t("records.title"));
  document.title = `${t("records.title")} · procreche`;
  const structures = recordStructures(ctx.me);
  if (!structures.length) {
    return {
      el: h("section", { class: "page", "aria-labelledby": "records-title" }, title, h("p", { class: "notice", role: "alert" }, t("records.refused"))),
    };
  }
  if (!structures.some((s) => s.structure_id === ctx.recordsStructure)) ctx.recordsStructure = structures[0].structure_id;
  const sid = ctx.recordsStructure;
  const call = structureApi(sid);
  const isAdmin = ctx.me.roles.some((r) => r.role === "admin" && r.structure_id === sid);
  // Staff may not list the groups; /api/me names every group of their structures.
  const groupName = (id) =>
    id === null ? t("children.no_group") : (ctx.me.channels.find((c) => c.channel === `group:${id}`)?.title ?? `#${id}`);
  const content = childId === null ? list(call, title, groupName) : record(call, title, childId, groupName, isAdmin);
  return {
    el: h(
      "section",
      { class: "page wide records", "aria-labelledby": "records-title" },
      childId === null ? picker(ctx, structures) : backLink("#/records", t("records.title")),
      ...content,
    ),
  };
}

function picker(ctx, structures) {
  if (structures.length === 1) return h("p", { class: "muted structure-name" }, structures[0].structure);
  const choice = h(
    "select",
    { id: "records-structure" },
    structures.map((s) => h("option", { value: String(s.structure_id), selected: s.structure_id === ctx.recordsStructure }, s.structure)),
  );
  choice.addEventListener("change", () => {
    ctx.recordsStructure = Number(choice.value);
    window.dispatchEvent(new HashChangeEvent("hashchange"));
  });
  return h("div", { class: "field inline" }, h("label", { for: "records-structure" }, t("admin.structure")), choice);
}

function list(call, title, groupName) {
  const fb = feedback();
  const current = h("ul", { class: "table-like", "aria-labelledby": "records-current-title" }, h("li", null, loading()));
  const gone = h("ul", { class: "table-like", "aria-labelledby": "records-left-title" });
  const goneBlock = h("div", { hidden: true }, h("h3", { id: "records-left-title" }, t("admin.children_left")), gone);

  const item = (child) =>
    h(
      "li",
      { class: "child-row" },
      h("a", { href: `#/records/${child.id}`, class: "name" }, fullName(child)),
      h("span", { class: "group" }, groupName(child.group_id)),
      hasLeft(child)
        ? h("span", { class: "muted" }, t("admin.children_left_on", { date: formatDate(child.left_on) }))
        : h("span", { class: "muted" }, child.birth_date ? t("records.born", { date: formatDay(child.birth_date) }) : t("records.no_birth_date")),
    );

  (async () => {
    try {
      const children = await call("GET", "/children");
      const byName = (a, b) => fullName(a).localeCompare(fullName(b));
      const stillHere = children.filter((c) => !hasLeft(c)).sort(byName);
      const left = children.filter(hasLeft).sort(byName);
      redraw(current, stillHere.length ? stillHere.map(item) : [h("li", { class: "muted" }, t("admin.children_none"))]);
      redraw(gone, left.map(item));
      goneBlock.hidden = !left.length;
    } catch (e) {
      current.replaceChildren();
      fb.fail(e);
    }
  })();
  return [title, h("p", { class: "muted" }, t("records.explain")), h("h3", { id: "records-current-title" }, t("admin.children_list")), fb.el, current, goneBlock];
}

function record(call, title, childId, groupName, isAdmin) {
  const keep = keeper();
  const loadFb = feedback();
  const body = h("div", null, loading());
  title.textContent = t("common.loading");

  const load = async () => {
    try {
      const child = await call("GET", `/children/${childId}`);
      title.textContent = fullName(child);
      document.title = `${fullName(child)} · procreche`;
      redraw(body, [form(child), enrolment(child)]);
    } catch (e) {
      title.textContent = t("records.title");
      body.replaceChildren();
      loadFb.fail(e);
    }
  };

  // What staff correct: names and birth date. Only the fields changed are sent.
  const form = (child) => {
    const fb = keep("details", feedback);
    const first = textInput("record-first", child.first_name, { required: true, maxlength: 100 });
    const last = textInput("record-last", child.last_name, { required: true, maxlength: 100 });
    const birth = dateInput("record-birth", child.birth_date);
    const save = h("button", { type: "submit", class: "primary", id: "record-save" }, t("admin.save"));
    const el = h(
      "form",
      { class: "card", "aria-labelledby": "record-details-title" },
      h("h3", { id: "record-details-title" }, t("records.details")),
      h("div", { class: "fields" }, field(t("admin.first_name"), first), field(t("admin.last_name"), last), field(t("admin.birth_date"), birth)),
      h("div", { class: "row" }, save),
      fb.el,
    );
    el.addEventListener("submit", async (event) => {
      event.preventDefault();
      const now = { first_name: first.value.trim(), last_name: last.value.trim(), birth_date: birth.value || null };
      const changes = Object.fromEntries(Object.entries(now).filter(([key, value]) => value !== child[key]));
      if (!Object.keys(changes).length) return fb.ok(t("admin.unchanged"));
      if (await fb.run(save, () => call("PATCH", `/children/${childId}`, changes), t("admin.saved"))) await load();
    });
    return el;
  };

  // What only an admin changes, shown as text.
  const enrolment = (child) => {
    const day = (value) => (value ? formatDay(value) : t("records.none"));
    const fact = (label, value) => [h("dt", null, label), h("dd", null, value)];
    return h(
      "section",
      { class: "card", "aria-labelledby": "record-enrolment-title" },
      h("h3", { id: "record-enrolment-title" }, t("records.enrolment")),
      h(
        "dl",
        { class: "record-facts" },
        fact(t("admin.group"), groupName(child.group_id)),
        fact(t("admin.enrolled_on"), day(child.enrolled_on)),
        fact(t("admin.left_on"), day(child.left_on)),
      ),
      h("p", { class: "muted hint" }, t("records.admin_only")),
      isAdmin ? h("p", null, h("a", { href: `#/admin/children/${childId}` }, t("records.admin_link"))) : null,
    );
  };

  load();
  return [title, loadFb.el, body];
}
