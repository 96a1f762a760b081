// Admin only: moderator accounts and run-time settings.

import * as api from './api.js';
import { $, el, clear, ago, toast, ask } from './ui.js';

export async function showTeam() {
  const data = await api.get('/api/admin/moderators');
  const me = api.currentSession().moderator;
  const body = clear($('team-table').tBodies[0]);
  for (const m of data.moderators) {
    const role = el('select', { 'aria-label': `Role of ${m.email}`, disabled: m.id === me.id });
    for (const r of ['moderator', 'senior', 'admin']) role.append(el('option', { value: r, text: r, selected: r === m.role }));
    role.addEventListener('change', () => change(m, { role: role.value }));
    const locked = m.locked_until && m.locked_until * 1000 > Date.now();
    body.append(el('tr', {},
      el('td', { text: m.email }),
      el('td', {}, role),
      el('td', {}, m.disabled ? el('span.chip.bad', { text: 'disabled' }) : locked ? el('span.chip.warn', { text: 'locked' }) : el('span.chip.ok', { text: 'active' })),
      el('td', { text: m.last_login_at ? ago(m.last_login_at) : 'never' }),
      el('td', {},
        m.id === me.id ? el('span.hint', { text: 'you' }) : [
          el('button.btn.small', { type: 'button', text: m.disabled ? 'Enable' : 'Disable', onclick: () => change(m, { disabled: !m.disabled }) }),
          ' ',
          locked ? el('button.btn.small', { type: 'button', text: 'Unlock', onclick: () => change(m, { unlock: true }) }) : null,
          ' ',
          el('button.btn.small', { type: 'button', text: 'New password…', onclick: () => password(m) }),
        ])));
  }
}

async function change(m, body) {
  try {
    await api.patch(`/api/admin/moderators/${encodeURIComponent(m.id)}`, body);
    toast(`${m.email} updated.`);
  } catch (e) {
    toast(e.message, true);
  }
  await showTeam();
}

async function password(m) {
  const p = await ask({ title: `New password for ${m.email}`, text: 'At least 10 characters. Their sessions end.', input: true, ok: 'Set password' });
  if (p) await change(m, { password: p });
}

export async function showSettings() {
  const v = await api.get('/api/admin/settings');
  $('set-dismissed').value = v.settings.retention_dismissed_days;
  $('set-actioned').value = v.settings.retention_actioned_days;
  $('set-keyframe').value = v.settings.wall_keyframe_interval_ms;
  $('settings-result').textContent = `Defaults: ${v.defaults.retention_dismissed_days} / ${v.defaults.retention_actioned_days} days, ${v.defaults.wall_keyframe_interval_ms} ms.`;
}

export function initTeam() {
  $('team-new').addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await api.post('/api/admin/moderators', { email: $('team-email').value, role: $('team-role').value, password: $('team-password').value });
      toast('Moderator added.');
      $('team-email').value = '';
      $('team-password').value = '';
      await showTeam();
    } catch (ex) {
      toast(ex.message, true);
    }
  });
  $('settings-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await api.put('/api/admin/settings', {
        retention_dismissed_days: Number($('set-dismissed').value),
        retention_actioned_days: Number($('set-actioned').value),
        wall_keyframe_interval_ms: Number($('set-keyframe').value),
      });
      $('settings-result').textContent = 'Saved.';
    } catch (ex) {
      $('settings-result').textContent = ex.message;
    }
  });
  $('retention-run').addEventListener('click', async () => {
    try {
      const c = await api.post('/api/admin/retention/run', {});
      $('settings-result').textContent = `Deleted evidence of ${c.dismissed_reports} dismissed and ${c.actioned_reports} actioned reports (${c.snapshots} snapshots); kept ${c.kept_for_appeal} under appeal.`;
    } catch (ex) {
      $('settings-result').textContent = ex.message;
    }
  });
}
