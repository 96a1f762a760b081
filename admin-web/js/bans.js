// The block list: device, IP and CIDR bans with expiry and reason; search;
// CSV export and import; select several and unban them at once.

import * as api from './api.js';
import { t } from '/js/i18n.js';
import { $, el, clear, ago, fmtTime, until, toast, ask, changed, label, num, errorText } from './ui.js';
import { openAction } from './actions.js';

let rows = [];
/** The last answer's total (the heading is said again from it after a language switch). */
let total = null;
const picked = new Set();

function query() {
  const p = new URLSearchParams();
  if ($('bans-q').value.trim()) p.set('q', $('bans-q').value.trim());
  if ($('bans-kind').value) p.set('kind', $('bans-kind').value);
  p.set('state', $('bans-state').value);
  return p;
}

export async function showBans() {
  const p = query();
  p.set('limit', '500');
  const data = await api.get(`/api/admin/bans?${p}`);
  rows = data.bans;
  total = data.total;
  picked.clear();
  renderBans();
}

/** The table from the last answer (also after a language switch; the ticked boxes stay ticked). */
export function renderBans() {
  if (total === null) return;
  const now = Date.now() / 1000;
  const count = t(total === 1 ? 'bans.countOne' : 'bans.count', { count: num(total) });
  $('bans-sub').textContent = total > rows.length ? `${count} ${t('common.showing', { count: num(rows.length) })}` : count;
  const body = clear($('bans-table').tBodies[0]);
  for (const b of rows) {
    const active = !b.lifted_at && (!b.expires_at || b.expires_at > now);
    const box = el('input', { type: 'checkbox', 'aria-label': t('bans.select', { value: b.value }), disabled: !active, checked: picked.has(b.id) });
    box.addEventListener('change', () => { if (box.checked) picked.add(b.id); else picked.delete(b.id); bulkBar(); });
    body.append(el(`tr.${active ? 'active' : 'inactive'}`, { dataset: { id: b.id } },
      el('td', {}, box),
      el('td', {}, el('span.chip', { text: label('kindShort', b.kind) })),
      el('td', {}, el('code', { text: b.value })),
      el('td.reason', { text: b.reason }),
      el('td', { text: b.created_by }),
      el('td', { text: ago(b.created_at), title: fmtTime(b.created_at) }),
      el('td', {}, b.lifted_at
        ? el('span.chip.ok', { text: label('status', 'lifted'), title: `${b.lifted_by || ''} ${fmtTime(b.lifted_at)}: ${b.lift_reason || ''}` })
        : el(`span.chip${b.expires_at ? '' : '.bad'}`, { text: until(b.expires_at), title: b.expires_at ? fmtTime(b.expires_at) : t('time.permanent') })),
      el('td', {}, b.appeal_status ? el(`span.chip.${b.appeal_status === 'pending' ? 'warn' : b.appeal_status === 'lifted' ? 'ok' : ''}`, { text: label('status', b.appeal_status) }) : '—')));
  }
  $('bans-empty').hidden = rows.length > 0;
  $('bans-all').checked = false;
  bulkBar();
}

function bulkBar() {
  $('bans-bulk').hidden = picked.size === 0;
  $('bans-selected').textContent = t('bans.selected', { count: num(picked.size) });
}

async function unban() {
  const reason = await ask({
    title: t(picked.size === 1 ? 'bans.unbanTitleOne' : 'bans.unbanTitle', { count: num(picked.size) }),
    text: t('bans.unbanText'),
    input: true,
    placeholder: t('bans.unbanPlaceholder'),
    ok: t('bans.unban'),
    danger: true,
  });
  if (!reason) return;
  try {
    const r = await api.post('/api/admin/bans/unban', { ids: [...picked], reason });
    const why = r.skipped.map((s) => label('skipped', s.code, s.why)).join('; ');
    toast(r.skipped.length ? t('bans.liftedSkipped', { lifted: num(r.lifted), skipped: num(r.skipped.length), why })
      : t('bans.lifted', { lifted: num(r.lifted) }), r.skipped.length > 0);
    changed();
  } catch (e) {
    toast(errorText(e), true);
  }
  await showBans();
}

async function newBan() {
  await openAction({
    mode: 'ban',
    title: t('bans.newTitle'),
    context: t('bans.newContext'),
    submit: async (v) => {
      await api.post('/api/admin/bans', { kind: v.kind, value: v.value, reason: v.statement, template: v.template, duration_secs: v.durationSecs });
      toast(t('bans.added'));
      await showBans();
    },
  });
}

async function importCsv(file) {
  if (!file) return;
  try {
    const text = await file.text();
    const r = await api.uploadCsv('/api/admin/bans/import', text);
    toast(r.skipped ? t('bans.importedSkipped', { imported: num(r.imported), skipped: num(r.skipped) })
      : t('bans.imported', { imported: num(r.imported) }));
  } catch (e) {
    toast(t('bans.importFailed', { detail: errorText(e) }), true);
  }
  $('bans-import').value = '';
  await showBans();
}

export function initBans() {
  $('bans-filter').addEventListener('submit', (e) => { e.preventDefault(); showBans(); });
  $('bans-state').addEventListener('change', () => showBans());
  $('bans-kind').addEventListener('change', () => showBans());
  $('bans-new').addEventListener('click', newBan);
  $('bans-unban').addEventListener('click', unban);
  $('bans-export').addEventListener('click', () => {
    const p = query();
    api.download(`/api/admin/bans/export?${p}`, 'duet-bans.csv').catch((e) => toast(errorText(e), true));
  });
  $('bans-import').addEventListener('change', (e) => importCsv(e.target.files[0]));
  $('bans-all').addEventListener('change', (e) => {
    for (const box of $('bans-table').tBodies[0].querySelectorAll('input[type="checkbox"]:not(:disabled)')) {
      box.checked = e.target.checked;
      const id = box.closest('tr').dataset.id;
      if (box.checked) picked.add(id); else picked.delete(id);
    }
    bulkBar();
  });
}
