// The REST API (/api/v1) with the bearer token given at login, kept in sessionStorage (gone
// when the tab closes; never in a cookie, so other sites cannot make the browser use it).

const KEY = "hbroker.token";
export const PREFIX = "/api/v1";

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export function token() { return sessionStorage.getItem(KEY); }
export function setToken(value) { sessionStorage.setItem(KEY, value); }
export function forgetToken() { sessionStorage.removeItem(KEY); }

let onUnauthorised = () => {};
export function whenUnauthorised(callback) { onUnauthorised = callback; }

export async function call(path, { method = "GET", body, as = token() } = {}) {
  const headers = { Accept: "application/json" };
  if (as) headers.Authorization = `Bearer ${as}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(PREFIX + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  if (!response.ok) {
    const message = (data && data.error) || `${response.status} ${response.statusText}`;
    if (response.status === 401 && as === token()) onUnauthorised(message);
    throw new ApiError(response.status, message);
  }
  return data;
}

// Every item of a paged list (up to `most`), following `next`.
export async function all(path, params = {}, most = 5000) {
  const items = [];
  let after = null;
  while (items.length < most) {
    const query = new URLSearchParams({ ...params, limit: "1000" });
    if (after !== null) query.set("after", after);
    const page = await call(`${path}?${query}`);
    items.push(...page.items);
    if (page.next === null) break;
    after = page.next;
  }
  return items;
}

// A topic as path segments: each level percent-encoded, the `/` kept.
export function topicPath(topic) {
  return topic.split("/").map(encodeURIComponent).join("/");
}
