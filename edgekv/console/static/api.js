// The node's JSON API, called with the admin token as a bearer header.
// The token lives in sessionStorage (this tab only), never in a cookie: no page
// of another site can make the browser send it.

const TOKEN_KEY = "edgekv.token";

export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  set token(value) {
    if (value === null) sessionStorage.removeItem(TOKEN_KEY);
    else sessionStorage.setItem(TOKEN_KEY, value);
  },
  get loggedIn() { return sessionStorage.getItem(TOKEN_KEY) !== null; },
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(`${code}: ${message}`);
    this.status = status;
    this.code = code;
  }
}

let onUnauthorized = () => {};
export function whenUnauthorized(handler) { onUnauthorized = handler; }

// One call: JSON by default; {raw: true} answers the Response itself.
export async function api(path, { method = "GET", body, headers = {}, raw = false } = {}) {
  const sent = new Headers(headers);
  const token = session.token;
  if (token) sent.set("Authorization", `Bearer ${token}`);
  const response = await fetch(path, {
    method, body, headers: sent, credentials: "omit", cache: "no-store",
  });
  if (!response.ok) {
    let code = `http_${response.status}`;
    let message = response.statusText;
    try {
      const error = (await response.json()).error;
      code = error.code;
      message = error.message;
    } catch { /* not the JSON error shape */ }
    if (response.status === 401) onUnauthorized();
    throw new ApiError(response.status, code, message);
  }
  return raw ? response : response.json();
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    for (const one of [].concat(value)) {
      if (one !== undefined && one !== null && one !== "") search.append(name, one);
    }
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

const part = (text) => encodeURIComponent(text);
// Keys keep "/" as the Python client sends them.
const keyPart = (key) => encodeURIComponent(key).replaceAll("%2F", "/");

export const paths = {
  status: "/v1/cluster/status",
  history: "/v1/admin/history",
  namespaces: "/v1/admin/namespaces",
  collections: "/v1/admin/collections",
  changes: (params) => `/v1/admin/changes${query(params)}`,
  watchKeys: (ns, params) => `/v1/kv/${part(ns)}/_watch${query(params)}`,
  keys: (ns, params) => `/v1/kv/${part(ns)}${query(params)}`,
  key: (ns, key) => `/v1/kv/${part(ns)}/${keyPart(key)}`,
  documents: (collection, params) => `/v1/docs/${part(collection)}${query(params)}`,
  document: (collection, id) => `/v1/docs/${part(collection)}/${keyPart(id)}`,
  indexes: (collection) => `/v1/docs/${part(collection)}/_indexes`,
};
