// The audit log: who did what, when, to which target; filterable, pageable
// backwards, exportable as CSV.

import * as api from './api.js';
import { $, el, clear, fmtTime, toast } from './ui.js';

const ACTIONS = [
  'login', 'login_failed', 'logout', 'view_wall', 'view_snapshot', 'view_report', 'view_report_snapshot', 'view_appeal',
  'watch_start', 'watch_stop', 'end_call', 'report_dismiss', 'report_warn', 'report_ban', 'ban_create', 'ban_lift',
  'ban_import', 'bans_export', 'appeal_decide', 'audit_export', 'moderator_create', 'moderator_update',
  'settings_update', 'retention_run',
];

let before = null;

function params() {
  const p = new URLSearchParams();
  const add = (k, v) => { if (v) p.set(k, v); };
  add('actor', $('audit-actor').value.trim());
  add('action', $('audit-action').value);
  add('target', $('audit-target').value.trim());
  const day = (id, end) => {
    const v = $(id).value;
    if (!v) return null;
    const t = new Date(`${v}T00:00:00`).getTime() / 1000;
    return String(Math.floor(end ? t + 86400 : t));
  };
  add('since', day('audit-since', false));
  add('until', day('audit-until', true));
  return p;
}

function summary(details) {
  if (!details || typeof details !== 'object') return String(details ?? '');
  const show = (k, v) => {
    if (Array.isArray(v)) return v.join(', ');
    if (v && typeof v === 'object') return JSON.stringify(v);
    if (typeof v === 'number' && k.endsWith('_at')) return fmtTime(v);
    return String(v);
  };
  return Object.entries(details)
    .filter(([, v]) => v !== null && v !== undefined && v !== '')
    .map(([k, v]) => `${k.replaceAll('_', ' ')}: ${show(k, v)}`)
    .join(' · ');
}

export async function showAudit(more = false) {
  const p = params();
  p.set('limit', '100');
  if (more && before) p.set('before_id', String(before));
  const data = await api.get(`/api/admin/audit?${p}`);
  const body = $('audit-table').tBodies[0];
  if (!more) clear(body);
  for (const e of data.entries) {
    body.append(el('tr', { dataset: { action: e.action } },
      el('td', { text: fmtTime(e.at) }),
      el('td', { text: e.actor }),
      el('td', {}, el('span.chip', { text: e.action })),
      el('td', {}, `${e.target_kind} `, el('code', { text: e.target_id.length > 16 ? `${e.target_id.slice(0, 12)}…` : e.target_id, title: e.target_id })),
      el('td.details', { text: summary(e.details) })));
  }
  before = data.next_before_id;
  $('audit-more').hidden = !before;
  $('audit-empty').hidden = body.rows.length > 0;
  window.admin.audit = [...body.rows].map((r) => r.dataset.action);
}

export function initAudit() {
  const sel = $('audit-action');
  for (const a of ACTIONS) sel.append(el('option', { value: a, text: a.replaceAll('_', ' ') }));
  $('audit-filter').addEventListener('submit', (e) => { e.preventDefault(); showAudit(); });
  $('audit-action').addEventListener('change', () => showAudit());
  $('audit-more').addEventListener('click', () => showAudit(true));
  $('audit-export').addEventListener('click', () => {
    api.download(`/api/admin/audit/export?${params()}`, 'duet-audit.csv').catch((e) => toast(e.message, true));
  });
}
