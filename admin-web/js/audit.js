// The audit log: who did what, when, to which target; filterable, pageable
// backwards, exportable as CSV. Actions, target kinds and detail names are
// server codes, said in the page's language where it knows them; the
// details' values are shown as recorded (codes among them translated).

import * as api from './api.js';
import * as i18n from '/js/i18n.js';
import { t } from '/js/i18n.js';
import { $, el, clear, fmtTime, toast, label, errorText } from './ui.js';

const ACTIONS = [
  'login', 'login_failed', 'logout', 'view_wall', 'view_snapshot', 'view_report', 'view_report_snapshot', 'view_appeal',
  'watch_start', 'watch_stop', 'end_call', 'report_dismiss', 'report_warn', 'report_ban', 'ban_create', 'ban_lift',
  'ban_import', 'bans_export', 'appeal_decide', 'audit_export', 'moderator_create', 'moderator_update',
  'settings_update', 'retention_run', 'screen_flag', 'screen_report', 'screen_clear',
];

let before = null;
/** Every entry shown so far (drawn again after a language switch). */
let entries = [];
/** Detail values that are codes, and the groups that say them (the first that knows the code). */
const CODED = {
  decision: ['status'], role: ['role'], kind: ['kindShort'], category: ['category'], state: ['status'], template: ['template'],
  action: ['reportAction', 'auditAction'], level: ['screenLevel'],
};

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
    if (typeof v === 'boolean') return t(v ? 'common.yes' : 'common.no');
    if (typeof v === 'string' && CODED[k]) {
      const group = CODED[k].find((g) => i18n.has(`${g}.${v}`)) || CODED[k][0];
      return label(group, v);
    }
    return String(v);
  };
  return Object.entries(details)
    .filter(([, v]) => v !== null && v !== undefined && v !== '')
    .map(([k, v]) => `${label('auditDetail', k, k.replaceAll('_', ' '))}: ${show(k, v)}`)
    .join(' · ');
}

export async function showAudit(more = false) {
  const p = params();
  p.set('limit', '100');
  if (more && before) p.set('before_id', String(before));
  const data = await api.get(`/api/admin/audit?${p}`);
  entries = more ? entries.concat(data.entries) : data.entries;
  before = data.next_before_id;
  renderAudit();
}

/** The table from the entries loaded so far. */
export function renderAudit() {
  const body = clear($('audit-table').tBodies[0]);
  for (const e of entries) {
    body.append(el('tr', { dataset: { action: e.action } },
      el('td', { text: fmtTime(e.at) }),
      el('td', { text: e.actor }),
      el('td', {}, el('span.chip', { text: label('auditAction', e.action, e.action.replaceAll('_', ' ')) })),
      el('td', {}, `${label('auditTarget', e.target_kind)} `, el('code', { text: e.target_id.length > 16 ? `${e.target_id.slice(0, 12)}…` : e.target_id, title: e.target_id })),
      el('td.details', { text: summary(e.details) })));
  }
  $('audit-more').hidden = !before;
  $('audit-empty').hidden = body.rows.length > 0;
  window.admin.audit = [...body.rows].map((r) => r.dataset.action);
  // The filter's choices are in the page's language too.
  for (const o of $('audit-action').options) if (o.value) o.textContent = label('auditAction', o.value, o.value.replaceAll('_', ' '));
}

export function initAudit() {
  const sel = $('audit-action');
  for (const a of ACTIONS) sel.append(el('option', { value: a, text: label('auditAction', a, a.replaceAll('_', ' ')) }));
  $('audit-filter').addEventListener('submit', (e) => { e.preventDefault(); showAudit(); });
  $('audit-action').addEventListener('change', () => showAudit());
  $('audit-more').addEventListener('click', () => showAudit(true));
  $('audit-export').addEventListener('click', () => {
    api.download(`/api/admin/audit/export?${params()}`, 'duet-audit.csv').catch((e) => toast(errorText(e), true));
  });
}
