// The moderator API (`/api/admin/*`, docs/api-admin.md). The short-lived
// moderator token lives in sessionStorage (this tab only) and is refreshed
// while the page is open; images are fetched with the token and shown as
// blob: URLs (an <img src> could not carry the Authorization header).

const KEY = 'duet.admin.session';

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.code) || `http_${status}`;
    this.body = body;
  }
}

let session = null; // {token, expires_at, moderator: {id, email, role}}
let refreshTimer = null;
let onLoggedOut = () => {};

export function currentSession() {
  return session;
}

export function setLoggedOutHandler(fn) {
  onLoggedOut = fn;
}

function save(s) {
  session = s;
  if (s) sessionStorage.setItem(KEY, JSON.stringify(s));
  else sessionStorage.removeItem(KEY);
  scheduleRefresh();
}

export function restore() {
  try {
    const s = JSON.parse(sessionStorage.getItem(KEY) || 'null');
    if (s && s.token && s.expires_at * 1000 > Date.now() + 5000) {
      session = s;
      scheduleRefresh();
      return s;
    }
  } catch { /* ignore */ }
  sessionStorage.removeItem(KEY);
  return null;
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  if (!session) return;
  const left = session.expires_at * 1000 - Date.now();
  // Refresh at two thirds of the lifetime (at least 5 s from now).
  const at = Math.max(5000, left * (2 / 3));
  refreshTimer = setTimeout(async () => {
    try {
      const { data } = await call('POST', '/api/admin/refresh', {});
      save(data);
    } catch (e) {
      if (e.status === 401) expire(e);
    }
  }, at);
}

function expire(e) {
  save(null);
  onLoggedOut(e);
}

async function raw(method, path, { body, contentType, accept } = {}) {
  const headers = { Accept: accept || 'application/json' };
  if (session) headers.Authorization = `Bearer ${session.token}`;
  let payload;
  if (body !== undefined) {
    if (contentType) {
      headers['Content-Type'] = contentType;
      payload = body;
    } else {
      headers['Content-Type'] = 'application/json';
      payload = JSON.stringify(body);
    }
  }
  let res;
  try {
    res = await fetch(path, { method, headers, body: payload, cache: 'no-store', credentials: 'omit' });
  } catch {
    throw new ApiError(0, { code: 'network', message: 'Could not reach the server.' });
  }
  if (!res.ok) {
    let data = null;
    try { data = await res.json(); } catch { /* not JSON */ }
    const err = new ApiError(res.status, data);
    if (res.status === 401 && path !== '/api/admin/login') expire(err);
    throw err;
  }
  return res;
}

/** JSON call → {status, data}. */
export async function call(method, path, body) {
  const res = await raw(method, path, { body });
  const text = await res.text();
  return { status: res.status, data: text ? JSON.parse(text) : null };
}

export const get = (path) => call('GET', path).then((r) => r.data);
export const post = (path, body = {}) => call('POST', path, body).then((r) => r.data);
export const put = (path, body = {}) => call('PUT', path, body).then((r) => r.data);
export const patch = (path, body = {}) => call('PATCH', path, body).then((r) => r.data);
export const del = (path) => call('DELETE', path).then((r) => r.data);

/** An image as a blob: URL (revoke it when replaced), or null if there is none yet. */
export async function imageUrl(path) {
  try {
    const res = await raw('GET', path, { accept: 'image/*' });
    return URL.createObjectURL(await res.blob());
  } catch (e) {
    if (e.status === 404) return null;
    throw e;
  }
}

/** Downloads a CSV export as a file. */
export async function download(path, filename) {
  const res = await raw('GET', path, { accept: 'text/csv' });
  const url = URL.createObjectURL(await res.blob());
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 5000);
}

/** Uploads text/csv. */
export async function uploadCsv(path, text) {
  const res = await raw('POST', path, { body: text, contentType: 'text/csv' });
  return res.json();
}

export async function login(email, password) {
  const { data } = await call('POST', '/api/admin/login', { email, password });
  save(data);
  return data;
}

export async function logout() {
  try { await call('POST', '/api/admin/logout', {}); } catch { /* gone anyway */ }
  save(null);
}
