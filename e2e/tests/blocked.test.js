// Refusals are explained: with the server's rate limits on, a device that
// starts too many sessions in a row sees "Too many attempts".
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDuet } from '../lib/server.js';
import { launch, openPage, start, screenshot, consoleProblems } from '../lib/browser.js';

let server;
let browser;

before(async () => {
  server = await startDuet({ name: 'blocked', rateLimits: true });
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (server) await server.stop();
});

test('a rate-limited user is told to wait instead of failing silently', async () => {
  const page = await openPage(browser, server.base);
  let refused = null;
  for (let i = 0; i < 15 && !refused; i++) {
    const [resp] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith('/api/session')),
      start(page, { mode: 'text' }),
    ]);
    if (resp.status() === 429) {
      refused = resp;
    } else {
      assert.equal(resp.status(), 200);
      await page.waitForFunction(() => window.duet.state === 'queued');
      await page.click('#stop-btn');
      await page.waitForFunction(() => window.duet.state === 'stopped');
    }
  }
  assert.ok(refused, 'the server refused a session with 429 within 15 quick starts');
  await page.locator('#blocked').waitFor({ state: 'visible' });
  assert.match(await page.textContent('#blocked-title'), /Too many attempts/);
  assert.match(await page.textContent('#blocked-msg'), /wait/i);
  assert.equal(await page.evaluate(() => window.duet.state), 'blocked');
  console.log(`screenshot: ${await screenshot(page, 'rate-limited')}`);
  // Back to the landing page, from where the user can try again later.
  await page.click('#blocked-back');
  await page.locator('#landing').waitFor({ state: 'visible' });
});

test('the page raised no script errors and no Content-Security-Policy refusals', () => {
  assert.deepEqual(consoleProblems(), []);
});
