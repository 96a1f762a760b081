// The snapshot wall: live video calls, both sides' latest snapshots (via
// signaling, blurred until clicked; a click is recorded), call age, node,
// region, report count, automatic screening's flag; watch, end the call,
// ban one side, or clear a flag. Calls screening flagged come first (the
// server sorts: riskiest first), and the cards follow that order on every
// refresh. While this view is open it refreshes every few seconds, and
// signaling keeps asking the SFU for fresh keyframes; when it closes, that
// stops (unless a screener needs them).

import * as api from './api.js';
import { t } from '/js/i18n.js';
import { $, el, clear, duration, toast, ask, num, errorText, label } from './ui.js';
import { openAction } from './actions.js';
import { startWatch } from './watch.js';

const cards = new Map(); // pairing_id -> card
let timer = null;
let tick = null;
let active = false;
let skewMs = 0;
/** The last wall answer (the heading's counts are said again from it after a language switch). */
let last = null;

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
  const risk = el('span.chip.risk');
  const buttons = {
    watch: el('button.btn.primary.small', { type: 'button', onclick: () => watch(card) }),
    end: el('button.btn.small', { type: 'button', onclick: () => endCall(card) }),
    clearFlag: el('button.btn.small.clear-flag', { type: 'button', onclick: () => clearScreening(card) }),
    ban: el('button.btn.danger.small', { type: 'button', onclick: () => ban(card) }),
  };
  const root = el('article.call', { dataset: { pairing: p.pairing_id } },
    el('div.pair', {}, tiles),
    el('div.call-info', {}, el('span.live-dot.small', { 'aria-hidden': 'true' }), dur, where, interests, reports, risk),
    el('div.call-actions', {}, buttons.watch, buttons.end, buttons.clearFlag, buttons.ban));
  const card = { root, tiles, dur, reports, where, interests, risk, buttons, data: p };
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
  const nosnap = el('span.nosnap');
  const age = el('span.age');
  const stateText = el('span.sr-only');
  const reveal = el('span.reveal');
  const sideText = el('span.side');
  // Its words, said again on every refresh (and so after a language switch).
  tile.relabel = () => {
    nosnap.textContent = t('shot.none');
    reveal.textContent = t('shot.reveal');
    sideText.textContent = t('wall.side', { side: label });
    stateText.textContent = tile.classList.contains('blurred') ? t('shot.blurred') : t('shot.revealed');
  };
  const blur = (on) => {
    tile.classList.toggle('blurred', on);
    tile.relabel();
  };
  blur(true);
  tile.append(img, nosnap, reveal, sideText, age, stateText);
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
      toast(t('wall.viewFailed', { detail: errorText(e) }), true);
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
  card.reports.textContent = reports ? t('wall.reports', { count: num(reports) }) : t('wall.noReports');
  card.reports.className = `chip reports ${reports ? 'bad' : ''}`;
  const f = p.screening;
  const flagged = !!f && !f.cleared;
  card.root.classList.toggle('flagged', reports > 0 || flagged);
  card.root.dataset.risk = flagged ? f.level : '';
  card.risk.hidden = !f;
  card.risk.className = `chip risk ${flagged ? 'bad' : ''}`;
  if (f) {
    const vars = { category: f.category, score: f.score.toFixed(2), level: label('screenLevel', f.level), side: f.side.toUpperCase() };
    card.risk.textContent = t(f.cleared ? 'wall.screeningCleared' : 'wall.screening', vars);
    card.risk.title = [t('wall.screeningModel', { model: f.model }), t('wall.screeningSamples', { count: num(f.samples) }),
      f.report_id ? t('wall.screeningReported') : null].filter(Boolean).join(' · ');
  } else {
    card.risk.textContent = '';
    card.risk.title = '';
  }
  card.buttons.clearFlag.hidden = !flagged;
  card.where.textContent = t('wall.where', { node: p.node_id, region: p.region });
  card.interests.textContent = p.common_interests && p.common_interests.length ? `♥ ${p.common_interests.join(', ')}` : '';
  card.buttons.watch.textContent = t('wall.watch');
  card.buttons.end.textContent = t('wall.end');
  card.buttons.clearFlag.textContent = t('wall.clearFlag');
  card.buttons.ban.textContent = t('wall.ban');
  for (const tile of card.tiles) {
    const side = p[tile.side];
    tile.relabel();
    tile.ageEl.textContent = side.snapshot_age_ms != null ? t('wall.age', { seconds: num(Math.round(side.snapshot_age_ms / 1000)) }) : '';
    tile.ageEl.hidden = side.snapshot_age_ms == null;
    tile.title = [t('wall.device', { device: side.device }), side.via_turn ? t('wall.viaTurn') : null,
      side.reports ? t('wall.deviceReports', { count: num(side.reports) }) : null].filter(Boolean).join(' · ');
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
    $('wall-sub').textContent = t('wall.loadFailed', { detail: errorText(e) });
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
    }
    update(card, p);
    // In the server's order (riskiest first); appending moves a card in place.
    if (grid.lastElementChild !== card.root) grid.append(card.root);
  }
  for (const [id, card] of cards) {
    if (!seen.has(id)) removeCard(id, card);
  }
  $('wall-empty').hidden = w.pairings.length > 0;
  last = w;
  saySub();
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

/** The heading's line: how many calls, text chats, how fresh. */
function saySub() {
  const w = last;
  const parts = [t(w.total === 1 ? 'wall.videoCall' : 'wall.videoCalls', { count: num(w.total) })];
  if (w.total > w.pairings.length) parts[0] += ` ${t('common.showing', { count: num(w.pairings.length) })}`;
  if (w.text_pairings) parts.push(t(w.text_pairings === 1 ? 'wall.textChat' : 'wall.textChats', { count: num(w.text_pairings) }));
  parts.push(t('wall.keyframes', { seconds: num(w.keyframe_interval_ms / 1000, 1) }));
  $('wall-sub').textContent = parts.join(' · ');
}

/** After a language switch: every card and the heading in the new words, from the last answer. */
export function renderWall() {
  for (const card of cards.values()) update(card, card.data);
  if (last && active) saySub();
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
  last = null;
  for (const [id, card] of cards) removeCard(id, card);
  clear($('wall-grid'));
}

async function watch(card) {
  try {
    await startWatch(card.data);
  } catch (e) {
    toast(t('wall.watchFailed', { detail: errorText(e) }), true);
  }
}

async function endCall(card) {
  const ok = await ask({
    title: t('wall.endTitle'),
    text: t('wall.endText'),
    ok: t('wall.end'),
    danger: true,
  });
  if (!ok) return;
  try {
    await api.post(`/api/admin/pairings/${encodeURIComponent(card.data.pairing_id)}/end`, {});
    toast(t('wall.ended'));
    removeCard(card.data.pairing_id, card);
  } catch (e) {
    toast(t('wall.endFailed', { detail: errorText(e) }), true);
  }
}

async function clearScreening(card) {
  const f = card.data.screening;
  const ok = await ask({
    title: t('wall.clearTitle'),
    text: t('wall.clearText', { side: f.side.toUpperCase(), category: f.category, score: f.score.toFixed(2) }),
    ok: t('wall.clearFlag'),
  });
  if (!ok) return;
  try {
    await api.post(`/api/admin/pairings/${encodeURIComponent(card.data.pairing_id)}/screening/clear`, {});
    toast(t('wall.cleared'));
    refresh();
  } catch (e) {
    toast(t('wall.clearFailed', { detail: errorText(e) }), true);
  }
}

async function ban(card) {
  const p = card.data;
  await openAction({
    mode: 'ban',
    title: t('wall.banTitle'),
    context: t('wall.banContext', { node: p.node_id, region: p.region, duration: duration((Date.now() + skewMs - p.matched_at_ms) / 1000) }),
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
      toast(t('wall.banned', { device: `${v.value.slice(0, 12)}…` }));
    },
  });
}
