// Groups: create, rename (name_taken), delete (the children stay enrolled, without a
// group), and the staff who work in each (only staff or admins: not_staff).
import { h } from "../../dom.js";
import { t } from "../../i18n.js";
import { addPanel, feedback, field, heading, keeper, loading, redraw, textInput } from "./common.js";

export function groupsSection(ctx, call) {
  const keep = keeper();
  const listFb = feedback();
  const list = h("ul", { class: "admin-list", "aria-labelledby": "groups-list-title" }, h("li", null, loading()));
  let staff = [];

  const load = async () => {
    try {
      const [groups, members] = await Promise.all([call("GET", "/groups"), call("GET", "/staff")]);
      staff = members;
      redraw(list, groups.length ? groups.map(item) : [h("li", { class: "muted" }, t("admin.groups_none"))]);
    } catch (e) {
      listFb.fail(e);
    }
  };

  const item = (group) => {
    const fb = keep(`fb-${group.id}`, feedback);
    const titleId = `group-${group.id}`;

    const newName = textInput(`group-${group.id}-name`, group.name, { required: true });
    const rename = h("button", { type: "submit", id: `group-${group.id}-rename` }, t("admin.rename"));
    const renameForm = h(
      "form",
      { class: "row inline-form", "aria-label": t("admin.rename_of", { name: group.name }) },
      field(t("admin.new_name"), newName),
      rename,
    );
    renameForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (newName.value.trim() === group.name) return fb.ok(t("admin.unchanged"));
      if (await fb.run(rename, () => call("PATCH", `/groups/${group.id}`, { name: newName.value }), t("admin.renamed")))
        await load();
    });

    const boxes = staff.map((member) => {
      const id = `group-${group.id}-staff-${member.id}`;
      const box = h("input", { type: "checkbox", id, value: String(member.id), checked: group.staff.includes(member.id) });
      return h("li", { class: "check" }, box, h("label", { for: id }, member.name));
    });
    const saveStaff = h("button", { type: "submit", id: `group-${group.id}-save-staff` }, t("admin.groups_save_staff"));
    const staffForm = h(
      "form",
      { class: "group-staff" },
      h(
        "fieldset",
        null,
        h("legend", null, t("admin.groups_staff_of", { name: group.name })),
        boxes.length ? h("ul", { class: "checks" }, boxes) : h("p", { class: "muted" }, t("admin.staff_none")),
      ),
      h("div", { class: "row" }, saveStaff),
    );
    staffForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const ids = [...staffForm.querySelectorAll("input:checked")].map((box) => Number(box.value));
      if (await fb.run(saveStaff, () => call("PUT", `/groups/${group.id}/staff`, { user_ids: ids }), t("admin.saved")))
        await load();
    });

    const remove = h(
      "button",
      { type: "button", class: "danger", id: `group-${group.id}-delete`, "aria-label": t("admin.delete_of", { name: group.name }) },
      t("admin.delete"),
    );
    remove.addEventListener("click", async () => {
      if (!(await ctx.confirm(t("admin.groups_delete_confirm", { name: group.name }), t("admin.delete")))) return;
      if (await fb.run(remove, () => call("DELETE", `/groups/${group.id}`))) {
        listFb.ok(t("admin.groups_deleted", { name: group.name }));
        await load();
        document.getElementById("groups-list-title")?.focus();
      }
    });

    return h(
      "li",
      { class: "card" },
      h("h3", { id: titleId }, group.name),
      h("p", { class: "muted" }, t("admin.groups_children", { n: group.children.length })),
      renameForm,
      staffForm,
      h("div", { class: "row" }, remove),
      fb.el,
    );
  };

  // -- creating -------------------------------------------------------------------------
  const addFb = feedback();
  const name = textInput("group-new-name", "", { required: true });
  const create = h("button", { type: "submit", class: "primary" }, t("admin.create"));
  const form = h(
    "form",
    { class: "add-form", "aria-labelledby": "group-add-title" },
    h("div", { class: "row inline-form" }, field(t("admin.name"), name), create),
    addFb.el,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let group;
    if (!(await addFb.run(create, async () => (group = await call("POST", "/groups", { name: name.value }))))) return;
    addFb.ok(t("admin.groups_created", { name: group.name }));
    form.reset();
    await load();
  });

  load();
  return {
    el: [
      heading(t("admin.groups")),
      addPanel("group-add-title", t("admin.groups_add"), form),
      h("h3", { id: "groups-list-title", tabindex: "-1" }, t("admin.groups_list")),
      listFb.el,
      list,
    ],
  };
}
