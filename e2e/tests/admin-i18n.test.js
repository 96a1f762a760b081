// The moderation pages' languages: a moderator whose browser asks for German
// gets every view of /admin/ in German — login, wall, report queue with a
// real report's evidence, the ban dialog, block list, appeals, audit log,
// analytics, team and settings — with no raw string key, no unfilled
// {placeholder} and no English string that German says differently; dates
// are German (Intl). The switch changes the open view in place (same
// document, still logged in) and is remembered. A browser without a German
// preference gets English. (scripts/check-locales checks every key is in
// every locale.)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startDuet } from '../lib/server.js';
import { repoRoot } from '../lib/paths.js';
import { launch, openPage, start, waitState, waitMatchedCount, screenshot, consoleProblems } from '../lib/browser.js';
import { createModerator, openAdmin, login, view, adminProblems } from '../lib/admin.js';

const locale = (l) => JSON.parse(readFileSync(join(repoRoot, 'admin-web', 'locales', `${l}.json`), 'utf8'));
const EN = locale('en');
const DE = locale('de');
const ES = locale('es');
// English strings German says differently (pieces around {placeholders}); none may show on a German page.
const ENGLISH_ONLY = [...new Set(Object.keys(EN)
  .filter((k) => EN[k] !== DE[k])
  .flatMap((k) => EN[k].replace(/\*\*/g, '').split(/\{\w+\}/))
  .map((s) => s.trim())
  .filter((s) => s.length >= 4 && !Object.values(DE).some((d) => d.includes(s))))];
// Keys are `group.name`; one showing means a string is missing.
const KEYS = Object.keys(EN).filter((k) => k.includes('.'));
const GERMAN = { locale: 'de-DE', extraHTTPHeaders: { 'Accept-Language': 'de-DE,de;q=0.9' } };
const PASSWORD = 'ein ausreichend langes Passwort';
const STATEMENT = 'Du hast die Person im Chat beleidigt.';

let server;
let browser;

before(async () => {
  server = await startDuet({ name: 'admin-i18n', args: ['--widen-after-secs', '1', '--cooldown-secs', '0'] });
  await createModerator(server, 'ada@example.org', 'admin', PASSWORD);
  await createModerator(server, 'sam@example.org', 'senior', PASSWORD);
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (server) await server.stop();
});

/** Every visible text and label-like attribute of the page, and its title. */
function visibleTexts(page) {
  return page.evaluate(() => {
    const out = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      const el = n.parentElement;
      if (!el || !n.textContent.trim()) continue;
      if (el.closest('[hidden], dialog:not([open]), script, style')) continue;
      out.push(n.textContent.trim());
    }
    for (const el of document.querySelectorAll('[aria-label], [placeholder], [title], img[alt]')) {
      if (el.closest('[hidden], dialog:not([open])')) continue;
      for (const a of ['aria-label', 'placeholder', 'title', 'alt']) if (el.getAttribute(a)) out.push(el.getAttribute(a));
    }
    out.push(document.title);
    return out;
  });
}

/** No raw key, no unfilled placeholder, no English-only string on the page; returns how many texts were read. */
async function assertGerman(page, where) {
  const texts = await visibleTexts(page);
  const raw = texts.filter((s) => KEYS.some((k) => s.includes(k)));
  assert.deepEqual(raw, [], `raw string keys on the German ${where}`);
  assert.deepEqual(texts.filter((s) => /\{\w+\}/.test(s)), [], `unfilled placeholders on the German ${where}`);
  const left = [];
  for (const text of texts) for (const en of ENGLISH_ONLY) if (text.includes(en)) left.push(`${JSON.stringify(en)} in ${JSON.stringify(text)}`);
  assert.deepEqual(left, [], `untranslated English on the German ${where}`);
  return texts.length;
}

/** Two text-mode visitors meet; `a` reports `b` after `b` wrote something rude. */
async function reportedPair() {
  const a = await openPage(browser, server.base);
  const b = await openPage(browser, server.base);
  await start(a, { mode: 'text' });
  await waitState(a, 'queued');
  await start(b, { mode: 'text' });
  await Promise.all([waitMatchedCount(a, 1), waitMatchedCount(b, 1)]);
  await b.fill('#chat-input', 'du bist erbärmlich');
  await b.press('#chat-input', 'Enter');
  await a.waitForSelector('#messages li.them');
  await a.click('#report-btn');
  await a.locator('#report-dialog').waitFor({ state: 'visible' });
  await a.check('input[name="category"][value="harassment"]');
  await a.fill('#report-text', 'Beleidigungen im Chat');
  await a.click('#report-submit');
  await a.locator('#report-dialog').waitFor({ state: 'hidden' });
  return { a, b };
}

test('a browser without a German preference gets the moderation pages in English', async () => {
  const page = await openAdmin(browser, server.base);
  assert.equal(await page.evaluate(() => document.documentElement.lang), 'en');
  assert.equal((await page.textContent('#login-btn')).trim(), 'Log in');
  await page.context().close();
});

test('Accept-Language: de gives every moderation view in German, with German dates, and no key or English left', async () => {
  assert.ok(ENGLISH_ONLY.length > 200, `the comparison has English strings to look for (${ENGLISH_ONLY.length})`);
  const { b } = await reportedPair();

  const mod = await openAdmin(browser, server.base, { context: GERMAN });
  assert.equal(await mod.evaluate(() => document.documentElement.lang), 'de');
  assert.equal(await mod.evaluate(() => document.documentElement.dir), 'ltr');
  assert.equal((await mod.textContent('#login-btn')).trim(), 'Anmelden');
  assert.equal(await mod.inputValue('#login-lang-select'), 'de');
  await assertGerman(mod, 'login');
  // A wrong password is refused in German.
  await mod.fill('#login-email', 'ada@example.org');
  await mod.fill('#login-password', 'falsch falsch falsch');
  await mod.click('#login-btn');
  await mod.waitForFunction(() => !document.getElementById('login-error').hidden);
  assert.equal((await mod.textContent('#login-error')).trim(), DE['error.bad_credentials']);

  await login(mod, 'ada@example.org', PASSWORD);
  await mod.waitForFunction(() => window.admin.view === 'wall');
  await mod.waitForFunction(() => window.admin.wall.refreshes > 0);
  assert.equal((await mod.textContent('.nav a[data-view="bans"]')).trim(), 'Sperrliste');
  assert.equal((await mod.textContent('#who-role')).trim(), DE['role.admin']);
  let read = await assertGerman(mod, 'wall');

  // The report queue and the report's evidence, then the ban dialog from it.
  await view(mod, '#/reports');
  await mod.waitForFunction(() => window.admin.report);
  assert.equal((await mod.textContent('#report-detail .head .chip')).trim(), DE['category.harassment']);
  read += await assertGerman(mod, 'report queue and report');
  console.log(`screenshot: ${await screenshot(mod, 'admin-de-report')}`);
  await mod.click('#report-ban');
  await mod.locator('#action-dialog').waitFor({ state: 'visible' });
  assert.equal(await mod.inputValue('#action-template'), 'harassment');
  assert.equal(await mod.inputValue('#action-statement'), DE['templateText.harassment'], 'the template starts in German');
  // The preset durations are said by Intl ("1 Tag", "7 Tage").
  assert.match(await mod.textContent('#action-durations'), /1 Tag.*7 Tage/);
  read += await assertGerman(mod, 'ban dialog');
  await mod.check('input[name="action-duration"][value="86400"]');
  await mod.fill('#action-statement', STATEMENT);
  await mod.click('#action-submit');
  await mod.locator('#action-dialog').waitFor({ state: 'hidden' });
  await mod.waitForFunction(() => window.admin.reports.length === 0, null, { timeout: 10000 });
  read += await assertGerman(mod, 'empty queue');

  // The banned visitor appeals; the block list and the appeal, in German.
  await b.locator('#blocked').waitFor({ state: 'visible', timeout: 10000 });
  await b.reload({ waitUntil: 'domcontentloaded' });
  await b.waitForFunction(() => window.duet && window.duet.state === 'landing');
  await start(b, { mode: 'text' });
  await b.locator('#appeal-form').waitFor({ state: 'visible' });
  await b.fill('#appeal-text', 'Es tut mir leid.');
  await b.click('#appeal-form button[type="submit"]');
  await b.waitForFunction(() => document.getElementById('appeal-result').textContent.trim() !== '');

  await view(mod, '#/bans');
  await mod.waitForFunction(() => document.querySelectorAll('#bans-table tbody tr').length === 1);
  assert.match(await mod.textContent('#bans-table tbody tr'), new RegExp(DE['status.pending']));
  read += await assertGerman(mod, 'block list');
  await view(mod, '#/appeals');
  await mod.waitForFunction(() => window.admin.appeals.length === 1);
  await mod.click('.appeal button.ghost');
  await mod.locator('.appeal .more a').waitFor();
  read += await assertGerman(mod, 'appeals');

  // The audit log: actions, targets and details named in German, times as German dates.
  await view(mod, '#/audit');
  await mod.waitForFunction(() => window.admin.audit.length > 3);
  const when = await mod.$$eval('#audit-table tbody tr td:first-child', (tds) => tds.map((td) => td.textContent));
  for (const w of when) assert.match(w, /^\d{2}\.\d{2}\.\d{4}, \d{2}:\d{2}$/, `a German date and time: ${w}`);
  assert.match(await mod.textContent('#audit-table tbody'), new RegExp(DE['auditAction.report_ban']));
  read += await assertGerman(mod, 'audit log');
  console.log(`screenshot: ${await screenshot(mod, 'admin-de-audit')}`);

  for (const [hash, name] of [['#/analytics', 'analytics'], ['#/team', 'team'], ['#/settings', 'settings']]) {
    await view(mod, hash);
    if (name === 'analytics') await mod.waitForFunction(() => document.querySelectorAll('#analytics-tiles .tile').length > 0);
    read += await assertGerman(mod, name);
  }
  console.log(`admin-i18n: ${read} texts read on 11 German screens, ${ENGLISH_ONLY.length} English strings looked for`);
  await Promise.all([mod.context().close(), b.context().close()]);
});

test('the switch changes the open view in place, keeps the moderator logged in, and is remembered', async () => {
  const mod = await openAdmin(browser, server.base, { context: GERMAN });
  await login(mod, 'sam@example.org', PASSWORD);
  await view(mod, '#/bans');
  await mod.waitForFunction(() => document.querySelectorAll('#bans-table tbody tr').length === 1);
  await mod.evaluate(() => { window.sameDocument = true; });
  const requests = [];
  mod.on('request', (r) => { if (r.url().includes('/api/admin/')) requests.push(r.url()); });

  await mod.selectOption('#ui-lang-select', 'es');
  await mod.waitForFunction(() => document.documentElement.lang === 'es');
  assert.equal((await mod.textContent('.nav a[data-view="bans"]')).trim(), ES['nav.bans']);
  assert.equal((await mod.textContent('#bans-sub')).trim(), ES['bans.countOne'].replace('{count}', '1'), 'the open view is drawn again');
  assert.match(await mod.textContent('#bans-table tbody tr'), new RegExp(ES['status.pending']));
  assert.equal(await mod.evaluate(() => window.sameDocument), true, 'no reload');
  assert.equal(await mod.evaluate(() => window.admin.state), 'in', 'still logged in');
  assert.deepEqual(requests.filter((u) => !u.includes('/api/admin/reports?status=open') && !u.includes('/api/admin/appeals?status=pending')),
    [], 'the view is drawn from what it had, not loaded again');

  await mod.reload({ waitUntil: 'domcontentloaded' });
  await mod.waitForFunction(() => window.admin && window.admin.state === 'in');
  assert.equal(await mod.evaluate(() => document.documentElement.lang), 'es', 'the choice is remembered');
  assert.equal(await mod.inputValue('#ui-lang-select'), 'es');
  console.log(`screenshot: ${await screenshot(mod, 'admin-es-blocklist')}`);
  await mod.context().close();
});

test('the pages raised no script errors and no Content-Security-Policy refusals', () => {
  assert.deepEqual(consoleProblems(), []);
  assert.deepEqual(adminProblems(), []);
});
