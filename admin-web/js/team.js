// Admin only: moderator accounts and run-time settings.

import * as api from './api.js';
import { t } from '/js/i18n.js';
import { $, el, clear, ago, toast, ask, label, num, errorText } from './ui.js';

/** The last moderator list (drawn again after a language switch). */
let team = null;
/** The last settings answer, and the result line as a string key and its words. */
let settings = null;
let result = null;

export async function showTeam() {
  team = await api.get('/api/admin/moderators');
  renderTeam();
}

export function renderTeam() {
  if (!team) return;
  const me = api.currentSession().moderator;
  const body = clear($('team-table').tBodies[0]);
  for (const m of team.moderators) {
    const role = el('select', { 'aria-label': t('team.roleOf', { email: m.email }), disabled: m.id === me.id });
    for (const r of ['moderator', 'senior', 'admin']) role.append(el('option', { value: r, text: label('role', r), selected: r === m.role }));
    role.addEventListener('change', () => change(m, { role: role.value }));
    const locked = m.locked_until && m.locked_until * 1000 > Date.now();
    body.append(el('tr', {},
      el('td', { text: m.email }),
      el('td', {}, role),
      el('td', {}, m.disabled ? el('span.chip.bad', { text: t('team.disabled') })
        : locked ? el('span.chip.warn', { text: t('team.locked') }) : el('span.chip.ok', { text: t('team.active') })),
      el('td', { text: m.last_login_at ? ago(m.last_login_at) : t('team.never') }),
      el('td', {},
        m.id === me.id ? el('span.hint', { text: t('team.you') }) : [
          el('button.btn.small', { type: 'button', text: m.disabled ? t('team.enable') : t('team.disable'), onclick: () => change(m, { disabled: !m.disabled }) }),
          ' ',
          locked ? el('button.btn.small', { type: 'button', text: t('team.unlock'), onclick: () => change(m, { unlock: true }) }) : null,
          ' ',
          el('button.btn.small', { type: 'button', text: t('team.newPassword'), onclick: () => password(m) }),
        ])));
  }
}

async function change(m, body) {
  try {
    await api.patch(`/api/admin/moderators/${encodeURIComponent(m.id)}`, body);
    toast(t('team.updated', { email: m.email }));
  } catch (e) {
    toast(errorText(e), true);
  }
  await showTeam();
}

async function password(m) {
  const p = await ask({ title: t('team.passwordTitle', { email: m.email }), text: t('team.passwordText'), input: true, ok: t('team.setPassword') });
  if (p) await change(m, { password: p });
}

export async function showSettings() {
  const v = await api.get('/api/admin/settings');
  settings = v;
  $('set-dismissed').value = v.settings.retention_dismissed_days;
  $('set-actioned').value = v.settings.retention_actioned_days;
  $('set-keyframe').value = v.settings.wall_keyframe_interval_ms;
  result = null;
  renderSettings();
}

/** The result line under the settings: the defaults, or what the last button did. */
export function renderSettings() {
  if (!settings) return;
  const d = settings.defaults;
  $('settings-result').textContent = result ? (result.error ? errorText(result.error) : t(result.key, result.vars))
    : t('settings.defaults', { dismissed: num(d.retention_dismissed_days), actioned: num(d.retention_actioned_days), keyframe: num(d.wall_keyframe_interval_ms) });
}

function say(r) {
  result = r;
  renderSettings();
}

export function initTeam() {
  $('team-new').addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await api.post('/api/admin/moderators', { email: $('team-email').value, role: $('team-role').value, password: $('team-password').value });
      toast(t('team.added'));
      $('team-email').value = '';
      $('team-password').value = '';
      await showTeam();
    } catch (ex) {
      toast(errorText(ex), true);
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
      say({ key: 'settings.saved' });
    } catch (ex) {
      say({ error: ex });
    }
  });
  $('retention-run').addEventListener('click', async () => {
    try {
      const c = await api.post('/api/admin/retention/run', {});
      say({
        key: 'settings.retentionDone',
        vars: { dismissed: num(c.dismissed_reports), actioned: num(c.actioned_reports), snapshots: num(c.snapshots), kept: num(c.kept_for_appeal) },
      });
    } catch (ex) {
      say({ error: ex });
    }
  });
}
