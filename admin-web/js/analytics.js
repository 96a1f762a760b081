// Analytics from the service's own state and metrics (refreshed every 5 s
// while shown).

import * as api from './api.js';
import { t } from '/js/i18n.js';
import { $, el, clear, duration, fmtClock, num, percent, errorText } from './ui.js';

let timer = null;
/** The last answer and when it came (drawn again after a language switch). */
let last = null;

const pct = (x) => (x === null || x === undefined ? '—' : percent(x));
const dec = (x, d = 1) => (x === null || x === undefined ? '—' : num(Number(x), d));
const secs = (x) => (x === null || x === undefined ? '—' : x < 10 ? t('analytics.seconds', { seconds: num(x, 2) }) : duration(x));
/** `one` or `many`'s string for `n`, with `n` in the page's digits. */
const count = (n, one, many, vars = {}) => t(n === 1 ? one : many, { count: num(n), ...vars });

function tile(label, value, note, share) {
  const box = el('div.tile.card', {}, el('div.label', { text: label }), el('div.value', {}, value), note ? el('div.note', { text: note }) : null);
  if (share !== undefined && share !== null) {
    const bar = el('span');
    bar.style.width = `${Math.max(0, Math.min(100, share * 100))}%`;
    box.append(el('div.bar', {}, bar));
  }
  return box;
}

async function refresh() {
  const a = await api.get('/api/admin/analytics');
  window.admin.analytics = a;
  last = { a, at: Date.now() };
  renderAnalytics();
}

/** The tiles from the last answer. */
export function renderAnalytics() {
  if (!last) return;
  const { a, at } = last;
  const box = clear($('analytics-tiles'));
  const win = a.window_secs ? t('analytics.window', { minutes: num(Math.round(a.window_secs / 60) || 1) }) : t('analytics.collecting');
  const nodes = count(a.nodes, 'analytics.nodeOne', 'analytics.nodes');
  box.append(
    tile(t('analytics.online'), num(a.online), count(a.active_pairings, 'analytics.callRunning', 'analytics.callsRunning')),
    tile(t('analytics.waitingVideo'), num(a.waiting.video)),
    tile(t('analytics.waitingText'), num(a.waiting.text)),
    tile(t('analytics.matchesPerMinute'), dec(a.matches_per_minute), win),
    tile(t('analytics.timeToMatch'), el('span', {}, secs(a.time_to_match_p50_secs), el('small', { text: ' p50' })), `p95 ${secs(a.time_to_match_p95_secs)}`),
    tile(t('analytics.averageCall'), secs(a.avg_call_secs), count(a.calls_ended_total, 'analytics.callEnded', 'analytics.callsEnded')),
    tile(t('analytics.nextRate'), pct(a.next_rate), t('analytics.nextsPerMinute', { count: dec(a.nexts_per_minute) }), a.next_rate),
    tile(t('analytics.turnShare'), pct(a.turn_share),
      count(a.media_connections, 'analytics.mediaConnection', 'analytics.mediaConnections', { nodes }), a.turn_share),
    tile(t('analytics.reportsPer1000'), dec(a.reports_per_1000_pairings),
      t('analytics.reportTotals', { reports: num(a.reports_total), pairings: num(a.pairings_total), stored: num(a.reports_stored) })),
  );
  $('analytics-sub').textContent = t('analytics.updated', { time: fmtClock(at) });
}

export function showAnalytics() {
  clearInterval(timer);
  refresh().catch((e) => { $('analytics-sub').textContent = errorText(e); });
  timer = setInterval(() => refresh().catch(() => {}), 5000);
}

export function hideAnalytics() {
  clearInterval(timer);
}
