// Analytics from the service's own state and metrics (refreshed every 5 s
// while shown).

import * as api from './api.js';
import { $, el, clear, duration } from './ui.js';

let timer = null;

const pct = (x) => (x === null || x === undefined ? '—' : `${Math.round(x * 100)}%`);
const num = (x, d = 1) => (x === null || x === undefined ? '—' : Number(x).toFixed(d));
const secs = (x) => (x === null || x === undefined ? '—' : x < 10 ? `${x.toFixed(2)} s` : duration(x));

function tile(label, value, note, share) {
  const t = el('div.tile.card', {}, el('div.label', { text: label }), el('div.value', {}, value), note ? el('div.note', { text: note }) : null);
  if (share !== undefined && share !== null) {
    const bar = el('span');
    bar.style.width = `${Math.max(0, Math.min(100, share * 100))}%`;
    t.append(el('div.bar', {}, bar));
  }
  return t;
}

async function refresh() {
  const a = await api.get('/api/admin/analytics');
  window.admin.analytics = a;
  const box = clear($('analytics-tiles'));
  const win = a.window_secs ? `last ${Math.round(a.window_secs / 60) || 1} min` : 'collecting…';
  box.append(
    tile('Online now', String(a.online), `${a.active_pairings} call${a.active_pairings === 1 ? '' : 's'} running`),
    tile('Waiting · video', String(a.waiting.video)),
    tile('Waiting · text', String(a.waiting.text)),
    tile('Matches per minute', num(a.matches_per_minute), win),
    tile('Time to match', el('span', {}, secs(a.time_to_match_p50_secs), el('small', { text: ' p50' })), `p95 ${secs(a.time_to_match_p95_secs)}`),
    tile('Average call', secs(a.avg_call_secs), `${a.calls_ended_total} calls ended`),
    tile('Next rate', pct(a.next_rate), `${num(a.nexts_per_minute)} Next per minute`, a.next_rate),
    tile('TURN share', pct(a.turn_share), `${a.media_connections} media connection${a.media_connections === 1 ? '' : 's'} on ${a.nodes} node${a.nodes === 1 ? '' : 's'}`, a.turn_share),
    tile('Reports per 1,000 pairings', num(a.reports_per_1000_pairings), `${a.reports_total} reports / ${a.pairings_total} pairings · ${a.reports_stored} stored`),
  );
  $('analytics-sub').textContent = `Updated ${new Date().toLocaleTimeString()} · rates and times are this server's since it started`;
}

export function showAnalytics() {
  clearInterval(timer);
  refresh().catch((e) => { $('analytics-sub').textContent = e.message; });
  timer = setInterval(() => refresh().catch(() => {}), 5000);
}

export function hideAnalytics() {
  clearInterval(timer);
}
