// Browser notifications for messages that arrive while the page is hidden. Permission is
// asked only when the user presses the button, never at load. A notification names the
// channel and the author, not the content: it may show on a locked phone.
import { h } from "./dom.js";
import { t } from "./i18n.js";

const supported = () => "Notification" in window;

export function notificationButton() {
  const holder = h("div");
  const paint = () => {
    if (!supported()) return holder.replaceChildren(h("p", { class: "muted" }, t("notify.unsupported")));
    if (Notification.permission === "granted") return holder.replaceChildren(h("p", null, t("notify.enabled")));
    if (Notification.permission === "denied") return holder.replaceChildren(h("p", { class: "muted" }, t("notify.denied")));
    const button = h("button", { type: "button" }, t("notify.enable"));
    button.addEventListener("click", async () => {
      await Notification.requestPermission();
      paint();
    });
    holder.replaceChildren(h("p", { class: "muted" }, t("notify.explain")), button);
  };
  paint();
  return holder;
}

export function notifyHidden(store, message) {
  if (!document.hidden || !supported() || Notification.permission !== "granted" || store.mine(message)) return;
  const ch = store.get(message.channel);
  if (!ch) return;
  const notification = new Notification(t("notify.title", { channel: ch.title }), {
    body: t("notify.body", { author: message.author.name }),
    tag: message.channel,
    icon: "/icons/icon-192.png",
  });
  notification.addEventListener("click", () => {
    window.focus();
    location.hash = `#/c/${message.channel}`;
    notification.close();
  });
}
