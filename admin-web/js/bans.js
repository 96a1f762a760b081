// The block list: device, IP and CIDR bans with expiry and reason; search;
// CSV export and import; select several and unban them at once.

import * as api from './api.js';
import { $, el, clear, ago, fmtTime, until, toast, ask, changed } from './ui.js';
import { openAction } from './actions.js';

let rows = [];
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
  picked.clear();
  const now = Date.now() / 1000;
  $('bans-sub').textContent = `${data.total} ban${data.total === 1 ? '' : 's'}${data.total > rows.length ? ` (showing ${rows.length})` : ''}`;
  const body = clear($('bans-table').tBodies[0]);
  for (const b of rows) {
    const active = !b.lifted_at && (!b.expires_at || b.expires_at > now);
    const box = el('input', { type: 'checkbox', 'aria-label': `Select ban ${b.value}`, disabled: !active });
    box.addEventListener('change', () => { if (box.checked) picked.add(b.id); else picked.delete(b.id); bulkBar(); });
    body.append(el(`tr.${active ? 'active' : 'inactive'}`, { dataset: { id: b.id } },
      el('td', {}, box),
      el('td', {}, el('span.chip', { text: { device: 'device', ip: 'IP', cidr: 'range' }[b.kind] || b.kind })),
      el('td', {}, el('code', { text: b.value })),
      el('td.reason', { text: b.reason }),
      el('td', { text: b.created_by }),
      el('td', { text: ago(b.created_at), title: fmtTime(b.created_at) }),
      el('td', {}, b.lifted_at
        ? el('span.chip.ok', { text: 'lifted', title: `${b.lifted_by || ''} ${fmtTime(b.lifted_at)}: ${b.lift_reason || ''}` })
        : el(`span.chip${b.expires_at ? '' : '.bad'}`, { text: until(b.expires_at), title: b.expires_at ? fmtTime(b.expires_at) : 'permanent' })),
      el('td', {}, b.appeal_status ? el(`span.chip.${b.appeal_status === 'pending' ? 'warn' : b.appeal_status === 'lifted' ? 'ok' : ''}`, { text: b.appeal_status }) : '—')));
  }
  $('bans-empty').hidden = rows.length > 0;
  $('bans-all').checked = false;
  bulkBar();
}

function bulkBar() {
  $('bans-bulk').hidden = picked.size === 0;
  $('bans-selected').textContent = `${picked.size} selected`;
}

async function unban() {
  const reason = await ask({
    title: `Unban ${picked.size} ban${picked.size === 1 ? '' : 's'}?`,
    text: 'Say why (recorded in the audit log).',
    input: true,
    placeholder: 'e.g. appeal granted by email, wrong device',
    ok: 'Unban',
    danger: true,
  });
  if (!reason) return;
  try {
    const r = await api.post('/api/admin/bans/unban', { ids: [...picked], reason });
    const skipped = r.skipped.length ? ` ${r.skipped.length} skipped: ${r.skipped.map((s) => s.why).join('; ')}` : '';
    toast(`${r.lifted} lifted.${skipped}`, r.skipped.length > 0);
    changed();
  } catch (e) {
    toast(e.message, true);
  }
  await showBans();
}

async function newBan() {
  await openAction({
    mode: 'ban',
    title: 'New ban',
    context: 'Device ids come from reports and the wall. IP bans may hit many innocent people: prefer short ones.',
    submit: async (v) => {
      await api.post('/api/admin/bans', { kind: v.kind, value: v.value, reason: v.statement, template: v.template, duration_secs: v.durationSecs });
      toast('Ban added.');
      await showBans();
    },
  });
}

async function importCsv(file) {
  if (!file) return;
  try {
    const text = await file.text();
    const r = await api.uploadCsv('/api/admin/bans/import', text);
    toast(`${r.imported} imported${r.skipped ? `, ${r.skipped} skipped (lifted or expired)` : ''}.`);
  } catch (e) {
    toast(`Import refused: ${e.message}`, true);
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
    api.download(`/api/admin/bans/export?${p}`, 'duet-bans.csv').catch((e) => toast(e.message, true));
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
