// Talking to /api/v1: JSON in and out, problem+json errors, and the optional bearer token.

const TOKEN_KEY = "imageimport.apiToken";

/** A failed request, with the problem's human sentence as its message. */
export class ApiError extends Error {
  constructor(status, problem, fallback) {
    super(problem?.detail || problem?.title || fallback);
    this.name = "ApiError";
    this.status = status;
    this.problem = problem ?? null;
  }
}

export function getToken() {
  try {
    return window.localStorage.getItem(TOKEN_KEY);
  } catch {
    return null; // storage disabled: behave as if no token was given
  }
}

function setToken(token) {
  try {
    window.localStorage.setItem(TOKEN_KEY, token);
  } catch {
    // Nothing to do: the token just will not survive a reload.
  }
}

function clearToken() {
  try {
    window.localStorage.removeItem(TOKEN_KEY);
  } catch {
    // As above.
  }
}

let askForToken = null;
let pendingPrompt = null;
let declined = false;

/** Register the UI that asks the person for a token: async (message) => token | null. */
export function setTokenPrompt(prompt) {
  askForToken = prompt;
}

/** After the person said no once, only an explicit action (a "try again") asks again. */
export function allowTokenPrompt() {
  declined = false;
}

function obtainToken(rejected) {
  // Several requests can hit a 401 at the same moment; they all wait for one prompt.
  if (!pendingPrompt) {
    pendingPrompt = (async () => {
      if (declined || !askForToken) return null;
      const message = rejected
        ? "That token was not accepted. Check it and enter it again."
        : "This server asks for an API token. It is kept in this browser only.";
      const token = (await askForToken(message))?.trim();
      if (!token) {
        declined = true;
        return null;
      }
      setToken(token);
      return token;
    })().finally(() => {
      pendingPrompt = null;
    });
  }
  return pendingPrompt;
}

async function readProblem(response) {
  try {
    const body = await response.json();
    return body && typeof body === "object" ? body : null;
  } catch {
    return null;
  }
}

/**
 * fetch() with the stored token; on 401 ask for a token (once) and try again.
 * Resolves to the parsed JSON (or the Response itself with `raw: true`).
 */
export async function request(path, { method = "GET", body, signal, raw = false } = {}) {
  for (let attempt = 0; ; attempt += 1) {
    const token = getToken();
    const headers = { Accept: raw ? "*/*" : "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
        // Progress and lists must be fresh; image bytes are immutable and may be cached.
        cache: raw ? "default" : "no-store",
      });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, null, "Cannot reach the server. Check the connection and try again.");
    }
    if (response.status === 401 && attempt < 2) {
      if (token && getToken() !== token) continue; // someone already entered a new one
      if (token) clearToken();
      if (await obtainToken(Boolean(token))) continue;
      throw new ApiError(401, null, "This server needs an API token to show anything.");
    }
    if (!response.ok) {
      const problem = await readProblem(response);
      throw new ApiError(response.status, problem, `The server answered ${response.status}.`);
    }
    if (raw) return response;
    if (response.status === 204) return null;
    return response.json();
  }
}

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

const base = "/api/v1";
const segment = (id) => encodeURIComponent(id);

export const api = {
  /** mode: "full", "lean", or "" for the installation's default. */
  createImport: (url, mode = "") =>
    request(`${base}/imports`, { method: "POST", body: { url, options: mode ? { mode } : {} } }),
  listImports: (limit = 10) => request(`${base}/imports${query({ limit })}`),
  getImport: (id, signal) => request(`${base}/imports/${segment(id)}`, { signal }),
  importEventsUrl: (id) => `${base}/imports/${segment(id)}/events`,
  failedItems: (id, cursor) =>
    request(`${base}/imports/${segment(id)}/items${query({ state: "failed", limit: 50, cursor })}`),
  cancelImport: (id) => request(`${base}/imports/${segment(id)}/cancel`, { method: "POST" }),
  retryImport: (id) => request(`${base}/imports/${segment(id)}/retry`, { method: "POST" }),
  syncImport: (id, prune) =>
    request(`${base}/imports/${segment(id)}/sync`, { method: "POST", body: { prune } }),
  getImage: (id) => request(`${base}/images/${segment(id)}`),
  listImages: ({ cursor, importId, limit = 60, signal } = {}) =>
    request(`${base}/images${query({ limit, cursor, import_id: importId })}`, { signal }),
};

/**
 * An object URL for an image that needs the bearer token (an <img> cannot send headers).
 * The caller revokes it with URL.revokeObjectURL when done.
 */
export async function authorizedObjectUrl(path, signal) {
  const response = await request(path, { raw: true, signal });
  return URL.createObjectURL(await response.blob());
}
