// #/report/group:<id>: one day's reports for the children of a group at once (staff). Each
// child has a compact block — mood, meals, naps, nappies, a note —; "publish all" sends one
// `daily_report` (protocol.md §4.4) per child whose block is filled, to the child's own
// channel child:<id>, and says for each child whether it was published. A child's msg_id is
// kept until its report is published or refused, so that publishing again after a lost
// reply cannot publish it twice (§10.7).
import { h, uuid } from "../dom.js";
import { formatDate, N_, t, today } from "../i18n.js";
import { refusalText } from "./compose.js";
import { AMOUNTS, MOODS, NAPPIES } from "./message.js";

const RETRYABLE = new Set(["timeout", "disconnected", "unavailable", "internal"]);

// The lists of a report; each column: [field, label, control] (control: "time", "text" or
// the choices of a select).
const ENTRIES = {
  meals: {
    legend: N_("report.meals"),
    add: N_("reports.add_meal"),
    remove: N_("reports.remove_meal"),
    incomplete: N_("reports.meal_incomplete"),
    max: 10,
    columns: [
      ["time", N_("reports.time"), "time"],
      ["food", N_("reports.food"), "text"],
      ["amount", N_("reports.amount"), AMOUNTS],
    ],
  },
  naps: {
    legend: N_("report.naps"),
    add: N_("reports.add_nap"),
    remove: N_("reports.remove_nap"),
    incomplete: N_("reports.nap_incomplete"),
    max: 5,
    columns: [
      ["start", N_("reports.start"), "time"],
      ["end", N_("reports.end"), "time"],
    ],
  },
  nappies: {
    legend: N_("report.nappies"),
    add: N_("reports.add_nappy"),
    remove: N_("reports.remove_nappy"),
    incomplete: N_("reports.nappy_incomplete"),
    max: 20,
    columns: [
      ["time", N_("reports.time"), "time"],
      ["kind", N_("reports.kind"), NAPPIES],
    ],
  },
};

function choices(id, map, props = {}) {
  return h(
    "select",
    { id, ...props },
    h("option", { value: "" }, t("reports.choose")),
    Object.entries(map).map(([value, key]) => h("option", { value }, t(key))),
  );
}

function entryList(prefix, kind, spec) {
  let serial = 0;
  const list = h("ol", { class: "entries" });
  const add = h("button", { type: "button", class: "add-entry" }, t(spec.add));
  const el = h("fieldset", { class: `entry-list ${kind}` }, h("legend", null, t(spec.legend)), list, add);
  const renumber = () => {
    [...list.children].forEach((li, i) => li.querySelector(".remove-entry").setAttribute("aria-label", t(spec.remove, { n: i + 1 })));
    add.disabled = list.children.length >= spec.max;
  };
  const addRow = () => {
    const n = ++serial;
    const cells = spec.columns.map(([key, label, control]) => {
      const id = `${prefix}-${kind}-${n}-${key}`;
      const props = { id, dataset: { key } };
      const input =
        control === "time"
          ? h("input", { ...props, type: "time" })
          : control === "text"
            ? h("input", { ...props, type: "text", maxlength: 200 })
            : choices(id, control, props);
      return h("div", { class: `cell ${key}` }, h("label", { for: id }, t(label)), input);
    });
    const remove = h("button", { type: "button", class: "remove-entry" }, h("span", { "aria-hidden": "true" }, "×"));
    const li = h("li", { class: "entry" }, cells, remove);
    remove.addEventListener("click", () => {
      const next = li.nextElementSibling ?? li.previousElementSibling;
      li.remove();
      renumber();
      (next?.querySelector("input, select") ?? add).focus();
    });
    list.append(li);
    renumber();
    return li;
  };
  add.addEventListener("click", () => addRow().querySelector("input, select").focus());
  addRow();
  const values = (li) => Object.fromEntries([...li.querySelectorAll("[data-key]")].map((c) => [c.dataset.key, c.value.trim()]));
  return {
    el,
    filled: () => [...list.children].some((li) => Object.values(values(li)).some(Boolean)),
    // The complete entries; a half-filled one is an error, not silently dropped.
    read() {
      const items = [];
      for (const li of list.children) {
        const entry = values(li);
        const filled = Object.values(entry);
        if (!filled.some(Boolean)) continue;
        if (!filled.every(Boolean)) return { error: t(spec.incomplete) };
        if (kind === "naps" && entry.end <= entry.start) return { error: t("reports.nap_order") };
        items.push(entry);
      }
      return { items };
    },
  };
}

function childBlock(child) {
  const prefix = `report-${child.id}`;
  const mood = choices(`${prefix}-mood`, MOODS);
  const note = h("textarea", { id: `${prefix}-note`, rows: 2, maxlength: 2000 });
  const lists = Object.fromEntries(Object.entries(ENTRIES).map(([kind, spec]) => [kind, entryList(prefix, kind, spec)]));
  const state = h("p", { class: "report-state", role: "status", id: `${prefix}-state` });
  const fieldset = h(
    "fieldset",
    { class: "report-child", "aria-describedby": `${prefix}-state` },
    h("legend", null, child.name),
    h(
      "div",
      { class: "report-grid" },
      h("div", { class: "field mood" }, h("label", { for: mood.id }, t("report.mood")), mood),
      lists.meals.el,
      lists.naps.el,
      lists.nappies.el,
      h("div", { class: "field note" }, h("label", { for: note.id }, t("report.note")), note),
    ),
    state,
  );
  return {
    child,
    el: fieldset,
    msgId: null,
    published: false,
    filled: () => Boolean(mood.value || note.value.trim() || Object.values(lists).some((l) => l.filled())),
    build(date) {
      const body = { kind: "daily_report", child: child.id, date };
      for (const [kind, list] of Object.entries(lists)) {
        const { items, error } = list.read();
        if (error) return { error };
        if (items.length) body[kind] = items;
      }
      if (mood.value) body.mood = mood.value;
      if (note.value.trim()) body.note = note.value.trim();
      return { body };
    },
    show(kind, text) {
      state.className = `report-state ${kind}`;
      state.textContent = text;
      fieldset.classList.toggle("failed", kind === "failed");
      fieldset.classList.toggle("published", kind === "published");
    },
  };
}

export function reportView(ctx, channel) {
  const ch = ctx.store.get(channel);
  const back = h(
    "p",
    { class: "back-link" },
    h("a", { href: ch ? `#/c/${channel}` : "#/" }, h("span", { "aria-hidden": "true" }, "← "), ch ? ch.title : t("conversation.back")),
  );
  if (!ctx.store.isStaff || !ctx.consents || !ch || ch.kind !== "group") {
    return { el: h("section", { class: "page" }, back, h("p", { class: "notice", role: "alert" }, t("conversation.not_found"))) };
  }
  const date = h("input", { id: "reports-date", type: "date", required: true, value: today() });
  const children = h("div", { class: "report-children" }, h("p", { class: "muted" }, t("common.loading")));
  const summary = h("p", { class: "report-summary", role: "status" });
  const error = h("p", { class: "error", role: "alert" });
  const publish = h("button", { type: "submit", class: "primary" }, t("reports.publish_all"));
  const again = h("button", { type: "button", hidden: true }, t("reports.new"));
  const form = h(
    "form",
    { class: "reports", "aria-labelledby": "reports-title", novalidate: true },
    h("div", { class: "field date" }, h("label", { for: "reports-date" }, t("reports.date")), date),
    children,
    h("div", { class: "publish-bar" }, h("div", { class: "row" }, publish, again), error, summary),
  );
  let blocks = [];

  const fill = async () => {
    try {
      await ctx.consents.load();
    } catch (e) {
      children.replaceChildren(h("p", { class: "error", role: "alert" }, refusalText(e)));
      return;
    }
    const kids = [...ctx.consents.children.values()]
      .filter((summary) => summary.group_id === ch.id)
      .map((summary) => summary.child)
      .sort((a, b) => a.name.localeCompare(b.name));
    blocks = kids.map(childBlock);
    children.replaceChildren(...(blocks.length ? blocks.map((b) => b.el) : [h("p", { class: "muted" }, t("compose.no_children"))]));
    publish.disabled = !blocks.length;
    again.hidden = true;
    summary.textContent = "";
    error.textContent = "";
  };

  const send = async (block, day) => {
    const built = block.build(day);
    if (built.error) {
      block.show("failed", built.error);
      return false;
    }
    block.show("sending", t("reports.sending"));
    block.msgId ??= uuid();
    try {
      await ctx.live.publish(`child:${block.child.id}`, built.body, [], block.msgId);
      block.published = true;
      block.msgId = null;
      block.el.disabled = true;
      block.show("published", t("reports.published", { date: formatDate(day) }));
      return true;
    } catch (e) {
      // A refusal is final for this report; an unknown outcome keeps its msg_id (§10.7).
      if (!RETRYABLE.has(e.code)) block.msgId = null;
      block.show("failed", refusalText(e));
      return false;
    }
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    summary.textContent = "";
    if (!/^\d{4}-\d{2}-\d{2}$/.test(date.value)) return (error.textContent = t("reports.date_required"));
    const todo = blocks.filter((b) => !b.published && b.filled());
    if (!todo.length) return (error.textContent = t("reports.nothing"));
    publish.disabled = true;
    const results = await Promise.all(todo.map((block) => send(block, date.value)));
    publish.disabled = false;
    const ok = results.filter(Boolean).length;
    const failed = results.length - ok;
    summary.textContent = failed ? t("reports.summary_failed", { ok, failed }) : t("reports.summary_ok", { ok });
    again.hidden = !blocks.some((b) => b.published);
    if (failed) todo[results.indexOf(false)].el.querySelector("input, select, textarea")?.focus();
  });
  again.addEventListener("click", () => {
    fill();
    date.focus();
  });
  fill();
  document.title = `${t("reports.title", { group: ch.title })} · procreche`;
  return {
    el: h(
      "section",
      { class: "page wide", "aria-labelledby": "reports-title" },
      back,
      h("h2", { id: "reports-title", tabindex: "-1" }, t("reports.title", { group: ch.title })),
      h("p", { class: "muted" }, t("reports.intro")),
      form,
    ),
  };
}
