// Appeals: the person's text next to the ban and the report it came from;
// a senior moderator who did not make the ban upholds or lifts it, with a
// reason. The person sees the outcome on their next visit.

import * as api from './api.js';
import { $, el, clear, ago, fmtTime, until, toast, changed, CATEGORY, shortId } from './ui.js';

export async function showAppeals() {
  const status = $('appeals-status').value;
  const data = await api.get(`/api/admin/appeals?status=${status}`);
  window.admin.appeals = data.appeals.map((a) => a.id);
  $('appeals-sub').textContent = `${data.total} ${status === 'all' ? '' : status} appeal${data.total === 1 ? '' : 's'}`;
  const list = clear($('appeals-list'));
  for (const a of data.appeals) list.append(card(a));
  $('appeals-empty').hidden = data.appeals.length > 0;
}

function card(a) {
  const b = a.ban || {};
  const reason = el('input', { type: 'text', maxlength: '500', placeholder: 'Reason for your decision (recorded, shown in the audit log)', 'aria-label': 'Reason' });
  const decide = async (decision) => {
    const text = reason.value.trim();
    if (!text) { reason.focus(); toast('Give a reason for the decision.', true); return; }
    try {
      const r = await api.post(`/api/admin/appeals/${encodeURIComponent(a.id)}/decision`, { decision, reason: text });
      toast(r.status === 'lifted' ? 'Ban lifted.' : 'Ban upheld.');
      changed();
      await showAppeals();
    } catch (e) {
      toast(e.message, true);
    }
  };
  const view = async () => {
    try {
      const d = await api.get(`/api/admin/appeals/${encodeURIComponent(a.id)}`);
      const r = d.report;
      more.hidden = false;
      clear(more).append(r
        ? el('p.hint', {}, `From report ${shortId(r.id)}: `, el('b', { text: CATEGORY[r.category] || r.category }),
          ` — “${r.text || 'no text'}”, ${r.status}. `, el('a', { href: `#/reports/${r.id}`, text: 'Open the report' }))
        : el('p.hint', { text: 'This ban was not made from a report.' }));
    } catch (e) {
      toast(e.message, true);
    }
  };
  const more = el('div.more');
  more.hidden = true;
  return el('article.appeal.card', { dataset: { id: a.id } },
    el('section', {},
      el('h3', { text: `Appeal · ${ago(a.created_at)}` }),
      el('p.text', { text: a.text }),
      a.status !== 'pending'
        ? el('p.hint', {}, el('span.chip.ok', { text: a.status }), ` by ${a.decided_by} ${ago(a.decided_at)}: “${a.decision_reason || ''}”`)
        : null),
    el('section', {},
      el('h3', { text: 'The ban' }),
      el('dl.kv', {},
        el('dt', { text: 'Target' }), el('dd', {}, el('code', { text: `${b.kind || '?'} ${b.value || ''}` })),
        el('dt', { text: 'Statement' }), el('dd', { text: b.reason || '—' }),
        el('dt', { text: 'Banned by' }), el('dd', { text: `${b.created_by || '—'}, ${fmtTime(b.created_at)}` }),
        el('dt', { text: 'Until' }), el('dd', { text: b.lifted_at ? 'lifted' : until(b.expires_at) })),
      el('button.btn.small.ghost', { type: 'button', text: 'Show the evidence', onclick: view }),
      more),
    a.status === 'pending'
      ? el('div.decide', {},
        a.can_decide ? reason : el('span.hint', { text: a.cannot_decide_because || 'You cannot decide this appeal.' }),
        el('button.btn', { type: 'button', text: 'Uphold ban', disabled: !a.can_decide, onclick: () => decide('uphold') }),
        el('button.btn.primary', { type: 'button', text: 'Lift ban', disabled: !a.can_decide, onclick: () => decide('lift') }))
      : null);
}

export function initAppeals() {
  $('appeals-status').addEventListener('change', () => showAppeals());
}
