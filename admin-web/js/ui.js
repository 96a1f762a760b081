// Small DOM helpers shared by the views (no innerHTML with data: text only).

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

export function fmtTime(unix) {
  if (!unix && unix !== 0) return '—';
  const d = new Date(unix * 1000);
  return d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

export function ago(unix) {
  if (!unix) return '—';
  const s = Math.round(Date.now() / 1000 - unix);
  if (s < 0) return 'in ' + span(-s);
  if (s < 45) return 'just now';
  return span(s) + ' ago';
}

export function until(unix) {
  if (!unix) return 'permanent';
  const s = Math.round(unix - Date.now() / 1000);
  return s <= 0 ? 'expired' : 'in ' + span(s);
}

function span(s) {
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 129600) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} days`;
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

export const CATEGORY = {
  minor: 'Looks under 18',
  violence: 'Violence or threats',
  nudity: 'Nudity / sexual',
  hate: 'Hate speech',
  harassment: 'Harassment',
  spam: 'Spam or scam',
  other: 'Other',
};

/**
 * A small modal question. Resolves to the text typed (or true for a plain
 * confirmation), or null when cancelled.
 */
export function ask({ title, text = '', input = false, placeholder = '', ok = 'OK', danger = false }) {
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
export function shotTile({ label, onReveal, alt }) {
  // Named by what it shows (see the wall's tiles); `alt` is the picture's
  // name once revealed, the state is for the ear only.
  const img = el('img', { alt: '', decoding: 'async' });
  img.hidden = true;
  const nosnap = el('span.nosnap', { text: 'No picture yet' });
  const stateText = el('span.sr-only', { text: '(blurred)' });
  const tile = el('button.shot.blurred', { type: 'button' },
    img, nosnap, el('span.reveal', { text: 'Click to reveal' }), el('span.side', { text: label || 'Snapshot' }), stateText);
  tile.img = img;
  tile.addEventListener('click', async () => {
    if (!tile.classList.contains('blurred')) {
      tile.classList.add('blurred');
      img.alt = '';
      stateText.textContent = '(blurred)';
      return;
    }
    tile.classList.remove('blurred');
    img.alt = alt || '';
    stateText.textContent = '(revealed, click to blur)';
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
