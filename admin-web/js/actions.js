// The action dialog: ban (from the wall, a report or the block list), warn
// and dismiss, each with a reason template that becomes the written
// statement of reasons the person is shown. The templates' names and
// starting statements are the page's (in its language; the server's
// English for a template the page does not know), the durations are said
// with Intl; the statement the moderator sends is stored as written.

import * as api from './api.js';
import * as i18n from '/js/i18n.js';
import { t } from '/js/i18n.js';
import { $, el, clear, label, span, errorText } from './ui.js';

let templates = null;

export async function loadTemplates() {
  if (!templates) templates = await api.get('/api/admin/templates');
  return templates;
}

function isSenior() {
  const s = api.currentSession();
  return s && (s.moderator.role === 'senior' || s.moderator.role === 'admin');
}

/**
 * @param {object} o
 * @param {'ban'|'warn'|'dismiss'} o.mode
 * @param {string} o.title
 * @param {string} [o.context]
 * @param {{label: string, device: string}[]} [o.sides]  choose which side (wall)
 * @param {{kind: string, value: string}} [o.target]     fixed target (report)
 * @param {string} [o.category]                          preselects a template
 * @param {boolean} [o.allowEnd]                         offer "also end the call"
 * @param {(v: object) => Promise<void>} o.submit        throws ApiError on refusal
 */
export async function openAction(o) {
  const presets = await loadTemplates();
  const d = $('action-dialog');
  const form = $('action-form');
  const ban = o.mode === 'ban';
  $('action-title').textContent = o.title;
  $('action-context').textContent = o.context || '';
  $('action-context').hidden = !o.context;
  $('action-error').hidden = true;

  // Who.
  const sidesBox = $('action-sides');
  clear(sidesBox);
  sidesBox.hidden = !(ban && o.sides);
  $('action-manual').hidden = !(ban && !o.sides && !o.target);
  $('action-target-box').hidden = !ban || (!!o.target && !o.sides);
  if (ban && o.sides) {
    o.sides.forEach((s, i) => {
      sidesBox.append(el('label', {},
        el('input', { type: 'radio', name: 'action-side', value: String(i), checked: i === 0 }),
        `${s.label} · `, el('code', { text: s.device })));
    });
  }
  if (ban && !o.sides && !o.target) {
    $('action-kind').value = 'device';
    $('action-value').value = '';
  }

  // How long.
  const durBox = $('action-durations');
  clear(durBox);
  $('action-duration-box').hidden = !ban;
  if (ban) {
    presets.durations.forEach((du, i) => {
      durBox.append(el('label', {}, el('input', { type: 'radio', name: 'action-duration', value: String(du.secs), checked: i === 1 }), span(du.secs)));
    });
    const senior = isSenior();
    durBox.append(el('label', { title: senior ? '' : t('action.permanentNeedsSenior') },
      el('input', { type: 'radio', name: 'action-duration', value: 'permanent', disabled: !senior }),
      senior ? t('action.permanent') : t('action.permanentSenior')));
  }

  // Why.
  const sel = $('action-template');
  clear(sel);
  for (const tp of presets.templates) sel.append(el('option', { value: tp.id, text: label('template', tp.id, tp.label) }));
  const pre = presets.templates.find((tp) => tp.category && tp.category === o.category) || presets.templates[0];
  sel.value = pre.id;
  const stmt = $('action-statement');
  const statementOf = (tp) => (tp.statement && i18n.has(`templateText.${tp.id}`) ? t(`templateText.${tp.id}`) : tp.statement);
  const fill = () => {
    const tp = presets.templates.find((x) => x.id === sel.value);
    if (tp && tp.statement) stmt.value = statementOf(tp);
    else if (tp && tp.id === 'custom') stmt.value = '';
    $('action-count').textContent = String(stmt.value.length);
  };
  sel.onchange = fill;
  stmt.oninput = () => { $('action-count').textContent = String(stmt.value.length); };
  fill();
  if (o.mode === 'dismiss') stmt.value = '';
  $('action-count').textContent = String(stmt.value.length);
  $('action-statement-hint').textContent = ban ? t('action.hintBan') : o.mode === 'warn' ? t('action.hintWarn') : t('action.hintDismiss');

  $('action-end-box').hidden = !(ban && o.allowEnd);
  const submit = $('action-submit');
  submit.textContent = ban ? t('action.ban') : o.mode === 'warn' ? t('action.warn') : t('action.dismiss');
  submit.className = `btn ${ban ? 'danger' : o.mode === 'warn' ? 'warn' : 'primary'}`;
  submit.disabled = false;

  return new Promise((resolve) => {
    const finish = (v) => {
      form.onsubmit = null;
      $('action-cancel').onclick = null;
      d.oncancel = null;
      if (d.open) d.close();
      resolve(v);
    };
    $('action-cancel').onclick = () => finish(null);
    d.oncancel = (e) => { e.preventDefault(); finish(null); };
    form.onsubmit = async (e) => {
      e.preventDefault();
      const err = $('action-error');
      err.hidden = true;
      const v = {
        template: sel.value,
        statement: stmt.value.trim(),
        endCall: ban && o.allowEnd && $('action-end').checked,
      };
      if (ban) {
        if (o.sides) {
          const i = Number((form.querySelector('input[name="action-side"]:checked') || {}).value || 0);
          v.kind = 'device';
          v.value = o.sides[i].device;
          v.side = i;
        } else if (o.target) {
          Object.assign(v, o.target);
        } else {
          v.kind = $('action-kind').value;
          v.value = $('action-value').value.trim();
          if (!v.value) { err.textContent = t('action.needTarget'); err.hidden = false; return; }
        }
        const dur = (form.querySelector('input[name="action-duration"]:checked') || {}).value;
        v.durationSecs = dur === 'permanent' ? null : Number(dur);
      }
      if ((ban || o.mode === 'warn') && !v.statement) {
        err.textContent = t('action.needStatement');
        err.hidden = false;
        stmt.focus();
        return;
      }
      submit.disabled = true;
      try {
        await o.submit(v);
        finish(v);
      } catch (ex) {
        err.textContent = errorText(ex);
        err.hidden = false;
        submit.disabled = false;
      }
    };
    d.showModal();
    sel.focus();
  });
}
