// duet moderation pages: login, then views by hash (#/wall, #/reports[/id],
// #/bans, #/appeals, #/audit, #/analytics, #/team, #/settings).
// Test hooks live on `window.admin` (read-only for the page's logic).

import * as api from './api.js';
import { $, toast } from './ui.js';
import { showWall, hideWall } from './wall.js';
import { showReports, initReports } from './reports.js';
import { showBans, initBans } from './bans.js';
import { showAppeals, initAppeals } from './appeals.js';
import { showAudit, initAudit } from './audit.js';
import { showAnalytics, hideAnalytics } from './analytics.js';
import { showTeam, showSettings, initTeam } from './team.js';
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
let badgeTimer = null;

function setScreen(name) {
  document.body.dataset.screen = name;
  window.admin.state = name;
}

function showLogin(message) {
  hideWall();
  hideAnalytics();
  clearInterval(badgeTimer);
  $('topbar').hidden = true;
  for (const v of VIEWS) $(`view-${v}`).hidden = true;
  $('login').hidden = false;
  setScreen('login');
  const err = $('login-error');
  err.hidden = !message;
  err.textContent = message || '';
  $('login-btn').disabled = false;
  $('login-email').focus();
}

function enter(s) {
  window.admin.me = s.moderator;
  $('login').hidden = true;
  $('topbar').hidden = false;
  $('who-email').textContent = s.moderator.email;
  $('who-role').textContent = s.moderator.role;
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
    if (e.status !== 401) toast(e.message, true);
  }
  window.admin.ready = view;
}

async function onLogin(e) {
  e.preventDefault();
  const email = $('login-email').value.trim();
  const password = $('login-password').value;
  const err = $('login-error');
  err.hidden = true;
  if (!email || !password) {
    err.textContent = 'Enter your email and password.';
    err.hidden = false;
    return;
  }
  $('login-btn').disabled = true;
  try {
    const s = await api.login(email, password);
    $('login-password').value = '';
    enter(s);
  } catch (ex) {
    window.admin.lastError = { code: ex.code, message: ex.message };
    const wait = ex.code === 'account_locked' || ex.code === 'rate_limited';
    showLogin(wait ? ex.message : ex.code === 'bad_credentials' ? 'Wrong email or password.' : `Cannot log in: ${ex.message}`);
  }
}

async function onLogout() {
  await stopWatch();
  await api.logout();
  location.hash = '';
  showLogin('You are logged out.');
}

function init() {
  api.setLoggedOutHandler((e) => {
    stopWatch();
    showLogin(e && e.code === 'token_revoked' ? 'Your session ended. Log in again.' : 'Your session expired. Log in again.');
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
