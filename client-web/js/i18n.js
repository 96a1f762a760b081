// The pages' languages, shared by the visitor page (`/`) and the moderation
// pages (`/admin/`, which import this module as /js/i18n.js). Every visible
// string lives in the page's own locales/<lang>.json (the same keys in every
// file, the same files for both pages: scripts/check-locales checks it). The
// language is, in order: the person's choice (stored per page), the server's
// reading of Accept-Language (GET /api/lang), the browser's languages, English.
// Elements name their string with data-i18n="key" (text; **x** becomes <b>x</b>,
// built with DOM nodes, never innerHTML) and data-i18n-attr="attr:key;…".
// Dates and numbers go through Intl with the same language.

export const LANGUAGES = ['en', 'es', 'de', 'pt-BR'];
const RTL = new Set(['ar', 'fa', 'he', 'ur']);

// Where the page's locale files are and where its choice is remembered (see init()).
let localesUrl = '/locales/';
let storeKey = 'duet.uiLang';
let lang = 'en';
let strings = {};
let fallback = {};
const listeners = [];

/** The best of LANGUAGES for a list of BCP 47 tags (exact, then by primary subtag). */
export function negotiate(tags) {
  for (const tag of tags || []) {
    if (!tag) continue;
    const exact = LANGUAGES.find((l) => l.toLowerCase() === tag.toLowerCase());
    if (exact) return exact;
    const primary = tag.split('-')[0].toLowerCase();
    const byPrimary = LANGUAGES.find((l) => l.split('-')[0].toLowerCase() === primary);
    if (byPrimary) return byPrimary;
  }
  return null;
}

async function fetchJson(url) {
  const r = await fetch(url, { headers: { Accept: 'application/json' }, cache: 'no-cache' });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

export function current() {
  return lang;
}

/** The string for `key` with `{name}` placeholders filled from `vars`. */
export function t(key, vars = {}) {
  const s = strings[key] ?? fallback[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
}

/** Whether `key` has a string (for keys made from server codes, which may be new to the page). */
export function has(key) {
  return key in strings || key in fallback;
}

/** `**bold**` runs as <b> elements; everything else as text nodes. */
function setRich(el, text) {
  const parts = text.split(/\*\*(.+?)\*\*/);
  const nodes = parts.map((p, i) => {
    if (i % 2 === 0) return document.createTextNode(p);
    const b = document.createElement('b');
    b.textContent = p;
    return b;
  });
  el.replaceChildren(...nodes);
}

/** Fills every data-i18n / data-i18n-attr element under `root`. */
export function apply(root = document) {
  for (const el of root.querySelectorAll('[data-i18n]')) setRich(el, t(el.dataset.i18n));
  for (const el of root.querySelectorAll('[data-i18n-attr]')) {
    for (const pair of el.dataset.i18nAttr.split(';')) {
      const [attr, key] = pair.split(':').map((x) => x.trim());
      if (attr && key) el.setAttribute(attr, t(key));
    }
  }
  const title = strings['meta.title'];
  if (title) document.title = title;
  const desc = document.querySelector('meta[name="description"]');
  if (desc) desc.setAttribute('content', t('meta.description'));
}

function direction(tag) {
  try {
    const info = new Intl.Locale(tag).textInfo || (new Intl.Locale(tag).getTextInfo && new Intl.Locale(tag).getTextInfo());
    if (info && info.direction) return info.direction;
  } catch { /* fall through */ }
  return RTL.has(tag.split('-')[0]) ? 'rtl' : 'ltr';
}

/** Switches to `next` (one of LANGUAGES) without reloading: strings, lang, dir, listeners. */
export async function setLanguage(next, { remember = true } = {}) {
  if (!LANGUAGES.includes(next)) next = 'en';
  const loaded = await fetchJson(`${localesUrl}${next}.json`);
  lang = next;
  strings = loaded;
  document.documentElement.lang = next;
  document.documentElement.dir = direction(next);
  if (remember) {
    try { localStorage.setItem(storeKey, next); } catch { /* private mode */ }
  }
  apply();
  for (const fn of listeners) fn(next);
  return next;
}

/** Called with the new language after every switch (to re-render dynamic text). */
export function onChange(fn) {
  listeners.push(fn);
}

/**
 * Picks and loads the first language (see the top of this file). `locales` is
 * the URL of the page's locale folder; `store` the localStorage key of its choice.
 */
export async function init({ locales = '/locales/', store = 'duet.uiLang' } = {}) {
  localesUrl = locales;
  storeKey = store;
  try { fallback = await fetchJson(`${localesUrl}en.json`); } catch { fallback = {}; }
  let saved = null;
  try { saved = localStorage.getItem(storeKey); } catch { saved = null; }
  let chosen = LANGUAGES.includes(saved) ? saved : null;
  if (!chosen) {
    try { chosen = (await fetchJson('/api/lang')).lang; } catch { chosen = null; }
  }
  if (!LANGUAGES.includes(chosen)) chosen = negotiate(navigator.languages || [navigator.language]) || 'en';
  try {
    return await setLanguage(chosen, { remember: false });
  } catch {
    strings = fallback;
    apply();
    return 'en';
  }
}

/** A date and time in the page's language. */
export function formatDateTime(date) {
  return new Intl.DateTimeFormat(lang, { dateStyle: 'medium', timeStyle: 'short' }).format(date);
}

/** A number in the page's language. */
export function formatNumber(n) {
  return new Intl.NumberFormat(lang).format(n);
}

/**
 * Makes `sel` the page's language switch: each language in its own name (so
 * a person finds theirs), switching in place on change and following every
 * switch (a page may have more than one).
 */
export function bindLanguageSelect(sel) {
  sel.replaceChildren(...LANGUAGES.map((code) => {
    const o = document.createElement('option');
    o.value = code;
    try { o.textContent = new Intl.DisplayNames([code], { type: 'language' }).of(code) || code; } catch { o.textContent = code; }
    o.textContent = o.textContent.charAt(0).toLocaleUpperCase(code) + o.textContent.slice(1);
    o.lang = code;
    return o;
  }));
  sel.value = lang;
  // A locale that cannot be loaded leaves the page as it was.
  sel.addEventListener('change', () => { setLanguage(sel.value).catch(() => { sel.value = lang; }); });
  onChange((next) => { sel.value = next; });
}

/** A language's own name in the page's language, e.g. "Deutsch" → "German" in English. */
export function languageName(code) {
  try {
    const name = new Intl.DisplayNames([lang], { type: 'language' }).of(code) || code;
    return name.charAt(0).toLocaleUpperCase(lang) + name.slice(1);
  } catch {
    return code;
  }
}
