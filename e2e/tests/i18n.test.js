// Languages: a browser whose Accept-Language is German gets the German page —
// landing with Start, the call screen with Next, the report dialog and the
// ban page — with `lang`/`dir` set and no English string left where German
// has its own; the language switch changes the page in place, keeping the
// visit going. (scripts/check-locales checks that every key is in every locale.)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startDuet } from '../lib/server.js';
import { repoRoot } from '../lib/paths.js';
import { createModerator } from '../lib/admin.js';
import { launch, openPage, start, waitState, waitMatchedCount, screenshot, pageLog, consoleProblems } from '../lib/browser.js';

const locale = (l) => JSON.parse(readFileSync(join(repoRoot, 'client-web', 'locales', `${l}.json`), 'utf8'));
const EN = locale('en');
const DE = locale('de');
// English strings German says differently; none may show on a German page. The placeholders' text
// around {…} is compared piecewise.
const ENGLISH_ONLY = [...new Set(Object.keys(EN)
  .filter((k) => EN[k] !== DE[k])
  .flatMap((k) => EN[k].replace(/\*\*/g, '').split(/\{\w+\}/))
  .map((s) => s.trim())
  .filter((s) => s.length >= 4 && !Object.values(DE).some((d) => d.includes(s))))];
const GERMAN = { locale: 'de-DE', extraHTTPHeaders: { 'Accept-Language': 'de-DE,de;q=0.9' } };

let server;
let browser;

before(async () => {
  server = await startDuet({ name: 'i18n', args: ['--widen-after-secs', '1'] });
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (server) await server.stop();
});

/** Every visible text and every label-like attribute on the page. */
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
    for (const el of document.querySelectorAll('[aria-label], [placeholder]')) {
      if (el.closest('[hidden], dialog:not([open])')) continue;
      for (const a of ['aria-label', 'placeholder']) if (el.getAttribute(a)) out.push(el.getAttribute(a));
    }
    out.push(document.title);
    return out;
  });
}

async function assertNoEnglish(page, where) {
  const texts = await visibleTexts(page);
  const left = [];
  for (const text of texts) for (const en of ENGLISH_ONLY) if (text.includes(en)) left.push(`${JSON.stringify(en)} in ${JSON.stringify(text)}`);
  assert.deepEqual(left, [], `untranslated English on the German ${where}`);
  // And every string the page names by key is the German one.
  const wrong = await page.evaluate((de) => [...document.querySelectorAll('[data-i18n]')]
    // Status, overlay and title start as their data-i18n text and are then set by the page (in German too).
    .filter((el) => !el.closest('[hidden], dialog:not([open])') && !['status', 'overlay-text', 'blocked-title'].includes(el.id))
    .map((el) => [el.dataset.i18n, el.textContent])
    .filter(([k, text]) => text !== de[k].replace(/\*\*/g, '')), DE);
  assert.deepEqual(wrong, [], `data-i18n elements not in German on the ${where}`);
}

test('Accept-Language: de gives the German page: landing, call, report dialog and ban page, with lang and dir set', async () => {
  assert.ok(ENGLISH_ONLY.length > 100, `the comparison has English strings to look for (${ENGLISH_ONLY.length})`);
  const a = await openPage(browser, server.base, { context: GERMAN });
  const b = await openPage(browser, server.base, { context: GERMAN });
  assert.equal(await a.evaluate(() => document.documentElement.lang), 'de');
  assert.equal(await a.evaluate(() => document.documentElement.dir), 'ltr');
  assert.equal((await a.textContent('#start-btn')).trim(), 'Starten');
  assert.equal(await a.inputValue('#ui-lang-select'), 'de');
  await a.check('input[name="mode"][value="text"]');
  await assertNoEnglish(a, 'landing page');
  console.log(`screenshot: ${await screenshot(a, 'i18n-de-landing')}`);

  await start(a, { mode: 'text' });
  await start(b, { mode: 'text' });
  await Promise.all([waitMatchedCount(a, 1), waitMatchedCount(b, 1)]);
  assert.equal((await a.textContent('#next-btn')).replace(/\s+/g, ' ').trim(), 'Weiter Esc');
  assert.match(await a.textContent('#status'), /^Verbunden/);
  await assertNoEnglish(a, 'call screen');

  await a.click('#report-btn');
  await a.locator('#report-dialog').waitFor({ state: 'visible' });
  assert.equal((await a.textContent('#report-title')).trim(), 'Diese Person melden');
  await assertNoEnglish(a, 'report dialog');
  console.log(`screenshot: ${await screenshot(a, 'i18n-de-report')}`);
  await a.click('#report-cancel');

  // A real ban of B's device by a moderator (the admin API), then B's next visit is refused.
  await createModerator(server, 'mod@example.org', 'moderator', 'a long enough password 1');
  const login = await fetch(new URL('/api/admin/login', server.base), {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: 'mod@example.org', password: 'a long enough password 1' }),
  });
  assert.equal(login.status, 200);
  const { token } = await login.json();
  const device = await b.evaluate(() => localStorage.getItem('duet.device_id'));
  const ban = await fetch(new URL('/api/admin/bans', server.base), {
    method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ kind: 'device', value: device, reason: 'Spam im Chat', duration_secs: 86400 }),
  });
  assert.equal(ban.status, 201, `ban answered ${ban.status}: ${await ban.text()}`);
  // A device ban ends the visit at once; if it did not, B's next Start is refused.
  const refusedAtOnce = await b.locator('#blocked').waitFor({ state: 'visible', timeout: 8000 }).then(() => true, () => false);
  if (!refusedAtOnce) {
    await b.click('#stop-btn');
    await waitState(b, 'stopped');
    await b.click('#start-btn');
    await b.locator('#blocked').waitFor({ state: 'visible' })
      .catch(async (e) => { throw new Error(`no ban page: ${e.message}\n${await pageLog(b)}`); });
  }
  assert.equal((await b.textContent('#blocked-title')).trim(), 'Du wurdest bei duet gesperrt');
  assert.equal((await b.textContent('#ban-reason')).trim(), 'Spam im Chat', "the moderator's statement is shown as written");
  // The expiry is a German date and time (Intl), e.g. "08.12.2026, 19:50".
  assert.match(await b.textContent('#ban-expiry'), /^\d{2}\.\d{2}\.\d{4}, \d{2}:\d{2}$/);
  await assertNoEnglish(b, 'ban page');
  console.log(`screenshot: ${await screenshot(b, 'i18n-de-banned')}`);
  // A still waits in the queue: leave, so the next test's visitors meet each other.
  await Promise.all([a.context().close(), b.context().close()]);
});

test('the language switch changes the page in place: the visit, the chat and the partner stay', async () => {
  const a = await openPage(browser, server.base, { context: GERMAN });
  const b = await openPage(browser, server.base);
  assert.equal(await b.evaluate(() => document.documentElement.lang), 'en', 'a browser without German preferences gets English');
  // The chat language follows the page's by default; these two want to meet whatever they speak.
  await a.selectOption('#lang-select', '');
  await b.selectOption('#lang-select', '');
  await start(a, { mode: 'text' });
  await start(b, { mode: 'text' });
  await Promise.all([waitMatchedCount(a, 1), waitMatchedCount(b, 1)]);
  const pairing = await a.evaluate(() => window.duet.pairingId);
  await b.fill('#chat-input', 'hallo from B');
  await b.press('#chat-input', 'Enter');
  await a.waitForSelector('#messages li.them:has-text("hallo from B")');
  await a.fill('#chat-input', 'half-typed');
  await a.evaluate(() => { window.__sameDocument = true; });

  await a.selectOption('#ui-lang-select', 'pt-BR');
  await a.waitForFunction(() => document.documentElement.lang === 'pt-BR');
  assert.equal((await a.textContent('#next-btn')).replace(/\s+/g, ' ').trim(), 'Próximo Esc');
  assert.match(await a.textContent('#status'), /^Conectado/, 'the status is said again in Portuguese');
  assert.equal(await a.evaluate(() => window.__sameDocument), true, 'no reload');
  assert.equal(await a.evaluate(() => window.duet.pairingId), pairing, 'still with the same partner');
  assert.equal(await a.inputValue('#chat-input'), 'half-typed', 'what the visitor was typing is kept');
  assert.equal(await a.locator('#messages li.them:has-text("hallo from B")').count(), 1, 'the chat history is kept');
  await a.press('#chat-input', 'Enter');
  await b.waitForSelector('#messages li.them:has-text("half-typed")');

  await a.selectOption('#ui-lang-select', 'es');
  await a.waitForFunction(() => document.documentElement.lang === 'es');
  assert.equal((await a.textContent('#report-btn')).trim(), 'Denunciar');
  // The choice is remembered for the next visit.
  await a.reload();
  await a.waitForFunction(() => window.duet && window.duet.state === 'landing');
  assert.equal(await a.evaluate(() => document.documentElement.lang), 'es');
});

test('the pages raised no script errors and no Content-Security-Policy refusals', () => {
  assert.deepEqual(consoleProblems(), []);
});
