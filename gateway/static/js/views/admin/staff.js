// Staff and admins: who they are, their roles and groups; adding someone (an unknown email
// creates the account, without a password: an invitation link lets them set it), removing
// a role (the last admin cannot be removed: last_admin).
import { h } from "../../dom.js";
import { t } from "../../i18n.js";
import {
  addPanel,
  feedback,
  field,
  heading,
  invitation,
  keeper,
  loading,
  redraw,
  ROLES,
  select,
  textInput,
} from "./common.js";

export function staffSection(ctx, call) {
  const keep = keeper();
  const listFb = feedback();
  const list = h("ul", { class: "admin-list", "aria-labelledby": "staff-list-title" }, h("li", null, loading()));
  let groups = [];

  const load = async () => {
    try {
      const [staff, allGroups] = await Promise.all([call("GET", "/staff"), call("GET", "/groups")]);
      groups = allGroups;
      redraw(list, staff.length ? staff.map(item) : [h("li", { class: "muted" }, t("admin.staff_none"))]);
    } catch (e) {
      listFb.fail(e);
    }
  };

  const item = (member) => {
    const fb = keep(`fb-${member.id}`, feedback);
    // Only an account without a password yet can be invited (protocol.md §1.4).
    const invite = member.active ? { button: null, el: null } : keep(`invite-${member.id}`, () => invitation(call, member));
    const titleId = `staff-${member.id}`;
    const groupNames = member.groups.map((id) => groups.find((g) => g.id === id)?.name).filter(Boolean);
    const removals = member.roles.map((role) => {
      const roleName = t(ROLES[role]);
      const button = h(
        "button",
        {
          type: "button",
          class: "danger",
          id: `staff-${member.id}-remove-${role}`,
          "aria-label": t("admin.staff_remove_of", { role: roleName, name: member.name }),
        },
        t("admin.staff_remove", { role: roleName }),
      );
      button.addEventListener("click", async () => {
        if (!(await ctx.confirm(t("admin.staff_remove_confirm", { role: roleName, name: member.name }), t("admin.remove"))))
          return;
        const done = await fb.run(button, () => call("DELETE", `/staff/${member.id}?role=${role}`));
        if (done) {
          listFb.ok(t("admin.staff_removed", { role: roleName, name: member.name }));
          await load();
        }
      });
      return button;
    });
    return h(
      "li",
      { class: "card" },
      h("h3", { id: titleId }, member.name),
      h("p", { class: "muted" }, member.email),
      h(
        "ul",
        { class: "facts" },
        h("li", null, t("admin.staff_roles", { roles: member.roles.map((r) => t(ROLES[r])).join(", ") })),
        h("li", null, groupNames.length ? t("admin.staff_groups", { groups: groupNames.join(", ") }) : t("admin.staff_no_group")),
      ),
      h("div", { class: "row" }, invite.button, removals),
      invite.el,
      fb.el,
    );
  };

  // -- adding ---------------------------------------------------------------------------
  const addFb = feedback();
  const email = h("input", { id: "staff-email", type: "email", required: true, autocomplete: "off", maxlength: 254 });
  const name = textInput("staff-name", "", { required: true });
  const role = select("staff-role", [
    ["staff", t("role.staff")],
    ["admin", t("role.admin")],
  ]);
  const add = h("button", { type: "submit", class: "primary" }, t("admin.add"));
  const form = h(
    "form",
    { class: "add-form", "aria-labelledby": "staff-add-title" },
    h(
      "div",
      { class: "fields" },
      field(t("admin.email"), email),
      field(t("admin.name"), name),
      field(t("admin.role"), role),
    ),
    h("p", { class: "muted hint" }, t("admin.staff_add_hint")),
    h("div", { class: "row" }, add),
    addFb.el,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let member;
    const done = await addFb.run(add, async () => {
      member = await call("POST", "/staff", { email: email.value, name: name.value, role: role.value });
    });
    if (!done) return;
    addFb.ok(t("admin.staff_added", { name: member.name }));
    form.reset();
    await load();
    // Next step for a new account: its invitation link.
    document.getElementById(`invite-${member.id}`)?.focus();
  });

  load();
  return {
    el: [
      heading(t("admin.staff")),
      addPanel("staff-add-title", t("admin.staff_add"), form),
      h("h3", { id: "staff-list-title" }, t("admin.staff_list")),
      listFb.el,
      list,
    ],
  };
}
