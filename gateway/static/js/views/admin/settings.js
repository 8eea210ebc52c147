// The structure's settings: its name, whether guardians may write in their household's
// channel, how many months messages are kept. Only what changed is sent (PATCH).
import { h } from "../../dom.js";
import { t } from "../../i18n.js";
import { checkbox, exportCard, feedback, field, heading, textInput } from "./common.js";

export function settingsSection(ctx, call) {
  const fb = feedback();
  const name = textInput("settings-name", "", { required: true, autocomplete: "organization" });
  const mayPost = checkbox("settings-may-post", t("admin.settings_may_post"));
  const retention = h("input", { id: "settings-retention", type: "number", min: 1, max: 120, step: 1, required: true });
  const save = h("button", { type: "submit", class: "primary", disabled: true }, t("admin.save"));
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "admin-title" },
    field(t("admin.settings_name"), name),
    mayPost.el,
    h("p", { class: "muted hint" }, t("admin.settings_may_post_hint")),
    field(t("admin.settings_retention"), retention, t("admin.settings_retention_hint")),
    h("div", { class: "row" }, save),
    fb.el,
  );
  let current = null;
  const fill = (structure) => {
    current = structure;
    name.value = structure.name;
    mayPost.input.checked = structure.guardians_may_post;
    retention.value = String(structure.retention_months);
    save.disabled = false;
  };
  call("GET").then(fill, fb.fail);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!current) return;
    const months = Number(retention.value);
    if (!Number.isInteger(months) || months < 1 || months > 120) return fb.fail(t("admin.settings_retention_invalid"));
    const changes = {};
    if (name.value.trim() !== current.name) changes.name = name.value.trim();
    if (mayPost.input.checked !== current.guardians_may_post) changes.guardians_may_post = mayPost.input.checked;
    if (months !== current.retention_months) changes.retention_months = months;
    if (!Object.keys(changes).length) return fb.ok(t("admin.unchanged"));
    await fb.run(save, async () => fill(await call("PATCH", "", changes)), t("admin.saved"));
  });
  const exporting = exportCard(ctx, "structure", ctx.adminStructure, t("admin.export_structure"), t("admin.export_hint"));
  return { el: [heading(t("admin.settings")), form, exporting.el], destroy: exporting.destroy };
}
