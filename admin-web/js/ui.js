// Small DOM helpers shared by the views (no innerHTML with data: text only),
// and the page's words for what the server sends as codes (report categories,
// statuses, roles, ban kinds, audit actions, error codes).

import * as i18n from '/js/i18n.js';
import { t } from '/js/i18n.js';

export const $ = (id) => document.getElementById(id);

/** el('div.card.x', {title: 't', onclick: f}, child, 'text', …) */
export function el(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split('.');
  const node = document.createElement(tag || 'div');
  if (classes.length) node.className = classes.join(' ');
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k === 'text') node.textContent = v;
    else if (v === true) node.setAttribute(k, '');
    else node.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export function clear(node) {
  while (node.firstChild) node.firstChild.remove();
  return node;
}

/** A moment (Unix seconds) as a date and time in the page's language. */
export function fmtTime(unix) {
  if (!unix && unix !== 0) return '—';
  return i18n.formatDateTime(new Date(unix * 1000));
}

/** A moment (milliseconds) as a time of day in the page's language. */
export function fmtClock(ms) {
  return new Intl.DateTimeFormat(i18n.current(), { timeStyle: 'medium' }).format(new Date(ms));
}

/** A number in the page's language (with exactly `digits` decimals if given). */
export function num(n, digits) {
  if (digits === undefined) return i18n.formatNumber(n);
  return new Intl.NumberFormat(i18n.current(), { minimumFractionDigits: digits, maximumFractionDigits: digits }).format(n);
}

/** A share (0…1) as a whole percentage in the page's language. */
export function percent(x) {
  return new Intl.NumberFormat(i18n.current(), { style: 'percent', maximumFractionDigits: 0 }).format(x);
}

/** `secs` from now (negative: ago) in words of the page's language: "3 min ago", "in 2 days", "now". */
function relative(secs) {
  const rtf = new Intl.RelativeTimeFormat(i18n.current(), { numeric: 'auto' });
  const a = Math.abs(secs);
  if (a < 45) return rtf.format(0, 'second');
  if (a < 90) return rtf.format(secs, 'second');
  if (a < 5400) return rtf.format(Math.round(secs / 60), 'minute');
  if (a < 129600) return rtf.format(Math.round(secs / 3600), 'hour');
  return rtf.format(Math.round(secs / 86400), 'day');
}

export function ago(unix) {
  if (!unix) return '—';
  return relative(unix - Date.now() / 1000);
}

export function until(unix) {
  if (!unix) return t('time.permanent');
  const s = Math.round(unix - Date.now() / 1000);
  return s <= 0 ? t('time.expired') : relative(s);
}

/** A length of time (a ban's) in the page's language: "1 hour", "7 Tage". */
export function span(secs) {
  const [unit, n] = secs % 86400 === 0 ? ['day', secs / 86400]
    : secs % 3600 === 0 ? ['hour', secs / 3600]
      : secs % 60 === 0 ? ['minute', secs / 60] : ['second', secs];
  return new Intl.NumberFormat(i18n.current(), { style: 'unit', unit, unitDisplay: 'long' }).format(n);
}

export function duration(secs) {
  const s = Math.max(0, Math.floor(secs));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${r}` : `${m}:${r}`;
}

export function shortId(id) {
  return id ? String(id).slice(0, 8) : '—';
}

/** Something changed (a decision): counters refresh. */
export function changed() {
  window.dispatchEvent(new Event('admin:changed'));
}

let toastTimer = null;
export function toast(text, bad = false) {
  const t = $('toast');
  t.textContent = text;
  t.classList.toggle('bad', bad);
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 3000);
}

export function severityClass(sev) {
  return `sev-${Math.max(1, Math.min(5, sev || 1))}`;
}

/**
 * A server code in the page's language: `label('category', 'spam')` is the
 * string `category.spam`; a code the page does not know yet shows as
 * `fallback` (the server's own words, where it sends some), else as sent.
 */
export function label(group, code, fallback) {
  const key = `${group}.${code}`;
  return i18n.has(key) ? t(key) : String(fallback ?? code ?? '—');
}

/**
 * A refusal from the API in the page's language: known codes have their own
 * string (the server's words fill `{detail}` where they name the particulars,
 * e.g. which CSV lines are wrong); others are said as a refusal with them.
 */
export function errorText(e) {
  if (!e) return '';
  const detail = e.message || String(e);
  const key = `error.${e.code}`;
  return e.code && i18n.has(key) ? t(key, { detail }) : t('error.other', { detail });
}

/**
 * A small modal question. Resolves to the text typed (or true for a plain
 * confirmation), or null when cancelled.
 */
export function ask({ title, text = '', input = false, placeholder = '', ok = t('common.ok'), danger = false }) {
  const d = $('ask-dialog');
  $('ask-title').textContent = title;
  $('ask-text').textContent = text;
  const inp = $('ask-input');
  inp.hidden = !input;
  inp.value = '';
  inp.placeholder = placeholder;
  const okBtn = $('ask-ok');
  okBtn.textContent = ok;
  okBtn.className = `btn ${danger ? 'danger' : 'primary'}`;
  return new Promise((resolve) => {
    const done = (v) => {
      form.removeEventListener('submit', onSubmit);
      cancel.removeEventListener('click', onCancel);
      d.removeEventListener('cancel', onCancel);
      if (d.open) d.close();
      resolve(v);
    };
    const form = $('ask-form');
    const cancel = $('ask-cancel');
    const onSubmit = (e) => {
      e.preventDefault();
      if (input) {
        const v = inp.value.trim();
        if (!v) { inp.focus(); return; }
        done(v);
      } else done(true);
    };
    const onCancel = (e) => { e.preventDefault(); done(null); };
    form.addEventListener('submit', onSubmit);
    cancel.addEventListener('click', onCancel);
    d.addEventListener('cancel', onCancel);
    d.showModal();
    (input ? inp : okBtn).focus();
  });
}

/** A snapshot tile: blurred until clicked; `onReveal` runs once per reveal. */
export function shotTile({ label: side, onReveal, alt }) {
  // Named by what it shows (see the wall's tiles); `alt` is the picture's
  // name once revealed, the state is for the ear only.
  const img = el('img', { alt: '', decoding: 'async' });
  img.hidden = true;
  const nosnap = el('span.nosnap', { text: t('shot.none') });
  const stateText = el('span.sr-only', { text: t('shot.blurred') });
  const tile = el('button.shot.blurred', { type: 'button' },
    img, nosnap, el('span.reveal', { text: t('shot.reveal') }), el('span.side', { text: side || t('shot.snapshot') }), stateText);
  tile.img = img;
  tile.addEventListener('click', async () => {
    if (!tile.classList.contains('blurred')) {
      tile.classList.add('blurred');
      img.alt = '';
      stateText.textContent = t('shot.blurred');
      return;
    }
    tile.classList.remove('blurred');
    img.alt = alt || '';
    stateText.textContent = t('shot.revealed');
    if (onReveal) await onReveal(tile);
  });
  tile.setUrl = (url) => {
    if (tile.url) URL.revokeObjectURL(tile.url);
    tile.url = url;
    if (url) {
      img.src = url;
      img.hidden = false;
      nosnap.hidden = true;
    } else {
      img.hidden = true;
      nosnap.hidden = false;
    }
  };
  return tile;
}
