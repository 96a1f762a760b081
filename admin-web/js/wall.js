// The snapshot wall: live video calls, both sides' latest snapshots (via
// signaling, blurred until clicked; a click is recorded), call age, node,
// region, report count; watch, end the call, or ban one side. While this
// view is open it refreshes every few seconds, and signaling keeps asking
// the SFU for fresh keyframes; when it closes, that stops.

import * as api from './api.js';
import { $, el, clear, duration, toast, ask } from './ui.js';
import { openAction } from './actions.js';
import { startWatch } from './watch.js';

const cards = new Map(); // pairing_id -> card
let timer = null;
let tick = null;
let active = false;
let skewMs = 0;

function state() {
  return window.admin.wall;
}

function snapPath(p, side) {
  return `/api/admin/pairings/${encodeURIComponent(p.pairing_id)}/snapshot/${side}`;
}

function makeCard(p) {
  const tiles = ['a', 'b'].map((side) => shotTile(p, side));
  const dur = el('span.dur');
  const reports = el('span.chip.reports');
  const where = el('span.where');
  const interests = el('span.interests');
  const root = el('article.call', { dataset: { pairing: p.pairing_id } },
    el('div.pair', {}, tiles),
    el('div.call-info', {}, el('span.live-dot.small', { 'aria-hidden': 'true' }), dur, where, interests, reports),
    el('div.call-actions', {},
      el('button.btn.primary.small', { type: 'button', text: 'Watch live', onclick: () => watch(card) }),
      el('button.btn.small', { type: 'button', text: 'End call', onclick: () => endCall(card) }),
      el('button.btn.danger.small', { type: 'button', text: 'Ban…', onclick: () => ban(card) })));
  const card = { root, tiles, dur, reports, where, interests, data: p };
  return card;
}

function shotTile(p, side) {
  const label = side.toUpperCase();
  const tile = document.createElement('button');
  tile.type = 'button';
  tile.className = 'shot blurred';
  // The button is named by what it shows ("Click to reveal", "Side A", the
  // age), so a voice user can say what they see; the state is for the ear only.
  const img = el('img', { alt: '', decoding: 'async' });
  img.hidden = true;
  const nosnap = el('span.nosnap', { text: 'No picture yet' });
  const age = el('span.age');
  const stateText = el('span.sr-only');
  const blur = (on) => {
    tile.classList.toggle('blurred', on);
    stateText.textContent = on ? '(blurred)' : '(revealed, click to blur)';
  };
  blur(true);
  tile.append(img, nosnap, el('span.reveal', { text: 'Click to reveal' }), el('span.side', { text: `Side ${label}` }), age, stateText);
  tile.img = img;
  tile.ageEl = age;
  tile.side = side;
  tile.addEventListener('click', async () => {
    const card = cards.get(tile.closest('.call').dataset.pairing);
    if (!tile.classList.contains('blurred')) {
      blur(true);
      return;
    }
    blur(false);
    try {
      await api.post(`/api/admin/pairings/${encodeURIComponent(card.data.pairing_id)}/view`, { side });
      state().views++;
    } catch (e) {
      toast(`Could not record the view: ${e.message}`, true);
      blur(true);
    }
  });
  tile.setUrl = (url) => {
    if (!url) return;
    const old = tile.url;
    tile.url = url;
    img.onload = () => {
      if (old) URL.revokeObjectURL(old);
      state().loaded++;
    };
    img.src = url;
    img.hidden = false;
    nosnap.hidden = true;
  };
  return tile;
}

function update(card, p) {
  card.data = p;
  const reports = p.report_count || 0;
  card.reports.textContent = reports ? `${reports} report${reports > 1 ? 's' : ''}` : 'no reports';
  card.reports.className = `chip reports ${reports ? 'bad' : ''}`;
  card.root.classList.toggle('flagged', reports > 0);
  card.where.textContent = `node ${p.node_id} · region ${p.region}`;
  card.interests.textContent = p.common_interests && p.common_interests.length ? `♥ ${p.common_interests.join(', ')}` : '';
  for (const t of card.tiles) {
    const side = p[t.side];
    t.ageEl.textContent = side.snapshot_age_ms != null ? `${Math.round(side.snapshot_age_ms / 1000)} s old` : '';
    t.ageEl.hidden = side.snapshot_age_ms == null;
    t.title = `device ${side.device}${side.via_turn ? ' · via TURN' : ''}${side.reports ? ` · ${side.reports} report(s)` : ''}`;
  }
  renderDuration(card);
}

function renderDuration(card) {
  const now = Date.now() + skewMs;
  card.dur.textContent = duration((now - card.data.matched_at_ms) / 1000);
}

async function refresh() {
  const st = state();
  if ($('wall-paused').checked) return;
  let w;
  try {
    w = await api.get('/api/admin/wall');
  } catch (e) {
    $('wall-sub').textContent = `Could not load the wall: ${e.message}`;
    return;
  }
  if (!active) return;
  skewMs = w.now_ms - Date.now();
  st.refreshMs = w.refresh_ms;
  const grid = $('wall-grid');
  const seen = new Set();
  for (const p of w.pairings) {
    seen.add(p.pairing_id);
    let card = cards.get(p.pairing_id);
    if (!card) {
      card = makeCard(p);
      cards.set(p.pairing_id, card);
      grid.append(card.root);
    }
    update(card, p);
  }
  for (const [id, card] of cards) {
    if (!seen.has(id)) removeCard(id, card);
  }
  $('wall-empty').hidden = w.pairings.length > 0;
  const more = w.total > w.pairings.length ? ` (showing ${w.pairings.length})` : '';
  const text = w.text_pairings ? ` · ${w.text_pairings} text chat${w.text_pairings > 1 ? 's' : ''}` : '';
  $('wall-sub').textContent = `${w.total} video call${w.total === 1 ? '' : 's'}${more}${text} · fresh keyframes every ${(w.keyframe_interval_ms / 1000).toFixed(1)} s`;
  st.pairings = w.pairings.map((p) => p.pairing_id);
  st.refreshes++;
  // Snapshots, a few at a time.
  const jobs = [];
  for (const p of w.pairings) {
    const card = cards.get(p.pairing_id);
    for (const t of card.tiles) jobs.push(async () => t.setUrl(await api.imageUrl(snapPath(p, t.side))));
  }
  const workers = Array.from({ length: 4 }, async () => {
    while (jobs.length && active) {
      try { await jobs.shift()(); } catch (e) { state().errors = (state().errors || 0) + 1; state().lastError = String(e.message || e); }
    }
  });
  await Promise.all(workers);
}

function removeCard(id, card) {
  for (const t of card.tiles) if (t.url) URL.revokeObjectURL(t.url);
  card.root.remove();
  cards.delete(id);
}

async function loop() {
  if (!active) return;
  await refresh();
  if (!active) return;
  timer = setTimeout(loop, state().refreshMs || 3000);
}

export function showWall() {
  if (active) return;
  active = true;
  window.admin.wall = window.admin.wall || { pairings: [], loaded: 0, views: 0, refreshes: 0 };
  loop();
  tick = setInterval(() => { for (const c of cards.values()) renderDuration(c); }, 1000);
}

export function hideWall() {
  active = false;
  clearTimeout(timer);
  clearInterval(tick);
  for (const [id, card] of cards) removeCard(id, card);
  clear($('wall-grid'));
}

async function watch(card) {
  try {
    await startWatch(card.data);
  } catch (e) {
    toast(`Cannot watch: ${e.message}`, true);
  }
}

async function endCall(card) {
  const ok = await ask({
    title: 'End this call?',
    text: 'Both people are separated and told the chat was ended.',
    ok: 'End call',
    danger: true,
  });
  if (!ok) return;
  try {
    await api.post(`/api/admin/pairings/${encodeURIComponent(card.data.pairing_id)}/end`, {});
    toast('Call ended.');
    removeCard(card.data.pairing_id, card);
  } catch (e) {
    toast(`Could not end the call: ${e.message}`, true);
  }
}

async function ban(card) {
  const p = card.data;
  await openAction({
    mode: 'ban',
    title: 'Ban from this call',
    context: `Call on ${p.node_id} (${p.region}), running for ${duration((Date.now() + skewMs - p.matched_at_ms) / 1000)}.`,
    sides: [{ label: 'A', device: p.a.device }, { label: 'B', device: p.b.device }],
    allowEnd: true,
    submit: async (v) => {
      await api.post('/api/admin/bans', {
        kind: 'device',
        value: v.value,
        reason: v.statement,
        template: v.template,
        duration_secs: v.durationSecs,
      });
      if (v.endCall) {
        try { await api.post(`/api/admin/pairings/${encodeURIComponent(p.pairing_id)}/end`, {}); } catch { /* over already */ }
      }
      toast(`Device ${v.value.slice(0, 12)}… banned.`);
    },
  });
}
