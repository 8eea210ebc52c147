// The shell: session (login, terms gate, logout), the live connection and its indicator,
// and routing by location.hash to the views.
//   #/                      channel list (phone) / list + empty pane (desktop)
//   #/c/<channel>           a conversation
//   #/children              my children (guardians)
//   #/children/<id>/consent a child's publication consent
//   #/account               profile (name, email), password, notifications, my reports,
//                           export my data, asking for my account's erasure, logout
//   #/moderation            the moderation queue (staff)
//   #/records[/<id>]        children's records: names and birth dates corrected (staff)
//   #/admin[/<section>…]    administration of the structure (admins)
//   #/report/group:<id>     a group's daily reports, several children at once (staff)
//   #/invite/<token>        an invitation: choose a first password (no session needed)
import { api, session, sessionEvents } from "./api.js";
import { Consents } from "./consents.js";
import { h } from "./dom.js";
import { applyStatic, errorText, lang, N_, setLang, t } from "./i18n.js";
import { Live } from "./live.js";
import { MaintenanceBanner } from "./maintenance.js";
import { Moderation } from "./moderation.js";
import { notifyHidden } from "./notify.js";
import { Store } from "./store.js";
import { accountView } from "./views/account.js";
import { adminStructures, adminView } from "./views/admin.js";
import { channelsView } from "./views/channels.js";
import { childrenView } from "./views/children.js";
import { consentView } from "./views/consent.js";
import { conversationView } from "./views/conversation.js";
import { inviteView } from "./views/invite.js";
import { loginView } from "./views/login.js";
import { moderationView } from "./views/moderation.js";
import { recordStructures, recordsView } from "./views/records.js";
import { reportView } from "./views/report.js";
import { termsView } from "./views/terms.js";

const OUTCOMES = { withdrawn: N_("flag.outcome.withdrawn"), dismissed: N_("flag.outcome.dismissed") };
const STATES = { online: N_("status.online"), reconnecting: N_("status.reconnecting"), offline: N_("status.offline") };

const main = document.getElementById("main");
const statusEl = document.getElementById("status");
const topnav = document.getElementById("topnav");
const announcer = document.getElementById("announcer");
const toasts = document.getElementById("toasts");
const langSelect = document.getElementById("lang");

let ctx = null; // the logged-in session: me, live, store, consents and helpers
let mounted = [];
let screen = null; // what to draw again when the language changes

function mount(...views) {
  for (const view of mounted) view.destroy?.();
  mounted = views;
  main.replaceChildren(...views.map((v) => v.el));
}

// -- session ------------------------------------------------------------------------------

async function enter(notice) {
  if (!session.token) return showLogin(notice);
  let me;
  try {
    me = await api("GET", "/api/me");
  } catch (e) {
    if (e.code === "terms_not_accepted") return showTerms();
    if (e.status === 401) {
      session.clear();
      return showLogin(t("login.expired"));
    }
    return showFailure(e);
  }
  start(me);
}

function start(me) {
  stop();
  const live = new Live(session.token);
  const store = new Store(me, live);
  const staffRole = me.roles.find((r) => r.role !== "guardian");
  ctx = {
    me,
    live,
    store,
    consents: staffRole ? new Consents(staffRole.structure_id, live) : null,
    moderation: staffRole ? new Moderation(staffRole.structure_id, live) : null,
    announce,
    confirm: confirmDialog,
    logout,
    childName: (id) => childName(me, id),
  };
  live.addEventListener("state", (event) => {
    paintStatus(event.detail);
    if (event.detail === "online") maintenance.over();
  });
  live.addEventListener("denied", (event) => denied(event.detail.code));
  live.addEventListener("maintenance", (event) => maintenance.show(event.detail.message));
  live.addEventListener("message", (event) => notifyHidden(store, event.detail));
  live.addEventListener("unsubscribed", refreshMe);
  live.addEventListener("report", (event) => toast(t(OUTCOMES[event.detail.state] ?? OUTCOMES.dismissed)));
  ctx.moderation?.addEventListener("change", () => ctx && paintTopnav(location.hash || "#/"));
  // user:<id> brings the events of our uploads, reports and exports (protocol.md §5.5).
  live.watch(`user:${me.user.id}`).catch(() => {});
  store.watchAll();
  live.start();
  ctx.consents?.load().catch(() => {});
  ctx.moderation?.load();
  paintStatus(live.state);
  screen = "app";
  route();
}

function stop() {
  ctx?.live.stop();
  ctx = null;
  paintStatus(null);
  topnav.replaceChildren();
}

async function logout() {
  stop(); // first: the server closes our WebSocket (4403) when the token is revoked
  await api("POST", "/api/logout").catch(() => {});
  session.clear();
  location.hash = "#/";
  showLogin();
}

function denied(code) {
  stop();
  if (code === "terms_not_accepted") return showTerms();
  session.clear();
  showLogin(t("login.expired"));
}

// Over: a live session reconnects at once (and resumes), any other screen starts again.
const maintenance = new MaintenanceBanner(document.querySelector(".topbar"), () => {
  toast(t("maintenance.over"));
  if (ctx) ctx.live.resumeNow();
  else enter();
});
sessionEvents.addEventListener("maintenance", (event) => maintenance.show(event.detail.message));

sessionEvents.addEventListener("expired", () => {
  if (ctx || screen === "terms") denied("invalid_token");
});

async function refreshMe() {
  if (!ctx) return;
  try {
    Object.assign(ctx.me, await api("GET", "/api/me"));
  } catch {
    // The next reload of the page reads it again.
  }
}

function childName(me, id) {
  const mine = me.children.find((c) => c.id === id);
  if (mine) return `${mine.first_name} ${mine.last_name}`;
  return ctx?.consents?.name(id) ?? me.channels.find((c) => c.channel === `child:${id}`)?.title ?? `#${id}`;
}

// -- screens ------------------------------------------------------------------------------

function showLogin(notice) {
  stop();
  screen = "login";
  mount(
    loginView({
      notice,
      onLoggedIn: async (reply) => (reply.terms_accepted ? enter() : showTerms()),
    }),
  );
}

function showTerms() {
  stop();
  screen = "terms";
  mount(termsView({ onAccepted: () => enter(), onLogout: logout }));
}

function inviteToken() {
  return location.hash.match(/^#\/invite\/([^/]{1,512})$/)?.[1] ?? null;
}

function showInvite(token) {
  stop();
  screen = "invite";
  mount(
    inviteView({
      token,
      onLoggedIn: async (reply) => {
        // The used link leaves the address bar (and the history entry) without a hashchange.
        history.replaceState(null, "", "#/");
        return reply.terms_accepted ? enter() : showTerms();
      },
    }),
  );
  document.title = "procreche";
}

function showFailure(error) {
  screen = "failure";
  const retry = h("button", { type: "button", class: "primary", onclick: () => enter() }, t("common.retry"));
  const text = error.code === "maintenance" ? errorText(error.code) : t("error.unreachable");
  mount({ el: h("section", { class: "card narrow" }, h("p", { role: "alert" }, text), retry) });
  console.warn("procreche: /api/me failed", error.code);
}

function route() {
  if (!ctx) return;
  const hash = location.hash || "#/";
  if (!hash.startsWith("#/")) return; // an in-page anchor, not a route
  paintTopnav(hash);
  let match;
  if ((match = hash.match(/^#\/c\/((?:child|family|group|structure):\d+)$/))) return mountLayout(match[1]);
  if (hash === "#/children") return mount(childrenView(ctx));
  if ((match = hash.match(/^#\/children\/(\d+)\/consent$/))) return mount(consentView(ctx, Number(match[1])));
  if (hash === "#/account") return mount(accountView(ctx));
  if (hash === "#/moderation") return mount(moderationView(ctx));
  if ((match = hash.match(/^#\/records(?:\/(\d+))?$/))) return mount(recordsView(ctx, match[1] ? Number(match[1]) : null));
  if ((match = hash.match(/^#\/admin(?:\/(.*))?$/))) return mount(adminView(ctx, match[1] ?? ""));
  if ((match = hash.match(/^#\/report\/(group:\d+)$/))) return mount(reportView(ctx, match[1]));
  return mountLayout(null);
}

// Phone: the list or the conversation; desktop: both side by side (app.css).
function mountLayout(channel) {
  const nav = channelsView(ctx, channel);
  const pane = channel
    ? conversationView(ctx, channel)
    : { el: h("section", { class: "pane placeholder" }, h("p", { class: "muted" }, t("conversation.choose"))) };
  const el = h("div", { class: "layout", dataset: { open: channel ? "conversation" : "list" } }, nav.el, pane.el);
  mount({
    el,
    destroy: () => {
      nav.destroy?.();
      pane.destroy?.();
    },
  });
  const title = channel && ctx.store.get(channel)?.title;
  document.title = title ? `${title} · procreche` : "procreche";
}

function paintTopnav(hash) {
  const link = (href, label, active) => h("li", null, h("a", { href, "aria-current": active ? "page" : null }, label));
  const links = [link("#/", t("nav.messages"), hash === "#/" || hash.startsWith("#/c/") || hash.startsWith("#/report/"))];
  if (ctx.me.children.length) links.push(link("#/children", t("nav.children"), hash.startsWith("#/children")));
  if (ctx.moderation) {
    const count = ctx.moderation.count;
    const waiting = count
      ? [" ", h("span", { class: "badge", "aria-hidden": "true" }, String(count)), h("span", { class: "visually-hidden" }, t("moderation.waiting", { count }))]
      : null;
    const label = [t("nav.moderation"), waiting];
    links.push(link("#/moderation", label, hash === "#/moderation"));
  }
  if (recordStructures(ctx.me).length) links.push(link("#/records", t("nav.records"), hash.startsWith("#/records")));
  if (adminStructures(ctx.me).length) links.push(link("#/admin", t("nav.admin"), hash.startsWith("#/admin")));
  links.push(link("#/account", t("nav.account"), hash === "#/account"));
  topnav.replaceChildren(...links);
}

function paintStatus(state) {
  statusEl.dataset.state = state ?? "none";
  statusEl.textContent = state ? t(STATES[state]) : "";
}

// -- helpers for the views ------------------------------------------------------------------

function announce(text) {
  announcer.textContent = "";
  setTimeout(() => (announcer.textContent = text), 50);
}

// A visible note that goes away by itself (and is read out): news that is not an error.
function toast(text) {
  const note = h("p", { class: "toast" }, text);
  toasts.append(note);
  setTimeout(() => note.remove(), 10000);
}

function confirmDialog(message, action) {
  return new Promise((resolve) => {
    const yes = h("button", { type: "submit", class: "danger", value: "yes" }, action);
    const no = h("button", { type: "submit", value: "no" }, t("common.cancel"));
    const dialog = h(
      "dialog",
      { class: "confirm", "aria-labelledby": "confirm-text" },
      h("form", { method: "dialog" }, h("p", { id: "confirm-text" }, message), h("div", { class: "row" }, yes, no)),
    );
    const opener = document.activeElement;
    dialog.addEventListener("close", () => {
      dialog.remove();
      opener?.focus?.();
      resolve(dialog.returnValue === "yes");
    });
    document.body.append(dialog);
    dialog.showModal();
    no.focus();
  });
}

// -- boot ---------------------------------------------------------------------------------

langSelect.value = lang;
langSelect.addEventListener("change", () => {
  setLang(langSelect.value);
  applyStatic();
  if (screen === "app") {
    paintStatus(ctx.live.state);
    route();
  } else if (screen === "terms") showTerms();
  else if (screen === "login") showLogin();
  else if (screen === "invite") showInvite(inviteToken());
});
window.addEventListener("hashchange", () => {
  const token = inviteToken();
  if (token) return showInvite(token);
  if (screen === "invite") return enter();
  route();
  main.querySelector(".pane h2, h2")?.setAttribute("tabindex", "-1");
  if (location.hash.startsWith("#/c/")) main.querySelector(".pane h2")?.focus({ preventScroll: true });
  else if (/^#\/(admin|report|moderation|records)/.test(location.hash)) main.querySelector("h2")?.focus({ preventScroll: true });
});
applyStatic();
if ("serviceWorker" in navigator) navigator.serviceWorker.register("/sw.js").catch(() => {});
if (inviteToken()) showInvite(inviteToken());
else enter();
