// fetch with the session token; errors are problem+json documents (protocol.md §1.1) turned
// into ApiError, keeping the stable `code` and the machine-readable `details`.

const TOKEN_KEY = "token";

// The only thing the app keeps in localStorage (with the language choice): family content
// never goes to storage.
export const session = {
  get token() {
    return localStorage.getItem(TOKEN_KEY);
  },
  save(token) {
    localStorage.setItem(TOKEN_KEY, token);
  },
  clear() {
    localStorage.removeItem(TOKEN_KEY);
  },
};

export class ApiError extends Error {
  constructor(status, problem = {}) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.code = problem.code || (status ? `http_${status}` : "network");
    this.details = problem.details ?? null;
  }
}

// "expired" when the server no longer knows the token (expired, revoked): back to the login;
// "maintenance" ({message}) when the deployment is in maintenance mode.
export const sessionEvents = new EventTarget();

export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const token = session.token;
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, { code: "network" });
  }
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json().catch(() => ({})) : {};
  if (!response.ok) {
    const error = new ApiError(response.status, data);
    if (token && response.status === 401) sessionEvents.dispatchEvent(new CustomEvent("expired", { detail: error.code }));
    if (error.code === "maintenance") sessionEvents.dispatchEvent(new CustomEvent("maintenance", { detail: { message: data.detail } }));
    throw error;
  }
  return data;
}

// A short-lived link to one rendition of a media (protocol.md §1.3a), for <img src>.
export async function mediaLink(id, size) {
  const reply = await api("GET", `/api/media/${encodeURIComponent(id)}?size=${size}`);
  return reply.url;
}
