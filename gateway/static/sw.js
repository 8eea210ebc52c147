// The service worker keeps the app shell (these static files) for a fast start and offline
// opening. It caches nothing else: never /api/*, never /media/*, never the WebSocket, never
// any answer that could hold a family's messages, photos or names. Requests for anything not
// listed here are not even seen by respondWith: they go to the network untouched.
const CACHE = "procreche-shell-v4";
const SHELL = [
  "/",
  "/index.html",
  "/app.css",
  "/manifest.webmanifest",
  "/icons/icon.svg",
  "/icons/icon-192.png",
  "/icons/icon-512.png",
  "/js/api.js",
  "/js/app.js",
  "/js/consents.js",
  "/js/dom.js",
  "/js/i18n.js",
  "/js/live.js",
  "/js/maintenance.js",
  "/js/moderation.js",
  "/js/notify.js",
  "/js/store.js",
  "/js/upload.js",
  "/js/views/account.js",
  "/js/views/admin.js",
  "/js/views/admin/audit.js",
  "/js/views/admin/children.js",
  "/js/views/admin/common.js",
  "/js/views/admin/erasures.js",
  "/js/views/admin/groups.js",
  "/js/views/admin/households.js",
  "/js/views/admin/settings.js",
  "/js/views/admin/staff.js",
  "/js/views/channels.js",
  "/js/views/children.js",
  "/js/views/compose.js",
  "/js/views/consent.js",
  "/js/views/conversation.js",
  "/js/views/exports.js",
  "/js/views/flag.js",
  "/js/views/invite.js",
  "/js/views/login.js",
  "/js/views/media.js",
  "/js/views/message.js",
  "/js/views/moderation.js",
  "/js/views/records.js",
  "/js/views/report.js",
  "/js/views/terms.js",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((names) => Promise.all(names.filter((name) => name !== CACHE).map((name) => caches.delete(name))))
      .then(() => self.clients.claim()),
  );
});

// Network first, so that an update of the server is used at once; the cached shell when the
// network is away.
self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== self.location.origin || !SHELL.includes(url.pathname)) return;
  event.respondWith(
    fetch(request)
      .then((response) => {
        if (response.ok && response.type === "basic") {
          const copy = response.clone();
          caches.open(CACHE).then((cache) => cache.put(url.pathname, copy));
        }
        return response;
      })
      .catch(() => caches.match(url.pathname).then((cached) => cached || Response.error())),
  );
});
