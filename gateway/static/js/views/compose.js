// Writing in a channel. Staff: text, an announcement (groups, structure) or photos and
// videos, tagging the children shown — a child whose publication consent is incomplete
// cannot be ticked, and says whose consent is missing. Families: text in their household,
// when the structure lets them (otherwise they are told why).
import { h, listen, uuid } from "../dom.js";
import { errorText, t } from "../i18n.js";
import { Upload } from "../upload.js";

const TYPING_EVERY_MS = 4000;

export function composer(ctx, ch) {
  if (ctx.store.isStaff) return staffComposer(ctx, ch);
  if (ch.kind !== "family") return null;
  return familyComposer(ctx, ch);
}

// A publish refusal, in words: consent_missing names each child and whose consent lacks.
export function refusalText(error) {
  if (error.code === "consent_missing" && error.details?.length) {
    return error.details
      .map((d) =>
        d.missing.length
          ? t("consent.missing_for", { child: d.child.name, names: d.missing.map((m) => m.name).join(", ") })
          : t("consent.no_holder_for", { child: d.child.name }),
      )
      .join(" ");
  }
  return errorText(error.code);
}

function familyComposer(ctx, ch) {
  const { me } = ctx;
  const family = me.families.find((f) => f.id === ch.id);
  const mayPost = me.children.some((c) => c.may_post && family?.children.includes(c.id));
  // Asking the server would mean publishing: the guardianship flags say it in advance, and
  // a structure that does not let families post answers posting_not_authorised (below).
  const reason = h("p", { class: "notice", role: "note" }, errorText("posting_not_authorised"));
  if (!mayPost) return { el: reason };
  return textForm(ctx, ch, { onRefused: (form) => form.replaceWith(reason) });
}

function textForm(ctx, ch, { onRefused }) {
  const text = h("textarea", { id: "compose-text", rows: 2, maxlength: 10000, required: true });
  const error = h("p", { class: "error", role: "alert" });
  const send = h("button", { type: "submit", class: "primary" }, t("compose.send"));
  const form = h(
    "form",
    { class: "compose compose-text", "aria-label": t("compose.title") },
    h("label", { for: "compose-text" }, t("compose.message")),
    h("div", { class: "row" }, text, send),
    error,
  );
  let lastTyping = 0;
  text.addEventListener("input", () => {
    if (Date.now() - lastTyping < TYPING_EVERY_MS) return;
    lastTyping = Date.now();
    ctx.live.request("typing", { channel: ch.name }).catch(() => {});
  });
  let msgId = null;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = text.value.trim();
    if (!value) return;
    send.disabled = true;
    error.textContent = "";
    msgId ??= uuid();
    try {
      await ctx.live.publish(ch.name, { kind: "text", text: value }, [], msgId);
      text.value = "";
      msgId = null;
    } catch (e) {
      if (e.code === "posting_not_authorised" || e.code === "forbidden") return onRefused(form);
      if (!["timeout", "disconnected", "unavailable", "internal"].includes(e.code)) msgId = null;
      error.textContent = refusalText(e);
    } finally {
      send.disabled = false;
    }
  });
  return { el: form };
}

function staffComposer(ctx, ch) {
  const cleanups = [];
  const announcementAllowed = ch.kind === "group" || ch.kind === "structure";
  const isAnnouncement = h("input", { type: "checkbox", id: "compose-announcement" });
  const title = h("input", { id: "compose-title", maxlength: 200 });
  const titleRow = h("div", { class: "field", hidden: true }, h("label", { for: "compose-title" }, t("compose.announcement_title")), title);
  const text = h("textarea", { id: "compose-text", rows: 3, maxlength: 10000 });
  const textLabel = h("label", { for: "compose-text" }, t("compose.message"));
  const files = h("input", { type: "file", id: "compose-files", multiple: true, accept: "image/*,video/*" });
  // The native button speaks the browser's language, not the app's: the label is the button.
  const attach = h("div", { class: "field attach" }, files, h("label", { for: "compose-files" }, t("compose.add_media")));
  const uploadList = h("ul", { class: "uploads", "aria-label": t("compose.uploads") });
  const tagList = h("ul", { class: "tags-list" });
  const tagNote = h("p", { class: "muted" });
  const tags = h("fieldset", { class: "tags" }, h("legend", null, t("compose.tags")), tagNote, tagList);
  const none = h("input", { type: "checkbox", id: "compose-none" });
  const noneRow = h("div", { class: "check", hidden: true }, none, h("label", { for: "compose-none" }, t("compose.no_child")));
  const error = h("p", { class: "error", role: "alert" });
  const done = h("p", { class: "visually-hidden", role: "status" });
  const submit = h("button", { type: "submit", class: "primary" }, t("compose.publish"));
  const form = h(
    "form",
    { class: "compose compose-staff", "aria-labelledby": "compose-heading" },
    h(
      "div",
      { class: "compose-head" },
      h("h3", { id: "compose-heading" }, t("compose.title")),
      // Writing the day of several children at once has a page of its own.
      ch.kind === "group" ? h("a", { href: `#/report/${ch.name}`, class: "button" }, t("reports.link")) : null,
    ),
    announcementAllowed
      ? h("div", { class: "check" }, isAnnouncement, h("label", { for: "compose-announcement" }, t("compose.announcement")))
      : null,
    titleRow,
    textLabel,
    text,
    attach,
    uploadList,
    tags,
    noneRow,
    error,
    h("div", { class: "row" }, submit),
    done,
  );

  const uploads = [];
  let msgId = null;
  let circle = [];

  const refreshMode = () => {
    const announcement = isAnnouncement.checked;
    titleRow.hidden = !announcement;
    attach.hidden = announcement;
    uploadList.hidden = announcement;
    textLabel.textContent = announcement
      ? t("compose.announcement_text")
      : uploads.length
        ? t("compose.caption")
        : t("compose.message");
    noneRow.hidden = announcement || !uploads.length;
  };
  isAnnouncement.addEventListener("change", refreshMode);

  // -- photos and videos --------------------------------------------------------------
  const renderUpload = (upload, li) => {
    const label = t("compose.upload_of", { name: upload.file.name });
    const parts = [h("span", { class: "file-name" }, upload.file.name)];
    if (upload.state === "uploading" || upload.state === "queued")
      parts.push(h("progress", { max: 100, value: Math.round(upload.progress * 100), "aria-label": label }));
    if (upload.state === "processing") parts.push(h("progress", { "aria-label": label }));
    const status = {
      queued: t("compose.upload_queued"),
      uploading: t("compose.upload_sending", { percent: Math.round(upload.progress * 100) }),
      processing: t("compose.upload_processing"),
      ready: t("compose.upload_ready"),
      failed: errorText(upload.code),
    }[upload.state];
    parts.push(h("span", { class: `upload-state ${upload.state}` }, status));
    if (upload.state === "failed" && upload.retriable) {
      parts.push(h("button", { type: "button", onclick: () => upload.start(), "aria-label": t("compose.retry_of", { name: upload.file.name }) }, t("compose.retry")));
    }
    parts.push(
      h(
        "button",
        {
          type: "button",
          onclick: () => {
            upload.dispose();
            uploads.splice(uploads.indexOf(upload), 1);
            li.remove();
            refreshMode();
          },
          "aria-label": t("compose.remove_of", { name: upload.file.name }),
        },
        t("compose.remove"),
      ),
    );
    li.replaceChildren(...parts);
  };
  files.addEventListener("change", () => {
    for (const file of files.files) {
      const upload = new Upload(file, ch.name, ctx.live);
      const li = h("li");
      upload.addEventListener("change", () => renderUpload(upload, li));
      uploads.push(upload);
      uploadList.append(li);
      upload.start();
    }
    files.value = "";
    refreshMode();
  });
  cleanups.push(() => uploads.forEach((u) => u.dispose()));

  const allSettled = () =>
    new Promise((resolve) => {
      const check = () => {
        if (uploads.every((u) => u.state === "ready" || u.state === "failed")) {
          uploads.forEach((u) => u.removeEventListener("change", check));
          resolve();
        }
      };
      uploads.forEach((u) => u.addEventListener("change", check));
      check();
    });

  // -- tagging ------------------------------------------------------------------------
  const consents = ctx.consents;
  const tagItem = (childId) => {
    const summary = consents.children.get(childId);
    const name = summary?.child.name ?? ctx.childName(childId);
    const box = h("input", { type: "checkbox", id: `tag-${childId}`, value: childId, "aria-describedby": `tag-${childId}-state` });
    const state = h("span", { class: "consent-state", id: `tag-${childId}-state` });
    const li = h("li", { dataset: { child: childId } }, box, h("label", { for: `tag-${childId}` }, name), state);
    paintTag(li, summary);
    return li;
  };
  const paintTag = (li, summary) => {
    const box = li.querySelector("input");
    const state = li.querySelector(".consent-state");
    const complete = summary?.complete === true;
    box.disabled = !complete;
    if (!complete) box.checked = false;
    li.classList.toggle("blocked", !complete);
    if (complete) state.textContent = t("consent.complete_short");
    else if (!summary) state.textContent = t("consent.unknown");
    else {
      const missing = summary.holders.filter((holder) => !holder.consented).map((holder) => holder.name);
      state.textContent = missing.length ? t("consent.missing", { names: missing.join(", ") }) : t("consent.no_holder");
    }
  };
  const renderTags = async () => {
    try {
      circle = await consents.circle(ch.name);
      tagNote.textContent = "";
      tagList.replaceChildren(...circle.map(tagItem));
      if (!circle.length) tagNote.textContent = t("compose.no_children");
    } catch (e) {
      tagNote.textContent = errorText(e.code);
    }
  };
  renderTags();
  listen(
    consents,
    "change",
    (event) => {
      if (event.detail.all) return renderTags();
      const li = tagList.querySelector(`li[data-child="${event.detail.child}"]`);
      if (li) paintTag(li, consents.children.get(event.detail.child));
    },
    cleanups,
  );

  // -- publishing ---------------------------------------------------------------------
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const children = [...tagList.querySelectorAll("input:checked")].map((box) => Number(box.value));
    const caption = text.value.trim();
    let body;
    if (isAnnouncement.checked) {
      if (!title.value.trim() || !caption) return (error.textContent = t("compose.announcement_incomplete"));
      body = { kind: "announcement", title: title.value.trim(), text: caption };
    } else if (uploads.length) {
      if (!children.length && !none.checked) return (error.textContent = errorText("tags_required"));
      submit.disabled = true;
      submit.textContent = t("compose.waiting_uploads");
      await allSettled();
      submit.textContent = t("compose.publish");
      submit.disabled = false;
      if (uploads.some((u) => u.state !== "ready")) return (error.textContent = t("compose.uploads_failed"));
      body = { kind: "media", media: uploads.map((u) => u.id) };
      if (caption) body.text = caption;
      if (!children.length) body.no_child_identifiable = true;
    } else {
      if (!caption) return (error.textContent = t("compose.empty"));
      body = { kind: "text", text: caption };
    }
    submit.disabled = true;
    msgId ??= uuid();
    try {
      await ctx.live.publish(ch.name, body, children, msgId);
      msgId = null;
      text.value = "";
      title.value = "";
      isAnnouncement.checked = false;
      none.checked = false;
      tagList.querySelectorAll("input:checked").forEach((box) => (box.checked = false));
      uploads.splice(0).forEach((u) => u.dispose());
      uploadList.replaceChildren();
      refreshMode();
      done.textContent = t("compose.published");
    } catch (e) {
      // A refusal is final for this draft; an unknown outcome keeps its msg_id (§10.7).
      if (!["timeout", "disconnected", "unavailable", "internal"].includes(e.code)) msgId = null;
      error.textContent = refusalText(e);
    } finally {
      submit.disabled = false;
    }
  });
  refreshMode();
  return { el: form, destroy: () => cleanups.forEach((f) => f()) };
}
