// REST calls to signaling (proto/src/signal.rs): /api/session, /api/reports,
// /api/appeals, /api/stats. Every error answer is an ErrorBody
// {code, message, ban?}; it is thrown as an ApiError.

export class ApiError extends Error {
  constructor(status, body, retryAfter) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.code) || (status === 429 ? 'rate_limited' : 'http_' + status);
    this.ban = (body && body.ban) || null;
    this.retryAfter = retryAfter;
  }
}

async function call(method, path, body, token, extraHeaders = {}) {
  const headers = { Accept: 'application/json', ...extraHeaders };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, { code: 'network', message: 'Could not reach the server. Check your connection.' });
  }
  let data = null;
  const text = await res.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!res.ok) {
    const ra = Number(res.headers.get('Retry-After'));
    throw new ApiError(res.status, data, Number.isFinite(ra) && ra > 0 ? ra : null);
  }
  return { status: res.status, data };
}

/** POST /api/session → SessionResponse; `captchaToken`: a solved challenge (captcha.js). */
export async function createSession(deviceId, captchaToken = null) {
  const extra = captchaToken ? { 'X-Captcha-Token': captchaToken } : {};
  const { data } = await call('POST', '/api/session', { accept_rules: true, device_id: deviceId }, undefined, extra);
  return data;
}

/** POST /api/reports → {status, data: ReportCreated}. */
export function sendReport(token, category, text) {
  return call('POST', '/api/reports', { category, text }, token);
}

/** POST /api/appeals. */
export function sendAppeal(appealToken, text) {
  return call('POST', '/api/appeals', { appeal_token: appealToken, text });
}

/** GET /api/stats → Stats, or null when unavailable. */
export async function getStats() {
  try {
    const { data } = await call('GET', '/api/stats');
    return data;
  } catch {
    return null;
  }
}

/** Length in UTF-8 bytes. */
export function utf8Bytes(s) {
  return new TextEncoder().encode(s).length;
}
