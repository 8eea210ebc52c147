// "My children": what /api/me says of each child and the guardian's rights, with the way to
// the child's feed and to the publication consent.
import { h } from "../dom.js";
import { t } from "../i18n.js";

export function childrenView({ me }) {
  const cards = me.children.map((c) => {
    const name = `${c.first_name} ${c.last_name}`;
    const id = `child-${c.id}`;
    return h(
      "li",
      { class: "card" },
      h("h3", { id }, name),
      h("p", { class: "muted" }, c.group ? t("children.group", { group: c.group }) : t("children.no_group")),
      h(
        "ul",
        { class: "rights", "aria-label": t("children.rights") },
        h("li", null, c.parental_authority ? t("children.authority_yes") : t("children.authority_no")),
        h("li", null, c.consultation ? t("children.consultation_yes") : t("children.consultation_no")),
        h("li", null, c.may_post ? t("children.post_yes") : t("children.post_no")),
      ),
      h(
        "div",
        { class: "row" },
        c.consultation ? h("a", { href: `#/c/child:${c.id}`, class: "button", "aria-describedby": id }, t("children.feed")) : null,
        h("a", { href: `#/children/${c.id}/consent`, class: "button", "aria-describedby": id }, t("children.consent")),
      ),
    );
  });
  return {
    el: h(
      "section",
      { class: "page", "aria-labelledby": "children-title" },
      h("h2", { id: "children-title" }, t("children.title")),
      cards.length ? h("ul", { class: "cards" }, cards) : h("p", { class: "muted" }, t("children.none")),
    ),
  };
}
