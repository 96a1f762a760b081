// Appeals: the person's text next to the ban and the report it came from;
// a senior moderator who did not make the ban upholds or lifts it, with a
// reason. The person sees the outcome on their next visit.

import * as api from './api.js';
import { t } from '/js/i18n.js';
import { $, el, clear, ago, fmtTime, until, toast, changed, label, shortId, num, errorText } from './ui.js';

/** The last list answer and its status filter (drawn again after a language switch). */
let listed = null;

export async function showAppeals() {
  const status = $('appeals-status').value;
  const data = await api.get(`/api/admin/appeals?status=${status}`);
  window.admin.appeals = data.appeals.map((a) => a.id);
  listed = { data, status };
  renderAppeals();
}

/** The cards from the last answer; reasons being typed are kept. */
export function renderAppeals() {
  if (!listed) return;
  const { data, status } = listed;
  const typed = new Map([...document.querySelectorAll('#appeals-list .appeal')]
    .map((c) => [c.dataset.id, c.querySelector('.decide input')?.value || '']));
  $('appeals-sub').textContent = status === 'all'
    ? t(data.total === 1 ? 'appeals.countOne' : 'appeals.count', { count: num(data.total) })
    : t(data.total === 1 ? 'appeals.countStatusOne' : 'appeals.countStatus', { count: num(data.total), status: label('status', status) });
  const list = clear($('appeals-list'));
  for (const a of data.appeals) list.append(card(a, typed.get(a.id) || ''));
  $('appeals-empty').hidden = data.appeals.length > 0;
}

function card(a, typed) {
  const b = a.ban || {};
  const reason = el('input', {
    type: 'text', maxlength: '500', placeholder: t('appeals.reasonPlaceholder'), 'aria-label': t('appeals.reason'), value: typed,
  });
  const decide = async (decision) => {
    const text = reason.value.trim();
    if (!text) { reason.focus(); toast(t('appeals.needReason'), true); return; }
    try {
      const r = await api.post(`/api/admin/appeals/${encodeURIComponent(a.id)}/decision`, { decision, reason: text });
      toast(r.status === 'lifted' ? t('appeals.lifted') : t('appeals.upheld'));
      changed();
      await showAppeals();
    } catch (e) {
      toast(errorText(e), true);
    }
  };
  const more = el('div.more');
  more.hidden = true;
  const view = async () => {
    try {
      const d = await api.get(`/api/admin/appeals/${encodeURIComponent(a.id)}`);
      more.hidden = false;
      clear(more).append(evidence(d.report));
    } catch (e) {
      toast(errorText(e), true);
    }
  };
  return el('article.appeal.card', { dataset: { id: a.id } },
    el('section', {},
      el('h3', { text: t('appeals.appealTitle', { when: ago(a.created_at) }) }),
      el('p.text', { text: a.text }),
      a.status !== 'pending'
        ? el('p.hint', {}, el('span.chip.ok', { text: label('status', a.status) }),
          ` ${t('appeals.decidedBy', { by: a.decided_by, when: ago(a.decided_at), reason: a.decision_reason || '' })}`)
        : null),
    el('section', {},
      el('h3', { text: t('appeals.theBan') }),
      el('dl.kv', {},
        el('dt', { text: t('appeals.target') }), el('dd', {}, el('code', { text: `${b.kind ? label('kindShort', b.kind) : '?'} ${b.value || ''}` })),
        el('dt', { text: t('appeals.statement') }), el('dd', { text: b.reason || '—' }),
        el('dt', { text: t('appeals.bannedBy') }), el('dd', { text: `${b.created_by || '—'}, ${fmtTime(b.created_at)}` }),
        el('dt', { text: t('appeals.until') }), el('dd', { text: b.lifted_at ? label('status', 'lifted') : until(b.expires_at) })),
      el('button.btn.small.ghost', { type: 'button', text: t('appeals.showEvidence'), onclick: view }),
      more),
    a.status === 'pending'
      ? el('div.decide', {},
        a.can_decide ? reason
          : el('span.hint', { text: label('undecidable', a.cannot_decide_code, a.cannot_decide_because || t('appeals.cannotDecide')) }),
        el('button.btn', { type: 'button', text: t('appeals.uphold'), disabled: !a.can_decide, onclick: () => decide('uphold') }),
        el('button.btn.primary', { type: 'button', text: t('appeals.lift'), disabled: !a.can_decide, onclick: () => decide('lift') }))
      : null);
}

/** Where the ban came from: its report (with a link to it), or a word that there is none. */
function evidence(r) {
  if (!r) return el('p.hint', { text: t('appeals.noReport') });
  return el('p.hint', {}, `${t('appeals.fromReport', { id: shortId(r.id) })} `, el('b', { text: label('category', r.category) }),
    ` — “${r.text || t('reports.noText')}”, ${label('status', r.status)}. `, el('a', { href: `#/reports/${r.id}`, text: t('appeals.openReport') }));
}

export function initAppeals() {
  $('appeals-status').addEventListener('change', () => showAppeals());
}
