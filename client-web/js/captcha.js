// The challenge shown when signaling asks for one (`captcha_required`, after
// abuse signals such as reports or bursts of Next). GET /api/captcha says
// which widget to load (Turnstile or hCaptcha; both render the same way:
// `render(element, {sitekey, callback, 'error-callback', 'expired-callback'})`)
// and the solved token goes back in the `X-Captcha-Token` header of
// POST /api/session (api.js).

const $ = (id) => document.getElementById(id);

const ENGLISH = {
  'captcha.unavailable': 'The challenge cannot be shown right now. Please try again in a minute.',
  'captcha.cancelled': 'You need to solve the challenge to continue.',
  'captcha.invalid': 'That did not work — the challenge was not solved or has expired. Please try again.',
  'captcha.widgetError': 'The challenge had a problem. Please try again.',
  'captcha.expired': 'The challenge expired. Please solve it again.',
};
const english = (k) => ENGLISH[k] || k;
let configPromise = null;
let scriptPromise = null;

function widgetConfig() {
  if (!configPromise) {
    configPromise = fetch('/api/captcha', { headers: { Accept: 'application/json' }, cache: 'no-store' })
      .then((r) => (r.ok ? r.json() : { enabled: false }))
      .catch(() => { configPromise = null; return { enabled: false }; });
  }
  return configPromise;
}

function loadScript(url, globalName) {
  if (window[globalName]) return Promise.resolve(window[globalName]);
  if (!scriptPromise) {
    scriptPromise = new Promise((resolve, reject) => {
      const s = document.createElement('script');
      s.src = url;
      s.async = true;
      s.onload = () => (window[globalName] ? resolve(window[globalName]) : reject(new Error('challenge script has no widget')));
      s.onerror = () => { scriptPromise = null; reject(new Error('challenge script did not load')); };
      document.head.appendChild(s);
    });
  }
  return scriptPromise;
}

/**
 * Shows the challenge dialog and resolves with a solved token; rejects when
 * the visitor cancels or the widget cannot load. `problem` (text) is shown
 * above the widget, e.g. why the previous token was not accepted.
 */
export async function solveChallenge(t = english, problem = '') {
  const cfg = await widgetConfig();
  if (!cfg.enabled) throw Object.assign(new Error(t('captcha.unavailable')), { code: 'captcha_unavailable' });
  const dialog = $('captcha-dialog');
  const box = $('captcha-widget');
  const err = $('captcha-error');
  err.textContent = problem;
  err.hidden = !problem;
  box.replaceChildren();
  if (!dialog.open) dialog.showModal();
  window.duet.captcha = { shown: (window.duet.captcha?.shown || 0) + 1, problem };
  const globalName = cfg.provider === 'hcaptcha' ? 'hcaptcha' : 'turnstile';
  let api;
  try {
    api = await loadScript(cfg.script_url, globalName);
  } catch (e) {
    dialog.close();
    throw Object.assign(new Error(t('captcha.unavailable')), { code: 'captcha_unavailable' });
  }
  return new Promise((resolve, reject) => {
    const cancel = $('captcha-cancel');
    const done = (fn, v) => {
      cancel.removeEventListener('click', onCancel);
      dialog.removeEventListener('cancel', onCancel);
      fn(v);
    };
    const onCancel = (e) => {
      e.preventDefault();
      dialog.close();
      done(reject, Object.assign(new Error(t('captcha.cancelled')), { code: 'captcha_cancelled' }));
    };
    cancel.addEventListener('click', onCancel);
    dialog.addEventListener('cancel', onCancel);
    api.render(box, {
      sitekey: cfg.site_key,
      callback: (token) => done(resolve, token),
      'error-callback': () => { err.textContent = t('captcha.widgetError'); err.hidden = false; },
      'expired-callback': () => { err.textContent = t('captcha.expired'); err.hidden = false; },
    });
  });
}

/** Closes the dialog once the server accepted the token. */
export function challengeDone() {
  const dialog = $('captcha-dialog');
  if (dialog.open) dialog.close();
}

/**
 * Runs `create(token)` (POST /api/session) and, while the server asks for a
 * challenge or refuses a token, shows the challenge and tries again with the
 * new token. `force`: show the challenge before the first try (the server
 * already asked over the WebSocket).
 */
export async function withChallenge(create, t = english, { force = false } = {}) {
  let token = force ? await solveChallenge(t) : null;
  for (let attempt = 0; ; attempt++) {
    try {
      const r = await create(token);
      challengeDone();
      return r;
    } catch (e) {
      if (attempt >= 5 || !(e && (e.code === 'captcha_required' || e.code === 'captcha_invalid'))) {
        challengeDone();
        throw e;
      }
      token = await solveChallenge(t, e.code === 'captcha_invalid' ? t('captcha.invalid') : '');
    }
  }
}
