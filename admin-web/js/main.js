// duet moderation pages: login, then views by hash (#/wall, #/reports[/id],
// #/bans, #/appeals, #/audit, #/analytics, #/team, #/settings).
// Test hooks live on `window.admin` (read-only for the page's logic).
// Strings come from admin-web/locales/ through the visitor page's i18n module;
// a language switch re-renders the open view from what it last loaded (no
// new request, so no new evidence view in the audit log).

import * as api from './api.js';
import * as i18n from '/js/i18n.js';
import { t } from '/js/i18n.js';
import { $, toast, label, errorText } from './ui.js';
import { showWall, hideWall, renderWall } from './wall.js';
import { showReports, initReports, renderReports } from './reports.js';
import { showBans, initBans, renderBans } from './bans.js';
import { showAppeals, initAppeals, renderAppeals } from './appeals.js';
import { showAudit, initAudit, renderAudit } from './audit.js';
import { showAnalytics, hideAnalytics, renderAnalytics } from './analytics.js';
import { showTeam, showSettings, initTeam, renderTeam, renderSettings } from './team.js';
import { stopWatch } from './watch.js';

window.admin = {
  state: 'loading',
  view: null,
  me: null,
  wall: { pairings: [], loaded: 0, views: 0, refreshes: 0 },
  watch: { pc: null, status: 'idle', watchId: null },
  reports: [],
  report: null,
  appeals: [],
  audit: [],
  analytics: null,
  lastError: null,
};

const VIEWS = ['wall', 'reports', 'bans', 'appeals', 'audit', 'analytics', 'team', 'settings'];
/** Each view drawn again from what it last loaded, after a language switch. */
const RENDER = {
  wall: renderWall,
  reports: renderReports,
  bans: renderBans,
  appeals: renderAppeals,
  audit: renderAudit,
  analytics: renderAnalytics,
  team: renderTeam,
  settings: renderSettings,
};
let badgeTimer = null;
/** The login screen's message as a string key (and its words), said again after a switch. */
let loginMessage = null;

function setScreen(name) {
  document.body.dataset.screen = name;
  window.admin.state = name;
}

function sayLoginMessage() {
  const err = $('login-error');
  err.hidden = !loginMessage;
  const m = loginMessage;
  err.textContent = !m ? '' : m.error ? t('login.failed', { detail: errorText(m.error) }) : t(m.key);
}

/** `message`: {key} of a string, or {error} (an ApiError) said as a failed login. */
function showLogin(message) {
  hideWall();
  hideAnalytics();
  clearInterval(badgeTimer);
  $('topbar').hidden = true;
  for (const v of VIEWS) $(`view-${v}`).hidden = true;
  $('login').hidden = false;
  setScreen('login');
  loginMessage = message || null;
  sayLoginMessage();
  $('login-btn').disabled = false;
  $('login-email').focus();
}

function enter(s) {
  window.admin.me = s.moderator;
  $('login').hidden = true;
  $('topbar').hidden = false;
  $('who-email').textContent = s.moderator.email;
  $('who-role').textContent = label('role', s.moderator.role);
  document.body.classList.toggle('is-admin', s.moderator.role === 'admin');
  setScreen('in');
  badges();
  clearInterval(badgeTimer);
  badgeTimer = setInterval(badges, 30000);
  route();
}

async function badges() {
  try {
    const [r, a] = await Promise.all([
      api.get('/api/admin/reports?status=open&limit=1'),
      api.get('/api/admin/appeals?status=pending&limit=1'),
    ]);
    for (const [id, n] of [['nav-reports', r.total], ['nav-appeals', a.total]]) {
      $(id).hidden = !n;
      $(id).textContent = String(n);
    }
  } catch { /* next time */ }
}

async function route() {
  if (window.admin.state === 'login' || !api.currentSession()) return;
  const [, name = 'wall', arg] = (location.hash || '#/wall').split('/');
  const view = VIEWS.includes(name) ? name : 'wall';
  if (view !== 'wall') hideWall();
  if (view !== 'analytics') hideAnalytics();
  for (const v of VIEWS) $(`view-${v}`).hidden = v !== view;
  for (const a of document.querySelectorAll('.nav a')) {
    if (a.dataset.view === view) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  window.admin.view = view;
  try {
    switch (view) {
      case 'wall': showWall(); break;
      case 'reports': await showReports(arg ? decodeURIComponent(arg) : undefined); break;
      case 'bans': await showBans(); break;
      case 'appeals': await showAppeals(); break;
      case 'audit': await showAudit(); break;
      case 'analytics': showAnalytics(); break;
      case 'team': await showTeam(); break;
      case 'settings': await showSettings(); break;
      default: break;
    }
  } catch (e) {
    window.admin.lastError = { code: e.code, message: e.message };
    if (e.status !== 401) toast(errorText(e), true);
  }
  window.admin.ready = view;
}

async function onLogin(e) {
  e.preventDefault();
  const email = $('login-email').value.trim();
  const password = $('login-password').value;
  loginMessage = null;
  sayLoginMessage();
  if (!email || !password) {
    loginMessage = { key: 'login.missing' };
    sayLoginMessage();
    return;
  }
  $('login-btn').disabled = true;
  try {
    const s = await api.login(email, password);
    $('login-password').value = '';
    enter(s);
  } catch (ex) {
    window.admin.lastError = { code: ex.code, message: ex.message };
    const known = ['account_locked', 'rate_limited', 'bad_credentials', 'busy', 'network'].includes(ex.code);
    showLogin(known ? { key: `error.${ex.code}` } : { error: ex });
  }
}

async function onLogout() {
  await stopWatch();
  await api.logout();
  location.hash = '';
  showLogin({ key: 'login.loggedOut' });
}

/** Texts the page set itself, said again in the new language. */
function rerender() {
  if (window.admin.state === 'login') sayLoginMessage();
  if (window.admin.me) $('who-role').textContent = label('role', window.admin.me.role);
  const render = window.admin.state === 'in' && RENDER[window.admin.view];
  if (render) render();
}

async function init() {
  await i18n.init({ locales: '/admin/locales/', store: 'duet.adminLang' });
  window.admin.lang = i18n.current();
  for (const sel of document.querySelectorAll('.lang-select')) i18n.bindLanguageSelect(sel);
  i18n.onChange((lang) => {
    window.admin.lang = lang;
    rerender();
  });
  api.setLoggedOutHandler((e) => {
    stopWatch();
    showLogin({ key: e && e.code === 'token_revoked' ? 'login.revoked' : 'login.expired' });
  });
  $('login-form').addEventListener('submit', onLogin);
  $('logout-btn').addEventListener('click', onLogout);
  initReports();
  initBans();
  initAppeals();
  initAudit();
  initTeam();
  window.addEventListener('hashchange', route);
  window.addEventListener('admin:changed', () => badges());
  window.addEventListener('pagehide', () => { stopWatch(); });
  const s = api.restore();
  if (s) enter(s);
  else showLogin();
}

init();
