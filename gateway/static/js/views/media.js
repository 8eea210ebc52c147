// Photos and videos of a message: thumbnails, and a full-screen viewer (a modal <dialog>:
// Escape closes it, focus comes back to the thumbnail). Links are asked for at each display
// (they live 5 minutes, protocol.md §1.3a) and never stored.
import { mediaLink } from "../api.js";
import { h } from "../dom.js";
import { t } from "../i18n.js";

export function mediaGrid(items) {
  const grid = h("ul", { class: "media-grid", "aria-label": t("media.grid", { n: items.length }) });
  items.forEach((item, index) => {
    const label = alt(item, index, items.length);
    const img = h("img", { alt: label, width: item.width, height: item.height, loading: "lazy", decoding: "async" });
    const button = h(
      "button",
      { type: "button", class: `thumb ${item.type}`, "aria-label": t("media.open", { name: label }) },
      img,
      item.type === "video" ? h("span", { class: "play", "aria-hidden": "true" }, "▶") : null,
    );
    button.addEventListener("click", () => openViewer(items, index, button));
    show(img, item.id, "thumb", button);
    grid.append(h("li", null, button));
  });
  return grid;
}

function alt(item, index, total) {
  return item.type === "video"
    ? t("media.video_alt", { n: index + 1, total })
    : t("media.photo_alt", { n: index + 1, total });
}

// A link that expired between asking and loading is asked for once more.
async function show(img, id, size, holder) {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      img.src = await mediaLink(id, size);
      await img.decode();
      return;
    } catch (error) {
      if (error.code && error.status) {
        // Refused now (consent withdrawn, message withdrawn): say so instead of a broken image.
        holder.classList.add("unavailable");
        holder.title = t("media.unavailable");
        return;
      }
    }
  }
  holder.classList.add("unavailable");
}

let viewer = null;

function openViewer(items, start, opener) {
  viewer?.remove();
  let index = start;
  const stage = h("div", { class: "stage" });
  const caption = h("p", { class: "viewer-caption", "aria-live": "polite" });
  const close = h("button", { type: "button", class: "close" }, t("media.close"));
  const prev = h("button", { type: "button" }, t("media.previous"));
  const next = h("button", { type: "button" }, t("media.next"));
  const dialog = h(
    "dialog",
    { class: "viewer", "aria-label": t("media.viewer") },
    h("div", { class: "viewer-bar" }, caption, items.length > 1 ? [prev, next] : null, close),
    stage,
  );
  viewer = dialog;
  const render = async () => {
    const item = items[index];
    caption.textContent = alt(item, index, items.length);
    if (item.type === "video") {
      const video = h("video", { controls: true, playsinline: true, preload: "metadata" });
      stage.replaceChildren(video);
      const [poster, src] = await Promise.all([mediaLink(item.id, "screen"), mediaLink(item.id, "original")]).catch(
        () => [null, null],
      );
      if (!src) return stage.replaceChildren(h("p", null, t("media.unavailable")));
      video.poster = poster;
      video.src = src;
    } else {
      const img = h("img", { alt: caption.textContent, width: item.width, height: item.height });
      stage.replaceChildren(img);
      show(img, item.id, "screen", stage);
    }
  };
  const go = (step) => {
    index = (index + step + items.length) % items.length;
    render();
  };
  prev.addEventListener("click", () => go(-1));
  next.addEventListener("click", () => go(1));
  close.addEventListener("click", () => dialog.close());
  dialog.addEventListener("keydown", (event) => {
    if (items.length > 1 && event.key === "ArrowLeft") go(-1);
    if (items.length > 1 && event.key === "ArrowRight") go(1);
  });
  dialog.addEventListener("close", () => {
    dialog.remove();
    if (viewer === dialog) viewer = null;
    opener.focus();
  });
  document.body.append(dialog);
  dialog.showModal();
  close.focus();
  render();
}
