// A channel: its messages in order, updated in place as they come (new ones are announced
// to screen readers), read state, who is typing, and the composer.
import { h, listen } from "../dom.js";
import { t } from "../i18n.js";
import { composer } from "./compose.js";
import { renderMessage } from "./message.js";

export function conversationView(ctx, name) {
  const { store } = ctx;
  const ch = store.get(name);
  const cleanups = [];
  if (!ch) {
    return { el: h("section", { class: "pane" }, backLink(), h("p", { class: "notice" }, t("conversation.not_found"))) };
  }
  const list = h("ol", { class: "messages", "aria-label": t("conversation.messages", { title: ch.title }) });
  const empty = h("p", { class: "muted empty" }, t("conversation.empty"));
  const gap = h("p", { class: "notice", hidden: true }, t("conversation.gap"));
  const gone = h("p", { class: "notice", role: "alert", hidden: true }, t("conversation.gone"));
  const older = h("button", { type: "button", class: "older", hidden: true }, t("conversation.older"));
  const seen = h("p", { class: "seen muted" });
  const typing = h("p", { class: "typing muted", "aria-live": "polite" });
  const scroller = h("div", { class: "scroller" }, gap, older, list, empty, seen, typing);
  const compose = ch.gone ? null : composer(ctx, ch);
  const pane = h(
    "section",
    { class: "pane conversation", "aria-labelledby": "conversation-title" },
    h("div", { class: "pane-header" }, backLink(), h("h2", { id: "conversation-title" }, ch.title)),
    gone,
    scroller,
    compose?.el,
  );
  older.addEventListener("click", () => store.loadHistory(name, true));

  const items = new Map(); // message id → <li>
  const nearBottom = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;

  const render = (detail = {}) => {
    const stick = nearBottom();
    const messages = store.list(name);
    const ids = new Set(messages.map((m) => m.id));
    for (const [id, li] of items) {
      if (!ids.has(id)) {
        li.remove();
        items.delete(id);
      }
    }
    let after = null;
    for (const message of messages) {
      let li = items.get(message.id);
      // What changes how a message looks once shown: redrawn when it does.
      const state = message.withdrawn
        ? "withdrawn"
        : message.body.kind === "announcement" && message.seq <= store.ackedUpTo(ch)
          ? "acknowledged"
          : "shown";
      if (li && li.dataset.state !== state) {
        li.remove();
        li = null;
      }
      if (!li) {
        li = h("li", { id: `m-${message.id}`, dataset: { seq: message.seq, state } }, renderMessage(ctx, message));
        items.set(message.id, li);
      }
      const inPlace = after ? li.previousElementSibling === after : list.firstElementChild === li;
      if (!inPlace) {
        if (after) after.after(li);
        else list.prepend(li);
      }
      after = li;
    }
    empty.hidden = messages.length > 0 || !ch.loaded;
    gap.hidden = !ch.gap;
    gone.hidden = !ch.gone;
    older.hidden = !ch.more;
    seen.textContent = seenBy(store, ch, messages);
    const writers = [...ch.typing.values()].filter((w) => w.until > Date.now()).map((w) => w.name);
    typing.textContent = writers.length ? t("conversation.typing", { names: writers.join(", ") }) : "";
    if (detail.message && !store.mine(detail.message)) {
      ctx.announce(t("conversation.new_message", { author: detail.message.author.name }));
    }
    if (stick || (detail.message && store.mine(detail.message))) scroller.scrollTop = scroller.scrollHeight;
    markRead();
  };

  // `read` is sent only while the page is actually seen.
  const markRead = () => {
    if (!document.hidden && store.open === name) store.markRead(name);
  };
  listen(store, "change", (event) => event.detail.channel === name && render(event.detail), cleanups);
  listen(document, "visibilitychange", markRead, cleanups);
  store.open = name;
  cleanups.push(() => {
    if (store.open === name) store.open = null;
  });
  if (!ch.loaded) store.loadHistory(name);
  queueMicrotask(() => {
    render();
    scroller.scrollTop = scroller.scrollHeight;
  });
  return {
    el: pane,
    destroy: () => {
      compose?.destroy?.();
      cleanups.forEach((f) => f());
    },
  };
}

function backLink() {
  return h("a", { href: "#/", class: "back" }, h("span", { "aria-hidden": "true" }, "← "), t("conversation.back"));
}

// In a household each side sees the other's read position (protocol.md §4.7).
function seenBy(store, ch, messages) {
  if (ch.kind !== "family") return "";
  const last = [...messages].reverse().find((m) => store.mine(m));
  if (!last) return "";
  const names = [...ch.positions.values()].filter((p) => p.seq >= last.seq).map((p) => p.name);
  return names.length ? t("conversation.seen_by", { names: names.join(", ") }) : "";
}
