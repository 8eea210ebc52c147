// Households: the list and creating one (name_taken); one household's page: renaming,
// deleting, its members (an unknown email creates the account, without a password: an
// invitation link lets them set it), its children, export and erasure for good (its
// conversation and media, protocol.md §1.7).
import { h } from "../../dom.js";
import { t, today } from "../../i18n.js";
import {
  addPanel,
  backLink,
  carried,
  eraseCard as eraseCardOf,
  exportCard,
  feedback,
  field,
  heading,
  invitation,
  keeper,
  leave,
  loading,
  personName,
  redraw,
  select,
  textInput,
} from "./common.js";

const fullName = (child) => `${child.first_name} ${child.last_name}`;

export function householdsSection(ctx, call) {
  const listFb = feedback();
  const list = h("ul", { class: "admin-list", "aria-labelledby": "households-list-title" }, h("li", null, loading()));

  const load = async () => {
    try {
      const [families, children] = await Promise.all([call("GET", "/families"), call("GET", "/children")]);
      const names = new Map(children.map((c) => [c.id, fullName(c)]));
      families.sort((a, b) => a.name.localeCompare(b.name));
      redraw(
        list,
        families.length
          ? families.map((family) =>
              h(
                "li",
                { class: "card" },
                h("h3", null, h("a", { href: `#/admin/households/${family.id}` }, family.name)),
                h(
                  "ul",
                  { class: "facts" },
                  h("li", null, t("admin.households_members", { names: family.members.map(personName).join(", ") || "–" })),
                  h("li", null, t("admin.households_children", { names: family.children.map((id) => names.get(id) ?? `#${id}`).join(", ") || "–" })),
                ),
              ),
            )
          : [h("li", { class: "muted" }, t("admin.households_none"))],
      );
    } catch (e) {
      listFb.fail(e);
    }
  };

  const addFb = feedback();
  const name = textInput("household-new-name", "", { required: true });
  const create = h("button", { type: "submit", class: "primary" }, t("admin.create"));
  const form = h(
    "form",
    { class: "add-form", "aria-labelledby": "household-add-title" },
    h("div", { class: "row inline-form" }, field(t("admin.name"), name), create),
    addFb.el,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let family;
    if (!(await addFb.run(create, async () => (family = await call("POST", "/families", { name: name.value }))))) return;
    // The new household's page is where its members and children are added.
    ctx.announce(t("admin.households_created", { name: family.name }));
    location.hash = `#/admin/households/${family.id}`;
  });

  load();
  return {
    el: [
      heading(t("admin.households")),
      carried(ctx),
      addPanel("household-add-title", t("admin.households_add"), form),
      h("h3", { id: "households-list-title" }, t("admin.households_list")),
      listFb.el,
      list,
    ],
  };
}

export function householdSection(ctx, call, familyId) {
  const keep = keeper();
  const title = heading(t("common.loading"));
  const body = h("div", null, loading());
  const danger = h("div");
  const loadFb = feedback();

  const load = async () => {
    let family;
    try {
      const [families, children] = await Promise.all([call("GET", "/families"), call("GET", "/children")]);
      family = families.find((f) => f.id === familyId);
      if (!family) {
        title.textContent = t("admin.households");
        body.replaceChildren(h("p", { class: "notice", role: "alert" }, t("admin.not_found")));
        danger.replaceChildren();
        return;
      }
      title.textContent = family.name;
      document.title = `${family.name} · procreche`;
      redraw(body, [settings(family), members(family), kids(family, children)]);
      redraw(danger, [eraseCard(family)]);
    } catch (e) {
      loadFb.fail(e);
    }
  };

  // -- name, deletion ---------------------------------------------------------------------
  const settings = (family) => {
    const fb = keep("settings", feedback);
    const newName = textInput("household-name", family.name, { required: true });
    const rename = h("button", { type: "submit", id: "household-rename" }, t("admin.rename"));
    const remove = h("button", { type: "button", class: "danger", id: "household-delete" }, t("admin.households_delete"));
    const form = h(
      "form",
      { class: "card", "aria-label": t("admin.rename_of", { name: family.name }) },
      h("div", { class: "row inline-form" }, field(t("admin.new_name"), newName), rename),
      h("div", { class: "row" }, remove),
      fb.el,
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (newName.value.trim() === family.name) return fb.ok(t("admin.unchanged"));
      const done = await fb.run(rename, () => call("PATCH", `/families/${familyId}`, { name: newName.value }), t("admin.renamed"));
      if (done) await load();
    });
    remove.addEventListener("click", async () => {
      if (!(await ctx.confirm(t("admin.households_delete_confirm", { name: family.name }), t("admin.delete")))) return;
      if (await fb.run(remove, () => call("DELETE", `/families/${familyId}`))) {
        leave(ctx, "#/admin/households", t("admin.households_deleted", { name: family.name }));
      }
    });
    return form;
  };

  // -- members ----------------------------------------------------------------------------
  const members = (family) => {
    const fb = keep("members", feedback);
    const rows = family.members.map((member) => {
      // Only an account without a password yet can be invited (protocol.md §1.4).
      const invite = member.active ? { button: null, el: null } : keep(`invite-${member.id}`, () => invitation(call, member));
      const remove = h(
        "button",
        { type: "button", class: "danger", id: `member-${member.id}-remove`, "aria-label": t("admin.households_remove_member_of", { name: personName(member) }) },
        t("admin.remove"),
      );
      remove.addEventListener("click", async () => {
        const message = t("admin.households_remove_member_confirm", { name: personName(member), household: family.name });
        if (!(await ctx.confirm(message, t("admin.remove")))) return;
        const done = await fb.run(remove, () => call("DELETE", `/families/${familyId}/members/${member.id}`), t("admin.households_member_removed", { name: personName(member) }));
        if (done) {
          await load();
          document.getElementById("household-members-title")?.focus();
        }
      });
      return h(
        "li",
        { class: "member" },
        h("p", null, h("strong", null, member.name), " ", h("span", { class: "muted" }, member.email)),
        h("div", { class: "row" }, invite.button, remove),
        invite.el,
      );
    });
    const email = h("input", { id: "member-email", type: "email", required: true, autocomplete: "off", maxlength: 254 });
    const name = textInput("member-name", "", { required: true });
    const add = h("button", { type: "submit", class: "primary", id: "member-add" }, t("admin.add"));
    const form = h(
      "form",
      { "aria-labelledby": "member-add-title" },
      h("h4", { id: "member-add-title" }, t("admin.households_add_member")),
      h("div", { class: "fields" }, field(t("admin.email"), email), field(t("admin.name"), name)),
      h("p", { class: "muted hint" }, t("admin.households_add_member_hint")),
      h("div", { class: "row" }, add),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      let member;
      const done = await fb.run(add, async () => {
        member = await call("POST", `/families/${familyId}/members`, { email: email.value, name: name.value });
      });
      if (!done) return;
      fb.ok(t("admin.households_member_added", { name: personName(member) }));
      await load();
      // Next step for a new account: its invitation link.
      document.getElementById(`invite-${member.id}`)?.focus();
    });
    return h(
      "section",
      { class: "card", "aria-labelledby": "household-members-title" },
      h("h3", { id: "household-members-title", tabindex: "-1" }, t("admin.households_members_title")),
      rows.length ? h("ul", { class: "members" }, rows) : h("p", { class: "muted" }, t("admin.households_no_member")),
      form,
      fb.el,
    );
  };

  // -- children ---------------------------------------------------------------------------
  const kids = (family, children) => {
    const fb = keep("children", feedback);
    const names = new Map(children.map((c) => [c.id, fullName(c)]));
    const rows = family.children.map((id) => {
      const name = names.get(id) ?? `#${id}`;
      const remove = h(
        "button",
        { type: "button", class: "danger", id: `household-child-${id}-remove`, "aria-label": t("admin.households_remove_child_of", { name }) },
        t("admin.remove"),
      );
      remove.addEventListener("click", async () => {
        const message = t("admin.households_remove_child_confirm", { name, household: family.name });
        if (!(await ctx.confirm(message, t("admin.remove")))) return;
        const done = await fb.run(remove, () => call("DELETE", `/families/${familyId}/children/${id}`), t("admin.households_child_removed", { name }));
        if (done) {
          await load();
          document.getElementById("household-children-title")?.focus();
        }
      });
      return h("li", { class: "row spread" }, h("a", { href: `#/admin/children/${id}` }, name), remove);
    });
    const others = children
      .filter((c) => !family.children.includes(c.id) && !(c.left_on && c.left_on < today()))
      .sort((a, b) => fullName(a).localeCompare(fullName(b)));
    let form = null;
    if (others.length) {
      const which = select("household-child-new", others.map((c) => [c.id, fullName(c)]));
      const add = h("button", { type: "submit", class: "primary", id: "household-child-add" }, t("admin.add"));
      form = h(
        "form",
        { "aria-labelledby": "household-child-add-title" },
        h("h4", { id: "household-child-add-title" }, t("admin.households_add_child")),
        h("div", { class: "row inline-form" }, field(t("admin.child"), which), add),
      );
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        const name = names.get(Number(which.value));
        const done = await fb.run(add, () => call("PUT", `/families/${familyId}/children/${which.value}`), t("admin.households_child_added", { name }));
        if (done) await load();
      });
    }
    return h(
      "section",
      { class: "card", "aria-labelledby": "household-children-title" },
      h("h3", { id: "household-children-title", tabindex: "-1" }, t("admin.children")),
      rows.length ? h("ul", { class: "plain" }, rows) : h("p", { class: "muted" }, t("admin.households_no_child")),
      h("p", { class: "muted hint" }, t("admin.households_children_hint")),
      form,
      fb.el,
    );
  };

  // -- erasure for good: the household, its conversation and media (§1.7) -------------------
  const eraseCard = (family) =>
    eraseCardOf(ctx, call, { subject: "household", id: familyId, name: family.name, list: "#/admin/households", fb: keep("erase", feedback) });

  load();
  const exporting = exportCard(ctx, "household", familyId, t("admin.export_household"));
  return {
    el: [backLink("#/admin/households", t("admin.households")), title, loadFb.el, body, exporting.el, danger],
    destroy: exporting.destroy,
  };
}
