// Children: the list (group, publication consent; those who left apart), enrolling a child,
// and one child's page: details, households, guardians with their three rights (parental
// authority, consultation of the feed, writing to the nursery), publication consent, export
// and erasure for good (protocol.md §1.7).
import { h } from "../../dom.js";
import { formatDate, t, today } from "../../i18n.js";
import {
  addPanel,
  backLink,
  carried,
  checkbox,
  eraseCard as eraseCardOf,
  dateInput,
  exportCard,
  feedback,
  field,
  FLAGS,
  heading,
  keeper,
  loading,
  personName,
  redraw,
  select,
  textInput,
} from "./common.js";

const fullName = (child) => `${child.first_name} ${child.last_name}`;

export function consentText(summary) {
  if (!summary) return "";
  if (summary.complete) return t("consent.complete_short");
  const missing = summary.holders.filter((holder) => !holder.consented).map((holder) => holder.name);
  return missing.length ? t("consent.missing", { names: missing.join(", ") }) : t("consent.no_holder");
}

const groupOptions = (groups) => [["", t("children.no_group")], ...groups.map((g) => [g.id, g.name])];

export function childrenSection(ctx, call) {
  const listFb = feedback();
  const current = h("ul", { class: "admin-list table-like", "aria-labelledby": "children-list-title" }, h("li", null, loading()));
  const gone = h("ul", { class: "admin-list table-like", "aria-labelledby": "children-left-title" });
  const goneBlock = h("div", { hidden: true }, h("h3", { id: "children-left-title" }, t("admin.children_left")), gone);
  const groupSelect = h("div");
  let groups = [];

  const load = async () => {
    try {
      const [children, allGroups, consents] = await Promise.all([
        call("GET", "/children"),
        call("GET", "/groups"),
        call("GET", "/consents"),
      ]);
      groups = allGroups;
      paintGroupSelect();
      const summaries = new Map(consents.map((s) => [s.child.id, s]));
      const byName = (a, b) => fullName(a).localeCompare(fullName(b));
      const stillHere = children.filter((c) => !c.left_on || c.left_on >= today()).sort(byName);
      const left = children.filter((c) => c.left_on && c.left_on < today()).sort(byName);
      redraw(current, stillHere.length ? stillHere.map((c) => item(c, summaries.get(c.id))) : [h("li", { class: "muted" }, t("admin.children_none"))]);
      redraw(gone, left.map((c) => item(c, null)));
      goneBlock.hidden = !left.length;
    } catch (e) {
      listFb.fail(e);
    }
  };

  const item = (child, summary) => {
    const group = groups.find((g) => g.id === child.group_id);
    const consent = consentText(summary);
    return h(
      "li",
      { class: `child-row${summary && !summary.complete ? " blocked" : ""}` },
      h("a", { href: `#/admin/children/${child.id}`, class: "name" }, fullName(child)),
      h("span", { class: "group" }, group ? group.name : t("children.no_group")),
      child.left_on && child.left_on < today()
        ? h("span", { class: "muted" }, t("admin.children_left_on", { date: formatDate(child.left_on) }))
        : h("span", { class: `consent-state${summary?.complete ? "" : " missing"}` }, consent),
    );
  };

  // -- enrolling ------------------------------------------------------------------------
  const addFb = feedback();
  const first = textInput("child-new-first", "", { required: true, maxlength: 100 });
  const last = textInput("child-new-last", "", { required: true, maxlength: 100 });
  const birth = dateInput("child-new-birth");
  const enrolled = dateInput("child-new-enrolled", today(), { required: true });
  const paintGroupSelect = () => {
    const chosen = groupSelect.querySelector("select")?.value ?? "";
    groupSelect.replaceChildren(field(t("admin.group"), select("child-new-group", groupOptions(groups), chosen)));
  };
  paintGroupSelect();
  const create = h("button", { type: "submit", class: "primary" }, t("admin.children_enrol"));
  const form = h(
    "form",
    { class: "add-form", "aria-labelledby": "child-add-title" },
    h(
      "div",
      { class: "fields" },
      field(t("admin.first_name"), first),
      field(t("admin.last_name"), last),
      groupSelect,
      field(t("admin.birth_date"), birth),
      field(t("admin.enrolled_on"), enrolled),
    ),
    h("div", { class: "row" }, create),
    addFb.el,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const group = groupSelect.querySelector("select").value;
    const body = { first_name: first.value, last_name: last.value, enrolled_on: enrolled.value || null };
    if (group) body.group_id = Number(group);
    if (birth.value) body.birth_date = birth.value;
    let child;
    if (!(await addFb.run(create, async () => (child = await call("POST", "/children", body))))) return;
    addFb.ok(t("admin.children_created", { name: fullName(child) }));
    form.reset();
    enrolled.value = today();
    await load();
  });

  load();
  return {
    el: [
      heading(t("admin.children")),
      carried(ctx),
      addPanel("child-add-title", t("admin.children_add"), form),
      h("h3", { id: "children-list-title" }, t("admin.children_list")),
      listFb.el,
      current,
      goneBlock,
    ],
  };
}

export function childSection(ctx, call, childId) {
  const keep = keeper();
  const title = heading(t("common.loading"));
  const body = h("div", null, loading());
  const danger = h("div");
  const loadFb = feedback();

  const load = async () => {
    try {
      const [child, groups, families, consent] = await Promise.all([
        call("GET", `/children/${childId}`),
        call("GET", "/groups"),
        call("GET", "/families"),
        call("GET", `/children/${childId}/consent`),
      ]);
      title.textContent = fullName(child);
      document.title = `${fullName(child)} · procreche`;
      redraw(body, [details(child, groups), households(child), guardians(child, families), consentCard(consent)]);
      redraw(danger, [eraseCard(child)]);
    } catch (e) {
      title.textContent = t("admin.children");
      loadFb.fail(e);
      body.replaceChildren();
    }
  };

  const details = (child, groups) => {
    const fb = keep("details", feedback);
    const first = textInput("child-first", child.first_name, { required: true, maxlength: 100 });
    const last = textInput("child-last", child.last_name, { required: true, maxlength: 100 });
    const group = select("child-group", groupOptions(groups), child.group_id ?? "");
    const birth = dateInput("child-birth", child.birth_date);
    const enrolled = dateInput("child-enrolled", child.enrolled_on, { required: true });
    const left = dateInput("child-left", child.left_on);
    const save = h("button", { type: "submit", class: "primary", id: "child-save" }, t("admin.save"));
    const form = h(
      "form",
      { class: "card", "aria-labelledby": "child-details-title" },
      h("h3", { id: "child-details-title" }, t("admin.children_details")),
      h(
        "div",
        { class: "fields" },
        field(t("admin.first_name"), first),
        field(t("admin.last_name"), last),
        field(t("admin.group"), group),
        field(t("admin.birth_date"), birth),
        field(t("admin.enrolled_on"), enrolled),
        field(t("admin.left_on"), left, t("admin.left_on_hint")),
      ),
      h("div", { class: "row" }, save),
      fb.el,
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const now = {
        first_name: first.value.trim(),
        last_name: last.value.trim(),
        group_id: group.value ? Number(group.value) : null,
        birth_date: birth.value || null,
        enrolled_on: enrolled.value || null,
        left_on: left.value || null,
      };
      const changes = Object.fromEntries(Object.entries(now).filter(([key, value]) => value !== child[key]));
      if (!Object.keys(changes).length) return fb.ok(t("admin.unchanged"));
      if (await fb.run(save, () => call("PATCH", `/children/${childId}`, changes), t("admin.saved"))) await load();
    });
    return form;
  };

  const households = (child) =>
    h(
      "section",
      { class: "card", "aria-labelledby": "child-households-title" },
      h("h3", { id: "child-households-title" }, t("admin.households")),
      child.families.length
        ? h("ul", null, child.families.map((f) => h("li", null, h("a", { href: `#/admin/households/${f.id}` }, f.name))))
        : h("p", { class: "muted" }, t("admin.children_no_household")),
    );

  const guardians = (child, families) => {
    const rows = child.guardians.map((g) => guardianForm(child, g));
    // Who may become a guardian: people with the guardian role, known through households
    // (the child's own first).
    const mine = new Set(child.families.map((f) => f.id));
    const candidates = new Map();
    for (const family of [...families].sort((a, b) => mine.has(b.id) - mine.has(a.id))) {
      for (const member of family.members) {
        if (!child.guardians.some((g) => g.id === member.id) && !candidates.has(member.id)) {
          candidates.set(member.id, `${personName(member)} (${family.name})`);
        }
      }
    }
    return h(
      "section",
      { class: "card", "aria-labelledby": "child-guardians-title" },
      h("h3", { id: "child-guardians-title" }, t("admin.guardians")),
      rows.length ? h("ul", { class: "guardians" }, rows) : h("p", { class: "muted" }, t("admin.guardians_none")),
      addGuardian(candidates),
    );
  };

  const flagBoxes = (prefix, values) =>
    Object.entries(FLAGS).map(([flag, label]) => ({ flag, ...checkbox(`${prefix}-${flag}`, t(label), values[flag]) }));

  const guardianForm = (child, guardian) => {
    const fb = keep(`guardian-${guardian.id}`, feedback);
    const prefix = `guardian-${guardian.id}`;
    const boxes = flagBoxes(prefix, guardian);
    const save = h("button", { type: "submit", id: `${prefix}-save` }, t("admin.save"));
    const remove = h(
      "button",
      { type: "button", class: "danger", id: `${prefix}-remove`, "aria-label": t("admin.guardians_remove_of", { name: guardian.name }) },
      t("admin.remove"),
    );
    const form = h(
      "form",
      { "aria-label": t("admin.guardians_rights_of", { name: guardian.name }) },
      h("fieldset", null, h("legend", null, guardian.name), boxes.map((b) => b.el)),
      h("div", { class: "row" }, save, remove),
      fb.el,
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const flags = Object.fromEntries(boxes.map((b) => [b.flag, b.input.checked]));
      if (await fb.run(save, () => call("PUT", `/children/${childId}/guardians/${guardian.id}`, flags), t("admin.saved")))
        await load();
    });
    remove.addEventListener("click", async () => {
      const message = t("admin.guardians_remove_confirm", { name: guardian.name, child: fullName(child) });
      if (!(await ctx.confirm(message, t("admin.remove")))) return;
      if (await fb.run(remove, () => call("DELETE", `/children/${childId}/guardians/${guardian.id}`))) {
        keep("guardians-add", feedback).ok(t("admin.guardians_removed", { name: guardian.name }));
        await load();
        document.getElementById("child-guardians-title")?.focus();
      }
    });
    return h("li", null, form);
  };

  const addGuardian = (candidates) => {
    const fb = keep("guardians-add", feedback);
    if (!candidates.size) return h("div", null, h("p", { class: "muted hint" }, t("admin.guardians_no_candidate")), fb.el);
    const who = select("guardian-new", [...candidates]);
    const boxes = flagBoxes("guardian-new", { parental_authority: false, consultation: true, may_post: true });
    const add = h("button", { type: "submit", class: "primary", id: "guardian-new-add" }, t("admin.add"));
    const form = h(
      "form",
      { class: "add-guardian", "aria-labelledby": "guardian-add-title" },
      h("h4", { id: "guardian-add-title" }, t("admin.guardians_add")),
      field(t("admin.person"), who, t("admin.guardians_add_hint")),
      h("fieldset", null, h("legend", null, t("admin.rights")), boxes.map((b) => b.el)),
      h("div", { class: "row" }, add),
      fb.el,
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const flags = Object.fromEntries(boxes.map((b) => [b.flag, b.input.checked]));
      const name = candidates.get(Number(who.value));
      const done = await fb.run(add, () => call("PUT", `/children/${childId}/guardians/${who.value}`, flags));
      if (done) {
        fb.ok(t("admin.guardians_added", { name }));
        await load();
      }
    });
    return form;
  };

  const consentCard = (consent) =>
    h(
      "section",
      { class: "card", "aria-labelledby": "child-consent-title" },
      h("h3", { id: "child-consent-title" }, t("children.consent")),
      h("p", { class: `consent-summary ${consent.complete ? "ok" : "missing"}` }, consent.complete ? t("consent.complete") : t("consent.incomplete")),
      consent.holders.length
        ? h(
            "ul",
            { class: "holders" },
            consent.holders.map((holder) =>
              h("li", null, holder.consented ? t("consent.holder_yes", { name: holder.name }) : t("consent.holder_no", { name: holder.name })),
            ),
          )
        : h("p", { class: "muted" }, t("consent.no_holder")),
    );

  // Erasure for good: the child's record, feed, messages about them and media (§1.7).
  const eraseCard = (child) =>
    eraseCardOf(ctx, call, { subject: "child", id: childId, name: fullName(child), list: "#/admin/children", fb: keep("erase", feedback) });

  load();
  const exporting = exportCard(ctx, "child", childId, t("admin.export_child"));
  return {
    el: [backLink("#/admin/children", t("admin.children")), title, loadFb.el, body, exporting.el, danger],
    destroy: exporting.destroy,
  };
}
