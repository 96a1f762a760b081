// The report queue (most severe, then newest first) and one report's
// evidence: snapshots (blurred; opening one is recorded), transcript,
// session details, the reported device's history; actions: dismiss, warn,
// ban (temporary with preset durations; permanent for seniors).

import * as api from './api.js';
import { t } from '/js/i18n.js';
import {
  $, el, clear, ago, fmtTime, fmtClock, until, toast, changed, label, severityClass, shotTile, shortId, num, errorText,
} from './ui.js';
import { openAction } from './actions.js';

let selected = null;
let items = [];
/** The last list answer's total and status (the heading is said again from them). */
let listed = null;
/** The open report as last loaded (drawn again after a language switch, not fetched again). */
let detail = null;

export async function showReports(id) {
  await loadList();
  const pick = id || (selected && items.some((r) => r.id === selected) ? selected : items[0] && items[0].id);
  if (pick) {
    await showDetail(pick);
    // Picked from the list (which was just redrawn, taking the focused item
    // with it): the focus goes to the report it opened.
    if (id) $('report-detail-title')?.focus();
  } else showNothing('reports.nothing');
}

function showNothing(key) {
  detail = null;
  clear($('report-detail')).append(el('p.empty', { text: t(key) }));
}

async function loadList() {
  const status = $('reports-status').value;
  const sort = $('reports-sort').value;
  const data = await api.get(`/api/admin/reports?status=${status}&sort=${sort}&limit=100`);
  items = data.reports;
  listed = { total: data.total, status };
  window.admin.reports = items.map((r) => r.id);
  renderList();
}

function renderList() {
  const { total, status } = listed;
  $('reports-sub').textContent = status === 'all'
    ? t(total === 1 ? 'reports.countOne' : 'reports.count', { count: num(total) })
    : t(total === 1 ? 'reports.countStatusOne' : 'reports.countStatus', { count: num(total), status: label('status', status) });
  const list = clear($('reports-list'));
  for (const r of items) {
    const meta = [label('mode', r.mode), t('reports.device', { device: shortId(r.reported_device) }),
      t(r.snapshot_count === 1 ? 'reports.snapshot' : 'reports.snapshots', { count: num(r.snapshot_count) })];
    if (r.device_reports > 1) meta.push(t('reports.onDevice', { count: num(r.device_reports) }));
    list.append(el('li', {}, el(`button.report-item.${severityClass(r.severity)}`, {
      type: 'button',
      dataset: { id: r.id },
      'aria-current': r.id === selected ? 'true' : 'false',
      onclick: () => { location.hash = `#/reports/${r.id}`; },
    },
    el('div.top', {}, el(`span.chip.${severityClass(r.severity)}`, { text: label('category', r.category) }),
      r.reporter_device === '(screening)' ? el('span.chip.warn', { text: t('reports.automatic') }) : null,
      r.status !== 'open' ? el('span.chip', { text: label('status', r.status) }) : null,
      el('span.when', { text: ago(r.created_at), title: fmtTime(r.created_at) })),
    el('p.txt', { text: r.text || t('reports.noText') }),
    el('div.meta', {}, meta.join(' · ')))));
  }
  if (!items.length) list.append(el('li.empty', { text: t('reports.empty') }));
}

function markSelected() {
  for (const b of document.querySelectorAll('.report-item')) b.setAttribute('aria-current', String(b.dataset.id === selected));
}

async function showDetail(id) {
  selected = id;
  markSelected();
  const box = clear($('report-detail'));
  box.append(el('p.empty', { text: t('common.loading') }));
  let d;
  try {
    d = await api.get(`/api/admin/reports/${encodeURIComponent(id)}`);
  } catch (e) {
    detail = null;
    clear(box).append(el('p.error', { text: t('reports.loadFailed', { detail: errorText(e) }) }));
    return;
  }
  window.admin.report = d;
  detail = d;
  renderDetail(d);
}

function renderDetail(d) {
  const r = d.report;
  const box = clear($('report-detail'));
  box.append(el('div.head', {},
    el(`span.chip.${severityClass(r.severity)}`, { text: label('category', r.category) }),
    el('h2', { text: t('reports.reportTitle', { id: shortId(r.id) }), id: 'report-detail-title', tabindex: '-1' }),
    el('span.chip', { text: label('status', r.status) }),
    el('span.spacer'),
    el('span.hint', { text: `${ago(r.created_at)} · ${fmtTime(r.created_at)}` })));
  box.append(r.text ? el('blockquote', { text: r.text }) : el('p.hint', { text: t('reports.wroteNothing') }));
  if (d.screening && d.screening.length) box.append(screening(d.screening));
  if (r.evidence_deleted_at) box.append(el('p.notice', { text: t('reports.evidenceDeleted', { when: ago(r.evidence_deleted_at) }) }));
  box.append(evidence(d), el('h3', { text: t('reports.session') }), sessionDetails(r));
  box.append(...deviceHistory(d.history));
  box.append(r.status === 'open' ? decisionBar(r) : resolution(r, d.bans));
}

/** What automatic screening saw: a model's score, not a finding. A human decides. */
function screening(samples) {
  const rows = el('ul.history');
  for (const s of samples) {
    rows.append(el('li', {}, el(`span.chip.${s.level === 'high' ? 'bad' : 'warn'}`, { text: `${s.category} ${s.score.toFixed(2)}` }),
      ` ${t('reports.screeningLine', { level: label('screenLevel', s.level), model: s.model, screener: s.screener, when: ago(s.captured_at) })}`));
  }
  return el('section.screening', {}, el('h3', { text: t('reports.screeningTitle') }),
    el('p.hint', { text: t('reports.screeningHint') }), rows);
}

function evidence(d) {
  const r = d.report;
  const snaps = el('div.snaps');
  for (const s of d.snapshots) {
    snaps.append(shotTile({
      label: t('reports.reportedSide', { when: ago(s.captured_at) }),
      alt: t('reports.snapshotAlt'),
      onReveal: async (tile) => {
        if (tile.url) return;
        try {
          tile.setUrl(await api.imageUrl(`/api/admin/reports/${encodeURIComponent(r.id)}/snapshots/${encodeURIComponent(s.id)}`));
        } catch (e) {
          toast(t('reports.snapshotFailed', { detail: errorText(e) }), true);
        }
      },
    }));
  }
  if (!d.snapshots.length) snaps.append(el('p.hint', { text: r.mode === 'text' ? t('reports.textNoSnapshots') : t('reports.noSnapshot') }));
  const tr = el('ol.transcript', { 'aria-label': t('reports.transcript') });
  for (const line of d.transcript) {
    const reported = line.device === r.reported_device;
    tr.append(el(`li.${reported ? 'reported' : 'reporter'}`, {},
      el('small', { text: `${reported ? t('reports.reported') : t('reports.reporter')} · ${fmtClock(line.at_ms)}` }), line.text));
  }
  if (!d.transcript.length) tr.append(el('li', { text: t('reports.noMessages') }));
  return el('div.evidence', {},
    el('section', {}, el('h3', { text: t('reports.snapshotsTitle') }), snaps),
    el('section', {}, el('h3', { text: t('reports.transcript') }), tr));
}

function sessionDetails(r) {
  const kv = (k, v) => [el('dt', { text: k }), el('dd', {}, v)];
  return el('dl.kv', {},
    kv(t('reports.reportedDevice'), el('code', { text: r.reported_device })),
    kv(t('reports.reporterDevice'), el('code', { text: r.reporter_device })),
    kv(t('reports.mode'), label('mode', r.mode)),
    kv(t('reports.pairing'), el('code', { text: r.pairing_id })),
    kv(t('reports.mediaServer'), t('reports.participant', { node: r.reported_node, participant: shortId(r.reported_participant) })),
    kv(t('reports.sessions'), t('reports.sessionIds', { reported: shortId(r.reported_session), reporter: shortId(r.reporter_session) })),
    kv(t('reports.reporterIp'), r.reporter_ip || '—'));
}

/** The reported device's earlier bans and reports: a heading and a list. */
function deviceHistory(h) {
  const hist = el('ul.history');
  for (const b of h.bans) {
    hist.append(el('li', {}, el(`span.chip.${b.lifted_at ? '' : 'bad'}`, { text: b.lifted_at ? t('reports.banLifted') : t('reports.ban') }),
      t('reports.banLine', { reason: b.reason, by: b.created_by, when: ago(b.created_at), until: b.lifted_at ? label('status', 'lifted') : until(b.expires_at) })));
  }
  for (const o of h.reports) {
    hist.append(el('li', {}, el(`span.chip.${severityClass(o.severity)}`, { text: label('category', o.category) }),
      `${label('status', o.status)} · ${ago(o.created_at)}`));
  }
  if (!hist.childNodes.length) hist.append(el('li.hint', { text: t('reports.noHistory') }));
  const title = h.warnings ? t('reports.historyWarnings', { count: num(h.warnings) }) : t('reports.history');
  return [el('h3', { text: title }), hist];
}

function decisionBar(r) {
  const senior = ['senior', 'admin'].includes(api.currentSession().moderator.role);
  return el('div.actions-bar', {},
    el('button.btn', { type: 'button', text: t('reports.dismiss'), onclick: () => act(r, 'dismiss') }),
    el('button.btn.warn', { type: 'button', text: t('reports.warn'), onclick: () => act(r, 'warn') }),
    el('button.btn.danger', { type: 'button', text: t('reports.banDevice'), id: 'report-ban', onclick: () => act(r, 'ban') }),
    el('span.hint', { text: senior ? t('reports.seniorBans') : t('reports.moderatorBans') }));
}

function resolution(r, bans) {
  return el('div.resolved', {},
    el('b', { text: label('status', r.status) }),
    ` ${t('reports.resolvedBy', { by: r.resolved_by || '—', when: ago(r.resolved_at) })}`,
    r.resolution ? el('p', { text: `“${r.resolution}”` }) : null,
    ...bans.map((b) => {
      const parts = [t('reports.banState', { id: shortId(b.id), until: b.lifted_at ? label('status', 'lifted') : until(b.expires_at) })];
      if (b.appeal_status) parts.push(t('reports.appealState', { status: label('status', b.appeal_status) }));
      return el('p.hint', { text: parts.join(' · ') });
    }));
}

/** After a language switch: the list and the open report in the new words, from what was loaded. */
export function renderReports() {
  if (listed) renderList();
  if (detail && detail.report.id === selected) renderDetail(detail);
  else if (!items.length && listed) showNothing('reports.nothing');
}

async function act(r, mode) {
  const titles = { dismiss: 'reports.dismissTitle', warn: 'reports.warnTitle', ban: 'reports.banTitle' };
  await openAction({
    mode,
    title: t(titles[mode]),
    context: t('reports.actionContext', { category: label('category', r.category), device: r.reported_device }),
    target: { kind: 'device', value: r.reported_device },
    category: r.category,
    submit: async (v) => {
      const action = mode === 'ban' ? (v.durationSecs === null ? 'permanent_ban' : 'temporary_ban') : mode;
      const body = { action, template: v.template, statement: v.statement };
      if (action === 'temporary_ban') body.duration_secs = v.durationSecs;
      await api.post(`/api/admin/reports/${encodeURIComponent(r.id)}/action`, body);
      toast(t(mode === 'ban' ? 'reports.banned' : mode === 'warn' ? 'reports.warned' : 'reports.dismissed'));
      changed();
      const idx = items.findIndex((x) => x.id === r.id);
      await loadList();
      const next = items[Math.min(idx, items.length - 1)];
      if ($('reports-status').value === 'open') {
        selected = null;
        if (next) location.hash = `#/reports/${next.id}`;
        else showNothing('reports.done');
      } else {
        await showDetail(r.id);
      }
    },
  });
}

export function initReports() {
  $('reports-status').addEventListener('change', () => showReports());
  $('reports-sort').addEventListener('change', () => showReports());
}
