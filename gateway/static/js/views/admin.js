// Administration of a structure, for its admins only (protocol.md §1.4):
//   #/admin/settings            name, guardians may post, retention
//   #/admin/staff               staff and admins, invitation links
//   #/admin/groups              groups and their staff
//   #/admin/children[/<id>]     children; one child: details, guardians and their rights
//   #/admin/households[/<id>]   households; one household: members, children
//   #/admin/erasures            erasure requests of accounts, erased on confirmation
//   #/admin/audit               the audit log
// Anyone else gets a refusal (the server would answer 403 anyway).
import { h } from "../dom.js";
import { N_, t } from "../i18n.js";
import { auditSection } from "./admin/audit.js";
import { childSection, childrenSection } from "./admin/children.js";
import { structureApi } from "./admin/common.js";
import { erasuresSection } from "./admin/erasures.js";
import { groupsSection } from "./admin/groups.js";
import { householdSection, householdsSection } from "./admin/households.js";
import { settingsSection } from "./admin/settings.js";
import { staffSection } from "./admin/staff.js";

const SECTIONS = [
  { name: "settings", label: N_("admin.settings"), list: settingsSection },
  { name: "staff", label: N_("admin.staff"), list: staffSection },
  { name: "groups", label: N_("admin.groups"), list: groupsSection },
  { name: "children", label: N_("admin.children"), list: childrenSection, one: childSection },
  { name: "households", label: N_("admin.households"), list: householdsSection, one: householdSection },
  { name: "erasures", label: N_("admin.erasures"), list: erasuresSection },
  { name: "audit", label: N_("admin.audit"), list: auditSection },
];

export function adminStructures(me) {
  return me.roles.filter((r) => r.role === "admin");
}

export function adminView(ctx, path) {
  const structures = adminStructures(ctx.me);
  if (!structures.length) {
    return {
      el: h(
        "section",
        { class: "page", "aria-labelledby": "admin-title" },
        h("h2", { id: "admin-title", tabindex: "-1" }, t("admin.title")),
        h("p", { class: "notice", role: "alert" }, t("admin.refused")),
      ),
    };
  }
  if (!structures.some((s) => s.structure_id === ctx.adminStructure)) ctx.adminStructure = structures[0].structure_id;
  const structure = structures.find((s) => s.structure_id === ctx.adminStructure);
  const [name, id] = path.split("/");
  const section = SECTIONS.find((s) => s.name === (name || "settings"));
  const nav = h(
    "nav",
    { class: "admin-nav", "aria-label": t("admin.sections") },
    h(
      "ul",
      null,
      SECTIONS.map((s) =>
        h("li", null, h("a", { href: `#/admin/${s.name}`, "aria-current": s === section ? "page" : null }, t(s.label))),
      ),
    ),
  );
  const call = structureApi(structure.structure_id);
  let view;
  if (!section || (id !== undefined && !(section.one && /^\d+$/.test(id)))) {
    view = { el: h("p", { class: "notice", role: "alert" }, t("admin.not_found")) };
  } else {
    view = id === undefined ? section.list(ctx, call) : section.one(ctx, call, Number(id));
  }
  document.title = `${t("admin.title")} · procreche`;
  return {
    el: h(
      "section",
      { class: "page wide admin" },
      h("div", { class: "admin-header" }, h("p", { class: "kicker" }, t("admin.title")), picker(ctx, structures)),
      nav,
      view.el,
    ),
    destroy: () => view.destroy?.(),
  };
}

// Admins of several structures choose the one they work on.
function picker(ctx, structures) {
  if (structures.length === 1) return h("p", { class: "muted structure-name" }, structures[0].structure);
  const choice = h(
    "select",
    { id: "admin-structure" },
    structures.map((s) =>
      h("option", { value: String(s.structure_id), selected: s.structure_id === ctx.adminStructure }, s.structure),
    ),
  );
  choice.addEventListener("change", () => {
    ctx.adminStructure = Number(choice.value);
    if (location.hash === "#/admin/settings") window.dispatchEvent(new HashChangeEvent("hashchange"));
    else location.hash = "#/admin/settings";
  });
  return h("div", { class: "field inline" }, h("label", { for: "admin-structure" }, t("admin.structure")), choice);
}
