// A minimal procreche client: login, terms, household and child channels, live chat with
// resume. Written from docs/protocol.md; no framework, no build step.
const STRINGS = {
  fr: {
    "logout": "Se déconnecter", "login.title": "Connexion", "login.email": "Adresse e-mail",
    "login.password": "Mot de passe", "login.submit": "Se connecter",
    "terms.title": "Conditions d'utilisation", "terms.accept": "J'accepte",
    "compose.label": "Votre message", "compose.send": "Envoyer",
    "status.online": "En ligne", "status.reconnecting": "Reconnexion…", "status.offline": "Hors ligne",
  },
  en: {
    "logout": "Log out", "login.title": "Log in", "login.email": "Email", "login.password": "Password",
    "login.submit": "Log in", "terms.title": "Terms of use", "terms.accept": "I accept",
    "compose.label": "Your message", "compose.send": "Send",
    "status.online": "Online", "status.reconnecting": "Reconnecting…", "status.offline": "Offline",
  },
};
const lang = navigator.language.startsWith("en") ? "en" : "fr";
const t = (key) => STRINGS[lang][key] ?? key;
document.documentElement.lang = lang;
document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });

const $ = (selector) => document.querySelector(selector);
const state = { token: localStorage.getItem("token"), me: null, channel: null, lastSeq: {}, socket: null, rid: 0, waiting: new Map() };

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 204) return null;
  const data = await response.json();
  if (!response.ok) throw Object.assign(new Error(data.detail), { code: data.code });
  return data;
}

function show(id) {
  for (const section of ["login", "terms", "home"]) $(`#${section}`).hidden = section !== id;
  $("#logout").hidden = id === "login";
}

async function start() {
  if (!state.token) return show("login");
  try {
    state.me = await api("GET", "/api/me");
  } catch (error) {
    if (error.code === "terms_not_accepted") return showTerms();
    localStorage.removeItem("token");
    state.token = null;
    return show("login");
  }
  renderChannels();
  show("home");
  connect();
}

async function showTerms() {
  const terms = await api("GET", "/api/terms");
  $("#terms .terms-text").textContent = terms.text;
  $("#terms").dataset.version = terms.version;
  show("terms");
}

function renderChannels() {
  const list = $("#channels");
  list.replaceChildren();
  for (const { channel, title } of state.me.channels) {
    const button = document.createElement("button");
    button.textContent = title;
    button.dataset.channel = channel;
    button.addEventListener("click", () => openChannel(channel, title));
    const item = document.createElement("li");
    item.append(button);
    list.append(item);
  }
}

function setStatus(key) { $("#status").textContent = t(key); }

function connect(delay = 500) {
  const socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`, ["procreche.v1.json"]);
  state.socket = socket;
  socket.addEventListener("open", async () => {
    try {
      await request("auth", { token: state.token });
      setStatus("status.online");
      delay = 500;
      if (state.channel) await subscribe(state.channel);
    } catch (error) { setStatus("status.offline"); }
  });
  socket.addEventListener("message", (event) => {
    const frame = JSON.parse(event.data);
    if (frame.op === "reply") {
      const waiter = state.waiting.get(frame.rid);
      state.waiting.delete(frame.rid);
      if (waiter) frame.ok ? waiter.resolve(frame) : waiter.reject(Object.assign(new Error(frame.error.message), frame.error));
    } else if (frame.op === "message") {
      receive(frame);
    }
  });
  socket.addEventListener("close", (event) => {
    for (const waiter of state.waiting.values()) waiter.reject(new Error("closed"));
    state.waiting.clear();
    if (state.socket !== socket || !state.token) return;
    if (event.code === 4403 || event.code === 4406) return start();
    setStatus("status.reconnecting");
    // Resume after a jittered backoff: subscribe again with the last seq seen.
    setTimeout(() => connect(Math.min(delay * 2, 15000)), delay * (0.5 + Math.random()));
  });
}

function request(op, fields) {
  const rid = ++state.rid;
  return new Promise((resolve, reject) => {
    state.waiting.set(rid, { resolve, reject });
    state.socket.send(JSON.stringify({ op, rid, ...fields }));
  });
}

function subscribe(channel) {
  const since = state.lastSeq[channel] ?? 0;
  return request("subscribe", { channel, since });
}

async function openChannel(channel, title) {
  if (state.channel && state.channel !== channel && state.socket.readyState === WebSocket.OPEN) {
    await request("unsubscribe", { channel: state.channel }).catch(() => {});
  }
  state.channel = channel;
  state.lastSeq[channel] = 0;
  $("#messages").replaceChildren();
  $("#channel-title").textContent = title;
  document.querySelectorAll("#channels button").forEach((b) => b.setAttribute("aria-current", String(b.dataset.channel === channel)));
  $("#compose").hidden = false;
  if (state.socket.readyState === WebSocket.OPEN) await subscribe(channel);
}

function receive(message) {
  if (message.channel !== state.channel || message.seq <= (state.lastSeq[message.channel] ?? 0)) return;
  state.lastSeq[message.channel] = message.seq;
  const item = document.createElement("li");
  item.classList.toggle("mine", message.author.id === state.me.user.id);
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = `${message.author.name} · ${new Date(message.at).toLocaleString(lang)}`;
  const text = document.createElement("div");
  text.textContent = message.body.text;
  item.append(meta, text);
  $("#messages").append(item);
  item.scrollIntoView({ block: "end" });
}

$("#login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  try {
    const { token } = await api("POST", "/api/login", { email: form.get("email"), password: form.get("password") });
    state.token = token;
    localStorage.setItem("token", token);
    await start();
  } catch (error) { $("#login .error").textContent = error.message; }
});

$("#terms").addEventListener("submit", async (event) => {
  event.preventDefault();
  await api("POST", "/api/terms/accept", { version: Number($("#terms").dataset.version) });
  await start();
});

$("#compose").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("#text").value.trim();
  if (!text) return;
  try {
    await request("publish", { channel: state.channel, msg_id: crypto.randomUUID(), body: { kind: "text", text } });
    $("#text").value = "";
    $("#compose .error").textContent = "";
  } catch (error) { $("#compose .error").textContent = error.message; }
});

$("#logout").addEventListener("click", async () => {
  await api("POST", "/api/logout").catch(() => {});
  localStorage.removeItem("token");
  state.token = null;
  state.socket?.close();
  show("login");
});

start();
