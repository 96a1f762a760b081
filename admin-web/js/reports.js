// The report queue (most severe, then newest first) and one report's
// evidence: snapshots (blurred; opening one is recorded), transcript,
// session details, the reported device's history; actions: dismiss, warn,
// ban (temporary with preset durations; permanent for seniors).

import * as api from './api.js';
import { $, el, clear, ago, fmtTime, until, toast, changed, CATEGORY, severityClass, shotTile, shortId } from './ui.js';
import { openAction } from './actions.js';

let selected = null;
let items = [];

export async function showReports(id) {
  await loadList();
  const pick = id || (selected && items.some((r) => r.id === selected) ? selected : items[0] && items[0].id);
  if (pick) {
    await showDetail(pick);
    // Picked from the list (which was just redrawn, taking the focused item
    // with it): the focus goes to the report it opened.
    if (id) $('report-detail-title')?.focus();
  } else clear($('report-detail')).append(el('p.empty', { text: 'Nothing to do here. 🎉' }));
}

async function loadList() {
  const status = $('reports-status').value;
  const sort = $('reports-sort').value;
  const data = await api.get(`/api/admin/reports?status=${status}&sort=${sort}&limit=100`);
  items = data.reports;
  window.admin.reports = items.map((r) => r.id);
  $('reports-sub').textContent = `${data.total} ${status === 'all' ? '' : status} report${data.total === 1 ? '' : 's'}`;
  const list = clear($('reports-list'));
  for (const r of items) {
    list.append(el('li', {}, el(`button.report-item.${severityClass(r.severity)}`, {
      type: 'button',
      dataset: { id: r.id },
      'aria-current': r.id === selected ? 'true' : 'false',
      onclick: () => { location.hash = `#/reports/${r.id}`; },
    },
    el('div.top', {}, el(`span.chip.${severityClass(r.severity)}`, { text: CATEGORY[r.category] || r.category }),
      r.status !== 'open' ? el('span.chip', { text: r.status }) : null,
      el('span.when', { text: ago(r.created_at), title: fmtTime(r.created_at) })),
    el('p.txt', { text: r.text || '(no text)' }),
    el('div.meta', {}, `${r.mode} · device ${shortId(r.reported_device)} · ${r.snapshot_count} snapshot${r.snapshot_count === 1 ? '' : 's'}`,
      r.device_reports > 1 ? ` · ${r.device_reports} reports on this device` : ''))));
  }
  if (!items.length) list.append(el('li.empty', { text: 'The queue is empty.' }));
}

function markSelected() {
  for (const b of document.querySelectorAll('.report-item')) b.setAttribute('aria-current', String(b.dataset.id === selected));
}

async function showDetail(id) {
  selected = id;
  markSelected();
  const box = clear($('report-detail'));
  box.append(el('p.empty', { text: 'Loading…' }));
  let d;
  try {
    d = await api.get(`/api/admin/reports/${encodeURIComponent(id)}`);
  } catch (e) {
    clear(box).append(el('p.error', { text: `Could not load the report: ${e.message}` }));
    return;
  }
  window.admin.report = d;
  const r = d.report;
  clear(box);
  box.append(el('div.head', {},
    el(`span.chip.${severityClass(r.severity)}`, { text: CATEGORY[r.category] || r.category }),
    el('h2', { text: `Report ${shortId(r.id)}`, id: 'report-detail-title', tabindex: '-1' }),
    el('span.chip', { text: r.status }),
    el('span.spacer'),
    el('span.hint', { text: `${ago(r.created_at)} · ${fmtTime(r.created_at)}` })));
  box.append(r.text ? el('blockquote', { text: r.text }) : el('p.hint', { text: 'The reporter wrote nothing.' }));
  if (r.evidence_deleted_at) box.append(el('p.notice', { text: `Evidence deleted by the retention policy ${ago(r.evidence_deleted_at)}.` }));

  // Evidence.
  const snaps = el('div.snaps');
  for (const s of d.snapshots) {
    snaps.append(shotTile({
      label: `Reported side · ${ago(s.captured_at)}`,
      alt: 'Snapshot of the reported side',
      onReveal: async (tile) => {
        if (tile.url) return;
        try {
          tile.setUrl(await api.imageUrl(`/api/admin/reports/${encodeURIComponent(r.id)}/snapshots/${encodeURIComponent(s.id)}`));
        } catch (e) {
          toast(`Could not open the snapshot: ${e.message}`, true);
        }
      },
    }));
  }
  if (!d.snapshots.length) snaps.append(el('p.hint', { text: r.mode === 'text' ? 'Text chat: no snapshots.' : 'No snapshot was available.' }));
  const tr = el('ol.transcript', { 'aria-label': 'Chat transcript' });
  for (const line of d.transcript) {
    const reported = line.device === r.reported_device;
    tr.append(el(`li.${reported ? 'reported' : 'reporter'}`, {},
      el('small', { text: `${reported ? 'Reported' : 'Reporter'} · ${new Date(line.at_ms).toLocaleTimeString()}` }), line.text));
  }
  if (!d.transcript.length) tr.append(el('li', { text: 'No chat messages.' }));
  box.append(el('div.evidence', {},
    el('section', {}, el('h3', { text: 'Snapshots' }), snaps),
    el('section', {}, el('h3', { text: 'Chat transcript' }), tr)));

  // Session details.
  const kv = (k, v) => [el('dt', { text: k }), el('dd', {}, v)];
  box.append(el('h3', { text: 'Session' }), el('dl.kv', {},
    kv('Reported device', el('code', { text: r.reported_device })),
    kv('Reporter device', el('code', { text: r.reporter_device })),
    kv('Mode', r.mode),
    kv('Pairing', el('code', { text: r.pairing_id })),
    kv('Media server', `${r.reported_node} · participant ${shortId(r.reported_participant)}`),
    kv('Sessions', `reported ${shortId(r.reported_session)} · reporter ${shortId(r.reporter_session)}`),
    kv('Reporter IP', r.reporter_ip || '—')));

  // History of the reported device.
  const h = d.history;
  const hist = el('ul.history');
  for (const b of h.bans) {
    hist.append(el('li', {}, el(`span.chip.${b.lifted_at ? '' : 'bad'}`, { text: b.lifted_at ? 'ban lifted' : 'ban' }),
      `${b.reason} — by ${b.created_by}, ${ago(b.created_at)}, ${b.lifted_at ? 'lifted' : until(b.expires_at)}`));
  }
  for (const o of h.reports) {
    hist.append(el('li', {}, el(`span.chip.${severityClass(o.severity)}`, { text: CATEGORY[o.category] || o.category }),
      `${o.status} · ${ago(o.created_at)}`));
  }
  if (!hist.childNodes.length) hist.append(el('li.hint', { text: 'No earlier reports or bans.' }));
  box.append(el('h3', { text: `History of this device${h.warnings ? ` · ${h.warnings} warning(s)` : ''}` }), hist);

  // Decision.
  if (r.status === 'open') {
    const senior = ['senior', 'admin'].includes(api.currentSession().moderator.role);
    box.append(el('div.actions-bar', {},
      el('button.btn', { type: 'button', text: 'Dismiss', onclick: () => act(r, 'dismiss') }),
      el('button.btn.warn', { type: 'button', text: 'Warn', onclick: () => act(r, 'warn') }),
      el('button.btn.danger', { type: 'button', text: 'Ban device…', id: 'report-ban', onclick: () => act(r, 'ban') }),
      el('span.hint', { text: senior ? 'Temporary or permanent ban.' : 'Temporary bans; permanent bans need a senior.' })));
  } else {
    box.append(el('div.resolved', {},
      el('b', { text: `${r.status[0].toUpperCase()}${r.status.slice(1)}` }),
      ` by ${r.resolved_by || '—'} ${ago(r.resolved_at)}`,
      r.resolution ? el('p', { text: `“${r.resolution}”` }) : null,
      ...d.bans.map((b) => el('p.hint', { text: `Ban ${shortId(b.id)}: ${b.lifted_at ? 'lifted' : until(b.expires_at)}${b.appeal_status ? ` · appeal ${b.appeal_status}` : ''}` }))));
  }
}

async function act(r, mode) {
  const titles = { dismiss: 'Dismiss this report', warn: 'Warn the reported device', ban: 'Ban the reported device' };
  await openAction({
    mode,
    title: titles[mode],
    context: `${CATEGORY[r.category] || r.category} report · device ${r.reported_device}`,
    target: { kind: 'device', value: r.reported_device },
    category: r.category,
    submit: async (v) => {
      const action = mode === 'ban' ? (v.durationSecs === null ? 'permanent_ban' : 'temporary_ban') : mode;
      const body = { action, template: v.template, statement: v.statement };
      if (action === 'temporary_ban') body.duration_secs = v.durationSecs;
      await api.post(`/api/admin/reports/${encodeURIComponent(r.id)}/action`, body);
      toast(mode === 'ban' ? 'Banned. The device is refused from now on.' : mode === 'warn' ? 'Warning recorded.' : 'Report dismissed.');
      changed();
      const idx = items.findIndex((x) => x.id === r.id);
      await loadList();
      const next = items[Math.min(idx, items.length - 1)];
      if ($('reports-status').value === 'open') {
        selected = null;
        if (next) location.hash = `#/reports/${next.id}`;
        else clear($('report-detail')).append(el('p.empty', { text: 'Done: the queue is empty.' }));
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
