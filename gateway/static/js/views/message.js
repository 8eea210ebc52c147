// One message of a channel, whatever its body kind (protocol.md §4.4), with the actions the
// user may take on it: withdraw (staff, author), acknowledge an announcement (families),
// see who has read it (staff), report it to the staff (anyone but its author).
import { h } from "../dom.js";
import { errorText, formatDate, formatTime, N_, t } from "../i18n.js";
import { flagButton } from "./flag.js";
import { mediaGrid } from "./media.js";

export const AMOUNTS = {
  none: N_("report.amount.none"),
  little: N_("report.amount.little"),
  half: N_("report.amount.half"),
  most: N_("report.amount.most"),
  all: N_("report.amount.all"),
};
export const NAPPIES = { wet: N_("report.nappy.wet"), dirty: N_("report.nappy.dirty"), both: N_("report.nappy.both") };
export const MOODS = {
  happy: N_("report.mood.happy"),
  calm: N_("report.mood.calm"),
  tired: N_("report.mood.tired"),
  upset: N_("report.mood.upset"),
  unwell: N_("report.mood.unwell"),
};

export function renderMessage(ctx, message) {
  const { store } = ctx;
  const mine = store.mine(message);
  const ch = store.get(message.channel);
  const article = h(
    "article",
    { class: `message kind-${message.body.kind}${mine ? " mine" : ""}${message.withdrawn ? " withdrawn" : ""}` },
    ...messageContent(ctx, message),
    store.isStaff && message.children?.length
      ? h("p", { class: "tags" }, t("message.tags", { names: message.children.map((id) => ctx.childName(id)).join(", ") }))
      : null,
    actions(ctx, ch, message, mine),
  );
  return article;
}

// Who wrote it and when, whether it was withdrawn, and its body: the message as shown in a
// conversation and in the moderation queue alike.
export function messageContent(ctx, message) {
  return [
    h(
      "header",
      null,
      h("span", { class: "author" }, message.author.name || t("message.unknown_author")),
      " ",
      h("time", { datetime: message.at }, formatTime(message.at)),
    ),
    message.withdrawn ? h("p", { class: "withdrawn-note" }, t("message.withdrawn")) : null,
    messageBody(ctx, message),
  ];
}

function messageBody(ctx, message) {
  const b = message.body;
  switch (b.kind) {
    case "text":
      return h("p", { class: "text" }, b.text);
    case "announcement":
      return h("div", null, h("h3", { class: "announcement-title" }, b.title), h("p", { class: "text" }, b.text));
    case "daily_report":
      return dailyReport(ctx, b);
    case "media":
      return h("div", null, b.text ? h("p", { class: "text" }, b.text) : null, mediaGrid(b.media));
    default:
      return h("p", { class: "muted" }, t("message.unsupported"));
  }
}

function dailyReport(ctx, r) {
  const rows = [];
  const row = (label, value) => rows.push(h("dt", null, label), h("dd", null, value));
  if (r.mood) row(t("report.mood"), t(MOODS[r.mood]));
  if (r.meals?.length)
    row(
      t("report.meals"),
      h("ul", null, r.meals.map((m) => h("li", null, t("report.meal", { time: m.time, food: m.food, amount: t(AMOUNTS[m.amount]) })))),
    );
  if (r.naps?.length) row(t("report.naps"), h("ul", null, r.naps.map((n) => h("li", null, t("report.nap", n)))));
  if (r.nappies?.length)
    row(
      t("report.nappies"),
      h("ul", null, r.nappies.map((n) => h("li", null, t("report.nappy", { time: n.time, kind: t(NAPPIES[n.kind]) })))),
    );
  if (r.note) row(t("report.note"), r.note);
  return h(
    "section",
    { class: "daily-report" },
    h("h3", null, t("report.title", { child: ctx.childName(r.child), date: formatDate(r.date) })),
    rows.length ? h("dl", null, rows) : h("p", { class: "muted" }, t("report.empty")),
  );
}

function actions(ctx, ch, message, mine) {
  const { store } = ctx;
  const bar = h("div", { class: "actions" });
  const status = h("p", { class: "action-status", role: "status" });
  if (message.body.kind === "announcement" && !store.isStaff && !message.withdrawn) {
    if (message.seq <= store.ackedUpTo(ch)) {
      bar.append(h("span", { class: "acked" }, t("announcement.acknowledged")));
    } else {
      const ack = h("button", { type: "button" }, t("announcement.acknowledge"));
      ack.addEventListener("click", async () => {
        ack.disabled = true;
        try {
          await store.acknowledge(ch.name, message.seq);
        } catch (e) {
          ack.disabled = false;
          status.textContent = errorText(e.code);
        }
      });
      bar.append(ack);
    }
  }
  if (store.isStaff && message.body.kind === "announcement") {
    const who = h("button", { type: "button", "aria-expanded": "false" }, t("announcement.who_read"));
    const list = h("div", { class: "receipts", hidden: true });
    who.addEventListener("click", async () => {
      const open = who.getAttribute("aria-expanded") !== "true";
      who.setAttribute("aria-expanded", String(open));
      list.hidden = !open;
      if (open) list.replaceChildren(await receipts(ctx, message));
    });
    bar.append(who, list);
  }
  if ((store.isStaff || mine) && !message.withdrawn) {
    const withdraw = h("button", { type: "button", class: "danger" }, t("message.withdraw"));
    withdraw.addEventListener("click", async () => {
      if (!(await ctx.confirm(t("message.withdraw_confirm"), t("message.withdraw")))) return;
      withdraw.disabled = true;
      try {
        await ctx.live.request("withdraw", { channel: message.channel, id: message.id });
      } catch (e) {
        withdraw.disabled = false;
        status.textContent = errorText(e.code);
      }
    });
    bar.append(withdraw);
  }
  // Staff withdraw what they object to; families ask staff to look.
  if (!store.isStaff && !mine && !message.withdrawn) bar.append(flagButton(message, status));
  return bar.childElementCount ? h("div", null, bar, status) : null;
}

async function receipts(ctx, message) {
  try {
    const reply = await ctx.live.request("receipts", { channel: message.channel });
    const readers = reply.receipts.filter((r) => r.seq >= message.seq && r.user.id !== ctx.store.me.user.id);
    if (!readers.length) return h("p", null, t("announcement.nobody"));
    return h(
      "ul",
      { "aria-label": t("announcement.readers") },
      readers.map((r) => h("li", null, t("announcement.reader", { name: r.user.name, at: formatTime(r.at) }))),
    );
  } catch (e) {
    return h("p", { class: "error" }, errorText(e.code));
  }
}
